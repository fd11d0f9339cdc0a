package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestRecordFloodHeldToBudget: a neighbour that sends peer lists full of
// correctly self-signed records of made-up members, as fast as it can,
// used to make its victim verify every one of them (an Ed25519 check each,
// on the link's reader): a core's worth of work for as long as it kept
// on. Now the victim verifies at most its record budget of them (burst,
// then rate a second), drops the rest unchecked and counts them, keeps
// delivering an honest neighbour's broadcasts meanwhile, and, the flood
// going on past the abuse bound, closes the link and bans the flooder.
func TestRecordFloodHeldToBudget(t *testing.T) {
	const (
		rate, burst = 100, 64
		abuseFor    = 2 * time.Second
		lists       = 16 // distinct lists of 64 made-up members: more than the attacker's share of the table
	)
	var abuseClosed atomic.Int64
	var abuseReason atomic.Value
	c := startCluster(t, 2, WithRecordBudget(rate, burst, abuseFor), WithTracer(TracerFunc(func(e TraceEvent) {
		if e.Kind == TraceAbuseClose {
			abuseClosed.Add(1)
			abuseReason.Store(e.Reason)
		}
	})))
	c.wire([][2]int{{0, 1}})
	h, x := c.nodes[0], c.nodes[1]
	in := c.collect()
	a := newAttacker(t, c, x)

	// The records, each of a member with a key of its own, made before the
	// flood starts so that it runs at wire speed. They come round again,
	// but the victim keeps at most 128 of the attacker's members (its
	// share of the table), so each is new to it every time.
	payloads := make([][]byte, lists)
	for i := range payloads {
		recs := make([][]byte, maxPeersPerList)
		for j := range recs {
			r, _ := fakeRecord(t, fmt.Sprintf("127.0.0.1:%d", 20000+j))
			recs[j] = r.Bytes()
		}
		payloads[i] = mustCBOR(t, recs)
	}
	verifiedBefore := x.Stats().RecordsVerified

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent atomic.Int64
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			env, _, err := a.b.NewEnvelope(flags.Whisper, flags.Peers, 1, [][]byte{payloads[i%lists], {0}})
			if err != nil {
				return
			}
			if a.c.SendEnvelope(ctx, 0, env) != nil {
				return // the victim closed the link, or the test is over
			}
			sent.Add(1)
		}
	}()
	stopFlood := func() { cancel(); wg.Wait() }
	t.Cleanup(stopFlood)

	// While the flood goes on, the honest neighbour's broadcasts get
	// through, each within a bound far below the abuse bound.
	during := 0
	for i := 0; i < 20; i++ {
		attacking := a.c.Err() == nil
		msg := fmt.Sprintf("honest-%d", i)
		if err := h.Send(ctxT(t, 5*time.Second), []byte(msg)); err != nil {
			t.Fatalf("honest broadcast %d: %v", i, err)
		}
		testnet.Eventually(t, 5*time.Second, func() bool { return in.count(1, msg) == 1 },
			"the victim to deliver honest broadcast %d during the flood", i)
		if attacking && a.c.Err() == nil {
			during++
		}
		if a.c.Err() != nil {
			break
		}
	}
	if during == 0 {
		t.Fatal("no honest broadcast went out and in while the flood went on")
	}

	// The flood goes on past the abuse bound: the victim closes the link.
	wait, cancelWait := context.WithTimeout(context.Background(), abuseFor+10*time.Second)
	defer cancelWait()
	closed := testnet.WaitFor(wait, func() bool {
		_, linked := x.Base().Conn(a.b.ID())
		return !linked
	}) == nil
	elapsed := time.Since(start)
	stopFlood()

	st := x.Stats()
	verified := st.RecordsVerified - verifiedBefore
	bound := uint64(float64(rate)*elapsed.Seconds()) + burst
	t.Logf("flood of %d lists in %v: %d records verified (bound %d), %d dropped over budget, %d lists over budget; %d honest broadcasts during it",
		sent.Load(), elapsed.Round(time.Millisecond), verified, bound, st.RecordsOverBudget, st.PeerListsOverBudget, during)
	if verified > bound {
		t.Errorf("the victim verified %d records in %v, budget %d/s and %d at once (at most %d)", verified, elapsed, rate, burst, bound)
	}
	if st.RecordsOverBudget == 0 {
		t.Error("no record was counted as dropped over budget")
	}
	if !closed {
		t.Fatalf("the victim did not close the flooding neighbour's link in %v", elapsed)
	}
	if elapsed < abuseFor {
		t.Errorf("link closed after %v of flooding, abuse bound %v", elapsed, abuseFor)
	}
	if st.AbusiveClosed != 1 || abuseClosed.Load() != 1 {
		t.Errorf("AbusiveClosed %d, traced %d; want 1 and 1", st.AbusiveClosed, abuseClosed.Load())
	}
	if r, _ := abuseReason.Load().(error); !errors.Is(r, ErrClosed) {
		t.Errorf("abuse-close reason %v, want one matching ErrClosed", r)
	}
	// It cannot come back for a fresh budget: its identity is banned.
	// (Its own end of the link closes first: until then, Connect would
	// return that link.)
	testnet.Eventually(t, 10*time.Second, func() bool { return a.c.Err() != nil }, "the flooder to see its link closed")
	if _, err := a.b.Connect(ctxT(t, 10*time.Second), x.Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("the flooder's reconnect: %v, want ErrNotAuthorized (banned)", err)
	}
	// The honest neighbour is still linked, and its broadcasts still
	// arrive.
	if err := h.Send(ctxT(t, 5*time.Second), []byte("after")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return in.count(1, "after") == 1 },
		"the victim to deliver the honest broadcast after the flood")
}

// TestRecordBudgetCheapPath: records the victim holds already, the same
// or older, cost no signature check (and so none of the record budget);
// peer lists beyond the peer list budget are dropped whole, before they
// are decoded, and never close the link; a list that answers the victim's
// own request is not charged to that budget.
func TestRecordBudgetCheapPath(t *testing.T) {
	c := honestView(t, 4, WithRecordBudget(1<<20, maxPeersPerList, time.Second), WithPeerListBudget(2, time.Hour))
	x := c.nodes[1]
	a := newAttacker(t, c, x)
	before := x.Stats()

	// List 1: made-up members, each verified.
	fresh := make([][]byte, maxPeersPerList)
	var first *protocol.Record
	var firstKey ed25519.PrivateKey
	for i := range fresh {
		r, key := fakeRecord(t, "127.0.0.1:9")
		fresh[i] = r.Bytes()
		if i == 0 {
			first, firstKey = r, key
		}
	}
	a.sendRecords(fresh...)
	// List 2: records the victim holds (the honest members', and the
	// first made-up member's), and an older record of that member.
	older := &protocol.Record{Key: first.Key, Seq: first.Seq - 1, Addrs: []string{"127.0.0.1:8"}}
	if err := older.Sign(func(msg []byte) []byte { return ed25519.Sign(firstKey, msg) }); err != nil {
		t.Fatal(err)
	}
	held := [][]byte{first.Bytes(), older.Bytes()}
	for i, m := range c.nodes {
		if i != 1 {
			held = append(held, m.Record().Bytes())
		}
	}
	a.sendRecords(held...)
	// List 3: over the budget of two lists, dropped unread. The link is
	// one ordered stream, so lists 1 and 2 were handled before it.
	extra, _ := fakeRecord(t, "127.0.0.1:9")
	a.sendRecords(extra.Bytes())
	testnet.Eventually(t, 10*time.Second, func() bool { return x.Stats().PeerListsOverBudget == 1 },
		"the third list to be dropped over the peer list budget")
	if x.known.record(extra.ID) != nil {
		t.Fatal("the victim took a record from a list over budget")
	}

	// The victim asks; the answer is not charged, and is taken.
	conn, ok := x.Base().Conn(a.b.ID())
	if !ok {
		t.Fatal("the victim has no link to the attacker")
	}
	x.sendPeers(conn, true)
	answer, _ := fakeRecord(t, "127.0.0.1:9")
	a.sendRecords(answer.Bytes())
	testnet.Eventually(t, 10*time.Second, func() bool { return x.known.record(answer.ID) != nil },
		"the victim to take the answer to its request")
	// Unasked again: dropped.
	a.sendRecords(extra.Bytes())
	testnet.Eventually(t, 10*time.Second, func() bool { return x.Stats().PeerListsOverBudget == 2 },
		"the fifth list to be dropped over the peer list budget")

	st := x.Stats()
	if got := st.RecordsVerified - before.RecordsVerified; got != maxPeersPerList+1 {
		t.Errorf("verified %d records, want %d: the records held cost a check", got, maxPeersPerList+1)
	}
	if got := st.RecordsStale - before.RecordsStale; got != 1 {
		t.Errorf("%d stale records, want 1", got)
	}
	if _, ok := x.Base().Conn(a.b.ID()); !ok || st.AbusiveClosed != 0 || st.RecordsOverBudget != 0 {
		t.Errorf("linked %v, AbusiveClosed %d, RecordsOverBudget %d; want the link kept and nothing over the record budget",
			ok, st.AbusiveClosed, st.RecordsOverBudget)
	}
}

// TestBadRecordInBatch: a peer list whose records are checked in one
// batch, one of them with a bad signature, still gets each record its own
// verdict; and the link's later records are checked one at a time (a
// failed batch costs more than that).
func TestBadRecordInBatch(t *testing.T) {
	c := startCluster(t, 1)
	x := c.nodes[0]
	a := newAttacker(t, c, x)
	good1, _ := fakeRecord(t, "127.0.0.1:9")
	good2, _ := fakeRecord(t, "127.0.0.1:9")
	bad, _ := fakeRecord(t, "127.0.0.1:9")
	raw := bytes.Clone(bad.Bytes())
	raw[len(raw)-1] ^= 1
	a.sendRecords(good1.Bytes(), raw, good2.Bytes())
	a.sync() // waits on the table's lock, which the reader took after the verdicts
	if x.known.record(good1.ID) == nil || x.known.record(good2.ID) == nil || x.known.record(bad.ID) != nil {
		t.Fatal("the batch's verdicts were not each record's own")
	}
	if st := x.Stats(); st.RecordsInvalid != 1 {
		t.Fatalf("RecordsInvalid %d, want 1", st.RecordsInvalid)
	}
	conn, _ := x.Base().Conn(a.b.ID())
	if !x.linkOf(conn).rb.oneByOne {
		t.Fatal("the link's records are still checked in batches after a bad one")
	}
}

// TestTokens: the bucket starts full, takes whole tokens only, refills at
// its rate up to its depth.
func TestTokens(t *testing.T) {
	var b tokens
	now := int64(time.Hour)
	if got := b.take(now, 100, 10, 64); got != 64 {
		t.Fatalf("a full bucket gave %d of 100, want 64", got)
	}
	if got := b.take(now+int64(250*time.Millisecond), 5, 10, 64); got != 2 {
		t.Fatalf("after 250 ms at 10/s: %d, want 2", got)
	}
	if got := b.take(now+int64(time.Hour), 100, 10, 64); got != 64 {
		t.Fatalf("after an hour: %d, want 64 (the depth)", got)
	}
	var rb recordBudget
	for i, step := range []struct {
		at   time.Duration
		want bool
	}{{0, false}, {900 * time.Millisecond, false}, {1800 * time.Millisecond, false}, {2 * time.Second, true},
		{3500 * time.Millisecond, false}, {5 * time.Second, false}} { // a quiet second and a half starts a new run
		if got := rb.over(now+int64(step.at), 2*time.Second); got != step.want {
			t.Fatalf("step %d (%v): abusing %v, want %v", i, step.at, got, step.want)
		}
	}
	if rb.over(now+int64(time.Hour), 0) {
		t.Fatal("abuse bound 0 closed a link")
	}
}
