package harness

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/mesh"
)

// wireTimeout bounds connecting a cluster.
const wireTimeout = 60 * time.Second

// benchLogger logs warnings and errors of the nodes to stderr (drops and
// lost links are worth seeing; nothing is logged in a clean run).
func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newMeshNode creates one mesh node for a fixed topology: discovery off,
// outgoing and peer caps fitted to the graph, and a handler that claims
// every plain broadcast and passes its payload to deliver.
func newMeshNode(cfg *Config, topo Topology, logger *slog.Logger, deliver func(payload []byte), junk *atomic.Uint64) (*mesh.Socket, error) {
	methods, err := cfg.Methods()
	if err != nil {
		return nil, err
	}
	modeOpts, err := ModeOptions(cfg.BroadcastMode())
	if err != nil {
		return nil, err
	}
	opts := []mesh.Option{
		mesh.WithDiscovery(false),
		// The bench measures the flood: member heartbeats and syncs would
		// add frames of their own (their cost: mesh's TestMemberCost).
		mesh.WithMembership(false),
		mesh.WithMaxOutgoing(max(cfg.Degree, topo.MaxOut)),
		mesh.WithMaxPeers(max(mesh.DefaultMaxPeers, topo.MaxDeg+1)),
		mesh.WithLogger(logger),
		mesh.WithCompression(methods...),
		mesh.WithBaseOptions(base.WithMaxConns(max(base.DefaultMaxConns, topo.MaxDeg+1))),
	}
	if cfg.SeenSize > 0 {
		opts = append(opts, mesh.WithSeenCache(cfg.SeenSize, mesh.DefaultSeenCacheAge))
	}
	if cfg.Unsigned {
		opts = append(opts, mesh.WithSignedBroadcasts(false))
	}
	opts = append(opts, mesh.WithProtocol(cfg.Protocol()))
	if cfg.FloodBudget > 0 {
		opts = append(opts, mesh.WithFloodBudget(cfg.FloodBudget, mesh.DefaultFloodBytes, mesh.DefaultFloodAbuse))
	}
	if cfg.SendQueue > 0 {
		opts = append(opts, mesh.WithBaseOptions(base.WithSendQueue(cfg.SendQueue, base.DefaultSendQueueBytes)))
	}
	opts = append(opts, modeOpts...)
	if cfg.CompressMin > 0 {
		opts = append(opts, mesh.WithBaseOptions(base.WithCompressThreshold(cfg.CompressMin)))
	}
	s, err := mesh.NewSocket("127.0.0.1:0", opts...)
	if err != nil {
		return nil, err
	}
	s.RegisterHandler(base.HandlerFunc(func(m *mesh.Message) bool {
		if m.Type != flags.Broadcast || m.Flag != flags.Broadcast || len(m.Packets) != 1 {
			return false
		}
		if p := m.Packets[0]; len(p) >= 4 && binary.LittleEndian.Uint32(p) == floodMark {
			junk.Add(1) // the flooder's (Config.Flood)
			return true
		}
		deliver(m.Packets[0])
		return true
	}))
	return s, nil
}

// waitNeighbours waits until node has want live neighbours.
func waitNeighbours(ctx context.Context, s *mesh.Socket, want int) error {
	err := testnet.WaitFor(ctx, func() bool { return s.Base().Stats().Connections >= want })
	if err != nil {
		return fmt.Errorf("%d of %d neighbours connected: %w", s.Base().Stats().Connections, want, err)
	}
	return nil
}

type meshCluster struct {
	nodes     []*mesh.Socket
	flood     *flooder // Config.Flood; nil without
	floodRate int
	junk      atomic.Uint64
}

func startMesh(ctx context.Context, cfg *Config, topo Topology, tr *tracker) (*meshCluster, error) {
	c := &meshCluster{}
	logger := benchLogger()
	for i := 0; i < cfg.Nodes; i++ {
		s, err := newMeshNode(cfg, topo, logger.With("node", i), func(p []byte) { tr.deliver(i, p) }, &c.junk)
		if err != nil {
			_ = c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	ctx, cancel := context.WithTimeout(ctx, wireTimeout)
	defer cancel()
	err := testnet.Wire(ctx, cfg.Nodes, topo.Edges, func(ctx context.Context, from, to int) error {
		return c.nodes[from].Connect(ctx, c.nodes[to].Addr().String())
	})
	if err == nil {
		for i, s := range c.nodes {
			if err = waitNeighbours(ctx, s, topo.Degrees[i]); err != nil {
				err = fmt.Errorf("node %d: %w", i, err)
				break
			}
		}
	}
	if err == nil && cfg.Flood > 0 {
		c.flood, err = newFlooder(ctx, c.nodes[0].Addr().String(), cfg.Size, !cfg.Unsigned, cfg.Protocol())
		c.floodRate = cfg.Flood
	}
	if err != nil {
		_ = c.close()
		return nil, err
	}
	return c, nil
}

// begin starts the flooder, if any, with the measured load.
func (c *meshCluster) begin() error {
	if c.flood != nil {
		c.flood.start(c.floodRate)
	}
	return nil
}

func (c *meshCluster) send(ctx context.Context, origin, _ int, buf []byte) error {
	return c.nodes[origin].Send(ctx, buf)
}

func (c *meshCluster) counters() (wireCounters, error) {
	var w wireCounters
	for _, s := range c.nodes {
		addMeshStats(&w, s.Stats())
	}
	if c.flood != nil {
		w.FloodSent = c.flood.sent.Load()
		w.FloodDelivered = c.junk.Load()
	}
	return w, nil
}

func addMeshStats(w *wireCounters, st mesh.Stats) {
	w.FramesOut += st.FramesOut
	w.BytesOut += st.BytesOut
	w.FramesIn += st.FramesIn
	w.FloodDuplicates += st.Duplicates
	w.RelayDrops += st.RelayDrops
	w.QueueDrops += st.QueueDrops
	w.RecvDrops += st.RecvDrops
	w.SeenRefused += st.SeenRefused
	w.SeenCacheSize += st.SeenCacheSize
	w.BudgetWaits += st.BudgetWaits
	w.Verified += st.Verified
	w.VerifyBatches += st.VerifyBatches
	w.PullsSent += st.PullsSent
	w.Repairs += st.Repairs
	w.Grafts += st.Grafts
	w.Prunes += st.Prunes
	w.RepairsGivenUp += st.RepairsGivenUp
	w.SlowDrops += st.SlowDrops
	w.DispatchDrops += st.DispatchDrops
}

func (c *meshCluster) close() error {
	if c.flood != nil {
		c.flood.stop()
	}
	return closeEach(len(c.nodes), func(i int) error { return c.nodes[i].Close(context.Background()) })
}

// closeEach closes n nodes concurrently (one by one, each would wait for
// its own flush) and returns the first error.
func closeEach(n int, closeNode func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := closeNode(i); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %d: %w", i, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
