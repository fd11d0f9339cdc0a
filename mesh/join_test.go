package mesh

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testdns"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

const jnWait = 15 * time.Second

// jnFast keeps the join's back-off short: tests with a dead address take
// milliseconds, not seconds.
var jnFast = WithJoin(JoinConfig{Backoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})

// jnNode starts a mesh node on addr with a test logger and closes it when
// the test ends.
func jnNode(t *testing.T, addr string, opts ...Option) *Socket {
	t.Helper()
	s, err := NewSocket(addr, append([]Option{WithLogger(testnet.Logger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("NewSocket(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// jnNodes starts a mesh node on each ip, all on one port (an A record
// holds no port), and returns them and the port.
func jnNodes(t *testing.T, ips []string, opts ...Option) ([]*Socket, string) {
	t.Helper()
	var nodes []*Socket
	port := testdns.SamePort(t, ips, func(addr string) (string, func(), error) {
		s, err := NewSocket(addr, append([]Option{WithLogger(testnet.Logger(t))}, opts...)...)
		if err != nil {
			return "", nil, err
		}
		nodes = append(nodes, s)
		_, port, _ := net.SplitHostPort(s.Addr().String())
		return port, func() { _ = s.Close(context.Background()); nodes = nodes[:len(nodes)-1] }, nil
	})
	t.Cleanup(func() {
		for _, s := range nodes {
			_ = s.Close(context.Background())
		}
	})
	return nodes, port
}

func jnLinked(s *Socket, to protocol.NodeID) bool {
	_, ok := s.base.Conn(to)
	return ok
}

// TestJoinThroughDNSName: a DNS name served by a DNS server in the test
// with three A records, one of them dead: the node joins through the two
// live ones, with no error, and each live seed has it as a neighbour.
func TestJoinThroughDNSName(t *testing.T) {
	dns := testdns.Start(t)
	seeds, port := jnNodes(t, []string{"127.0.0.2", "127.0.0.3"})
	dns.Set("seeds.meshsock.test", "127.0.0.2", "127.0.0.3", "127.0.0.4")
	n := jnNode(t, "127.0.0.1:0", WithResolver(dns.Resolver()), jnFast)
	ctx, cancel := context.WithTimeout(context.Background(), jnWait)
	defer cancel()
	joined, err := n.Join(ctx, "seeds.meshsock.test:"+port)
	if err != nil || joined != 2 {
		t.Fatalf("Join = %d, %v; want 2 links and no error", joined, err)
	}
	for _, s := range seeds {
		if !jnLinked(n, s.ID()) {
			t.Errorf("no link to the seed at %s", s.Addr())
		}
		testnet.Eventually(t, jnWait, func() bool { return jnLinked(s, n.ID()) }, "the seed to see the node")
	}
	// A message now reaches both seeds through the links Join made.
	sub := make(chan struct{}, 2)
	for _, s := range seeds {
		s.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
			if string(m.Packets[0]) == "after join" {
				sub <- struct{}{}
			}
			return true
		}))
	}
	if err := n.Send(ctx, []byte("after join")); err != nil {
		t.Fatal(err)
	}
	for range seeds {
		select {
		case <-sub:
		case <-ctx.Done():
			t.Fatal("a seed did not get the broadcast")
		}
	}
}

// TestJoinNoLink: every address failing is a *JoinError that names each,
// and errors.Is matches what went wrong.
func TestJoinNoLink(t *testing.T) {
	dns := testdns.Start(t)
	dead := jnNode(t, "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	if err := dead.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	dns.Set("seeds.meshsock.test", "127.0.0.1")
	n := jnNode(t, "", WithResolver(dns.Resolver()), jnFast)
	ctx, cancel := context.WithTimeout(context.Background(), jnWait)
	defer cancel()
	_, port, _ := net.SplitHostPort(deadAddr)
	joined, err := n.Join(ctx, "seeds.meshsock.test:"+port, "unknown.meshsock.test:"+port)
	var je *JoinError
	if joined != 0 || !errors.As(err, &je) || len(je.Failures) != 2 {
		t.Fatalf("Join = %d, %v; want 0 and a *JoinError with two failures", joined, err)
	}
	if f := je.Failures[0]; f.Addr != deadAddr || !errors.Is(f.Err, ErrUnreachable) {
		t.Errorf("first failure %+v; want %s unreachable", f, deadAddr)
	}
	if f := je.Failures[1]; f.Addr != "" || !errors.Is(f.Err, ErrResolve) {
		t.Errorf("second failure %+v; want a name that does not resolve", f)
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrResolve) {
		t.Errorf("errors.Is does not see both failures in %v", err)
	}
}

// TestJoinPicksUpChangedRecords: a node that has lost its only neighbour
// resolves its seed name again and joins the members its records name now.
func TestJoinPicksUpChangedRecords(t *testing.T) {
	dns := testdns.Start(t)
	nodes, port := jnNodes(t, []string{"127.0.0.2", "127.0.0.3"})
	old, renewed := nodes[0], nodes[1]
	dns.Set("seeds.meshsock.test", "127.0.0.2")
	n := jnNode(t, "127.0.0.1:0", WithResolver(dns.Resolver()),
		WithJoin(JoinConfig{Attempts: 1, Refresh: 100 * time.Millisecond}),
		WithMaintenance(20*time.Millisecond, 10*time.Millisecond, 100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), jnWait)
	defer cancel()
	if joined, err := n.Join(ctx, "seeds.meshsock.test:"+port); joined != 1 || err != nil {
		t.Fatalf("Join = %d, %v; want 1, nil", joined, err)
	}
	if jnLinked(n, renewed.ID()) {
		t.Fatal("linked to a node its seed name did not name")
	}
	asked := dns.Queries("seeds.meshsock.test")
	// The name now points at another member, and the old one goes away.
	dns.Set("seeds.meshsock.test", "127.0.0.3")
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, jnWait, func() bool { return jnLinked(n, renewed.ID()) },
		"the node to join the member the changed record names")
	if dns.Queries("seeds.meshsock.test") <= asked {
		t.Error("the name was not resolved again")
	}
}

// TestObservedAddressAdvertised: a node listening on an unspecified
// address puts the address its peers see it at into its signed record
// only once two peers from distinct sources agree; a lying peer's claim
// never gets in, and the record reaches the neighbours.
func TestObservedAddressAdvertised(t *testing.T) {
	testdns.NeedLoopbacks(t, "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.6")
	n := jnNode(t, "0.0.0.0:0", WithDiscovery(false))
	_, port, _ := net.SplitHostPort(n.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), jnWait)
	defer cancel()

	ln, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	lie := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 1234}
	liar := jnNode(t, "", WithBaseOptions(base.WithListener(jnLyingListener{ln, lie})))
	if err := n.Connect(ctx, liar.Addr().String()); err != nil {
		t.Fatal(err)
	}
	honest := jnNode(t, "127.0.0.2:0")
	if err := n.Connect(ctx, honest.Addr().String()); err != nil {
		t.Fatal(err)
	}
	lied := net.JoinHostPort("203.0.113.9", port)
	// One liar and one honest peer: no quorum for either address.
	c, _ := n.base.Conn(honest.ID())
	host, _, _ := net.SplitHostPort(c.Observed())
	want := net.JoinHostPort(host, port)
	if got := n.base.ObservedAddrs(); len(got) != 0 {
		t.Fatalf("agreed on %v with one peer per address", got)
	}
	second := jnNode(t, "127.0.0.3:0")
	if err := n.Connect(ctx, second.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, jnWait, func() bool { return slices.Contains(n.Record().Addrs, want) },
		"the record to advertise the address two peers agree on")
	if addrs := n.Record().Addrs; addrs[0] != want || slices.Contains(addrs, lied) {
		t.Fatalf("record addresses %v; want %s first and never the liar's %s", addrs, want, lied)
	}
	// The neighbours get the new record, and can dial what it says.
	testnet.Eventually(t, jnWait, func() bool {
		return slices.Contains(second.known.addrs(n.ID()), want)
	}, "a neighbour to hold the record with the learnt address")
	third := jnNode(t, "")
	if err := third.Connect(ctx, want); err != nil {
		t.Fatalf("dialling the advertised address %s: %v", want, err)
	}
	if !jnLinked(third, n.ID()) {
		t.Fatalf("%s is not the node", want)
	}
}

// TestRecordAddrs: the learnt addresses follow the given ones, before one
// with an unspecified host, within the record's limit.
func TestRecordAddrs(t *testing.T) {
	many := []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1", "10.0.0.6:1", "10.0.0.7:1"}
	for _, c := range []struct {
		own, learnt, want []string
	}{
		{[]string{"[::]:4000"}, nil, []string{"[::]:4000"}},
		{[]string{"[::]:4000"}, []string{"192.0.2.1:4000"}, []string{"192.0.2.1:4000", "[::]:4000"}},
		{[]string{"192.0.2.7:4000"}, []string{"192.0.2.1:4000", "192.0.2.7:4000"}, []string{"192.0.2.7:4000", "192.0.2.1:4000"}},
		{many, []string{"192.0.2.1:1", "192.0.2.2:1"}, append(slices.Clone(many), "192.0.2.1:1")},
	} {
		if got := recordAddrs(c.own, c.learnt); !slices.Equal(got, c.want) {
			t.Errorf("recordAddrs(%v, %v) = %v; want %v", c.own, c.learnt, got, c.want)
		}
	}
}

// jnLyingListener reports every accepted connection as coming from claim,
// so that the node behind it tells each peer it sees it there.
type jnLyingListener struct {
	net.Listener
	claim *net.TCPAddr
}

func (l jnLyingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return jnLyingConn{c, l.claim}, nil
}

type jnLyingConn struct {
	net.Conn
	claim *net.TCPAddr
}

func (c jnLyingConn) RemoteAddr() net.Addr { return c.claim }

// TestRejoinSparesNeighbours: re-joining through a seed that is already a
// neighbour (a link it dialled to this node) makes no second link: a small
// mesh, always short of peers, re-joins every refresh interval.
func TestRejoinSparesNeighbours(t *testing.T) {
	n := jnNode(t, "127.0.0.1:0", WithDiscovery(false))
	a := jnNode(t, "127.0.0.1:0", WithDiscovery(false))
	ctx, cancel := context.WithTimeout(context.Background(), jnWait)
	defer cancel()
	if err := a.Connect(ctx, n.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, jnWait, func() bool { return jnLinked(n, a.ID()) }, "the inbound link")
	before := n.base.Stats().Connects
	if err := n.rejoinVia(ctx, a.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if got := n.base.Stats().Connects; got != before {
		t.Fatalf("%d connections registered by the re-join; want none", got-before)
	}
	other := jnNode(t, "127.0.0.1:0")
	if err := n.rejoinVia(ctx, other.Addr().String()); err != nil || !jnLinked(n, other.ID()) {
		t.Fatalf("re-join through a seed that is no neighbour: %v", err)
	}
}
