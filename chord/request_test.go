package chord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// echo answers every request with "echo:" + its first packet.
func echo(s *Socket) base.Handler {
	return base.HandlerFunc(func(m *base.Message) bool {
		if !IsRequest(m) {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), testRequest)
		defer cancel()
		_ = m.Reply(ctx, append([]byte("echo:"), m.Packets[0]...))
		return true
	})
}

func byID(nodes []*Socket) map[protocol.NodeID]*Socket {
	m := make(map[protocol.NodeID]*Socket, len(nodes))
	for _, s := range nodes {
		m[s.ID()] = s
	}
	return m
}

func TestRequestReply(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 1))
	nodes := buildRing(t, 8, rng)
	for _, s := range nodes {
		s.RegisterHandler(echo(s))
	}
	waitRing(t, nodes, convergeWithin)
	ids := sortedIDs(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 100 {
		from := nodes[rng.IntN(len(nodes))]
		key := randomKey(rng)
		payload := []byte(fmt.Sprintf("req %d", i))
		resp, err := from.Request(ctx, key, payload)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		want, _ := Owner(ids, key)
		if resp.Sender != want || resp.Flag != flags.Response || !bytes.Equal(resp.Packets[0], append([]byte("echo:"), payload...)) {
			t.Fatalf("request %d: answer %q from %s (flag %s), want the echo from %s", i, resp.Packets[0], resp.Sender.Short(), resp.Flag, want.Short())
		}
		r, ok := RouteOf(resp)
		if !ok || r.Key != key || r.RequestID == 0 {
			t.Fatalf("request %d: response route %+v", i, r)
		}
	}
	st := nodes[0].Stats()
	if st.Pending != 0 {
		t.Errorf("pending = %d after all requests returned", st.Pending)
	}
}

func TestSendToOwner(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	nodes := buildRing(t, 8, rng)
	waitRing(t, nodes, convergeWithin)
	ids := sortedIDs(nodes)
	owners := byID(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		from := nodes[rng.IntN(len(nodes))]
		key := randomKey(rng)
		if err := from.SendTo(ctx, key, []byte("hello"), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		want, _ := Owner(ids, key)
		m, err := owners[want].Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := RouteOf(m)
		if !ok || r.Key != key || m.Sender != from.ID() || r.Origin.ID != from.ID() || r.RequestID != 0 ||
			m.Flag != flags.Forward || len(m.Packets) != 2 || m.Packets[1][0] != byte(i) {
			t.Fatalf("message %d at %s: flag %s, sender %s, route %+v, packets %q", i, want.Short(), m.Flag, m.Sender.Short(), r, m.Packets)
		}
		if from.ID() == want && r.Hops != 0 {
			t.Errorf("message to own key crossed %d links", r.Hops)
		}
		// A reply to a one-way message reaches its sender.
		if err := m.Reply(ctx, []byte("thanks")); err != nil {
			t.Fatal(err)
		}
		back, err := from.Recv(ctx)
		if err != nil || string(back.Packets[0]) != "thanks" || back.Sender != want {
			t.Fatalf("reply to message %d: %v, %v", i, back, err)
		}
	}
}

func TestSendToOwnKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 1))
	nodes := buildRing(t, 4, rng)
	waitRing(t, nodes, convergeWithin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := nodes[2]
	before := a.Stats().FramesOut
	if err := a.SendTo(ctx, a.ID(), []byte("self")); err != nil {
		t.Fatal(err)
	}
	m, err := a.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := RouteOf(m)
	if string(m.Packets[0]) != "self" || m.Sender != a.ID() || m.Conn != nil || r == nil || r.Hops != 0 {
		t.Fatalf("got %q from %s, conn %v, route %+v", m.Packets[0], m.Sender.Short(), m.Conn, r)
	}
	// A request to the node's own key is answered locally, too.
	a.RegisterHandler(echo(a))
	resp, err := a.Request(ctx, a.ID(), []byte("me"))
	if err != nil || string(resp.Packets[0]) != "echo:me" || resp.Sender != a.ID() {
		t.Fatalf("request to own key: %v, %v", resp, err)
	}
	owner, err := a.Lookup(ctx, a.ID())
	if err != nil || owner.ID != a.ID() {
		t.Fatalf("lookup of own key: %v, %v", owner, err)
	}
	_ = before
}

// TestBounce: A asks the owner B of k1; B bounces the request to k2, owned
// by C; C answers, and the answer comes to A straight from C.
func TestBounce(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 1))
	nodes := buildRing(t, 8, rng)
	waitRing(t, nodes, convergeWithin)
	a, b, c := nodes[0], nodes[3], nodes[6]
	k1, k2 := b.ID(), c.ID()
	seen := make(chan *Route, 1)
	b.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if !IsRequest(m) {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), testRequest)
		defer cancel()
		if err := b.Bounce(ctx, m, k2); err != nil {
			t.Errorf("bounce: %v", err)
		}
		return true
	}))
	c.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		r, _ := RouteOf(m)
		seen <- r
		_ = m.Reply(context.Background(), []byte("from c"), m.Packets[0])
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := a.Request(ctx, k1, []byte("question"))
	if err != nil {
		t.Fatal(err)
	}
	r := <-seen
	if r.Origin.ID != a.ID() || r.Bounces != 1 || r.Key != k2 {
		t.Errorf("C saw route %+v; want origin %s, 1 bounce, key %s", r, a.ID().Short(), k2.Short())
	}
	if string(resp.Packets[0]) != "from c" || string(resp.Packets[1]) != "question" {
		t.Errorf("answer %q", resp.Packets)
	}
	// Straight from C: sent by C, over A's direct link to C, in one hop
	// (through B it would have arrived over the link to B, in 2 hops or
	// more).
	if resp.Sender != c.ID() || resp.Conn == nil || resp.Conn.ID() != c.ID() || resp.Hops != 1 {
		t.Errorf("answer from %s over the link to %v in %d hops; want directly from %s",
			resp.Sender.Short(), resp.Conn.ID().Short(), resp.Hops, c.ID().Short())
	}
	if got := b.Stats().Bounces; got != 1 {
		t.Errorf("bouncer counted %d bounces", got)
	}
}

// TestBounceLimit: a handler that always bounces to its own key stops
// after MaxBounces with ErrTooManyBounces and can still answer.
func TestBounceLimit(t *testing.T) {
	s := newNode(t)
	var bounces int
	s.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		err := s.Bounce(context.Background(), m, s.ID())
		if err == nil {
			bounces++
			return true
		}
		if !errors.Is(err, ErrTooManyBounces) {
			t.Errorf("bounce: %v", err)
		}
		_ = m.Reply(context.Background(), []byte(err.Error()))
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.Request(ctx, s.ID(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if bounces != MaxBounces {
		t.Errorf("%d bounces, want %d (%q)", bounces, MaxBounces, resp.Packets[0])
	}
	if err := s.Bounce(ctx, &base.Message{}, s.ID()); !errors.Is(err, ErrNotRouted) {
		t.Errorf("bounce of a message without a route: %v", err)
	}
}

// TestTimeoutDeadOwner: the owner of a key stops answering without closing
// its links (a black hole). A request to it fails with ErrTimeout within
// the timeout plus a margin, and nothing stays pending.
func TestTimeoutDeadOwner(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 1))
	nodes := buildRing(t, 5, rng)
	ln, err := faultnet.Listen("127.0.0.1:0", faultnet.Faults{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := faultnet.NewDialer(faultnet.Faults{})
	dead, err := NewSocket("", append(testOptions(t), WithBaseOptions(base.WithListener(ln), base.WithDialer(dialer.DialContext)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Close(context.Background()) })
	joinVia(t, dead, nodes[0])
	all := append(nodes, dead)
	waitRing(t, all, convergeWithin)
	for _, c := range append(ln.Conns(), dialer.Conns()...) {
		c.BlackHole(true)
	}
	from := nodes[1]
	const timeout = 1500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err = from.Request(ctx, dead.ID(), []byte("anyone?"))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("request to a black-holed owner: %v, want ErrTimeout", err)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("request gave up after %v, timeout %v", elapsed, timeout)
	}
	st := from.Stats()
	if st.Pending != 0 || st.Timeouts != 1 {
		t.Errorf("after the timeout: pending %d, timeouts %d", st.Pending, st.Timeouts)
	}
	t.Logf("timed out after %v (timeout %v)", elapsed.Round(time.Millisecond), timeout)
}

// TestLateAnswersDropped: an answer after the requester gave up, and a
// second answer to the same request, are dropped and counted.
func TestLateAnswersDropped(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 1))
	nodes := buildRing(t, 3, rng)
	waitRing(t, nodes, convergeWithin)
	a, owner := nodes[0], nodes[1]
	held := make(chan *base.Message, 2)
	owner.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		held <- m
		return true
	}))
	// 1. Too late. (Other late answers — maintenance calls that timed out
	// on a loaded machine — may add to the counter too.)
	late := a.Stats().LateAnswers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := a.Request(ctx, owner.ID(), []byte("1"))
	cancel()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered request: %v, want ErrTimeout", err)
	}
	m := <-held
	if err := m.Reply(context.Background(), []byte("late")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return a.Stats().LateAnswers >= late+1 }, "late answer counted")
	// 2. Twice.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		resp, err := a.Request(ctx, owner.ID(), []byte("2"))
		if err == nil && string(resp.Packets[0]) != "first" {
			err = fmt.Errorf("answer %q, want the first", resp.Packets[0])
		}
		done <- err
	}()
	m = <-held
	late = a.Stats().LateAnswers
	_ = m.Reply(ctx, []byte("first"))
	_ = m.Reply(ctx, []byte("second"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return a.Stats().LateAnswers >= late+1 }, "duplicate answer counted")
}

func TestProtocolMismatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := newNode(t)
	// A socket on the default (mesh) protocol refuses chord and vice versa.
	other := testnet.NewBase(t, "127.0.0.1:0", base.WithLogger(testLogger(t)))
	if _, err := s.Join(ctx, other.Addr().String()); !errors.Is(err, ErrProtocolMismatch) {
		t.Fatalf("Join of a mesh-protocol node: %v, want ErrProtocolMismatch", err)
	}
	if _, err := other.Connect(ctx, s.Addr().String()); !errors.Is(err, base.ErrProtocolMismatch) {
		t.Fatalf("mesh-protocol node connecting to chord: %v, want ErrProtocolMismatch", err)
	}
	// Another chord subnet is another ring.
	x := newNode(t, WithProtocol(protocol.Protocol{Subnet: "other-ring", Encryption: protocol.EncryptionTLS}))
	if _, err := x.Join(ctx, s.Addr().String()); !errors.Is(err, ErrProtocolMismatch) {
		t.Fatalf("Join across subnets: %v, want ErrProtocolMismatch", err)
	}
	if _, err := s.Join(ctx, s.Addr().String()); !errors.Is(err, ErrSelfConnect) {
		t.Fatalf("Join via itself: %v, want ErrSelfConnect", err)
	}
}

// TestPendingLimit: with room for two pending requests, a third fails at
// once with ErrTooManyRequests.
func TestPendingLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 1))
	nodes := buildRing(t, 2, rng, WithMaxPendingRequests(2))
	waitRing(t, nodes, convergeWithin)
	a, owner := nodes[0], nodes[1]
	held := make(chan *base.Message, 2)
	owner.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		held <- m
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Request(ctx, owner.ID(), []byte("wait"))
			errs <- err
		}()
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return a.Stats().Pending == 2 }, "two requests pending")
	start := time.Now()
	_, err := a.Request(ctx, owner.ID(), []byte("one too many"))
	if !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("third request: %v, want ErrTooManyRequests", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}
	if _, err := a.Lookup(ctx, owner.ID()); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("lookup over the limit: %v, want ErrTooManyRequests", err)
	}
	if got := a.Stats().PendingLimitHits; got != 2 {
		t.Errorf("PendingLimitHits = %d, want 2", got)
	}
	for range 2 {
		m := <-held
		_ = m.Reply(ctx, []byte("done"))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestLinkCap: a node with a cap of 6 links that every other node joins
// through (so each of them dials it) evicts the least recently used links
// down to the cap (the others, with the default cap, never close a link to
// it); lookups stay correct.
func TestLinkCap(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 1))
	const hubCap, restCap = 6, DefaultMaxLinks
	hub := newNode(t, WithSuccessors(2), WithMaxLinks(hubCap))
	nodes := []*Socket{hub}
	t.Cleanup(func() { closeNodes(nodes) })
	for range 12 {
		s, err := NewSocket("127.0.0.1:0", append(testOptions(t), WithSuccessors(2), WithMaxLinks(restCap))...)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
		joinVia(t, s, hub)
	}
	waitRing(t, nodes, convergeWithin)
	ls := checkLookups(t, nodes, 300, rng)
	if ls.wrong > 0 || ls.failed > 0 {
		t.Fatalf("%d wrong, %d failed: %s", ls.wrong, ls.failed, ls.firstProblem)
	}
	over := func() string {
		for _, s := range nodes {
			limit := restCap
			if s == hub {
				limit = hubCap
			}
			if st := s.Stats(); st.Links > limit || st.Connections > limit {
				return fmt.Sprintf("%s has %d links, %d connections, cap %d", s.ID().Short(), st.Links, st.Connections, limit)
			}
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last string
	if err := testnet.WaitFor(ctx, func() bool { last = over(); return last == "" }); err != nil {
		t.Fatalf("links not within the caps: %s", last)
	}
	if ev := hub.Stats().Evictions; ev == 0 {
		t.Error("the hub evicted no link")
	} else {
		t.Logf("hub evicted %d links", ev)
	}
	// Lookups still work with the links that are left.
	if ls := checkLookups(t, nodes, 100, rng); ls.wrong > 0 || ls.failed > 0 {
		t.Fatalf("after eviction: %d wrong, %d failed: %s", ls.wrong, ls.failed, ls.firstProblem)
	}
}

func TestOptionsValidated(t *testing.T) {
	for name, opt := range map[string]Option{
		"successors 0":     WithSuccessors(0),
		"successors 33":    WithSuccessors(MaxSuccessors + 1),
		"stabilize 0":      WithStabilizeInterval(0),
		"fix fingers -1":   WithFixFingersInterval(-time.Second),
		"check pred 0":     WithCheckPredecessorInterval(0),
		"request 0":        WithRequestTimeout(0),
		"rpc 0":            WithRPCTimeout(0),
		"hop limit 0":      WithHopLimit(0),
		"hop limit 256":    WithHopLimit(256),
		"pending 0":        WithMaxPendingRequests(0),
		"links below 2r+2": WithMaxLinks(2*DefaultSuccessors + 1),
		"empty subnet":     WithProtocol(protocol.Protocol{}),
		"short key":        WithKey(make([]byte, 5)),
		"nil logger":       WithLogger(nil),
		"bad base option":  WithBaseOptions(base.WithMaxConns(0)),
	} {
		if s, err := NewSocket("127.0.0.1:0", opt); !errors.Is(err, ErrInvalidOption) {
			if s != nil {
				_ = s.Close(context.Background())
			}
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
	if s, err := NewSocket(""); !errors.Is(err, ErrInvalidOption) {
		if s != nil {
			_ = s.Close(context.Background())
		}
		t.Errorf("node without a listener: %v, want ErrInvalidOption", err)
	}
}

func TestClosed(t *testing.T) {
	s := newNode(t)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	key := s.ID()
	if _, err := s.Lookup(ctx, key); !errors.Is(err, ErrClosed) {
		t.Errorf("Lookup: %v", err)
	}
	if _, err := s.Request(ctx, key); !errors.Is(err, ErrClosed) {
		t.Errorf("Request: %v", err)
	}
	if err := s.SendTo(ctx, key); !errors.Is(err, ErrClosed) {
		t.Errorf("SendTo: %v", err)
	}
	if _, err := s.Join(ctx, "127.0.0.1:1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Join: %v", err)
	}
	if _, err := s.Recv(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv: %v", err)
	}
}

// TestCloseWhileWaiting: Close fails a pending request with ErrClosed.
func TestCloseWhileWaiting(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 1))
	nodes := buildRing(t, 2, rng)
	waitRing(t, nodes, convergeWithin)
	a, owner := nodes[0], nodes[1]
	owner.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool { return true }))
	errc := make(chan error, 1)
	go func() {
		_, err := a.Request(context.Background(), owner.ID(), []byte("never answered"))
		errc <- err
	}()
	testnet.Eventually(t, 20*time.Second, func() bool { return a.Stats().Pending == 1 }, "request pending")
	_ = a.Close(context.Background())
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending request after Close: %v, want ErrClosed", err)
	}
}

// TestBounceOneWay: a one-way message bounced arrives at the new owner with
// its original sender.
func TestBounceOneWay(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 1))
	nodes := buildRing(t, 5, rng)
	waitRing(t, nodes, convergeWithin)
	a, b, c := nodes[0], nodes[2], nodes[4]
	b.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if err := b.Bounce(context.Background(), m, c.ID()); err != nil {
			t.Errorf("bounce: %v", err)
		}
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.SendTo(ctx, b.ID(), []byte("pass it on")); err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := RouteOf(m)
	if m.Sender != a.ID() || m.Flag != flags.Forward || r.Bounces != 1 || r.Key != c.ID() || string(m.Packets[0]) != "pass it on" {
		t.Fatalf("got %q from %s, flag %s, route %+v", m.Packets[0], m.Sender.Short(), m.Flag, r)
	}
}

// TestHopLimit: with a hop limit of 1, a lookup that needs more hops fails
// fast with ErrNoRoute (the relay that runs out answers), not by timeout.
func TestHopLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 1))
	nodes := buildRing(t, 16, rng)
	waitRing(t, nodes, convergeWithin)
	// The limited node joins through its future successor, which answers
	// without forwarding.
	from := newNode(t, WithHopLimit(1))
	succ, _ := Owner(sortedIDs(nodes), from.ID())
	joinVia(t, from, byID(nodes)[succ])
	nodes = append(nodes, from)
	waitRing(t, nodes, convergeWithin)
	ids := sortedIDs(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ok, refused int
	for range 100 {
		key := randomKey(rng)
		start := time.Now()
		res, err := from.LookupDetail(ctx, key)
		switch {
		case err == nil:
			ok++
			if want, _ := Owner(ids, key); res.Owner.ID != want || res.Hops > 1 {
				t.Fatalf("lookup: owner %s in %d hops, want %s in at most 1", res.Owner.ID.Short(), res.Hops, want.Short())
			}
		case errors.Is(err, ErrNoRoute):
			refused++
			if d := time.Since(start); d > testRequest/2 {
				t.Errorf("refusal took %v", d)
			}
		default:
			t.Fatalf("lookup: %v", err)
		}
	}
	var drops uint64
	for _, s := range nodes {
		drops += s.Stats().HopLimitDrops
	}
	if refused == 0 || ok == 0 || drops == 0 {
		t.Errorf("%d lookups answered, %d refused, %d hop-limit drops; want some of each", ok, refused, drops)
	}
}
