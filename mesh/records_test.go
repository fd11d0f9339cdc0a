package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// The attacks of issue 11 on peer exchange, each by a neighbour that is a
// bare base socket writing its own peer lists, and each checked against
// what an honest neighbour taught the victim.

// bareClaim is a peer-list entry of wire version 2: a node ID and an
// address, said by whoever sends the list.
type bareClaim struct {
	_    struct{} `cbor:",toarray"`
	ID   []byte
	Addr string
}

// attacker is a neighbour of the victim that sends what it likes.
type attacker struct {
	t      testing.TB
	b      *base.Socket
	c      *base.Conn
	victim *Socket
}

// newAttacker connects a bare base socket to victim, and waits until the
// victim has the link.
func newAttacker(t testing.TB, c *cluster, victim *Socket) *attacker {
	t.Helper()
	b := testnet.NewBase(t, "")
	c.extras = append(c.extras, b)
	conn, err := b.Connect(ctxT(t, 10*time.Second), victim.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { _, ok := victim.Base().Conn(b.ID()); return ok },
		"the victim to register the attacker's link")
	return &attacker{t: t, b: b, c: conn, victim: victim}
}

// send sends packets as a control message of the given type and sub-flag.
func (a *attacker) send(typ, sub flags.Flag, hopLimit uint8, packets ...[]byte) {
	a.t.Helper()
	env, _, err := a.b.NewEnvelope(typ, sub, hopLimit, packets)
	if err != nil {
		a.t.Fatal(err)
	}
	if err := a.c.SendControl(env); err != nil {
		a.t.Fatal(err)
	}
}

// sendList sends list (anything CBOR) as the list of a one-hop peer list.
func (a *attacker) sendList(list any) {
	a.t.Helper()
	a.send(flags.Whisper, flags.Peers, 1, mustCBOR(a.t, list), []byte{0})
}

// sendRecords sends a one-hop peer list of these records' bytes.
func (a *attacker) sendRecords(recs ...[]byte) { a.t.Helper(); a.sendList(recs) }

// sync sends a peer list with the record of a member made up on the spot,
// and waits until the victim holds it: everything the attacker sent
// before has been handled (one link, in order).
func (a *attacker) sync() {
	a.t.Helper()
	rec, _ := fakeRecord(a.t, "127.0.0.1:3")
	a.sendRecords(rec.Bytes())
	testnet.Eventually(a.t, 10*time.Second, func() bool { return a.victim.known.record(rec.ID) != nil },
		"the victim to take the attacker's marker record")
}

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := protocol.MarshalCBOR(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// honestView builds the set-up of the attacks: hub H (node 0) linked to
// members 2..n-1, and the victim X (node 1) linked to H only (discovery
// off), which therefore knows the members only from H's peer list. It
// returns once X holds every member's record.
func honestView(t *testing.T, n int, opts ...Option) *cluster {
	t.Helper()
	c := startCluster(t, n, opts...)
	h, x := c.nodes[0], c.nodes[1]
	edges := make([][2]int, 0, n-2)
	for i := 2; i < n; i++ {
		edges = append(edges, [2]int{i, 0})
	}
	ctx := ctxT(t, 20*time.Second)
	for _, e := range edges {
		if err := c.nodes[e[0]].Connect(ctx, h.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		for _, m := range c.nodes[2:] {
			if h.known.record(m.ID()) == nil {
				return false
			}
		}
		return true
	}, "the hub to hold every member's record")
	if err := x.Connect(ctx, h.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		for _, m := range c.nodes[2:] {
			if addr, ok := knownAddr(x, m.ID()); !ok || addr != m.Addr().String() {
				return false
			}
		}
		return true
	}, "the victim to learn every member from the hub")
	return c
}

// recordingTracer keeps the record and peer-list events.
type recordingTracer struct {
	mu     sync.Mutex
	events []TraceEvent
}

func (r *recordingTracer) Trace(e TraceEvent) {
	if e.Kind < TraceRecordInvalid {
		return
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// count returns how many events of kind k had a reason matching reason
// (any reason if nil).
func (r *recordingTracer) count(k TraceKind, reason error) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k && (reason == nil || errors.Is(e.Reason, reason)) {
			n++
		}
	}
	return n
}

// forgeIDRecord builds, as a peer written from docs/protocol.md would, a
// record that claims node id under the attacker's own key, correctly
// signed by that key.
func forgeIDRecord(t testing.TB, id protocol.NodeID, key ed25519.PrivateKey, addr string) []byte {
	t.Helper()
	body := mustCBOR(t, map[uint64]any{
		protocol.RecordKeyID: id[:], protocol.RecordKeyKey: []byte(key.Public().(ed25519.PublicKey)),
		protocol.RecordKeySeq: uint64(1) << 62, protocol.RecordKeyTime: time.Now().UnixNano(),
		protocol.RecordKeyAddrs: []string{addr}, protocol.RecordKeyMeta: map[string]string{},
	})
	return mustCBOR(t, []any{body, ed25519.Sign(key, protocol.RecordSigningInput(body))})
}

// resignedBody returns rec with its addresses replaced by addr and its
// sequence number raised, its body encoded by the spec's rules, and the
// signature of the original record.
func resignedBody(t testing.TB, rec *protocol.Record, addr string) []byte {
	t.Helper()
	body := mustCBOR(t, map[uint64]any{
		protocol.RecordKeyID: rec.ID[:], protocol.RecordKeyKey: []byte(rec.Key),
		protocol.RecordKeySeq: rec.Seq + 1, protocol.RecordKeyTime: rec.Time,
		protocol.RecordKeyAddrs: []string{addr}, protocol.RecordKeyMeta: map[string]string{},
	})
	raw := rec.Bytes()
	return mustCBOR(t, []any{body, raw[len(raw)-ed25519.SignatureSize:]})
}

// TestPeerListCannotRewriteAddress: a neighbour used to rewrite the
// address a node held for any other node with a one-entry peer list. Now
// the address comes only from the node's own signed record: the bare
// claim (a list of wire version 2), the node's record with its address
// changed (stale with the same sequence number, invalid with a higher
// one), and a record claiming the node's ID under another key are all
// ignored and counted.
func TestPeerListCannotRewriteAddress(t *testing.T) {
	tr := &recordingTracer{}
	c := honestView(t, 3, WithTracer(tr))
	x, v := c.nodes[1], c.nodes[2]
	a := newAttacker(t, c, x)
	const evil = "127.0.0.1:1"

	vid := v.ID()
	a.sendList([]bareClaim{{ID: vid[:], Addr: evil}})

	// v's own record with the last digit of its port changed: not newer
	// than the one x holds, so stale.
	good := v.Record().Bytes()
	at := bytes.Index(good, []byte(v.Addr().String())) + len(v.Addr().String()) - 1
	tampered := bytes.Clone(good)
	tampered[at] ^= 1
	a.sendRecords(tampered)
	// v's record with the attacker's address and a higher sequence number,
	// under v's signature: newer, but the signature fails.
	a.sendRecords(resignedBody(t, v.Record(), evil))

	a.sendRecords(forgeIDRecord(t, v.ID(), base.GenerateKey(), evil))
	a.sync()

	if addrs := x.known.addrs(v.ID()); len(addrs) != 1 || addrs[0] != v.Addr().String() {
		t.Fatalf("x would dial v at %v, want only %s", addrs, v.Addr())
	}
	st := x.Stats()
	if st.PeerListsRefused != 1 || st.RecordsStale != 1 || st.RecordsInvalid != 2 {
		t.Errorf("PeerListsRefused %d, RecordsStale %d, RecordsInvalid %d; want 1, 1 and 2",
			st.PeerListsRefused, st.RecordsStale, st.RecordsInvalid)
	}
	if tr.count(TraceRecordInvalid, protocol.ErrRecordSignature) != 1 ||
		tr.count(TraceRecordInvalid, protocol.ErrRecordIdentity) != 1 ||
		tr.count(TracePeerListRefused, protocol.ErrMalformed) != 1 {
		t.Errorf("trace events: %+v", tr.events)
	}
}

// TestPeerListFloodBounded: 17 peer lists of 64 made-up members each used
// to flush every member an honest neighbour had named from the
// 1024-entry table. Bare claims are now refused outright; made-up members
// with freshly generated keys and correctly self-signed records are taken,
// but the attacker holds at most its share (an eighth of the table by
// default) and the honest members stay.
func TestPeerListFloodBounded(t *testing.T) {
	const lists, perList = 17, 64
	for _, tc := range []struct {
		name   string
		signed bool
	}{{"bare claims", false}, {"self-signed records", true}} {
		t.Run(tc.name, func(t *testing.T) {
			// A record budget that never bites: the attacker's 17 lists
			// of new records at once would be over the default one
			// (TestRecordFloodHeldToBudget); this test is about the
			// table's bound.
			c := honestView(t, 8, WithRecordBudget(1<<20, 1<<20, 0))
			x := c.nodes[1]
			a := newAttacker(t, c, x)
			for range lists {
				if tc.signed {
					recs := make([][]byte, perList)
					for j := range recs {
						r, _ := fakeRecord(t, fmt.Sprintf("127.0.0.1:%d", 20000+j))
						recs[j] = r.Bytes()
					}
					a.sendRecords(recs...)
				} else {
					claims := make([]bareClaim, perList)
					for j := range claims {
						id := protocol.NewNodeID()
						claims[j] = bareClaim{ID: id[:], Addr: fmt.Sprintf("127.0.0.1:%d", 20000+j)}
					}
					a.sendList(claims)
				}
			}
			a.sync()
			for i, m := range c.nodes {
				if i == 1 {
					continue
				}
				if addr, ok := knownAddr(x, m.ID()); !ok || addr != m.Addr().String() {
					t.Errorf("x lost honest member %d (%v, %v)", i, addr, ok)
				}
			}
			share := DefaultMaxKnownPeers / 8
			held := x.known.source(a.b.ID())
			st := x.Stats()
			t.Logf("attacker holds %d entries; table %d; evictions %d; refused lists %d", held, st.KnownPeers, st.KnownEvictions, st.PeerListsRefused)
			if held > share {
				t.Errorf("the attacker introduced %d members, more than its share %d", held, share)
			}
			if st.KnownPeers > len(c.nodes)+share {
				t.Errorf("the table holds %d members, want at most %d honest ones and the attacker's share %d",
					st.KnownPeers, len(c.nodes), share)
			}
			if !tc.signed && (st.PeerListsRefused != lists || held != 1) {
				t.Errorf("%d lists of bare claims refused, attacker holds %d; want %d and only the marker", st.PeerListsRefused, held, lists)
			}
			if tc.signed && held != share {
				t.Errorf("the attacker holds %d entries, want its full share %d (its newest)", held, share)
			}
		})
	}
}

// TestPeerListBroadcastRefused: peer lists were taken from broadcasts, so
// one broadcast poisoned every node. A peer list that comes as a
// broadcast is now neither taken nor relayed: not by the attacker's
// neighbour, not by the node behind it.
func TestPeerListBroadcastRefused(t *testing.T) {
	c := startCluster(t, 2)
	c.wire([][2]int{{0, 1}})
	m1, m2 := c.nodes[0], c.nodes[1]
	in := c.collect()
	a := newAttacker(t, c, m1)
	fake, _ := fakeRecord(t, "127.0.0.1:1")
	claimed := protocol.NewNodeID()
	a.send(flags.Broadcast, flags.Peers, 8, mustCBOR(t, [][]byte{fake.Bytes()}), []byte{0})
	a.send(flags.Broadcast, flags.Peers, 8, mustCBOR(t, []bareClaim{{ID: claimed[:], Addr: "127.0.0.1:1"}}), []byte{0})
	// A user broadcast after them: once m2 has it, m1 has handled both.
	a.send(flags.Broadcast, flags.Broadcast, 8, []byte("after"))
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(1, "after") == 1 }, "m2 to get the broadcast sent after the lists")
	for i, s := range c.nodes {
		if _, ok := knownAddr(s, fake.ID); ok {
			t.Errorf("node %d took a record from a broadcast peer list", i)
		}
		if _, ok := knownAddr(s, claimed); ok {
			t.Errorf("node %d took a bare claim from a broadcast peer list", i)
		}
	}
	if st := m1.Stats(); st.PeerListsRefused != 2 {
		t.Errorf("m1 refused %d peer lists, want 2", st.PeerListsRefused)
	}
	if st := m2.Stats(); st.PeerListsRefused != 0 {
		t.Errorf("m2 saw %d peer lists: m1 relayed them", st.PeerListsRefused)
	}
}

// TestPeerListFromAnotherSenderRefused: a peer list whose envelope names
// another sender than the link's peer is not a one-hop control message,
// and is refused: by base, which drops an unsigned envelope from another
// sender than the link's peer (a bad signature), before mesh sees it.
func TestPeerListFromAnotherSenderRefused(t *testing.T) {
	c := startCluster(t, 2)
	c.wire([][2]int{{0, 1}})
	x, v := c.nodes[0], c.nodes[1]
	a := newAttacker(t, c, x)
	fake, _ := fakeRecord(t, "127.0.0.1:1")
	env := &protocol.Envelope{Type: flags.Whisper, Sub: flags.Peers, Sender: v.ID(), Seq: 1,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: [][]byte{mustCBOR(t, [][]byte{fake.Bytes()}), {0}}}
	if err := a.c.SendControl(env.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	a.sync()
	if _, ok := knownAddr(x, fake.ID); ok {
		t.Fatal("x took a record from a peer list that named another sender")
	}
	if st, bst := x.Stats(), x.Base().Stats(); st.PeerListsRefused+bst.BadSignatures != 1 {
		t.Errorf("x refused %d peer lists and dropped %d bad signatures, want 1 in all",
			st.PeerListsRefused, bst.BadSignatures)
	}
}

// TestStaleRecordIgnored: a node's newer record replaces the older one,
// whoever passes it on; the older one, passed on again, does not come
// back, and is counted as stale.
func TestStaleRecordIgnored(t *testing.T) {
	c := honestView(t, 3)
	x, v := c.nodes[1], c.nodes[2]
	a := newAttacker(t, c, x)
	old := v.Record()
	moved := []string{"127.0.0.1:2", v.Addr().String()}
	if err := v.Advertise(moved, map[string]string{"v": "2"}); err != nil {
		t.Fatal(err)
	}
	newer := v.Record()
	if newer.Seq <= old.Seq {
		t.Fatalf("Advertise signed sequence number %d after %d", newer.Seq, old.Seq)
	}
	a.sendRecords(newer.Bytes())
	a.sync()
	if got := x.known.record(v.ID()); got == nil || got.Seq != newer.Seq {
		t.Fatalf("x holds %+v, want v's newer record", got)
	}
	a.sendRecords(old.Bytes())
	a.sync()
	got := x.known.record(v.ID())
	if got.Seq != newer.Seq || x.known.addrs(v.ID())[0] != moved[0] || got.Meta["v"] != "2" {
		t.Fatalf("the older record replaced the newer one: %+v", got)
	}
	if st := x.Stats(); st.RecordsStale != 1 {
		t.Errorf("RecordsStale %d, want 1", st.RecordsStale)
	}
}

// TestHandshakeAddrNotTaken: what a peer says in its Hello is its claim
// about one link. A node whose record says it listens elsewhere than its
// Hello says is dialled where its record says; the Hello's address is not
// added (it used to overwrite the table's address on every link).
func TestHandshakeAddrNotTaken(t *testing.T) {
	c := startCluster(t, 2)
	x, v := c.nodes[0], c.nodes[1]
	const elsewhere = "127.0.0.1:2"
	if err := v.Advertise([]string{elsewhere}, nil); err != nil {
		t.Fatal(err)
	}
	if err := v.Connect(ctxT(t, 10*time.Second), x.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return x.known.record(v.ID()) != nil },
		"x to take v's record")
	c2, _ := x.Base().Conn(v.ID())
	if hello := c2.Peer().Addr; hello != v.Addr().String() {
		t.Fatalf("test set-up: v's Hello says %s", hello)
	}
	if addrs := x.known.addrs(v.ID()); len(addrs) != 1 || addrs[0] != elsewhere {
		t.Fatalf("x would dial v at %v, want only its record's %s", addrs, elsewhere)
	}
}

// TestAdvertise: a node's record starts with its advertised address and
// metadata; Advertise signs a newer one, which its neighbours take at
// once; values over the record's limits are refused.
func TestAdvertise(t *testing.T) {
	c := startCluster(t, 2, WithMetadata(map[string]string{"name": "n"}))
	c.wire([][2]int{{0, 1}})
	x, v := c.nodes[0], c.nodes[1]
	r := v.Record()
	if r.ID != v.ID() || len(r.Addrs) != 1 || r.Addrs[0] != v.Addr().String() || r.Meta["name"] != "n" || r.Verify() != nil {
		t.Fatalf("v's first record: %+v", r)
	}
	if err := v.Advertise([]string{"192.0.2.7:1"}, map[string]string{"name": "m"}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		got := x.known.record(v.ID())
		return got != nil && got.Meta["name"] == "m"
	}, "x to take v's new record")
	if got := x.known.record(v.ID()); got.Seq <= r.Seq || got.Addrs[0] != "192.0.2.7:1" {
		t.Fatalf("x holds %+v", got)
	}
	err := v.Advertise(make([]string, protocol.MaxRecordAddrs+1), nil)
	if !errors.Is(err, ErrInvalidOption) || !errors.Is(err, protocol.ErrBadRecord) {
		t.Fatalf("Advertise over the limits: %v", err)
	}
	big := map[string]string{"x": string(make([]byte, protocol.MaxRecordSize))}
	if _, err := NewSocket("127.0.0.1:0", WithMetadata(big)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewSocket with metadata over the record's size: %v", err)
	}
	if err := v.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := v.Advertise(nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Advertise after Close: %v", err)
	}
}

// TestOwnRecordOutdone: a record of this node from an earlier run whose
// clock was ahead (a higher sequence number) would win over its records
// from now on; meeting it, the node signs a new record above it.
func TestOwnRecordOutdone(t *testing.T) {
	key := base.GenerateKey()
	c := startCluster(t, 1, WithKey(key))
	x := c.nodes[0]
	earlier := &protocol.Record{Key: key.Public().(ed25519.PublicKey), Seq: x.Record().Seq + 1e12,
		Time: time.Now().UnixNano(), Addrs: []string{"127.0.0.1:2"}}
	if err := earlier.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
		t.Fatal(err)
	}
	a := newAttacker(t, c, x)
	a.sendRecords(earlier.Bytes())
	a.sync()
	if got := x.Record(); got.Seq <= earlier.Seq || got.Addrs[0] != x.Addr().String() {
		t.Fatalf("x's record %+v, want one above sequence number %d with its own address", got, earlier.Seq)
	}
}

// TestKnownShares checks the table's bounds directly: one source's
// share, eviction from the source that introduced most, and the members
// that are never evicted.
func TestKnownShares(t *testing.T) {
	k := newKnownPeers(10, 6)
	srcA, srcB, srcC := protocol.NewNodeID(), protocol.NewNodeID(), protocol.NewNodeID()
	add := func(src protocol.NodeID) *protocol.Record {
		t.Helper()
		r, _ := fakeRecord(t, "127.0.0.1:9")
		if got := k.store(r, src); got != recordStored {
			t.Fatalf("store: %v", got)
		}
		return r
	}
	var fromA, fromB []*protocol.Record
	for range 8 { // A goes over its share: its oldest two make way
		fromA = append(fromA, add(srcA))
	}
	if k.source(srcA) != 6 || k.len() != 6 || k.evicted() != 2 {
		t.Fatalf("A holds %d, table %d, evictions %d; want 6, 6, 2", k.source(srcA), k.len(), k.evicted())
	}
	for range 3 {
		fromB = append(fromB, add(srcB))
	}
	// One member of A's is reached at a proven address: it leaves A's
	// share and stays.
	k.proved(fromA[2].ID, "127.0.0.1:9")
	add(srcC)
	// The table is full (10): a new member from C makes A, which holds
	// most, forget its oldest member (fromA[3]; fromA[2] is proven).
	add(srcC)
	if k.record(fromA[3].ID) != nil || k.record(fromA[2].ID) == nil || k.source(srcA) != 4 {
		t.Fatalf("A holds %d; its oldest member kept: %v, proven member kept: %v",
			k.source(srcA), k.record(fromA[3].ID) != nil, k.record(fromA[2].ID) != nil)
	}
	for _, r := range fromB {
		if k.record(r.ID) == nil {
			t.Fatal("a member of B's was forgotten while A held more")
		}
	}
	// Members that stay (proven) are never made room for by a new
	// member's record: fill the table with them and a new record is
	// refused.
	k2 := newKnownPeers(2, 2)
	for i := range 2 {
		k2.proved(protocol.NewNodeID(), fmt.Sprintf("127.0.0.1:%d", i+1))
	}
	r, _ := fakeRecord(t, "127.0.0.1:9")
	if got := k2.store(r, srcA); got != recordRefused {
		t.Fatalf("a record displaced a proven member: %v", got)
	}
	// The record held, again, is no news; another one with the same
	// sequence number is old.
	if got := k.store(fromB[0], srcA); got != recordHeld {
		t.Fatalf("the same record again: %v", got)
	}
	key := base.GenerateKey()
	first := &protocol.Record{Key: key.Public().(ed25519.PublicKey), Seq: 5}
	same := &protocol.Record{Key: first.Key, Seq: 5, Addrs: []string{"127.0.0.1:7"}}
	newer := &protocol.Record{Key: first.Key, Seq: 6}
	for _, r := range []*protocol.Record{first, same, newer} {
		if err := r.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		r    *protocol.Record
		want storeResult
	}{{first, recordStored}, {same, recordOld}, {newer, recordStored}, {first, recordOld}} {
		if got := k.store(step.r, srcB); got != step.want {
			t.Fatalf("record %d: %v, want %v", step.r.Seq, got, step.want)
		}
	}
}

// TestKnownShareDefault: a neighbour's share of the table of known peers
// is an eighth of the table unless set.
func TestKnownShareDefault(t *testing.T) {
	for _, tc := range []struct {
		opts []Option
		want int
	}{
		{nil, DefaultMaxKnownPeers / 8},
		{[]Option{WithMaxKnownPeers(80)}, 10},
		{[]Option{WithMaxKnownPeers(3)}, 1},
		{[]Option{WithMaxKnownPeers(80), WithMaxKnownPerSource(50)}, 50},
	} {
		x := startCluster(t, 1, tc.opts...).nodes[0]
		if x.known.perSource != tc.want {
			t.Errorf("%d options: share %d, want %d", len(tc.opts), x.known.perSource, tc.want)
		}
	}
}

// TestRouteRequestCarriesItsSendersRecord: the address a route request's
// target dials back comes from the requester's own record; a request
// carrying another node's record (which would make the target dial a node
// of the sender's choosing) is dropped and counted.
func TestRouteRequestCarriesItsSendersRecord(t *testing.T) {
	tr := &recordingTracer{}
	c := startCluster(t, 2, WithDiscovery(true), WithTracer(tr))
	x, v := c.nodes[0], c.nodes[1]
	a := newAttacker(t, c, x)
	var idb [8]byte
	xid := x.ID()
	a.send(flags.Broadcast, flags.Request, 8, idb[:], xid[:], v.Record().Bytes())
	a.sync()
	if st := x.Stats(); st.RecordsInvalid != 1 || tr.count(TraceRecordInvalid, protocol.ErrBadRecord) != 1 {
		t.Fatalf("RecordsInvalid %d, events %+v; want the request's record refused", st.RecordsInvalid, tr.events)
	}
	if _, ok := x.Base().Conn(v.ID()); ok {
		t.Fatal("x dialled the node whose record the request carried")
	}
	if x.known.record(v.ID()) != nil {
		t.Fatal("x took the record of a node that did not send it")
	}
}

// TestKnownAddrs: a member is dialled at its proven address first, then at
// its record's addresses in turn, one further per failure; a record
// address without a host gets the host its links came from, or is
// skipped.
func TestKnownAddrs(t *testing.T) {
	rec, _ := fakeRecord(t, "192.0.2.1:1", "0.0.0.0:2", "[::]:3", "192.0.2.1:1")
	p := &knownPeer{rec: rec}
	if got := p.addrs(); len(got) != 1 || got[0] != "192.0.2.1:1" {
		t.Fatalf("addrs %v", got)
	}
	p.host = "198.51.100.9"
	p.proven = "203.0.113.5:9"
	want := []string{"203.0.113.5:9", "192.0.2.1:1", "198.51.100.9:2", "198.51.100.9:3"}
	if got := p.addrs(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("addrs %v, want %v", got, want)
	}
	for i := range 6 {
		p.failures = i
		if got := p.dialAddr(); got != want[i%len(want)] {
			t.Fatalf("after %d failures: %s, want %s", i, got, want[i%len(want)])
		}
	}
	if (&knownPeer{}).dialAddr() != "" {
		t.Fatal("a member without addresses has one to dial")
	}
}
