package chord

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testdns"
)

// jnNodes starts a chord node on each ip, all on one port (an A record
// holds no port), and returns them and the port.
func jnNodes(t *testing.T, ips []string, opts ...Option) ([]*Socket, string) {
	t.Helper()
	var nodes []*Socket
	port := testdns.SamePort(t, ips, func(addr string) (string, func(), error) {
		s, err := NewSocket(addr, append(testOptions(t), opts...)...)
		if err != nil {
			return "", nil, err
		}
		nodes = append(nodes, s)
		_, port, _ := net.SplitHostPort(s.Addr().String())
		return port, func() { _ = s.Close(context.Background()); nodes = nodes[:len(nodes)-1] }, nil
	})
	t.Cleanup(func() { closeNodes(nodes) })
	return nodes, port
}

var jnFast = WithJoin(JoinConfig{Backoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})

// TestJoinThroughDNSName: a ring's DNS name with a record per member and
// one dead record: a new node joins through the live ones (a link to
// each, its place found through one of them) and the ring converges.
func TestJoinThroughDNSName(t *testing.T) {
	dns := testdns.Start(t)
	ring, port := jnNodes(t, []string{"127.0.0.2", "127.0.0.3"})
	joinVia(t, ring[1], ring[0])
	waitRing(t, ring, convergeWithin)
	dns.Set("ring.meshsock.test", "127.0.0.2", "127.0.0.4", "127.0.0.3")
	n := newNode(t, WithResolver(dns.Resolver()), jnFast)
	ctx, cancel := context.WithTimeout(context.Background(), 3*testRequest)
	defer cancel()
	joined, err := n.Join(ctx, "ring.meshsock.test:"+port)
	if err != nil || joined != 2 {
		t.Fatalf("Join = %d, %v; want 2 links and no error", joined, err)
	}
	waitRing(t, append(ring, n), convergeWithin)
}

// TestJoinAloneRetriesSeeds: a node whose seeds were all down when it
// joined, and which is therefore alone, joins through them again once one
// is back, by itself.
func TestJoinAloneRetriesSeeds(t *testing.T) {
	first, port := jnNodes(t, []string{"127.0.0.2"})
	seed := net.JoinHostPort("127.0.0.2", port)
	closeNodes(first)
	n := newNode(t, WithJoin(JoinConfig{Attempts: 1, Refresh: 100 * time.Millisecond}))
	ctx, cancel := context.WithTimeout(context.Background(), testRequest)
	defer cancel()
	joined, err := n.Join(ctx, seed)
	var je *JoinError
	if joined != 0 || !errors.As(err, &je) || len(je.Failures) != 1 || je.Failures[0].Addr != seed {
		t.Fatalf("Join = %d, %v; want 0 and a *JoinError naming %s", joined, err, seed)
	}
	back, err := NewSocket(seed, testOptions(t)...)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", seed, err)
	}
	t.Cleanup(func() { _ = back.Close(context.Background()) })
	waitRing(t, []*Socket{back, n}, convergeWithin)
}
