package mesh

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// punchTriangle starts R (node 0) with A (1) and B (2) linked to it only,
// membership on so that A and B know each other as members, and waits
// until they do.
func punchTriangle(t *testing.T, opts ...Option) *cluster {
	t.Helper()
	c := startCluster(t, 3, append([]Option{WithMembership(true)}, opts...)...)
	c.wire([][2]int{{1, 0}, {2, 0}})
	a, b := c.nodes[1], c.nodes[2]
	testnet.Eventually(t, 20*time.Second, func() bool {
		_, ab := a.Member(b.ID())
		_, ba := b.Member(a.ID())
		return ab && ba
	}, "A and B to know each other as members")
	return c
}

// TestPunchCoordination: A asks R, their shared neighbour, to introduce it
// to B; R tells each the other's address as R sees its link (the listening
// port, which they dial from), and both dial at once: A and B end up with
// a direct, ordinary link, in the roles their IDs give, and every step is
// counted.
func TestPunchCoordination(t *testing.T) {
	c := punchTriangle(t)
	r, a, b := c.nodes[0], c.nodes[1], c.nodes[2]
	if err := a.Punch(ctxT(t, 20*time.Second), b.ID()); err != nil {
		t.Fatalf("Punch: %v", err)
	}
	ab, ok := a.Base().Conn(b.ID())
	if !ok {
		t.Fatal("no direct link from A to B after the punch")
	}
	testnet.Eventually(t, 10*time.Second, func() bool { _, ok := b.Base().Conn(a.ID()); return ok }, "B to register the link")
	ba, _ := b.Base().Conn(a.ID())
	if got, want := ab.RemoteAddr().String(), b.Addr().String(); got != want {
		t.Fatalf("A's link to B comes from %s, want B's listening address %s", got, want)
	}
	if ab.Peer().Outbound == ba.Peer().Outbound || ab.Peer().Outbound != (a.ID().Compare(b.ID()) < 0) {
		t.Fatalf("roles: A outbound %v, B outbound %v; the smaller ID dials", ab.Peer().Outbound, ba.Peer().Outbound)
	}
	// The link carries whispers.
	got := make(chan string, 1)
	b.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if m.Sender == a.ID() && len(m.Packets) == 1 {
			select {
			case got <- string(m.Packets[0]):
			default:
			}
			return true
		}
		return false
	}))
	if err := a.Whisper(ctxT(t, 10*time.Second), b.ID(), []byte("direct")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "direct" {
			t.Fatalf("B got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("B did not get the whisper")
	}
	rs, as := r.Stats(), a.Stats()
	testnet.Eventually(t, 10*time.Second, func() bool { return b.Stats().PunchesSucceeded == 1 }, "B to count its half")
	if rs.PunchIntroductions != 1 || as.PunchRequests != 1 || as.PunchesSucceeded != 1 || rs.PunchRefused != 0 {
		t.Fatalf("counters: R %+v, A %+v", rs, as)
	}
	// A second Punch finds the link and returns at once.
	if err := a.Punch(ctxT(t, time.Second), b.ID()); err != nil {
		t.Fatal(err)
	}
	if a.Stats().PunchRequests != 1 {
		t.Fatal("a punch to a neighbour asked an introducer")
	}
}

// TestPunchRefusals: an introducer without a link to the target says so,
// and Punch tries the next one; punching off is refused on both sides.
func TestPunchRefusals(t *testing.T) {
	c := startCluster(t, 3)
	c.wire([][2]int{{1, 0}})
	r, a, b := c.nodes[0], c.nodes[1], c.nodes[2]
	err := a.Punch(ctxT(t, 10*time.Second), b.ID())
	if !errors.Is(err, ErrPunchFailed) || !errors.Is(err, errNotLinked) {
		t.Fatalf("punch through an introducer not linked to the target: %v", err)
	}
	if r.Stats().PunchRefused != 1 {
		t.Fatalf("R refused %d requests, want 1", r.Stats().PunchRefused)
	}
	off, err := NewSocket("127.0.0.1:0", WithPunch(false), WithDiscovery(false), WithMembership(false), WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close(context.Background())
	if err := off.Punch(ctxT(t, time.Second), a.ID()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Punch with punching off: %v", err)
	}
	if err := off.Connect(ctxT(t, 10*time.Second), r.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(off.Peers()) == 1 }, "the link to off")
	// A asks off to introduce it to R: off refuses, punching off.
	if err := a.Connect(ctxT(t, 10*time.Second), off.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { _, ok := a.Base().Conn(off.ID()); return ok }, "A's link to off")
	via, _ := a.Base().Conn(off.ID())
	err = a.punchVia(ctxT(t, 10*time.Second), via, r.ID())
	if err == nil || errors.Is(err, errNotLinked) || off.Stats().PunchRefused != 1 {
		t.Fatalf("punch via a node with punching off: %v (refused %d)", err, off.Stats().PunchRefused)
	}
	if _, ok := a.Base().Conn(r.ID()); !ok {
		t.Fatal("lost A-R")
	}
	if _, ok := a.Base().Conn(b.ID()); ok {
		t.Fatal("a link to B appeared")
	}
}

// TestWithPunchLimits: bad limits are refused at construction; zero
// fields take the defaults.
func TestWithPunchLimits(t *testing.T) {
	for _, l := range []PunchLimits{{Burst: -1}, {Window: -time.Second}, {Delay: time.Hour}, {Window: time.Millisecond}} {
		if _, err := NewSocket("", WithPunchLimits(l)); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%+v: %v, want ErrInvalidOption", l, err)
		}
	}
	var c config = defaultConfig()
	if err := WithPunchLimits(PunchLimits{Burst: 9})(&c); err != nil {
		t.Fatal(err)
	}
	if c.punchLimits.Burst != 9 || c.punchLimits.Window != DefaultPunchWindow || c.punchLimits.MaxActive != DefaultMaxPunches {
		t.Fatalf("limits %+v", c.punchLimits)
	}
}

// TestPunchHostile: a neighbour cannot make nodes dial addresses of its
// choosing. Its flood of requests to R is cut at its punch budget; its
// introductions to B, pointing at a trap listener, are refused (a forged
// signature; a requester that signed but is no member B knows; an
// introducer posing as requester) and B never dials the trap; an
// introduction that is not a one-hop whisper is dropped. All counted.
func TestPunchHostile(t *testing.T) {
	const burst = 3
	c := punchTriangle(t, WithPunchLimits(PunchLimits{Burst: burst, PerMinute: 1}))
	r, h, b := c.nodes[0], c.nodes[1], c.nodes[2]
	// A trap: any dial to it is counted.
	trap, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer trap.Close()
	var dialled atomic.Int64
	go func() {
		for {
			nc, err := trap.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			nc.Close()
		}
	}()
	ctx := ctxT(t, 20*time.Second)
	send := func(to protocol.NodeID, typ flags.Flag, p *protocol.Punch) {
		t.Helper()
		conn, ok := h.Base().Conn(to)
		if !ok {
			t.Fatal("no link")
		}
		if err := conn.SendMessage(ctx, typ, flags.Punch, p.Packets()...); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Introductions to B through a fresh link H2 (its own budget),
	// pointing at the trap.
	h2 := startCluster(t, 1, WithMembership(true)).nodes[0]
	if err := h2.Connect(ctx, b.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { _, ok := b.Base().Conn(h2.ID()); return ok }, "B to see H2")
	conn, _ := h2.Base().Conn(b.ID())
	intro := func(key ed25519.PrivateKey, requester protocol.NodeID, sign bool, nonce uint64) *protocol.Punch {
		pub := key.Public().(ed25519.PublicKey)
		sig := make([]byte, ed25519.SignatureSize)
		if sign {
			sig = ed25519.Sign(key, protocol.PunchSigningInput(requester, b.ID(), h2.ID(), nonce, time.Now().UnixNano()))
		}
		return &protocol.Punch{Kind: protocol.PunchIntroduce, Key: pub, Addr: trap.Addr().String(),
			Nonce: nonce, Time: time.Now().UnixNano(), Signature: sig}
	}
	sybil := base.GenerateKey()
	sybilID := protocol.NodeIDFromKey(sybil.Public().(ed25519.PublicKey))
	for _, p := range []*protocol.Punch{
		intro(sybil, sybilID, false, 1), // forged: no valid signature
		intro(sybil, sybilID, true, 2),  // signed, but no member B knows
	} {
		if err := conn.SendMessage(ctx, flags.Whisper, flags.Punch, p.Packets()...); err != nil {
			t.Fatal(err)
		}
	}
	// As a broadcast (not one hop): dropped as malformed.
	if err := conn.SendMessage(ctx, flags.Broadcast, flags.Punch, intro(sybil, sybilID, true, 3).Packets()...); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		ps := b.Stats()
		return ps.PunchIntroductionsRefused == 2 && ps.PunchMalformed >= 1
	}, "B to refuse the introductions")
	// B refuses before any dial: nothing more to wait for.
	if n := dialled.Load(); n != 0 {
		t.Fatalf("B dialled the trap %d times", n)
	}

	// 2. Requests to R, past its budget for H: at most burst answered.
	now := time.Now().UnixNano()
	for i := range 10 {
		sig := h.Base().Sign(protocol.PunchSigningInput(h.ID(), b.ID(), r.ID(), uint64(i), now))
		send(r.ID(), flags.Whisper, &protocol.Punch{Kind: protocol.PunchRequest, Peer: b.ID(), Nonce: uint64(i), Time: now, Signature: sig})
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return r.Stats().PunchRateLimited == 10-burst }, "R to rate-limit H")
	if got := r.Stats().PunchIntroductions; got > burst {
		t.Fatalf("R introduced %d times for one neighbour, budget %d", got, burst)
	}

	// B may have acted on R's honest introductions of H (at most burst),
	// which point at H's own address, never at the trap.
	if n := dialled.Load(); n != 0 {
		t.Fatalf("B dialled the trap %d times", n)
	}
	if b.Stats().PunchesSucceeded+b.Stats().PunchesFailed > burst {
		t.Fatalf("B dialled more punches than R introduced: %+v", b.Stats())
	}
}

// TestPunchMemory: an introduction is acted on once (a replay is
// refused), the memory of those acted on is bounded and forgets expired
// ones first, and one punch per peer runs at a time, at most max.
func TestPunchMemory(t *testing.T) {
	var p puncher
	k := punchKey{nonce: 1}
	if !p.use(k, 100, 0) || p.use(k, 100, 0) {
		t.Fatal("a replayed introduction was taken")
	}
	for i := range maxPunchMemory - 1 {
		if !p.use(punchKey{nonce: uint64(i + 2)}, 100, 0) {
			t.Fatalf("memory full after %d", i+1)
		}
	}
	if p.use(punchKey{nonce: 1 << 40}, 100, 50) {
		t.Fatal("the memory grew past its bound")
	}
	if !p.use(punchKey{nonce: 1 << 41}, 300, 200) || len(p.used) != 1 {
		t.Fatalf("expired entries were not forgotten: %d left", len(p.used))
	}
	var a, b protocol.NodeID
	b[0] = 1
	if !p.start(a, 1) || p.start(a, 2) || p.start(b, 1) {
		t.Fatal("punch slots: a second punch to one peer, or past the cap")
	}
	p.done(a)
	if !p.start(b, 1) {
		t.Fatal("a freed slot was not reused")
	}
}

// TestPunchBudget: a neighbour's punch messages pass up to the burst,
// then at the per-minute rate.
func TestPunchBudget(t *testing.T) {
	l := PunchLimits{Burst: 2, PerMinute: 60}
	var b punchBudget
	now := int64(1)
	if !b.take(now, &l) || !b.take(now, &l) || b.take(now, &l) {
		t.Fatal("burst")
	}
	if b.take(now+int64(500*time.Millisecond), &l) || !b.take(now+int64(time.Second), &l) {
		t.Fatal("rate: one a second")
	}
}
