package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// memberCluster starts n nodes in groups g0, g1, g2 (by i%3), node i a
// hub if i%8 == 0, with fast heartbeats and short timeouts, wired as a
// random graph of degree 4.
func memberCluster(t *testing.T, n int, every time.Duration, suspect, fail time.Duration, opts ...Option) *cluster {
	t.Helper()
	c := &cluster{t: t}
	logger := testnet.Logger(t)
	t.Cleanup(c.closeAll)
	for i := 0; i < n; i++ {
		s, err := NewSocket("127.0.0.1:0", append([]Option{
			WithDiscovery(false), WithMaxOutgoing(64), WithMaxPeers(64),
			WithLogger(logger.With("i", i)),
			WithGroup(fmt.Sprintf("g%d", i%3)), WithHub(i%8 == 0),
			WithMemberHeartbeat(every, 1000), WithMemberTimeouts(suspect, fail),
		}, opts...)...)
		if err != nil {
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		c.nodes = append(c.nodes, s)
	}
	c.wire(testnet.Random(n, 4, rand.New(rand.NewPCG(uint64(n), 12))))
	return c
}

// liveIDs returns the IDs of s's live members.
func liveIDs(s *Socket, filter ...MemberFilter) map[protocol.NodeID]bool {
	out := make(map[protocol.NodeID]bool)
	for _, m := range s.Members(filter...) {
		out[m.ID] = true
	}
	return out
}

// TestMembers32: on a 32-node mesh every node lists all 32 members (with
// their groups and hubs) within a bound; filters select by group, hub,
// host and ID; a metadata update reaches every node; a graceful leave is
// seen as a leave, and a kill as a failure, by every other node within
// the failure timeout.
func TestMembers32(t *testing.T) {
	const n = 32
	every, suspect, fail := 300*time.Millisecond, 1500*time.Millisecond, 3*time.Second
	if raceEnabled { // several times slower, on a loaded machine: no false failures
		every, suspect, fail = time.Second, 5*time.Second, 10*time.Second
	}
	c := memberCluster(t, n, every, suspect, fail)
	start := time.Now()
	testnet.Eventually(t, 30*time.Second, func() bool {
		for _, s := range c.nodes {
			if len(s.Members()) != n {
				return false
			}
		}
		return true
	}, "every node to list all 32 members")
	t.Logf("members converged on %d nodes in %v", n, time.Since(start).Round(time.Millisecond))

	s := c.nodes[1]
	for g := 0; g < 3; g++ {
		got := liveIDs(s, InGroups(fmt.Sprintf("g%d", g)))
		for i, x := range c.nodes {
			if (i%3 == g) != got[x.ID()] {
				t.Fatalf("InGroups(g%d): node %d listed %v", g, i, got[x.ID()])
			}
		}
	}
	hubs := liveIDs(s, HubsOnly())
	for i, x := range c.nodes {
		if (i%8 == 0) != hubs[x.ID()] {
			t.Fatalf("HubsOnly: node %d listed %v", i, hubs[x.ID()])
		}
	}
	if got := liveIDs(s, HubsOnly(), InGroups("g0")); len(got) != 2 { // nodes 0 and 24
		t.Fatalf("hubs of g0: %d, want 2", len(got))
	}
	if got := s.Members(IDs(c.nodes[5].ID(), c.nodes[6].ID())); len(got) != 2 {
		t.Fatalf("IDs: %d members", len(got))
	}
	if got := s.Members(OnHost("127.0.0.1")); len(got) != n {
		t.Fatalf("OnHost: %d members", len(got))
	}
	if got := s.Members(OnHost("192.0.2.1")); len(got) != 0 {
		t.Fatalf("OnHost elsewhere: %d members", len(got))
	}

	// A metadata update reaches all.
	watches := make([]*MemberWatch, n)
	for i, x := range c.nodes {
		watches[i] = x.WatchMembers(4 * n)
		defer watches[i].Close()
	}
	if err := c.nodes[5].UpdateMetadata(ctxT(t, 5*time.Second), map[string]string{"version": "2"}); err != nil {
		t.Fatal(err)
	}
	id5 := c.nodes[5].ID()
	testnet.Eventually(t, 10*time.Second, func() bool {
		for _, x := range c.nodes {
			m, ok := x.Member(id5)
			if !ok || m.Meta["version"] != "2" || m.Group != "g2" {
				return false
			}
		}
		return true
	}, "the metadata update to reach every node")

	// A graceful leave and a kill.
	left, killed := c.nodes[7], c.nodes[9]
	leftID, killedID := left.ID(), killed.ID()
	if err := left.Close(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := killed.base.Close(ctxT(t, 5*time.Second)); err != nil { // no leave: its links just end
		t.Fatal(err)
	}
	gone := time.Now()
	others := func(f func(i int, x *Socket) bool) bool {
		for i, x := range c.nodes {
			if i != 7 && i != 9 && !f(i, x) {
				return false
			}
		}
		return true
	}
	seen := func() bool {
		return others(func(_ int, x *Socket) bool {
			ml, ok1 := x.Member(leftID)
			mk, ok2 := x.Member(killedID)
			return ok1 && ok2 && ml.State == MemberLeft && mk.State == MemberFailed
		})
	}
	if testnet.WaitFor(ctxT(t, 30*time.Second), seen) != nil {
		others(func(i int, x *Socket) bool {
			ml, _ := x.Member(leftID)
			mk, _ := x.Member(killedID)
			t.Logf("node %d: node 7 %v, node 9 %v (heard %v ago); live %d", i, ml.State, mk.State,
				time.Since(mk.LastHeard).Round(time.Millisecond), len(x.Members()))
			return true
		})
		t.Fatal("not every node saw node 7 leave and node 9 fail")
	}
	took := time.Since(gone)
	t.Logf("leave and failure seen everywhere %v after", took.Round(time.Millisecond))
	// The killed node was last heard up to one heartbeat interval before
	// it went; the table is swept every quarter of the suspect timeout.
	st := s.MemberStats()
	if bound := st.FailAfter + st.Interval + st.SuspectAfter/4 + time.Second; took > bound {
		t.Errorf("took %v, beyond the failure timeout plus an interval and a sweep (+1 s) %v", took, bound)
	}
	others(func(i int, x *Socket) bool {
		if len(x.Members()) != n-2 {
			t.Errorf("node %d lists %d live members, want %d", i, len(x.Members()), n-2)
		}
		sawLeft, sawFail, sawUpdate := false, false, false
		for done := false; !done; {
			select {
			case ev := <-watches[i].C:
				switch {
				case ev.Member.ID == leftID && ev.Kind == MemberLeftEv:
					sawLeft = true
				case ev.Member.ID == leftID && ev.Kind == MemberFailedEv:
					t.Errorf("node %d saw the leaving node fail", i)
				case ev.Member.ID == killedID && ev.Kind == MemberFailedEv:
					sawFail = true
				case ev.Member.ID == id5 && ev.Kind == MemberUpdated:
					sawUpdate = true
				}
			default:
				done = true
			}
		}
		if !sawLeft || !sawFail || (i != 5 && !sawUpdate) {
			t.Errorf("node %d: events left %v failed %v updated %v", i, sawLeft, sawFail, sawUpdate)
		}
		return true
	})
}

// TestMemberCost: with n members and a rate of r a second, each node
// heartbeats every n/r seconds, so each node takes about r member
// messages a second whatever n is.
func TestMemberCost(t *testing.T) {
	const n, rate = 16, 40
	c := startCluster(t, n, WithMembership(true), WithMemberHeartbeat(10*time.Millisecond, rate))
	c.wire(testnet.Random(n, 4, rand.New(rand.NewPCG(3, 4))))
	testnet.Eventually(t, 15*time.Second, func() bool {
		for _, s := range c.nodes {
			if len(s.Members()) != n {
				return false
			}
		}
		return true
	}, "members to converge")
	// Let every node's interval settle (it is computed from the table's
	// size at each heartbeat): about a second's worth of messages first.
	received := func() (sum uint64) {
		for _, s := range c.nodes {
			sum += s.MemberStats().Received
		}
		return sum
	}
	first := received()
	testnet.Eventually(t, 15*time.Second, func() bool { return received() >= first+n*rate }, "a second's worth")
	before := make([]uint64, n)
	for i, s := range c.nodes {
		before[i] = s.MemberStats().Received
	}
	start, base := time.Now(), received()
	testnet.Eventually(t, 30*time.Second, func() bool { return received() >= base+3*n*rate }, "a window's worth")
	window := time.Since(start)
	var total float64
	for i, s := range c.nodes {
		perSec := float64(s.MemberStats().Received-before[i]) / window.Seconds()
		total += perSec
		if perSec > rate*1.5 {
			t.Errorf("node %d took %.1f member messages/s, bound %d", i, perSec, rate)
		}
	}
	st := c.nodes[0].MemberStats()
	t.Logf("%d nodes, rate %d/s: interval %v, %.1f member messages taken per node per second (mean)",
		n, rate, st.Interval, total/n)
	if st.Interval != time.Duration(n)*time.Second/rate {
		t.Errorf("interval %v, want %v", st.Interval, time.Duration(n)*time.Second/rate)
	}
	// At 1 000 nodes with the defaults.
	cfg := defaultMemberConfig()
	if iv := cfg.interval(1000); iv != 250*time.Second {
		t.Errorf("default interval at 1000 nodes: %v", iv)
	}
}

// TestMemberRecordHostile: a neighbour cannot change another node's
// group or hub, nor make it leave: a record of that node signed with
// another key, or its genuine record flooded by another origin, is
// refused, and every node keeps the genuine record.
func TestMemberRecordHostile(t *testing.T) {
	c := startCluster(t, 3, WithMembership(true), WithMemberHeartbeat(100*time.Millisecond, 1000))
	c.wire([][2]int{{0, 1}, {1, 2}})
	victim, evil, observer := c.nodes[0], c.nodes[1], c.nodes[2]
	testnet.Eventually(t, 10*time.Second, func() bool {
		_, ok := observer.Member(victim.ID())
		return ok
	}, "the observer to learn the victim")
	// A record with the victim's key and ID, group "evil", hub set, signed
	// by the hostile node's key.
	forged := &protocol.Record{Key: victim.base.PublicKey(), Seq: victim.Record().Seq + 1000,
		Time: time.Now().UnixNano(), Group: "evil", Hub: true}
	evilKey := evil.base.Sign
	if err := forged.Sign(evilKey); err != nil {
		t.Fatal(err)
	}
	before := observer.MemberStats().Invalid
	ctx := ctxT(t, 5*time.Second)
	for _, pk := range [][][]byte{
		{forged.Bytes(), {memberStateAlive}},            // forged record of the victim
		{victim.Record().Bytes(), {memberStateLeaving}}, // the victim's record, a fake leave
	} {
		if err := evil.originate(ctx, flags.Member, pk); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		return observer.MemberStats().Invalid >= before+2
	}, "the observer to refuse both")
	m, ok := observer.Member(victim.ID())
	if !ok || m.Group != "" || m.Hub || m.State != MemberAlive {
		t.Fatalf("the observer holds %+v", m)
	}
	// The forged record does not verify under the victim's key either.
	if err := forged.Verify(); err == nil {
		t.Fatal("the forged record verifies")
	}
}

// TestMemberSyncOnJoin: a node that joins lists the members its new
// neighbour knows at once (member sync), without waiting for their next
// heartbeat (an hour away here).
func TestMemberSyncOnJoin(t *testing.T) {
	c := startCluster(t, 4, WithMembership(true), WithMemberHeartbeat(time.Hour, 1000))
	c.wire([][2]int{{0, 1}, {1, 2}})
	if testnet.WaitFor(ctxT(t, 10*time.Second), func() bool {
		for _, s := range c.nodes[:3] {
			if len(s.Members()) != 3 {
				return false
			}
		}
		return true
	}) != nil {
		for i, s := range c.nodes[:3] {
			t.Logf("node %d: %d members, %+v", i, len(s.Members()), s.MemberStats())
		}
		t.Fatal("the first three do not list each other")
	}
	late := c.nodes[3]
	if err := late.Connect(ctxT(t, 5*time.Second), c.nodes[2].Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		for _, s := range c.nodes {
			if len(s.Members()) != 4 {
				return false
			}
		}
		return true
	}, "all four to list all four")
	if m, _ := late.Member(c.nodes[0].ID()); m.State != MemberAlive || m.Record == nil {
		t.Fatalf("the late node holds %+v", m)
	}
}

// TestWaitMembers: WaitMembers returns once enough members pass the
// filters (Others leaves the node itself out), fails with ErrTimeout when
// its context ends first, and with ErrClosed when the node closes.
func TestWaitMembers(t *testing.T) {
	c := startCluster(t, 3, WithMembership(true), WithMemberHeartbeat(time.Hour, 1000))
	a := c.nodes[0]
	done := make(chan []Member, 1)
	go func() {
		ms, err := a.WaitMembers(ctxT(t, 20*time.Second), 2, a.Others())
		if err != nil {
			t.Error(err)
		}
		done <- ms
	}()
	c.wire([][2]int{{0, 1}, {1, 2}})
	ms := <-done
	if len(ms) < 2 {
		t.Fatalf("WaitMembers returned %d members, want 2", len(ms))
	}
	for _, m := range ms {
		if m.ID == a.ID() {
			t.Fatal("Others let the node itself through")
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.WaitMembers(short, 10); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitMembers for 10 of 3: %v, want ErrTimeout", err)
	}
	closed := make(chan error, 1)
	go func() {
		_, err := a.WaitMembers(context.Background(), 10)
		closed <- err
	}()
	if err := a.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitMembers on a closing node: %v, want ErrClosed", err)
	}
}
