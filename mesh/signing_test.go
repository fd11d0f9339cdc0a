package mesh

import (
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// badSigTracer records the bad-signature events of every node.
type badSigTracer struct {
	mu     sync.Mutex
	events []TraceEvent
}

func (b *badSigTracer) Trace(e TraceEvent) {
	if e.Kind != TraceBadSignature {
		return
	}
	b.mu.Lock()
	b.events = append(b.events, e)
	b.mu.Unlock()
}

func (b *badSigTracer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

// relay is a hand-driven peer (a bare base socket) linked to several mesh
// nodes: it receives their broadcasts and passes on what the test says.
type relay struct {
	s     *base.Socket
	conns map[*Socket]*base.Conn
}

func (c *cluster) relay(to ...*Socket) *relay {
	c.t.Helper()
	r := &relay{s: testnet.NewBase(c.t, ""), conns: map[*Socket]*base.Conn{}}
	c.extras = append(c.extras, r.s)
	for _, n := range to {
		conn, err := r.s.Connect(ctxT(c.t, 10*time.Second), n.Addr().String())
		if err != nil {
			c.t.Fatal(err)
		}
		r.conns[n] = conn
	}
	testnet.Eventually(c.t, 10*time.Second, func() bool {
		for _, n := range to {
			if _, ok := n.base.Conn(r.s.ID()); !ok {
				return false
			}
		}
		return true
	}, "the relay's links to be up")
	return r
}

// next returns the next user broadcast the relay received.
func (r *relay) next(t *testing.T) *base.Message {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	for {
		m, err := r.s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == flags.Broadcast && m.Flag == flags.Broadcast {
			return m
		}
	}
}

// altered returns a copy of envelope env whose first packet is replaced by
// p, with sender and seq kept: what a tampering relay passes on. The
// original signature is kept too (it no longer matches).
func altered(t *testing.T, env []byte, p string) []byte {
	t.Helper()
	var e protocol.Envelope
	if err := protocol.DecodeEnvelope(env, &e, protocol.DefaultLimits); err != nil {
		t.Fatal(err)
	}
	e.Packets = [][]byte{[]byte(p)}
	return e.AppendTo(nil) // e.Auth: the original key and signature
}

// TestTamperingRelayDropped is the regression test for the tampering
// attack: a relay alters a broadcast's packet, keeping its sender and
// sequence number, and passes it on first. Before signatures the altered
// copy was delivered (and the genuine one taken for its duplicate); now the
// altered copy is dropped as a bad signature, counted and traced, and the
// genuine copy, arriving later by an honest path, is delivered exactly
// once.
func TestTamperingRelayDropped(t *testing.T) {
	var tr badSigTracer
	c := startCluster(t, 2, WithTracer(&tr))
	origin, target := c.nodes[0], c.nodes[1]
	var proven sync.Map // before collect's handler, which claims everything
	target.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		proven.Store(string(m.Packets[0]), m.Proven)
		return false
	}))
	in := c.collect()
	// Two paths from origin to target: through the hostile relay and
	// through an honest one that passes the genuine copy on when told.
	hostile := c.relay(origin, target)
	honest := c.relay(origin, target)

	if err := origin.Send(ctxT(t, 10*time.Second), []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	got := hostile.next(t)
	fake := altered(t, got.Envelope(), "altered")
	ctx := ctxT(t, 10*time.Second)
	if err := hostile.conns[target].SendEnvelope(ctx, got.Hops, fake); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return target.Stats().BadSignatures == 1 },
		"the altered copy dropped as a bad signature")
	if in.count(1, "altered") != 0 || in.count(1, "genuine") != 0 {
		t.Fatal("the altered copy reached the user")
	}
	// The genuine copy, by the honest path.
	g := honest.next(t)
	if err := honest.conns[target].SendEnvelope(ctx, g.Hops, g.Envelope()); err != nil {
		t.Fatal(err)
	}
	if err := testnet.WaitFor(ctxT(t, 10*time.Second), func() bool { return in.count(1, "genuine") == 1 }); err != nil {
		t.Fatalf("the genuine copy was not delivered: %+v", target.Stats())
	}
	// The altered copy once more, after the genuine one: shed as a
	// duplicate of (sender, seq) before any verification.
	dups := target.Stats().Duplicates
	if err := hostile.conns[target].SendEnvelope(ctx, got.Hops, fake); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return target.Stats().Duplicates == dups+1 })
	c.waitQuiet()
	if st := target.Stats(); st.BadSignatures != 1 || st.Verified != 2 {
		t.Fatalf("BadSignatures %d (want 1), Verified %d (want 2)", st.BadSignatures, st.Verified)
	}
	if n, a := in.count(1, "genuine"), in.count(1, "altered"); n != 1 || a != 0 {
		t.Fatalf("target delivered the genuine broadcast %d times and the altered one %d times", n, a)
	}
	if p, _ := proven.Load("genuine"); p != true {
		t.Fatal("the delivered broadcast is not marked Proven")
	}
	if tr.count() != 1 {
		t.Fatalf("%d bad-signature trace events, want 1", tr.count())
	}
	for _, e := range tr.events {
		if e.Peer != hostile.s.ID() || e.Sender != origin.ID() || !errors.Is(e.Reason, ErrBadSignature) {
			t.Fatalf("trace event %+v", e)
		}
	}
}

// TestForgerCannotPreemptVictim: a forger that sends a broadcast under a
// victim's sender and the victim's next sequence number, before the
// victim does, with a signature of its own key, does not stop the real
// broadcast: the forgery is dropped, the real one delivered once.
func TestForgerCannotPreemptVictim(t *testing.T) {
	c := startCluster(t, 2)
	c.wire(testnet.Line(2))
	in := c.collect()
	victim, target := c.nodes[0], c.nodes[1]
	forger := c.relay(victim, target)
	ctx := ctxT(t, 10*time.Second)
	if err := victim.Send(ctx, []byte("first")); err != nil {
		t.Fatal(err)
	}
	first := forger.next(t)
	// The victim's next number, claimed first.
	e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: victim.ID(), Seq: first.Seq + 1,
		Time: time.Now().UnixNano(), HopLimit: 16, Packets: [][]byte{[]byte("forged")}}
	key := base.GenerateKey()
	if err := forger.conns[target].SendEnvelope(ctx, 0, e.AppendSigned(nil, key)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return target.Stats().BadSignatures == 1 })
	// And one claiming the victim's key too (the key matches the sender,
	// the signature does not).
	e.Seq++
	sig := e.AppendSigned(nil, key)
	copy(sig[len(sig)-ed25519.SignatureSize-ed25519.PublicKeySize:], victim.base.PublicKey())
	if err := forger.conns[target].SendEnvelope(ctx, 0, sig); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return target.Stats().BadSignatures == 2 })
	for _, p := range []string{"second", "third"} {
		if err := victim.Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(1, "third") == 1 })
	c.waitQuiet()
	if in.count(1, "forged") != 0 || in.count(1, "second") != 1 || in.count(1, "first") != 1 {
		t.Fatalf("target got forged %d, first %d, second %d times", in.count(1, "forged"), in.count(1, "first"), in.count(1, "second"))
	}
}

// TestUnsignedMesh: with WithSignedBroadcasts(false) on every node,
// broadcasts flow unsigned and nothing is verified; a signing node cannot
// join them.
func TestUnsignedMesh(t *testing.T) {
	c := startCluster(t, 3, WithSignedBroadcasts(false))
	c.wire(testnet.Line(3))
	in := c.collect()
	if err := c.nodes[0].Send(ctxT(t, 10*time.Second), []byte("plain")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(2, "plain") == 1 })
	for i, n := range c.nodes {
		if st := n.Stats(); st.Verified != 0 {
			t.Fatalf("node %d verified %d signatures", i, st.Verified)
		}
	}
	signing := startCluster(t, 1)
	err := signing.nodes[0].Connect(ctxT(t, 10*time.Second), c.nodes[0].Addr().String())
	if !errors.Is(err, ErrProtocolMismatch) {
		t.Fatalf("a signing node joined an unsigned mesh: %v", err)
	}
}

// TestEachNodeVerifiesEachBroadcastAboutOnce: in a flood over a
// well-connected mesh, duplicates are shed before verification (or wait
// for the copy being verified), so the signatures checked stay close to
// one per broadcast per node, not one per copy received.
func TestEachNodeVerifiesEachBroadcastAboutOnce(t *testing.T) {
	const nodes, msgs = 6, 200
	c := startCluster(t, nodes)
	c.wire(testnet.Full(nodes))
	in := c.collect()
	ctx := ctxT(t, 30*time.Second)
	for i := range msgs {
		if err := c.nodes[i%nodes].Send(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.sum() == msgs*(nodes-1) })
	c.waitQuiet()
	var verified, copies uint64
	for _, n := range c.nodes {
		st := n.Stats()
		verified += st.Verified
		copies += st.Duplicates + st.BroadcastsDelivered
	}
	// Each node receives each broadcast from up to nodes-1 neighbours;
	// it verifies one copy of it (a better copy may be verified again).
	want := uint64(msgs * (nodes - 1))
	if verified < want || verified > want+want/10 {
		t.Fatalf("verified %d signatures for %d deliveries (%d copies received)", verified, want, copies)
	}
	if copies < 2*want {
		t.Fatalf("only %d copies for %d deliveries: the flood did not duplicate", copies, want)
	}
}
