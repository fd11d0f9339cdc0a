package chord

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// The benchmark ring is built once per test binary (building and
// converging 64 nodes takes seconds) and closed by TestMain.
var bench struct {
	once  sync.Once
	nodes []*Socket
	err   error
}

func closeBenchRing() { closeNodes(bench.nodes) }

func benchRing() ([]*Socket, error) {
	bench.once.Do(func() {
		rng := rand.New(rand.NewPCG(64, 64))
		opts := []Option{
			WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
			WithStabilizeInterval(100 * time.Millisecond),
			WithFixFingersInterval(100 * time.Millisecond),
			WithCheckPredecessorInterval(300 * time.Millisecond),
			WithBaseOptions(base.WithBufferSizes(4096, 4096)),
		}
		if raceEnabled {
			opts = append(opts, WithMaxLinks(32)) // under the race detector's goroutine limit
		}
		for i := range 64 {
			s, err := NewSocket("127.0.0.1:0", opts...)
			if err != nil {
				bench.err = err
				return
			}
			if i > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err = s.Join(ctx, bench.nodes[rng.IntN(len(bench.nodes))].Addr().String())
				cancel()
			}
			bench.nodes = append(bench.nodes, s)
			if err != nil {
				bench.err = err
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := testnet.WaitFor(ctx, func() bool { return ringProblem(bench.nodes) == "" && fingerProblem(bench.nodes) == "" }); err != nil {
			bench.err = fmt.Errorf("benchmark ring did not converge: %s %s", ringProblem(bench.nodes), fingerProblem(bench.nodes))
		}
	})
	return bench.nodes, bench.err
}

// BenchmarkLookup64 measures lookups of random keys from random nodes of a
// converged 64-node ring on loopback, 8 per core at a time (RunParallel):
// ns/op is the inverse of throughput; lookups/s and hops/op are reported.
func BenchmarkLookup64(b *testing.B) {
	nodes, err := benchRing()
	if err != nil {
		b.Fatal(err)
	}
	var seed atomic.Uint64
	var hops, failed atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		ctx := context.Background()
		for pb.Next() {
			res, err := nodes[rng.IntN(len(nodes))].LookupDetail(ctx, randomKey(rng))
			if err != nil {
				failed.Add(1)
				continue
			}
			hops.Add(int64(res.Hops))
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Errorf("%d of %d lookups failed", f, b.N)
	}
	b.ReportMetric(float64(hops.Load())/float64(b.N), "hops/op")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "lookups/s")
}

// BenchmarkLookup64Serial is one lookup at a time: ns/op is the latency of
// a lookup.
func BenchmarkLookup64Serial(b *testing.B) {
	nodes, err := benchRing()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]protocol.NodeID, 1024)
	for i := range keys {
		keys[i] = randomKey(rng)
	}
	ctx := context.Background()
	var hops int
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		res, err := nodes[i%len(nodes)].LookupDetail(ctx, keys[i%len(keys)])
		if err != nil {
			b.Fatal(err)
		}
		hops += res.Hops
	}
	b.ReportMetric(float64(hops)/float64(b.N), "hops/op")
}

// BenchmarkRequest64 measures request/reply round trips of 64-byte
// payloads to random keys, 8 per core at a time.
func BenchmarkRequest64(b *testing.B) {
	nodes, err := benchRing()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range nodes {
		s.RegisterHandler(echoOnce(s))
	}
	var seed atomic.Uint64
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 3))
		ctx := context.Background()
		for pb.Next() {
			if _, err := nodes[rng.IntN(len(nodes))].Request(ctx, randomKey(rng), payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// echoOnce is echo, registered at most once per node across benchmark runs.
var echoed sync.Map

func echoOnce(s *Socket) base.Handler {
	if _, loaded := echoed.LoadOrStore(s, true); loaded {
		return nil
	}
	return echo(s)
}
