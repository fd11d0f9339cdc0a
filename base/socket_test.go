package base

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/protocol"
)

// ---- helpers (prefixed "st" so they cannot clash with other test files) ----

// stTimeout bounds every wait in these tests; nothing here should come close.
const stTimeout = 10 * time.Second

func stLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// stNewAt creates a socket on addr with a silent logger and closes it when
// the test ends.
func stNewAt(t testing.TB, addr string, opts ...Option) *Socket {
	t.Helper()
	s, err := NewSocket(addr, append([]Option{WithLogger(stLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("NewSocket(%q): %v", addr, err)
	}
	t.Cleanup(func() { stClose(t, s) })
	return s
}

// stNewLayered creates a socket with a routing layer's hooks on a free
// loopback port, closed when the test ends.
func stNewLayered(t testing.TB, l Layer, opts ...Option) *Socket {
	t.Helper()
	s, err := NewLayered("127.0.0.1:0", l, append([]Option{WithLogger(stLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("NewLayered: %v", err)
	}
	t.Cleanup(func() { stClose(t, s) })
	return s
}

// stNew creates a socket listening on a free loopback port.
func stNew(t testing.TB, opts ...Option) *Socket {
	t.Helper()
	return stNewAt(t, "127.0.0.1:0", opts...)
}

func stClose(t testing.TB, s *Socket) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stTimeout)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func stCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), stTimeout)
	t.Cleanup(cancel)
	return ctx
}

// stWait polls cond until it holds, failing the test after stTimeout.
func stWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(stTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// stConnect dials b from a and waits until b has registered its end too.
func stConnect(t testing.TB, a, b *Socket) (ab, ba *Conn) {
	t.Helper()
	ab, err := a.Connect(stCtx(t), b.Addr().String())
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	stWait(t, "the accepting side to register the connection", func() bool {
		var ok bool
		ba, ok = b.Conn(a.ID())
		return ok
	})
	return ab, ba
}

func stRecv(t testing.TB, s *Socket) *Message {
	t.Helper()
	m, err := s.Recv(stCtx(t))
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return m
}

// stBlocker is a handler that blocks the dispatcher worker it runs on at
// the first message until released.
type stBlocker struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
	relOnce sync.Once
}

func newStBlocker(t testing.TB) *stBlocker {
	b := &stBlocker{started: make(chan struct{}), release: make(chan struct{})}
	// Registered after the sockets' cleanups, so it runs before them: a
	// handler still blocked would keep Close waiting for its worker.
	t.Cleanup(b.Release)
	return b
}

// Handle claims the first message (the one it blocked on) only.
func (b *stBlocker) Handle(*Message) bool {
	first := false
	b.once.Do(func() {
		first = true
		close(b.started)
		<-b.release
	})
	return first
}

func (b *stBlocker) Release() { b.relOnce.Do(func() { close(b.release) }) }

func stPacket(m *Message) string {
	if len(m.Packets) == 0 {
		return ""
	}
	return string(m.Packets[0])
}

// ---- connect and handshake ----

func TestConnectPeerInfo(t *testing.T) {
	metaA := map[string]string{"name": "alpha"}
	metaB := map[string]string{"name": "bravo", "role": "relay"}
	a := stNew(t, WithMetadata(metaA))
	b := stNew(t, WithMetadata(metaB))
	ab, ba := stConnect(t, a, b)

	pa := ab.Peer()
	if pa.ID != b.ID() || ab.ID() != b.ID() {
		t.Errorf("a's peer ID = %v, want %v", pa.ID, b.ID())
	}
	if !pa.Outbound {
		t.Error("a's end: Outbound = false, want true")
	}
	if !mapsEqual(pa.Meta, metaB) {
		t.Errorf("a's peer Meta = %v, want %v", pa.Meta, metaB)
	}
	if pa.Addr != b.Addr().String() {
		t.Errorf("a's peer Addr = %q, want %q", pa.Addr, b.Addr())
	}
	if pa.RemoteAddr != b.Addr().String() {
		t.Errorf("a's peer RemoteAddr = %q, want %q", pa.RemoteAddr, b.Addr())
	}
	if !slices.Equal(pa.Accept, b.compressionList()) {
		t.Errorf("a's peer Accept = %v, want %v", pa.Accept, b.compressionList())
	}
	if pa.Since.IsZero() {
		t.Error("a's peer Since is zero")
	}

	pb := ba.Peer()
	if pb.ID != a.ID() {
		t.Errorf("b's peer ID = %v, want %v", pb.ID, a.ID())
	}
	if pb.Outbound {
		t.Error("b's end: Outbound = true, want false")
	}
	if !mapsEqual(pb.Meta, metaA) {
		t.Errorf("b's peer Meta = %v, want %v", pb.Meta, metaA)
	}
	if pb.Addr != a.AdvertisedAddr() || pb.Addr != a.Addr().String() {
		t.Errorf("b's peer Addr = %q, want %q", pb.Addr, a.Addr())
	}
	if pb.RemoteAddr != ab.nc.LocalAddr().String() {
		t.Errorf("b's peer RemoteAddr = %q, want a's local end %q", pb.RemoteAddr, ab.nc.LocalAddr())
	}

	peers := a.Peers()
	if len(peers) != 1 || peers[0].ID != b.ID() {
		t.Errorf("a.Peers() = %+v, want just %v", peers, b.ID())
	}
	if c, ok := a.Conn(b.ID()); !ok || c != ab {
		t.Errorf("a.Conn(b) = %p, %v; want %p, true", c, ok, ab)
	}
	if _, ok := a.Conn(protocol.NewNodeID()); ok {
		t.Error("a.Conn(unknown node) reported a connection")
	}
}

func mapsEqual(x, y map[string]string) bool {
	if len(x) != len(y) {
		return false
	}
	for k, v := range x {
		if w, ok := y[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestConnectResolvesUnspecifiedAdvertisedAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	b := stNewAt(t, "", WithListener(ln), WithAdvertiseAddr("0.0.0.0:"+port))
	if got := b.AdvertisedAddr(); got != "0.0.0.0:"+port {
		t.Fatalf("AdvertisedAddr = %q", got)
	}
	if b.Addr().String() != ln.Addr().String() {
		t.Fatalf("Addr = %v, want the listener's %v", b.Addr(), ln.Addr())
	}
	a := stNew(t)
	ab, err := a.Connect(stCtx(t), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1:" + port; ab.Peer().Addr != want {
		t.Errorf("advertised 0.0.0.0:%s resolved to %q, want %q", port, ab.Peer().Addr, want)
	}
}

func TestResolveAdvertised(t *testing.T) {
	v4 := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 40000}
	v6 := &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 40000}
	tests := []struct {
		adv    string
		remote net.Addr
		want   string
	}{
		{"0.0.0.0:9000", v4, "10.1.2.3:9000"},
		{"[::]:9000", v4, "10.1.2.3:9000"},
		{":9000", v4, "10.1.2.3:9000"},
		{"0.0.0.0:9000", v6, "[fe80::1]:9000"},
		{"192.168.1.5:9000", v4, "192.168.1.5:9000"},
		{"example.org:9000", v4, "example.org:9000"},
		{"", v4, ""},
		{"no-port", v4, "no-port"},
		{"0.0.0.0:9000", &net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "0.0.0.0:9000"},
	}
	for _, tt := range tests {
		if got := resolveAdvertised(tt.adv, tt.remote); got != tt.want {
			t.Errorf("resolveAdvertised(%q, %v) = %q, want %q", tt.adv, tt.remote, got, tt.want)
		}
	}
}

func TestConnectTwiceReturnsSameConn(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ctx := stCtx(t)
	c1, err := a.Connect(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := a.Connect(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 {
		t.Fatalf("second Connect returned a new connection %p, want %p", c2, c1)
	}
	// b dialling a back dials: a's advertised address is a's claim, which
	// only a dial can check (TestConnectAddrNotTakenFromClaim). The node
	// that answers is a, already connected: both ends keep one connection,
	// which Connect returns, and a second Connect returns it at once.
	stWait(t, "b to register a", func() bool { _, ok := b.Conn(a.ID()); return ok })
	c3, err := b.Connect(ctx, a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if c3.ID() != a.ID() {
		t.Fatalf("b.Connect(a) returned a connection to %s, want a", c3.ID().Short())
	}
	_, kept := stSettledPair(t, a, b)
	if c3 != kept {
		t.Errorf("b.Connect(a) returned a connection b does not keep")
	}
	c4, err := b.Connect(ctx, a.Addr().String())
	if err != nil || c4 != c3 {
		t.Errorf("third Connect = %p, %v; want the kept connection %p", c4, err, c3)
	}
	if st := b.Stats(); st.Connections != 1 || st.HandshakeFailures != 0 {
		t.Errorf("b: Connections = %d, HandshakeFailures = %d; want 1 and 0", st.Connections, st.HandshakeFailures)
	}
}

// stSettledPair waits until every handshake has finished on both sockets,
// then until each holds exactly one connection, live, to the other, and the
// two are the ends of one TCP connection. Once no handshake is pending the
// only changes left are losing connections closing, so this state is final.
func stSettledPair(t testing.TB, a, b *Socket) (ca, cb *Conn) {
	t.Helper()
	single := func(s *Socket, peer protocol.NodeID) *Conn {
		s.mu.Lock()
		defer s.mu.Unlock()
		cur, ok := s.conns[peer]
		if !ok || cur.Err() != nil || len(s.conns) != 1 || len(s.all) != 1 {
			return nil
		}
		if _, inAll := s.all[cur]; !inAll {
			return nil
		}
		return cur
	}
	var last string
	deadline := time.Now().Add(stTimeout)
	for {
		if a.pend.count() == 0 && b.pend.count() == 0 {
			ca, cb = single(a, b.ID()), single(b, a.ID())
			if ca != nil && cb != nil {
				if ca.nc.LocalAddr().String() == cb.nc.RemoteAddr().String() &&
					ca.nc.RemoteAddr().String() == cb.nc.LocalAddr().String() {
					return ca, cb
				}
				last = fmt.Sprintf("the two sides kept different connections: %v->%v and %v->%v",
					ca.nc.LocalAddr(), ca.nc.RemoteAddr(), cb.nc.LocalAddr(), cb.nc.RemoteAddr())
			} else {
				last = fmt.Sprintf("a has %d connections (%d live), b has %d (%d live)",
					len(a.allConns()), a.Stats().Connections, len(b.allConns()), b.Stats().Connections)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections never settled: %s", last)
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *Socket) allConns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Conn
	for c := range s.all {
		out = append(out, c)
	}
	return out
}

// stCheckLosers checks that every connection handed out other than the
// kept pair is closed.
func stCheckLosers(t testing.TB, ca, cb *Conn, returned ...*Conn) {
	t.Helper()
	for _, r := range returned {
		if r != ca && r != cb && r.Err() == nil {
			t.Errorf("losing connection %v->%v is still open", r.nc.LocalAddr(), r.nc.RemoteAddr())
		}
	}
}

// stHookLog checks a connection hook's history: per peer, ups and downs
// alternate, starting with an up.
type stHookLog struct {
	mu     sync.Mutex
	up     map[protocol.NodeID]*Conn
	errors []string
}

func (h *stHookLog) hook(c *Conn, up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.up == nil {
		h.up = make(map[protocol.NodeID]*Conn)
	}
	cur := h.up[c.ID()]
	switch {
	case up && cur != nil:
		h.errors = append(h.errors, "up while another connection to the peer is up")
	case !up && cur != c:
		h.errors = append(h.errors, "down for a connection that is not up")
	}
	if up {
		h.up[c.ID()] = c
	} else {
		delete(h.up, c.ID())
	}
}

// check waits until only want is up (a loser's down may come just after
// it left the registry), then reports any disorder seen on the way.
func (h *stHookLog) check(t testing.TB, want *Conn) {
	t.Helper()
	stWait(t, "the hook to show only the kept connection up", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.errors) > 0 || len(h.up) == 1 && h.up[want.ID()] == want
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errors {
		t.Error("connection hook:", e)
	}
}

func TestSimultaneousDial(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var hookA, hookB stHookLog
			a, b := stNewLayered(t, Layer{ConnHook: hookA.hook}), stNewLayered(t, Layer{ConnHook: hookB.hook})
			eventsA, _ := stEvents(t, a)
			eventsB, _ := stEvents(t, b)
			ctx := stCtx(t)
			start := make(chan struct{})
			var wg sync.WaitGroup
			var ab, ba *Conn
			var errA, errB error
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				ab, errA = a.Connect(ctx, b.Addr().String())
			}()
			go func() {
				defer wg.Done()
				<-start
				ba, errB = b.Connect(ctx, a.Addr().String())
			}()
			close(start)
			wg.Wait()
			if errA != nil || errB != nil {
				t.Fatalf("Connect errors: a->b %v, b->a %v", errA, errB)
			}
			ca, cb := stSettledPair(t, a, b)
			stCheckLosers(t, ca, cb, ab, ba)
			// Every connection announced as up was announced as down
			// once it lost, in the hook and in the counters.
			hookA.check(t, ca)
			hookB.check(t, cb)
			for _, s := range []*Socket{a, b} {
				stWait(t, "Connects - Disconnects to equal Connections", func() bool {
					st := s.Stats()
					return st.Connections == 1 && st.Connects == st.Disconnects+1
				})
			}
			// When both dials went through (Connect found no connection to
			// reuse, so the two calls returned ends of different TCP
			// connections), both ends keep the one dialled by the smaller ID.
			if ab.nc.LocalAddr().String() != ba.nc.RemoteAddr().String() {
				dialer := b.ID()
				if ca.Peer().Outbound {
					dialer = a.ID()
				}
				if aSmaller := a.ID().Compare(b.ID()) < 0; aSmaller != (dialer == a.ID()) {
					t.Errorf("kept the connection dialled by %v; want the smaller ID's", dialer.Short())
				}
			}
			if ca.Peer().Outbound == cb.Peer().Outbound {
				t.Error("both ends claim the same direction")
			}
			// Neither peer ever went away: a subscriber sees one connect
			// more than disconnects, and every disconnect says that a
			// newer connection replaced the one that ended, or that the
			// peer closed it as a duplicate (see Event.Replaced).
			for _, ev := range []struct {
				name string
				ch   <-chan Event
				s    *Socket
			}{{"a", eventsA, a}, {"b", eventsB, b}} {
				want := int(ev.s.Stats().Connects)
				var connects, disconnects int
				for connects+disconnects < want+int(ev.s.Stats().Disconnects) {
					switch e := stNextEvent(t, ev.ch); e.Kind {
					case EventConnect:
						connects++
					case EventDisconnect:
						disconnects++
						if !e.Replaced && !errors.Is(e.Err, ErrDuplicate) {
							t.Errorf("%s: a disconnect while the peer stayed linked does not say it was replaced (err %v)", ev.name, e.Err)
						}
						if !errors.Is(e.Err, ErrDuplicate) || !errors.Is(e.Err, ErrClosed) {
							t.Errorf("%s: a duplicate's disconnect does not match ErrDuplicate and ErrClosed (err %v)", ev.name, e.Err)
						}
					}
				}
				if connects != disconnects+1 {
					t.Errorf("%s: %d connects, %d disconnects", ev.name, connects, disconnects)
				}
			}
		})
	}
}

// Two concurrent Connect calls to the same address must not leave the pair
// without a connection (each side keeping a different one, then closing
// the one the other kept).
func TestConcurrentConnectSameAddress(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			a, b := stNew(t), stNew(t)
			ctx := stCtx(t)
			start := make(chan struct{})
			var wg sync.WaitGroup
			var got [2]*Conn
			var errs [2]error
			for k := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got[k], errs[k] = a.Connect(ctx, b.Addr().String())
				}()
			}
			close(start)
			wg.Wait()
			for k := range 2 {
				if errs[k] != nil {
					t.Fatalf("Connect %d: %v", k, errs[k])
				}
			}
			ca, cb := stSettledPair(t, a, b)
			stCheckLosers(t, ca, cb, got[0], got[1])
		})
	}
}

func TestConnectErrors(t *testing.T) {
	a, b := stNew(t), stNew(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Connect(ctx, b.Addr().String()); !errors.Is(err, ErrTimeout) {
		t.Errorf("Connect with a cancelled context: %v, want ErrTimeout", err)
	}
	if _, err := a.Connect(stCtx(t), a.Addr().String()); !errors.Is(err, ErrSelfConnect) {
		t.Errorf("Connect to self: %v, want ErrSelfConnect", err)
	}
	if st := a.Stats(); st.Connections != 0 || st.Connects != 0 {
		t.Errorf("failed connects left Connections = %d, Connects = %d", st.Connections, st.Connects)
	}

	c := stNew(t)
	stClose(t, c)
	if _, err := c.Connect(stCtx(t), b.Addr().String()); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect on a closed socket: %v, want ErrClosed", err)
	}
}

// ---- status ----

func TestStatusHealthyAndProblems(t *testing.T) {
	a, b := stNew(t), stNew(t)
	stConnect(t, a, b)
	for _, s := range []*Socket{a, b} {
		st := s.Status()
		if !st.Healthy || len(st.Problems) != 0 || st.Connections != 1 {
			t.Errorf("fresh pair: Status = %+v, want healthy with 1 connection", st)
		}
		if got := st.String(); got != "ok: 1 connections" {
			t.Errorf("fresh pair: Status.String() = %q", got)
		}
	}

	other := stNew(t, WithProtocol(protocol.Protocol{Subnet: "elsewhere", Encryption: protocol.EncryptionTLS}))
	_, err := a.Connect(stCtx(t), other.Addr().String())
	if !errors.Is(err, ErrProtocolMismatch) {
		t.Fatalf("Connect across protocols: %v, want ErrProtocolMismatch", err)
	}
	st := a.Status()
	if st.Healthy || len(st.Problems) == 0 {
		t.Fatalf("after a failed handshake: Status = %+v, want unhealthy", st)
	}
	p := st.Problems[len(st.Problems)-1]
	if !strings.Contains(p.What, "handshake") || !errors.Is(p.Err, ErrProtocolMismatch) || p.Count != 1 {
		t.Errorf("problem = %+v, want a handshake failure with ErrProtocolMismatch", p)
	}
	if s := st.String(); !strings.Contains(s, "handshake with "+other.Addr().String()+" failed") ||
		!strings.Contains(s, "protocol mismatch") || !strings.Contains(s, "1 connections") {
		t.Errorf("Status.String() = %q, want it to name the failed handshake", s)
	}
	if st := a.Stats(); st.HandshakeFailures != 1 || st.ProtocolMismatches != 1 {
		t.Errorf("a: HandshakeFailures = %d, ProtocolMismatches = %d; want 1, 1", st.HandshakeFailures, st.ProtocolMismatches)
	}
	stWait(t, "the other side to count the mismatch", func() bool {
		st := other.Stats()
		return st.ProtocolMismatches == 1 && !other.Status().Healthy
	})

	// The same problem again is counted, not repeated.
	_, _ = a.Connect(stCtx(t), other.Addr().String())
	st = a.Status()
	if n := len(st.Problems); n != 1 || st.Problems[0].Count != 2 {
		t.Errorf("repeated problem: %d problems, last %+v; want one with Count 2", n, st.Problems[n-1])
	}
	if !strings.Contains(st.String(), "(x2)") {
		t.Errorf("Status.String() = %q, want the repeat count", st.String())
	}
}

// ---- handler chain ----

func TestHandlerChain(t *testing.T) {
	var mu sync.Mutex
	calls := map[string][]string{}
	record := func(name string) Handler {
		return HandlerFunc(func(m *Message) bool {
			mu.Lock()
			defer mu.Unlock()
			calls[stPacket(m)] = append(calls[stPacket(m)], name)
			return stPacket(m) == "claim-"+name
		})
	}
	b1, b2 := record("b1"), record("b2")
	b := stNewLayered(t, Layer{Handle: func(m *Message) bool { return b1.Handle(m) || b2.Handle(m) }})
	// User handlers are registered after construction but must still come
	// after the layer's.
	b.RegisterHandler(record("u1"))
	b.RegisterHandler(nil) // ignored
	b.RegisterHandler(record("u2"))
	b.RegisterHandler(record("u3"))
	a := stNew(t)
	ab, _ := stConnect(t, a, b)

	ctx := stCtx(t)
	for _, p := range []string{"pass", "claim-b1", "claim-u2", "claim-u3", "pass2"} {
		if err := ab.Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	// Handlers run in arrival order on one reader: once "pass2" reached
	// Recv, every earlier message went through the chain.
	if m := stRecv(t, b); stPacket(m) != "pass" {
		t.Fatalf("first unclaimed message = %q, want pass", stPacket(m))
	}
	if m := stRecv(t, b); stPacket(m) != "pass2" {
		t.Fatalf("second unclaimed message = %q, want pass2 (claimed ones must not reach Recv)", stPacket(m))
	}
	if m, ok := b.TryRecv(); ok {
		t.Fatalf("unexpected message in Recv: %q", stPacket(m))
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]string{
		"pass":     {"b1", "b2", "u1", "u2", "u3"},
		"claim-b1": {"b1"},
		"claim-u2": {"b1", "b2", "u1", "u2"},
		"claim-u3": {"b1", "b2", "u1", "u2", "u3"},
		"pass2":    {"b1", "b2", "u1", "u2", "u3"},
	}
	for p, w := range want {
		if !slices.Equal(calls[p], w) {
			t.Errorf("message %q ran handlers %v, want %v", p, calls[p], w)
		}
	}
	// Delivered is counted just after the message is queued.
	stWait(t, "Delivered to reach 2", func() bool { return b.Stats().Delivered == 2 })
}

func TestHandlerFunc(t *testing.T) {
	var got *Message
	h := HandlerFunc(func(m *Message) bool { got = m; return true })
	m := &Message{Seq: 7}
	if !h.Handle(m) || got != m {
		t.Fatal("HandlerFunc.Handle did not call the function with the message")
	}
	var _ Handler = h
}

func TestHandlerPanicIsContained(t *testing.T) {
	b := stNew(t)
	b.RegisterHandler(HandlerFunc(func(m *Message) bool {
		if stPacket(m) == "boom" {
			panic("handler exploded")
		}
		return false
	}))
	a := stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	_ = ab.Send(ctx, []byte("boom"))
	_ = ab.Send(ctx, []byte("after"))
	if m := stRecv(t, b); stPacket(m) != "after" {
		t.Fatalf("got %q, want the message after the panic", stPacket(m))
	}
	if st := b.Stats(); st.HandlerPanics != 1 || st.Connections != 1 {
		t.Errorf("HandlerPanics = %d, Connections = %d; want 1, 1", st.HandlerPanics, st.Connections)
	}
	if st := b.Status(); st.Healthy || !strings.Contains(st.String(), "handler exploded") {
		t.Errorf("Status after a panic = %q", st.String())
	}
}

// ---- receive queue ----

func TestRecvFIFO(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	const n = 200
	for i := range n {
		if err := ab.Send(ctx, fmt.Appendf(nil, "m%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		m := stRecv(t, b)
		if want := fmt.Sprintf("m%03d", i); stPacket(m) != want {
			t.Fatalf("message %d = %q, want %q", i, stPacket(m), want)
		}
		if m.Sender != a.ID() || m.Type != flags.Whisper || m.Flag != flags.Whisper || m.Hops != 1 {
			t.Fatalf("message %d: Sender %v Type %v Flag %v Hops %d", i, m.Sender, m.Type, m.Flag, m.Hops)
		}
		if i > 0 && m.Seq == 0 {
			t.Fatalf("message %d has no sequence number", i)
		}
	}
}

func TestRecvTimeoutAndClose(t *testing.T) {
	s := stNew(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.Recv(ctx)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Recv with an expiring context: %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
	if _, err := s.RecvBatch(ctx, 3); !errors.Is(err, ErrTimeout) {
		t.Errorf("RecvBatch with an expired context: %v, want ErrTimeout", err)
	}

	// A Recv waiting when the socket closes returns ErrClosed.
	done := make(chan error, 1)
	go func() {
		_, err := s.Recv(context.Background())
		done <- err
	}()
	stClose(t, s)
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Recv interrupted by Close: %v, want ErrClosed", err)
		}
	case <-time.After(stTimeout):
		t.Fatal("Recv did not return after Close")
	}
	if _, err := s.Recv(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close: %v, want ErrClosed", err)
	}
}

func TestTryRecvAndRecvBatch(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	if m, ok := b.TryRecv(); ok || m != nil {
		t.Fatalf("TryRecv on an empty queue = %v, %v", m, ok)
	}
	for _, n := range []int{0, -1} {
		if _, err := b.RecvBatch(stCtx(t), n); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("RecvBatch(%d): %v, want ErrInvalidOption", n, err)
		}
	}
	ctx := stCtx(t)
	for i := range 6 {
		if err := ab.Send(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stWait(t, "6 deliveries", func() bool { return b.Stats().Delivered == 6 })
	m, ok := b.TryRecv()
	if !ok || stPacket(m) != "0" {
		t.Fatalf("TryRecv = %v, %v; want message 0", m, ok)
	}
	batch, err := b.RecvBatch(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := stPackets(batch); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Errorf("RecvBatch(3) = %v, want [1 2 3]", got)
	}
	batch, err = b.RecvBatch(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := stPackets(batch); !slices.Equal(got, []string{"4", "5"}) {
		t.Errorf("RecvBatch(10) = %v, want [4 5]", got)
	}
	if _, ok := b.TryRecv(); ok {
		t.Error("TryRecv found a message after draining")
	}
}

func stPackets(ms []*Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = stPacket(m)
	}
	return out
}

func TestRecvQueueBound(t *testing.T) {
	a := stNew(t)
	b := stNew(t, WithRecvQueue(4))
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	for i := range 10 {
		if err := ab.Send(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stWait(t, "all 10 frames read and dispatched", func() bool {
		st := b.Stats()
		return st.FramesIn >= 10 && st.Delivered+st.RecvDrops >= 10
	})
	st := b.Stats()
	if st.FramesIn != 10 || st.Delivered != 4 || st.RecvDrops != 6 {
		t.Errorf("FramesIn = %d, Delivered = %d, RecvDrops = %d; want 10, 4, 6", st.FramesIn, st.Delivered, st.RecvDrops)
	}
	var got []string
	for {
		m, ok := b.TryRecv()
		if !ok {
			break
		}
		got = append(got, stPacket(m))
	}
	if !slices.Equal(got, []string{"0", "1", "2", "3"}) {
		t.Errorf("queued messages = %v, want the first four", got)
	}
	if st := b.Status(); st.Healthy || !strings.Contains(st.String(), "receive queue full") {
		t.Errorf("Status = %q, want the receive-queue drops mentioned", st.String())
	}
	if b.Stats().Connections != 1 {
		t.Error("receive-queue drops closed the connection")
	}
}

// ---- send queue (unit) ----

func stItem(n int) outItem { return outItem{env: make([]byte, n)} }

func TestSendQueueBounds(t *testing.T) {
	ctx := context.Background()
	q := newSendQueue(3, 1000, 2)
	for i := range 3 {
		if err := q.push(ctx, stItem(10), false, nil); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if err := q.push(ctx, stItem(10), false, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push into a full queue: %v, want ErrQueueFull", err)
	}
	select {
	case <-q.notify:
	default:
		t.Error("push did not wake the writer")
	}
	// The control lane is separate and has its own bound.
	if !q.pushControl(outItem{kind: kindBye}) || !q.pushControl(stItem(1)) {
		t.Fatal("pushControl refused while only the data lane is full")
	}
	if q.pushControl(stItem(1)) {
		t.Error("pushControl accepted beyond the control bound")
	}
	if d, c := q.lens(); d != 3 || c != 2 {
		t.Errorf("lens = %d, %d; want 3, 2", d, c)
	}
	ctrl, data := q.take(nil, nil)
	if len(ctrl) != 2 || ctrl[0].kind != kindBye || len(data) != 3 {
		t.Fatalf("take = %d control (first %v), %d data; want 2 (bye first), 3", len(ctrl), ctrl[0].kind, len(data))
	}
	if d, c := q.lens(); d != 0 || c != 0 {
		t.Errorf("after take: lens = %d, %d", d, c)
	}
	// take hands back the slices it was given, emptied, for reuse.
	ctrl2, data2 := q.take(ctrl[:0], data[:0])
	if len(ctrl2) != 0 || len(data2) != 0 {
		t.Errorf("take on an empty queue returned %d, %d items", len(ctrl2), len(data2))
	}
	if err := q.push(ctx, stItem(10), false, nil); err != nil {
		t.Errorf("push after take: %v", err)
	}
}

func TestSendQueueByteBound(t *testing.T) {
	ctx := context.Background()
	q := newSendQueue(100, 50, 1)
	if err := q.push(ctx, stItem(30), false, nil); err != nil { // 31 bytes with the hop byte
		t.Fatal(err)
	}
	if err := q.push(ctx, stItem(30), false, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push beyond the byte bound: %v, want ErrQueueFull", err)
	}
	if err := q.push(ctx, stItem(18), false, nil); err != nil { // 31+19 = 50: fits exactly
		t.Fatalf("push up to the byte bound: %v", err)
	}
	q.take(nil, nil)
	// An item larger than the whole bound may enter an empty queue...
	if err := q.push(ctx, stItem(500), false, nil); err != nil {
		t.Fatalf("oversize item into an empty queue: %v", err)
	}
	// ...but nothing may join it.
	if err := q.push(ctx, stItem(1), false, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push after an oversize item: %v, want ErrQueueFull", err)
	}
	q.take(nil, nil)
	if err := q.push(ctx, stItem(1), false, nil); err != nil {
		t.Fatalf("push after take: %v", err)
	}
}

func TestSendQueueClose(t *testing.T) {
	ctx := context.Background()
	q := newSendQueue(4, 1000, 4)
	_ = q.push(ctx, stItem(1), false, nil)
	q.pushControl(stItem(2))
	q.close()
	if err := q.push(ctx, stItem(1), false, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("push after close: %v, want ErrClosed", err)
	}
	if err := q.push(ctx, stItem(1), true, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("blocking push after close: %v, want ErrClosed", err)
	}
	if q.pushControl(stItem(1)) {
		t.Error("pushControl after close succeeded")
	}
	// What was queued before close stays for the final flush.
	ctrl, data := q.take(nil, nil)
	if len(ctrl) != 1 || len(data) != 1 {
		t.Errorf("take after close = %d control, %d data; want 1, 1", len(ctrl), len(data))
	}
}

// stBlockedPush fills q and starts a blocking push, returning once the push
// is waiting for room.
func stBlockedPush(t *testing.T, q *sendQueue, ctx context.Context, done <-chan struct{}) <-chan error {
	t.Helper()
	for q.push(context.Background(), stItem(1), false, nil) == nil {
	}
	res := make(chan error, 1)
	go func() { res <- q.push(ctx, stItem(1), true, done) }()
	stWait(t, "the push to wait for room", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.waiting
	})
	select {
	case err := <-res:
		t.Fatalf("blocking push into a full queue returned %v at once", err)
	default:
	}
	return res
}

func stResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(stTimeout):
		t.Fatal("timed out waiting for a result")
		return nil
	}
}

func TestSendQueueBlockPolicy(t *testing.T) {
	t.Run("released by take", func(t *testing.T) {
		q := newSendQueue(2, 1000, 1)
		res := stBlockedPush(t, q, context.Background(), nil)
		q.take(nil, nil)
		if err := stResult(t, res); err != nil {
			t.Fatalf("push released by take: %v", err)
		}
		if d, _ := q.lens(); d != 1 {
			t.Errorf("after the released push: %d items queued, want 1", d)
		}
	})
	t.Run("released by context", func(t *testing.T) {
		q := newSendQueue(2, 1000, 1)
		ctx, cancel := context.WithCancel(context.Background())
		res := stBlockedPush(t, q, ctx, nil)
		cancel()
		if err := stResult(t, res); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
			t.Fatalf("push released by its context: %v, want ErrTimeout wrapping Canceled", err)
		}
		if d, _ := q.lens(); d != 2 {
			t.Errorf("a cancelled push was queued anyway (%d items)", d)
		}
	})
	t.Run("released by close", func(t *testing.T) {
		q := newSendQueue(2, 1000, 1)
		done := make(chan struct{})
		res := stBlockedPush(t, q, context.Background(), done)
		q.close()
		close(done)
		if err := stResult(t, res); !errors.Is(err, ErrClosed) {
			t.Fatalf("push released by close: %v, want ErrClosed", err)
		}
	})
	t.Run("many waiters", func(t *testing.T) {
		q := newSendQueue(2, 1000, 1)
		res1 := stBlockedPush(t, q, context.Background(), nil)
		res2 := make(chan error, 1)
		go func() { res2 <- q.push(context.Background(), stItem(1), true, nil) }()
		// Each take frees two places; both waiters get in eventually.
		stWait(t, "both pushes to get in", func() bool {
			q.take(nil, nil)
			return len(res1) == 1 && len(res2) == 1
		})
		if err1, err2 := <-res1, <-res2; err1 != nil || err2 != nil {
			t.Fatalf("waiters: %v, %v", err1, err2)
		}
	})
}

// TestSendQueueRoom: room's channel is closed at once while an item fits
// or the queue is closed, and otherwise by the writer's next take, so a
// sender can wait on several queues at once.
func TestSendQueueRoom(t *testing.T) {
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	q := newSendQueue(2, 100, 1)
	if !closed(q.room(10)) {
		t.Fatal("room not ready on an empty queue")
	}
	if err := q.push(context.Background(), stItem(60), false, nil); err != nil {
		t.Fatal(err)
	}
	if closed(q.room(60)) { // 61 + 61 bytes: beyond the byte bound
		t.Fatal("room ready for an item that does not fit")
	}
	if !closed(q.room(10)) {
		t.Fatal("room not ready for an item that fits")
	}
	if err := q.push(context.Background(), stItem(10), false, nil); err != nil {
		t.Fatal(err)
	}
	room := q.room(1)
	if closed(room) {
		t.Fatal("room ready on a full queue")
	}
	q.take(nil, nil)
	if !closed(room) {
		t.Fatal("take did not signal room")
	}
	for range 2 {
		if err := q.push(context.Background(), stItem(1), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	q.close()
	if !closed(q.room(1)) {
		t.Fatal("room not ready on a closed queue")
	}
}

// ---- send queue on a live connection ----

// stStalledPair returns a connection from a to b whose writer cannot drain:
// b stops reading its socket (a reader never waits for a handler, so a
// stuck peer is what fills the TCP buffers), until release is called.
func stStalledPair(t *testing.T, aOpts ...Option) (a, b *Socket, ab *Conn, release func()) {
	t.Helper()
	ln, err := faultnet.Listen("127.0.0.1:0", faultnet.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	a = stNew(t, append([]Option{WithCompression()}, aOpts...)...)
	b = stNewAt(t, "", WithListener(ln), WithCompression())
	ab, _ = stConnect(t, a, b)
	conns := ln.Conns()
	if len(conns) != 1 {
		t.Fatalf("b's listener wrapped %d connections, want 1", len(conns))
	}
	conns[0].StopReading(true)
	return a, b, ab, func() { conns[0].StopReading(false) }
}

func TestSendQueueDropPolicy(t *testing.T) {
	a, b, ab, release := stStalledPair(t, WithQueuePolicy(Drop), WithSendQueue(2, 64<<20))
	ctx := stCtx(t)
	payload := bytes.Repeat([]byte("x"), 256<<10)
	// Send until the queue has refused three messages. Refusals may come
	// while the writer still drains (a full queue for a moment), then for
	// good once the TCP buffers are full.
	var accepted []int
	drops := 0
	for i := 0; i < 1000 && drops < 3; i++ {
		switch err := ab.Send(ctx, []byte(fmt.Sprint(i)), payload); {
		case err == nil:
			accepted = append(accepted, i)
		case errors.Is(err, ErrQueueFull):
			drops++
		default:
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if drops != 3 {
		t.Fatalf("never got ErrQueueFull after %d sends", len(accepted))
	}
	if st := a.Stats(); st.QueueDrops != 3 {
		t.Errorf("QueueDrops = %d, want 3", st.QueueDrops)
	}
	if st := ab.Stats(); st.QueueDrops != 3 {
		t.Errorf("Conn QueueDrops = %d, want 3", st.QueueDrops)
	}
	// The control lane still takes traffic while the data lane is full.
	ctl, _, err := a.NewEnvelope(flags.Whisper, flags.FirstUser, 1, [][]byte{[]byte("control")})
	if err != nil {
		t.Fatal(err)
	}
	if err := ab.SendControl(ctl); err != nil {
		t.Fatalf("SendControl with a full data lane: %v", err)
	}

	release()
	// b gets every accepted message in order, plus the control message.
	next, sawControl := 0, false
	for next < len(accepted) || !sawControl {
		m := stRecv(t, b)
		if m.Flag == flags.FirstUser {
			if stPacket(m) != "control" || sawControl {
				t.Fatalf("bad control message %q", stPacket(m))
			}
			sawControl = true
			continue
		}
		if stPacket(m) != fmt.Sprint(accepted[next]) || !bytes.Equal(m.Packets[1], payload) {
			t.Fatalf("got message %q, want %d", stPacket(m), accepted[next])
		}
		next++
	}
}

func TestSendBlockPolicyOnConn(t *testing.T) {
	_, _, ab, _ := stStalledPair(t, WithSendQueue(2, 64<<20), WithFlushTimeout(100*time.Millisecond))
	payload := bytes.Repeat([]byte("y"), 256<<10)
	// Fill the queue: once nothing drains, a send with a short deadline
	// times out instead of dropping.
	var err error
	for i := 0; i < 1000; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err = ab.Send(ctx, payload)
		cancel()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send into a full queue under Block: %v, want ErrTimeout", err)
	}
	if st := ab.Stats(); st.QueueDrops != 0 {
		t.Errorf("Block policy counted %d drops", st.QueueDrops)
	}
	// A send blocked when the connection closes returns ErrClosed.
	res := make(chan error, 1)
	go func() { res <- ab.Send(context.Background(), payload) }()
	stWait(t, "the send to wait for room", func() bool {
		ab.q.mu.Lock()
		defer ab.q.mu.Unlock()
		return ab.q.waiting
	})
	closed := make(chan error, 1)
	go func() { closed <- ab.Close() }()
	if err := stResult(t, res); !errors.Is(err, ErrClosed) {
		t.Errorf("blocked send at close: %v, want ErrClosed", err)
	}
	if err := stResult(t, closed); err != nil {
		t.Errorf("Conn.Close: %v", err)
	}
	if err := ab.Send(context.Background(), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("send on a closed connection: %v, want ErrClosed", err)
	}
	if err := ab.SendControl([]byte{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SendControl on a closed connection: %v, want ErrClosed", err)
	}
}

// ---- events ----

func stEvents(t *testing.T, s *Socket) (<-chan Event, func()) {
	ch := make(chan Event, 64)
	cancel := s.Subscribe(func(e Event) { ch <- e })
	t.Cleanup(cancel)
	return ch, cancel
}

func stNextEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(stTimeout):
		t.Fatal("no event")
		return Event{}
	}
}

func TestEventsConnectMessageDisconnect(t *testing.T) {
	a, b := stNew(t), stNew(t)
	events, _ := stEvents(t, b)
	ab, ba := stConnect(t, a, b)

	e := stNextEvent(t, events)
	if e.Kind != EventConnect || e.Peer.ID != a.ID() || e.Conn != ba || e.Err != nil {
		t.Fatalf("first event = %v %v, want connect from a", e.Kind, e.Peer.ID)
	}
	if err := ab.Send(stCtx(t), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	e = stNextEvent(t, events)
	if e.Kind != EventMessage || e.Message == nil || stPacket(e.Message) != "hi" || e.Peer.ID != a.ID() {
		t.Fatalf("second event = %+v, want the message", e)
	}
	if m := stRecv(t, b); m != e.Message {
		t.Error("the message event's message is not the one in Recv")
	}

	// An abrupt close of a's end: b sees the disconnect with a reason.
	_ = ab.nc.Close()
	e = stNextEvent(t, events)
	if e.Kind != EventDisconnect || e.Peer.ID != a.ID() || e.Conn != ba {
		t.Fatalf("third event = %v, want disconnect from a", e.Kind)
	}
	if e.Err == nil {
		t.Error("disconnect after an abrupt close has no Err")
	}
	if ba.Err() == nil {
		t.Error("b's end is still open")
	}
	if k := EventDisconnect.String(); k != "disconnect" || EventKind(99).String() != "unknown" {
		t.Errorf("EventKind names: %q", k)
	}
}

func TestEventsCancel(t *testing.T) {
	b := stNew(t)
	first, cancel := stEvents(t, b)
	second, _ := stEvents(t, b)

	a := stNew(t)
	stConnect(t, a, b)
	if e := stNextEvent(t, first); e.Kind != EventConnect {
		t.Fatalf("first subscriber: %v", e.Kind)
	}
	if e := stNextEvent(t, second); e.Kind != EventConnect {
		t.Fatalf("second subscriber: %v", e.Kind)
	}
	cancel()
	cancel() // idempotent

	c := stNew(t)
	cb, _ := stConnect(t, c, b)
	if err := cb.Send(stCtx(t), []byte("m")); err != nil {
		t.Fatal(err)
	}
	if e := stNextEvent(t, second); e.Kind != EventConnect || e.Peer.ID != c.ID() {
		t.Fatalf("second subscriber: %v from %v", e.Kind, e.Peer.ID.Short())
	}
	// Once the second subscriber saw the later message event, the bus is
	// done with the connect event for every subscriber.
	if e := stNextEvent(t, second); e.Kind != EventMessage {
		t.Fatalf("second subscriber: %v", e.Kind)
	}
	if len(first) != 0 {
		t.Errorf("a cancelled subscriber still got %d events", len(first))
	}
}

func TestEventsSlowSubscriber(t *testing.T) {
	b := stNew(t, WithEventQueue(2))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cancel := b.Subscribe(func(Event) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	t.Cleanup(func() { close(release); cancel() }) // before the sockets close

	a := stNew(t)
	ab, _ := stConnect(t, a, b)
	select {
	case <-started: // stuck in the connect event
	case <-time.After(stTimeout):
		t.Fatal("subscriber never called")
	}
	ctx := stCtx(t)
	for i := range 10 {
		if err := ab.Send(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The reader is not held up by the subscriber.
	for i := range 10 {
		if m := stRecv(t, b); stPacket(m) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, stPacket(m))
		}
	}
	// 10 message events, 2 places in the queue.
	stWait(t, "event drops", func() bool { return b.Stats().EventDrops >= 8 })
	if n := b.Stats().EventDrops; n != 8 {
		t.Errorf("EventDrops = %d, want 8", n)
	}
}

// ---- stats ----

func TestStatsCounts(t *testing.T) {
	a := stNew(t, WithCompression())
	b := stNew(t, WithCompression())
	ab, ba := stConnect(t, a, b)
	for _, s := range []*Socket{a, b} {
		if st := s.Stats(); st.Connections != 1 || st.Connects != 1 || st.Disconnects != 0 {
			t.Errorf("after connect: %+v", st)
		}
	}
	const n, size = 20, 100
	ctx := stCtx(t)
	for range n {
		if err := ab.Send(ctx, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		stRecv(t, b)
	}
	// A reader publishes its counts before it next waits for the network,
	// which may be just after its last message reached Recv.
	stWait(t, "b's reader to publish its counts", func() bool { return b.Stats().FramesIn == n })
	sa, sb := a.Stats(), b.Stats()
	if sa.FramesOut != n || sb.FramesIn != n {
		t.Errorf("FramesOut = %d, FramesIn = %d; want %d", sa.FramesOut, sb.FramesIn, n)
	}
	if sa.BytesOut < n*(5+1+size) || sa.BytesOut > n*(5+1+size+64) {
		t.Errorf("BytesOut = %d for %d messages of %d bytes", sa.BytesOut, n, size)
	}
	if sa.BytesOut != sa.BodyBytesOut+5*sa.FramesOut {
		t.Errorf("uncompressed: BytesOut %d != BodyBytesOut %d + headers", sa.BytesOut, sa.BodyBytesOut)
	}
	if sb.BytesIn != sa.BytesOut || sb.BodyBytesIn != sa.BodyBytesOut {
		t.Errorf("in (%d, %d) != out (%d, %d)", sb.BytesIn, sb.BodyBytesIn, sa.BytesOut, sa.BodyBytesOut)
	}
	if sa.FramesIn != 0 || sa.BytesIn != 0 || sb.FramesOut != 0 {
		t.Errorf("traffic the other way: a in %d/%d, b out %d", sa.FramesIn, sa.BytesIn, sb.FramesOut)
	}
	if r := sa.CompressionRatio(); r != 1 {
		t.Errorf("CompressionRatio = %v, want 1 without compression", r)
	}
	if r := sb.CompressionRatio(); r != 0 {
		t.Errorf("CompressionRatio with nothing sent = %v, want 0", r)
	}
	stWait(t, "Delivered to reach n", func() bool { return b.Stats().Delivered == n })
	if cs := ab.Stats(); cs.FramesOut != n || cs.BytesOut != sa.BytesOut || cs.Connections != 0 {
		t.Errorf("Conn.Stats = %+v", cs)
	}
	if cs := ba.Stats(); cs.FramesIn != n || cs.BytesIn != sb.BytesIn {
		t.Errorf("peer Conn.Stats = %+v", cs)
	}

	// Closing b: a loses the connection but keeps the counts.
	stClose(t, b)
	stWait(t, "a to see the disconnect", func() bool {
		st := a.Stats()
		return st.Connections == 0 && st.Disconnects == 1
	})
	if st := a.Stats(); st.FramesOut != n || st.BytesOut != sa.BytesOut || st.Connects != 1 {
		t.Errorf("after the disconnect: FramesOut %d, BytesOut %d, Connects %d", st.FramesOut, st.BytesOut, st.Connects)
	}
	if st := b.Stats(); st.FramesIn != n || st.Disconnects != 1 || st.Connections != 0 {
		t.Errorf("closed socket: FramesIn %d, Disconnects %d, Connections %d", st.FramesIn, st.Disconnects, st.Connections)
	}
	if st := a.Status(); !st.Healthy || st.Connections != 0 {
		t.Errorf("a peer closing cleanly is not a problem: %v", st)
	}
}

// ---- reply ----

func TestReply(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, ba := stConnect(t, a, b)
	ctx := stCtx(t)
	if err := ab.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	m := stRecv(t, b)
	if m.Sender != a.ID() || m.Conn != ba {
		t.Fatalf("message from %v on %p, want a on %p", m.Sender, m.Conn, ba)
	}
	if err := m.Reply(ctx, []byte("pong"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	r := stRecv(t, a)
	if r.Sender != b.ID() || !slices.Equal(stPackets([]*Message{r}), []string{"pong"}) || string(r.Packets[1]) != "2" {
		t.Errorf("reply = %q from %v", r.Packets, r.Sender)
	}

	if err := a.Whisper(ctx, protocol.NewNodeID(), []byte("x")); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Whisper to an unconnected node: %v, want ErrNoRoute", err)
	}
	if err := a.Whisper(ctx, b.ID(), []byte("direct")); err != nil {
		t.Fatal(err)
	}
	if m := stRecv(t, b); stPacket(m) != "direct" {
		t.Errorf("Whisper delivered %q", stPacket(m))
	}
	if err := (&Message{}).Reply(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Reply on a message without a socket: %v, want ErrClosed", err)
	}
}

func TestReplyWithoutRoute(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	if err := ab.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	m := stRecv(t, b)
	stClose(t, a)
	stWait(t, "b to drop the connection", func() bool { return b.Stats().Connections == 0 })
	if err := m.Reply(ctx, []byte("pong")); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Reply to a disconnected sender: %v, want ErrNoRoute", err)
	}
}

func TestLayerReply(t *testing.T) {
	errSentinel := errors.New("routed elsewhere")
	var gotMsg *Message
	var gotPackets [][]byte
	b := stNewLayered(t, Layer{Reply: func(ctx context.Context, m *Message, packets [][]byte) error {
		gotMsg, gotPackets = m, packets
		return errSentinel
	}})
	a := stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	if err := ab.Send(ctx, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	m := stRecv(t, b)
	if err := m.Reply(ctx, []byte("pong")); !errors.Is(err, errSentinel) {
		t.Fatalf("Reply = %v, want the replier's error", err)
	}
	if gotMsg != m || len(gotPackets) != 1 || string(gotPackets[0]) != "pong" {
		t.Errorf("replier got %p %q, want %p [pong]", gotMsg, gotPackets, m)
	}
	if st := b.Stats(); st.FramesOut != 0 {
		t.Errorf("the default reply path still sent %d frames", st.FramesOut)
	}
}

// ---- close ----

func TestCloseIdempotent(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-a.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if ab.Err() == nil {
		t.Error("connection open after Close")
	}
	if err := ab.Close(); err != nil {
		t.Errorf("Conn.Close after Socket.Close: %v", err)
	}
	if err := ab.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if err := a.Broadcast(ctx, []byte("x")); err != nil {
		t.Errorf("Broadcast with no connections: %v", err)
	}
	stWait(t, "b to see a leave", func() bool { return b.Stats().Connections == 0 })
}

func TestCloseFlushesQueued(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	const n = 1000
	for i := range n {
		if err := ab.Send(ctx, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := stRecv(t, b)
		if stPacket(m) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, stPacket(m))
		}
	}
}

func TestCloseWithDoneContext(t *testing.T) {
	// a's writer is stuck (b does not read), and the flush timeout is long:
	// only the context can make Close give up on flushing.
	a, _, ab, _ := stStalledPair(t, WithFlushTimeout(time.Minute), WithQueuePolicy(Drop))
	payload := make([]byte, 256<<10)
	for i := 0; i < 1000; i++ {
		if err := ab.Send(context.Background(), payload); err != nil {
			break
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := a.Close(ctx)
	if err != nil && !errors.Is(err, ErrTimeout) {
		t.Errorf("Close with a done context: %v, want nil or ErrTimeout", err)
	}
	if d := time.Since(start); d > stTimeout {
		t.Errorf("Close took %v despite its context", d)
	}
	// Giving up on the flush cut the connection: its goroutines end now,
	// not after the minute-long flush timeout.
	for name, ch := range map[string]chan struct{}{"writer": ab.writerDone, "reader": ab.readerDone} {
		select {
		case <-ch:
		case <-time.After(stTimeout):
			t.Errorf("%s still running %v after Close returned", name, stTimeout)
		}
	}
}

func TestConnCloseInsideHandler(t *testing.T) {
	// With a long flush timeout, a Close that waited for anything the
	// handler itself holds up would stall far beyond stTimeout.
	b := stNew(t, WithFlushTimeout(time.Minute))
	returned := make(chan error, 1)
	b.RegisterHandler(HandlerFunc(func(m *Message) bool {
		returned <- m.Conn.Close()
		return true
	}))
	a := stNew(t)
	ab, ba := stConnect(t, a, b)
	if err := ab.Send(stCtx(t), []byte("close yourself")); err != nil {
		t.Fatal(err)
	}
	if err := stResult(t, returned); err != nil {
		t.Errorf("Conn.Close from a handler: %v", err)
	}
	if !errors.Is(ba.Err(), ErrClosed) {
		t.Errorf("b's end: Err = %v, want ErrClosed", ba.Err())
	}
	stWait(t, "both sides to drop the connection", func() bool {
		return a.Stats().Connections == 0 && b.Stats().Connections == 0
	})
}

// ---- size limits ----

func TestMessageTooLarge(t *testing.T) {
	a := stNew(t, WithMaxFrameSize(1024), WithMaxPackets(3))
	b := stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)

	big := [][]byte{make([]byte, 2000)}
	if _, _, err := a.NewEnvelope(flags.Whisper, flags.Whisper, 1, big); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Errorf("NewEnvelope over the frame limit: %v, want ErrFrameTooLarge", err)
	}
	if err := ab.Send(ctx, big...); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Errorf("Send over the frame limit: %v, want ErrFrameTooLarge", err)
	}
	// Several packets that fit one by one but not together.
	if err := ab.Send(ctx, make([]byte, 400), make([]byte, 400), make([]byte, 400)); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Errorf("Send of packets summing over the limit: %v, want ErrFrameTooLarge", err)
	}
	four := [][]byte{{1}, {2}, {3}, {4}}
	if _, _, err := a.NewEnvelope(flags.Whisper, flags.Whisper, 1, four); !errors.Is(err, protocol.ErrTooManyPackets) {
		t.Errorf("NewEnvelope with 4 packets, limit 3: %v, want ErrTooManyPackets", err)
	}
	if err := ab.Send(ctx, four...); !errors.Is(err, protocol.ErrTooManyPackets) {
		t.Errorf("Send with 4 packets, limit 3: %v, want ErrTooManyPackets", err)
	}
	if err := a.Broadcast(ctx, four...); !errors.Is(err, protocol.ErrTooManyPackets) {
		t.Errorf("Broadcast with 4 packets, limit 3: %v, want ErrTooManyPackets", err)
	}
	if st := ab.Stats(); st.FramesOut != 0 || st.QueueDrops != 0 {
		t.Errorf("rejected messages reached the queue: %+v", st)
	}
	// Just under the limit goes through.
	env, _, err := a.NewEnvelope(flags.Whisper, flags.Whisper, 1, [][]byte{make([]byte, 900)})
	if err != nil || len(env)+1 > 1024 {
		t.Fatalf("NewEnvelope under the limit: %d bytes, %v", len(env), err)
	}
	if err := ab.Send(ctx, make([]byte, 900), []byte{1}, []byte{2}); err != nil {
		t.Fatalf("Send under the limits: %v", err)
	}
	if m := stRecv(t, b); len(m.Packets) != 3 || len(m.Packets[0]) != 900 {
		t.Errorf("received %d packets", len(m.Packets))
	}
}

// Two identical payloads are two messages, with different IDs.
func TestIdenticalPayloadsAreDistinct(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	_ = ab.Send(ctx, []byte("same"))
	_ = ab.Send(ctx, []byte("same"))
	m1, m2 := stRecv(t, b), stRecv(t, b)
	if m1.ID == m2.ID || m1.Seq == m2.Seq {
		t.Errorf("identical payloads got ID %v/%v, Seq %d/%d", m1.ID, m2.ID, m1.Seq, m2.Seq)
	}
	if !bytes.Equal(m1.Packets[0], m2.Packets[0]) {
		t.Error("payloads differ")
	}
}
