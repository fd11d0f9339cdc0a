package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

func TestProtocolIsolation(t *testing.T) {
	a := startCluster(t, 1, WithProtocol(protocol.Protocol{Subnet: "red", Encryption: "plaintext"}))
	b := startCluster(t, 1, WithProtocol(protocol.Protocol{Subnet: "blue", Encryption: "plaintext"}))
	err := a.nodes[0].Connect(ctxT(t, 10*time.Second), b.nodes[0].Addr().String())
	if !errors.Is(err, ErrProtocolMismatch) {
		t.Fatalf("Connect across protocols: %v, want ErrProtocolMismatch", err)
	}
	if len(a.nodes[0].Peers())+len(b.nodes[0].Peers()) != 0 {
		t.Fatal("a connection across protocols was kept")
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return b.nodes[0].Stats().ProtocolMismatches == 1 },
		"the listener to count the mismatch")
}

func TestSelfConnect(t *testing.T) {
	c := startCluster(t, 1)
	err := c.nodes[0].Connect(ctxT(t, 5*time.Second), c.nodes[0].Addr().String())
	if !errors.Is(err, ErrSelfConnect) {
		t.Fatalf("Connect to self: %v, want ErrSelfConnect", err)
	}
}

// TestSelfConnectThroughOtherAddress: the node is recognised by its ID in
// the handshake even when dialled by another name.
func TestSelfConnectThroughOtherAddress(t *testing.T) {
	c := startCluster(t, 1)
	_, port, _ := cutPort(c.nodes[0].Addr().String())
	err := c.nodes[0].Connect(ctxT(t, 5*time.Second), "localhost:"+port)
	if !errors.Is(err, ErrSelfConnect) {
		t.Fatalf("Connect to self via localhost: %v, want ErrSelfConnect", err)
	}
}

func cutPort(addr string) (string, string, bool) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], true
		}
	}
	return addr, "", false
}

func TestSimultaneousDial(t *testing.T) {
	for round := range 10 {
		c := startCluster(t, 2)
		a, b := c.nodes[0], c.nodes[1]
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Add(2)
		go func() { defer wg.Done(); errs[0] = a.Connect(ctxT(t, 10*time.Second), b.Addr().String()) }()
		go func() { defer wg.Done(); errs[1] = b.Connect(ctxT(t, 10*time.Second), a.Addr().String()) }()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: Connect %d: %v", round, i, err)
			}
		}
		// Both ends settle on one connection, the same one.
		testnet.Eventually(t, 30*time.Second, func() bool {
			pa, pb := a.Peers(), b.Peers()
			if len(pa) != 1 || len(pb) != 1 {
				return false
			}
			return pa[0].Outbound != pb[0].Outbound
		}, "round %d: one shared connection", round)
		pa, pb := a.Peers()[0], b.Peers()[0]
		ca, _ := a.Base().Conn(pa.ID)
		cb, _ := b.Base().Conn(pb.ID)
		if ca.RemoteAddr().String() != cb.LocalAddr().String() || ca.LocalAddr().String() != cb.RemoteAddr().String() {
			t.Fatalf("round %d: the two ends kept different connections", round)
		}
		c.closeAll()
	}
}

// TestPeerExchangeFillsOutgoing: a node that joins through one member dials
// others it learns about until it has its outgoing quota.
func TestPeerExchangeFillsOutgoing(t *testing.T) {
	const n = 8
	c := startCluster(t, n, WithDiscovery(true), WithMaxOutgoing(3),
		WithMaintenance(50*time.Millisecond, 10*time.Millisecond, 200*time.Millisecond))
	ctx := ctxT(t, 20*time.Second)
	for i := 1; i < n; i++ {
		if err := c.nodes[i].Connect(ctx, c.nodes[0].Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	// Every node finds more neighbours than the one it joined through.
	// (Not necessarily 3 outgoing each: a node that others dialled may
	// have no one left to dial.)
	testnet.Eventually(t, 30*time.Second, func() bool {
		for _, s := range c.nodes {
			if s.Stats().Neighbours < 3 {
				return false
			}
		}
		return true
	}, "every node to reach 3 neighbours")
	for i, s := range c.nodes {
		if out := s.Stats().Outgoing; out > 3 {
			t.Fatalf("node %d has %d outgoing connections, cap 3", i, out)
		}
	}
	// The cap binds automatic dials only: a user Connect beyond it succeeds.
	full := -1
	testnet.Eventually(t, 30*time.Second, func() bool {
		for i, s := range c.nodes {
			if s.Stats().Outgoing == 3 {
				full = i
				return true
			}
		}
		return false
	}, "a node to fill its outgoing quota")
	extra := startCluster(t, 1)
	if err := c.nodes[full].Connect(ctx, extra.nodes[0].Addr().String()); err != nil {
		t.Fatalf("Connect beyond max outgoing: %v", err)
	}
	if _, ok := c.nodes[full].Base().Conn(extra.nodes[0].ID()); !ok {
		t.Fatal("no link after a Connect beyond max outgoing")
	}
}

// TestChurn closes a quarter of a 16-node mesh one node at a time while
// broadcasting; the rest keep receiving every later broadcast, and nodes
// that join start receiving.
func TestChurn(t *testing.T) {
	const n = 16
	c := startCluster(t, n, WithDiscovery(true), WithMaxOutgoing(3),
		WithMaintenance(50*time.Millisecond, 10*time.Millisecond, 200*time.Millisecond))
	ctx := ctxT(t, 120*time.Second)
	rng := rand.New(rand.NewPCG(16, 4))
	for i := 1; i < n; i++ {
		if err := c.nodes[i].Connect(ctx, c.nodes[rng.IntN(i)].Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	in := c.collect()
	alive := make(map[int]bool, n)
	for i := range n {
		alive[i] = true
	}
	// Background traffic while nodes leave: its delivery is not asserted
	// (a message sent at the instant a node leaves may miss the nodes the
	// leaver was relaying to), only that it does not break anything.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		pace := time.NewTicker(2 * time.Millisecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			_ = c.nodes[0].Send(ctx, []byte(fmt.Sprintf("bg-%d", i)))
		}
	}()

	msg := 0
	check := func(from int) {
		t.Helper()
		// Wait until the live nodes form a connected graph, then every
		// broadcast from now on must reach every live node.
		testnet.Eventually(t, 30*time.Second, func() bool { return c.liveConnected(alive) },
			"the mesh to heal")
		p := fmt.Sprintf("check-%d", msg)
		msg++
		if err := c.nodes[from].Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
		testnet.Eventually(t, 30*time.Second, func() bool {
			for i := range alive {
				if alive[i] && i != from && in.count(i, p) != 1 {
					return false
				}
			}
			return true
		}, "every live node to get %s", p)
	}
	check(0)
	for _, victim := range []int{3, 7, 11, 15} {
		if err := c.nodes[victim].Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		alive[victim] = false
		check(0)
		check(victim - 1)
	}
	close(stop)
	bg.Wait()

	// Newcomers join through a live node and start receiving.
	joiners := startCluster(t, 2, WithDiscovery(true), WithMaxOutgoing(3),
		WithMaintenance(50*time.Millisecond, 10*time.Millisecond, 200*time.Millisecond))
	jin := joiners.collect()
	for _, j := range joiners.nodes {
		if err := j.Connect(ctx, c.nodes[5].Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 30*time.Second, func() bool {
		seen := 0
		for _, p := range c.nodes[5].Peers() {
			if p.ID == joiners.nodes[0].ID() || p.ID == joiners.nodes[1].ID() {
				seen++
			}
		}
		return seen == 2
	}, "the contact node to register the joiners")
	if err := c.nodes[0].Send(ctx, []byte("welcome")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return jin.count(0, "welcome") == 1 && jin.count(1, "welcome") == 1 },
		"the joiners to receive")
	for i := range alive {
		if alive[i] && c.nodes[i].Stats().Neighbours == 0 {
			t.Fatalf("node %d was left with no neighbours", i)
		}
	}
}

// liveConnected reports whether the live nodes' connections form one
// connected graph, counting only links that both ends have registered.
func (c *cluster) liveConnected(alive map[int]bool) bool {
	index := make(map[protocol.NodeID]int, len(c.nodes))
	for i, s := range c.nodes {
		index[s.ID()] = i
	}
	half := make(map[[2]int]bool)
	var edges [][2]int
	for i, s := range c.nodes {
		if !alive[i] {
			continue
		}
		for _, p := range s.Peers() {
			j, ok := index[p.ID]
			if !ok || !alive[j] {
				continue
			}
			if half[[2]int{j, i}] {
				edges = append(edges, [2]int{i, j})
			}
			half[[2]int{i, j}] = true
		}
	}
	// Renumber the live nodes 0..k-1 for IsConnected.
	renum := make(map[int]int)
	for i := range c.nodes {
		if alive[i] {
			renum[i] = len(renum)
		}
	}
	for k, e := range edges {
		edges[k] = [2]int{renum[e[0]], renum[e[1]]}
	}
	return testnet.IsConnected(len(renum), dedupe(edges))
}

func dedupe(edges [][2]int) [][2]int {
	seen := make(map[[2]int]bool)
	var out [][2]int
	for _, e := range edges {
		if e[0] > e[1] {
			e = [2]int{e[1], e[0]}
		}
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
