package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// cluster is a set of mesh nodes on 127.0.0.1, closed when the test ends.
type cluster struct {
	t      testing.TB
	nodes  []*Socket
	extras []*base.Socket // hand-driven peers, counted by waitQuiet
}

// startCluster starts n nodes. Unless opts say otherwise, discovery is off,
// the outgoing cap is high, so the topology is exactly what wire makes,
// and membership is off, so that no member message adds to the traffic
// the tests count.
func startCluster(t testing.TB, n int, opts ...Option) *cluster {
	t.Helper()
	c := &cluster{t: t}
	logger := testnet.Logger(t)
	t.Cleanup(c.closeAll)
	for i := 0; i < n; i++ {
		s, err := NewSocket("127.0.0.1:0", append([]Option{
			WithDiscovery(false), WithMaxOutgoing(64), WithMaxPeers(64), WithMembership(false),
			WithLogger(logger.With("i", i)),
		}, opts...)...)
		if err != nil {
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		c.nodes = append(c.nodes, s)
	}
	return c
}

func (c *cluster) closeAll() {
	var wg sync.WaitGroup
	for _, s := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close(context.Background())
		}()
	}
	wg.Wait()
}

// wire connects the nodes along edges and waits until both ends of every
// edge see each other.
func (c *cluster) wire(edges [][2]int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := testnet.Wire(ctx, len(c.nodes), edges, func(ctx context.Context, from, to int) error {
		return c.nodes[from].Connect(ctx, c.nodes[to].Addr().String())
	})
	if err != nil {
		c.t.Fatalf("wiring: %v", err)
	}
	degrees := testnet.Degrees(len(c.nodes), edges)
	testnet.Eventually(c.t, 30*time.Second, func() bool {
		for i, s := range c.nodes {
			if len(s.Peers()) != degrees[i] {
				return false
			}
		}
		return true
	}, "every node to see its neighbours")
}

// inbox counts, per node, how often each broadcast payload arrived. It
// claims every user message through a handler.
type inbox struct {
	mu     sync.Mutex
	counts []map[string]int
	per    []int // per node, all payloads
	total  int
	origin map[string]int // payload → 1 + index of its sender (collectOrigins)
}

func (c *cluster) collect() *inbox {
	in := &inbox{counts: make([]map[string]int, len(c.nodes)), per: make([]int, len(c.nodes))}
	for i, s := range c.nodes {
		in.counts[i] = make(map[string]int)
		s.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
			in.mu.Lock()
			in.counts[i][string(m.Packets[0])]++
			in.per[i]++
			in.total++
			in.mu.Unlock()
			return true
		}))
	}
	return in
}

func (in *inbox) count(node int, payload string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.counts[node][payload]
}

// received is how many user messages node got, all payloads together.
func (in *inbox) received(node int) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.per[node]
}

func (in *inbox) sum() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.total
}

func payload(i int) []byte { return []byte(fmt.Sprintf("msg-%06d", i)) }

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitQuiet waits until every frame any node sent has been read by its
// peer: nothing is left in flight.
func (c *cluster) waitQuiet() {
	c.t.Helper()
	testnet.Eventually(c.t, 30*time.Second, func() bool {
		var out, in uint64
		for _, s := range c.nodes {
			st := s.Stats()
			out += st.FramesOut
			in += st.FramesIn
		}
		for _, s := range c.extras {
			st := s.Stats()
			out += st.FramesOut
			in += st.FramesIn
		}
		return out == in
	}, "the network to go quiet")
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// waitQuietAmong waits until every frame the cluster's nodes sent each
// other has been read, ignoring their links to hand-driven peers (which
// may have been cut with frames in flight).
func (c *cluster) waitQuietAmong() {
	c.t.Helper()
	ours := make(map[protocol.NodeID]bool, len(c.nodes))
	for _, s := range c.nodes {
		ours[s.ID()] = true
	}
	testnet.Eventually(c.t, 30*time.Second, func() bool {
		out := make(map[[2]protocol.NodeID]uint64)
		in := make(map[[2]protocol.NodeID]uint64)
		for _, s := range c.nodes {
			for _, conn := range s.Base().Conns() {
				if !ours[conn.ID()] {
					continue
				}
				st := conn.Stats()
				out[[2]protocol.NodeID{s.ID(), conn.ID()}] = st.FramesOut
				in[[2]protocol.NodeID{conn.ID(), s.ID()}] = st.FramesIn
			}
		}
		for k, n := range out {
			if in[k] != n {
				return false
			}
		}
		return len(out) == len(in)
	}, "the links between the nodes to go quiet")
}
