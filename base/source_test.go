package base_test

// Admission tests: connection limits in total and per source address.
// Every 127.x.y.z address is loopback on Linux, so a connection dialled
// from 127.0.0.7 comes from another source than one from 127.0.0.1. Helpers
// are prefixed "sl".

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/internal/wirepeer"
	"github.com/meshsock/meshsock/protocol"
)

// slDialer returns a dial function whose connections come from ip.
func slDialer(ip string) base.DialFunc {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.DialContext
}

// slRaw is a hand-driven dialer that runs the handshake step by step.
type slRaw struct {
	t  *testing.T
	p  *wirepeer.Peer
	nc net.Conn // the TCP connection
	id protocol.NodeID
}

// slRawDial dials addr from ip and sends a Preamble; it does not read yet.
func slRawDial(t *testing.T, ip string, addr net.Addr) *slRaw {
	t.Helper()
	nc, err := slDialer(ip)(ftCtx(t), "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(ftWait))
	p := wirepeer.New(nc, true, nil, "")
	r := &slRaw{t: t, p: p, nc: nc, id: p.ID()}
	if err := p.SendPreamble(); err != nil {
		t.Fatal(err)
	}
	return r
}

// hello runs the handshake up to the verdicts: the listener's Preamble,
// TLS, the Hellos and the Auth frames.
func (r *slRaw) hello() {
	r.t.Helper()
	if _, err := r.p.ReadPreamble(); err != nil {
		r.t.Fatalf("the listener's first frame is not a Preamble: %v", err)
	}
	if err := r.p.Secure(); err != nil {
		r.t.Fatalf("tls: %v", err)
	}
	if err := r.p.SendHello(protocol.Hello{}); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.p.ReadHello(); err != nil {
		r.t.Fatalf("the listener's hello: %v", err)
	}
	if err := r.p.SendAuth(nil, nil); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.p.ReadAuth(); err != nil {
		r.t.Fatalf("the listener's auth frame: %v", err)
	}
}

// accept sends an accepting verdict.
func (r *slRaw) accept() {
	r.t.Helper()
	if err := r.p.SendVerdict(protocol.Verdict{Code: protocol.Accept}); err != nil {
		r.t.Fatal(err)
	}
}

// verdict reads the listener's verdict.
func (r *slRaw) verdict() protocol.Verdict {
	r.t.Helper()
	v, err := r.p.ReadVerdict()
	if err != nil {
		r.t.Fatalf("the listener's frame is not a verdict: %v", err)
	}
	return v
}

// slRefusedInStatus waits until s's status shows a problem matching want.
func slRefusedInStatus(t *testing.T, s *base.Socket, want error) {
	t.Helper()
	testnet.Eventually(t, ftWait, func() bool {
		for _, p := range s.Status().Problems {
			if errors.Is(p.Err, want) {
				return true
			}
		}
		return false
	}, "the refusing side's status shows an error matching %v: %v", want, s.Status())
}

// TestAdmissionRefusalCountedOnce: a handshake that passed the verdict's
// room check but finds the socket full when it is admitted (another peer
// registered in between) is refused with a connection-limit verdict and
// counted once in HandshakeFailures (it was counted twice).
func TestAdmissionRefusalCountedOnce(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxConns(1))
	raw := slRawDial(t, "127.0.0.1", l.Addr())
	raw.hello() // l judges the raw peer once it has its Auth frame: there is room
	a := testnet.NewBase(t, "")
	ftConnect(t, a, l)
	raw.accept() // now l admits the raw peer, and is full
	if v := raw.verdict(); v.Code != protocol.RejectLimit {
		t.Fatalf("verdict %+v, want a connection-limit refusal", v)
	}
	slRefusedInStatus(t, l, base.ErrConnLimit)
	if st := l.Stats(); st.HandshakeFailures != 1 || st.Connections != 1 {
		t.Errorf("%d handshake failures, %d connections; want 1 refusal, 1 connection", st.HandshakeFailures, st.Connections)
	}
}

// slIdle dials n raw connections to addr from ip that never send a byte,
// and reads the first frame the listener sends on each: it returns the
// connections that got a Preamble (their handshake holds a pending slot) and
// how many got a connection-limit verdict or were closed.
func slIdle(t *testing.T, ip string, addr net.Addr, n int) (held []net.Conn, refused, closed int) {
	t.Helper()
	for range n {
		nc, err := slDialer(ip)(ftCtx(t), "tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetReadDeadline(time.Now().Add(ftWait))
		_, body, err := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize).ReadFrame(nil)
		_ = nc.SetReadDeadline(time.Time{})
		switch {
		case ftIsTimeout(err):
			t.Fatalf("the listener sent nothing on idle connection %d", len(held)+refused+closed)
		case err != nil:
			closed++ // over the limit with too many refusals in flight: closed without a word
		case func() bool { _, err := protocol.UnmarshalPreamble(body); return err == nil }():
			held = append(held, nc)
		default:
			if v, err := protocol.UnmarshalVerdict(body); err != nil || v.Code != protocol.RejectLimit {
				t.Fatalf("first frame %x is neither a Preamble nor a connection-limit verdict", body)
			}
			refused++
		}
	}
	return held, refused, closed
}

// TestSourcePendingLimitIdleFlood (Hardening II, item 4): one source opens
// many idle TCP connections that never send a Preamble. Only
// WithMaxPendingPerSource of them hold a pending-handshake slot; the rest
// are refused at once and counted, so a peer from another source still
// joins within its handshake timeout. (Before, the idle connections took
// all 64 slots and the join was reset.)
func TestSourcePendingLimitIdleFlood(t *testing.T) {
	ftLeakCheck(t)
	const idle = 100
	// A long handshake timeout: no idle connection may give up its slot
	// while the test runs, however loaded the machine.
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithHandshakeTimeout(time.Minute))
	held, refused, closed := slIdle(t, "127.0.0.1", l.Addr(), idle)
	t.Logf("%d idle connections: %d hold a slot, %d refused with a verdict, %d closed", idle, len(held), refused, closed)
	if len(held) != base.DefaultMaxPendingPerSource {
		t.Errorf("%d idle connections from one source hold a pending slot, want %d", len(held), base.DefaultMaxPendingPerSource)
	}
	// Each refusal is counted before its verdict is sent or its
	// connection closed, which slIdle has seen.
	if got := l.Stats().SourcePendingRefusals; got != uint64(idle-len(held)) {
		t.Errorf("SourcePendingRefusals = %d, want %d", got, idle-len(held))
	}

	joiner := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.7")))
	ctx, cancel := context.WithTimeout(context.Background(), base.DefaultHandshakeTimeout)
	defer cancel()
	start := time.Now()
	c, err := joiner.Connect(ctx, l.Addr().String())
	if err != nil {
		t.Fatalf("a peer from another source could not join: %v", err)
	}
	t.Logf("joined after %v", time.Since(start).Round(time.Millisecond))
	ftExchange(t, c, l, "in despite the flood")
}

// TestSourcePendingLimitRefusal: a meshsock dialer whose source already
// has WithMaxPendingPerSource handshakes pending is refused at once with an
// error matching ErrConnLimit (not a timeout, not a reset); the listener
// counts it and its status shows an error matching ErrConnLimit. A dialer
// from another source is unaffected.
func TestSourcePendingLimitRefusal(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithMaxPendingPerSource(2),
		base.WithHandshakeTimeout(time.Minute))
	if held, _, _ := slIdle(t, "127.0.0.9", l.Addr(), 2); len(held) != 2 {
		t.Fatalf("%d of 2 idle connections hold a slot", len(held))
	}
	d := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.9")))
	_, err := d.Connect(ftCtx(t), l.Addr().String())
	if !errors.Is(err, base.ErrConnLimit) || errors.Is(err, base.ErrTimeout) || errors.Is(err, base.ErrNotMeshsock) {
		t.Fatalf("Connect from a source at its pending limit = %v; want ErrConnLimit at once", err)
	}
	slRefusedInStatus(t, l, base.ErrConnLimit)
	if st := l.Stats(); st.SourcePendingRefusals != 1 || st.HandshakeFailures != 1 {
		t.Errorf("listener: %d source pending refusals, %d handshake failures; want 1 and 1",
			st.SourcePendingRefusals, st.HandshakeFailures)
	}
	other := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.10")))
	ftConnect(t, other, l)
}

// TestPendingDisplacement: when every pending-handshake slot is held by
// idle connections of two sources (each within its own limit), a peer from
// a third source still joins: it displaces the oldest idle handshake of a
// source with more pending, whose dialer is told with a connection-limit
// verdict after its Preamble. (Before, the join was refused.)
func TestPendingDisplacement(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithHandshakeTimeout(time.Minute),
		base.WithMaxPendingHandshakes(4), base.WithMaxPendingPerSource(2))
	var held []net.Conn
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		h, _, _ := slIdle(t, ip, l.Addr(), 2)
		held = append(held, h...)
	}
	if len(held) != 4 {
		t.Fatalf("%d of 4 idle connections hold a slot", len(held))
	}
	// Each idle dialer waits for its next frame: only the displaced one
	// gets it.
	type next struct {
		i    int
		body []byte
		err  error
	}
	frames := make(chan next, len(held))
	for i, nc := range held {
		go func() {
			_, body, err := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize).ReadFrame(nil)
			frames <- next{i, body, err}
		}()
	}
	joiner := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.4")))
	c := ftConnect(t, joiner, l)
	ftExchange(t, c, l, "in")

	var got next
	select {
	case got = <-frames:
	case <-time.After(ftWait):
		t.Fatal("no idle connection was displaced")
	}
	if got.err != nil {
		t.Fatalf("displaced connection %d: %v; want a verdict", got.i, got.err)
	}
	if v, err := protocol.UnmarshalVerdict(got.body); err != nil || v.Code != protocol.RejectLimit {
		t.Fatalf("displaced connection %d got %x; want a connection-limit verdict", got.i, got.body)
	}
	st := l.Stats()
	if st.HandshakesDisplaced != 1 {
		t.Errorf("HandshakesDisplaced = %d, want 1", st.HandshakesDisplaced)
	}
	// The others are still waiting: end their readers.
	for i, nc := range held {
		if i != got.i {
			_ = nc.SetReadDeadline(time.Now())
		}
	}
	for range len(held) - 1 {
		if n := <-frames; !ftIsTimeout(n.err) {
			t.Errorf("idle connection %d got %x, %v; want nothing", n.i, n.body, n.err)
		}
	}
}

// slRawPeer runs a whole handshake by hand from ip and returns the raw
// peer and the listener's verdict.
func slRawPeer(t *testing.T, ip string, addr net.Addr) (*slRaw, protocol.Verdict) {
	t.Helper()
	r := slRawDial(t, ip, addr)
	r.hello()
	r.accept()
	return r, r.verdict()
}

// TestSourceConnLimitIdlePeers (Hardening II, item 4): one source's
// handshaken peers, which then send nothing, take at most
// WithMaxConnsPerSource slots; the rest are refused with a
// connection-limit verdict and counted, and peers from other sources fill
// the node. (Before, the idle peers took every slot and the others were
// refused.)
func TestSourceConnLimitIdlePeers(t *testing.T) {
	ftLeakCheck(t)
	const maxConns = 8 // a quarter per source by default: 2
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithMaxConns(maxConns))
	accepted := 0
	for i := range maxConns {
		r, v := slRawPeer(t, "127.0.0.1", l.Addr())
		switch v.Code {
		case protocol.Accept:
			accepted++
			testnet.Eventually(t, ftWait, func() bool { _, ok := l.Conn(r.id); return ok }, "raw peer %d registered", i)
		case protocol.RejectLimit:
		default:
			t.Fatalf("raw peer %d: verdict %+v", i, v)
		}
	}
	if accepted != maxConns/4 {
		t.Errorf("one source holds %d connections, want %d", accepted, maxConns/4)
	}
	if st := l.Stats(); st.SourceConnRefusals != uint64(maxConns-accepted) {
		t.Errorf("SourceConnRefusals = %d, want %d", st.SourceConnRefusals, maxConns-accepted)
	}
	// Peers from other sources take the remaining slots.
	for i := range maxConns - accepted {
		ip := net.IPv4(127, 0, 1, byte(i+1)).String()
		d := testnet.NewBase(t, "", base.WithDialer(slDialer(ip)))
		ftExchange(t, ftConnect(t, d, l), l, "from "+ip)
	}
	if st := l.Stats(); st.Connections != maxConns || st.ConnsDisplaced != 0 {
		t.Errorf("%d connections, %d displaced; want %d, 0", st.Connections, st.ConnsDisplaced, maxConns)
	}
}

// TestSourceConnLimitRefusal: a meshsock dialer whose source has
// WithMaxConnsPerSource connections is refused with an error matching
// ErrConnLimit; the listener counts it, and its status shows an error
// matching ErrConnLimit.
func TestSourceConnLimitRefusal(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithMaxConnsPerSource(1))
	first := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.5")))
	ftConnect(t, first, l)
	second := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.5")))
	_, err := second.Connect(ftCtx(t), l.Addr().String())
	if !errors.Is(err, base.ErrConnLimit) || errors.Is(err, base.ErrTimeout) || errors.Is(err, base.ErrNotMeshsock) {
		t.Fatalf("Connect from a source at its limit = %v; want ErrConnLimit", err)
	}
	slRefusedInStatus(t, l, base.ErrConnLimit)
	if st := l.Stats(); st.SourceConnRefusals != 1 || st.HandshakeFailures != 1 || st.Connections != 1 {
		t.Errorf("listener: %d source refusals, %d handshake failures, %d connections; want 1, 1, 1",
			st.SourceConnRefusals, st.HandshakeFailures, st.Connections)
	}
	// The limit is the source's: loopback's other addresses get in.
	ftConnect(t, testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.6"))), l)
}

// TestConnDisplacement: when one source's idle peers hold every slot, a
// peer from another source displaces the newest of them and gets in; the
// displaced peer's link is closed and counted. A newcomer from the source
// with the most is refused (ErrConnLimit), and displacement stops once the
// sources are within one of each other, so it cannot go back and forth.
func TestConnDisplacement(t *testing.T) {
	ftLeakCheck(t)
	const maxConns = 4
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false),
		base.WithMaxConns(maxConns), base.WithMaxConnsPerSource(maxConns))
	var raws []*slRaw
	for i := range maxConns {
		r, v := slRawPeer(t, "127.0.0.1", l.Addr())
		if v.Code != protocol.Accept {
			t.Fatalf("raw peer %d refused: %+v", i, v)
		}
		testnet.Eventually(t, ftWait, func() bool { _, ok := l.Conn(r.id); return ok }, "raw peer %d registered", i)
		raws = append(raws, r)
	}
	downs := ftDisconnects(t, l)

	// A newcomer from 127.0.0.2 displaces the newest idle peer.
	b1 := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.2")))
	ftExchange(t, ftConnect(t, b1, l), l, "displacing")
	// The displaced peer reads the listener's end of the link (a Bye, then
	// the end of the stream) and closes its own, as a meshsock peer would.
	ftExpectClosed(t, raws[maxConns-1].nc, ftWait)
	_ = raws[maxConns-1].nc.Close()
	e := ftNextEvent(t, downs)
	if e.Peer.ID != raws[maxConns-1].id {
		t.Fatalf("displaced %s, want the newest peer %s", e.Peer.ID.Short(), raws[maxConns-1].id.Short())
	}
	if !errors.Is(e.Err, base.ErrConnLimit) || !errors.Is(e.Err, base.ErrClosed) {
		t.Errorf("displaced connection closed with %v; want ErrClosed and ErrConnLimit", e.Err)
	}
	slRefusedInStatus(t, l, base.ErrConnLimit)
	if st := l.Stats(); st.ConnsDisplaced != 1 || st.Connections != maxConns {
		t.Errorf("%d displaced, %d connections; want 1, %d", st.ConnsDisplaced, st.Connections, maxConns)
	}

	// The source with the most (3) may not displace its own.
	if _, v := slRawPeer(t, "127.0.0.1", l.Addr()); v.Code != protocol.RejectLimit {
		t.Errorf("a newcomer from the most represented source got %+v; want a connection-limit refusal", v)
	}
	// A third source displaces again (3 > 0+1): the sources hold 2, 1, 1.
	c1 := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.3")))
	ftConnect(t, c1, l)
	ftExpectClosed(t, raws[maxConns-2].nc, ftWait)
	_ = raws[maxConns-2].nc.Close()
	if e := ftNextEvent(t, downs); e.Peer.ID != raws[maxConns-2].id {
		t.Fatalf("displaced %s, want %s", e.Peer.ID.Short(), raws[maxConns-2].id.Short())
	}
	// Now 127.0.0.2's second peer may not displace (2 > 1+1 is false).
	b2 := testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.2")))
	if _, err := b2.Connect(ftCtx(t), l.Addr().String()); !errors.Is(err, base.ErrConnLimit) {
		t.Fatalf("Connect with the sources within one of each other = %v; want ErrConnLimit", err)
	}
	if st := l.Stats(); st.ConnsDisplaced != 2 || st.Connections != maxConns {
		t.Errorf("%d displaced, %d connections; want 2, %d", st.ConnsDisplaced, st.Connections, maxConns)
	}
	for _, r := range raws[:maxConns-2] {
		if _, ok := l.Conn(r.id); !ok {
			t.Errorf("older peer %s was dropped", r.id.Short())
		}
	}
}
