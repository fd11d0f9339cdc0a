package chord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// Test timing: maintenance runs fast, timeouts are generous (the machine
// has 2 cores, the race detector slows everything, and other tests run at
// the same time).
const (
	testStabilize  = 50 * time.Millisecond
	testFixFingers = 50 * time.Millisecond
	testCheckPred  = 150 * time.Millisecond
	testRequest    = 5 * time.Second
	testRPC        = 2 * time.Second
	convergeWithin = 90 * time.Second
)

// testLogger logs warnings and errors to t.Log; CHORD_TEST_LOG=debug (or
// info) shows more.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	switch strings.ToLower(os.Getenv("CHORD_TEST_LOG")) {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return testnet.LoggerAt(t, level)
}

// testOptions are the options every test node gets before its own.
func testOptions(t testing.TB) []Option {
	return []Option{
		WithLogger(testLogger(t)),
		WithStabilizeInterval(testStabilize),
		WithFixFingersInterval(testFixFingers),
		WithCheckPredecessorInterval(testCheckPred),
		WithRequestTimeout(testRequest),
		WithRPCTimeout(testRPC),
		WithBaseOptions(base.WithBufferSizes(4096, 4096)),
	}
}

// newNode starts a node on 127.0.0.1 that is closed when the test ends.
func newNode(t testing.TB, opts ...Option) *Socket {
	t.Helper()
	s, err := NewSocket("127.0.0.1:0", append(testOptions(t), opts...)...)
	if err != nil {
		t.Fatalf("NewSocket: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// closeNodes closes nodes concurrently (the cleanups would do it one by
// one, each waiting for its flush).
func closeNodes(nodes []*Socket) {
	var wg sync.WaitGroup
	for _, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close(context.Background())
		}()
	}
	wg.Wait()
}

// buildRing starts n nodes and joins each, in turn, through a random node
// already on the ring.
func buildRing(t testing.TB, n int, rng *rand.Rand, opts ...Option) []*Socket {
	t.Helper()
	nodes := make([]*Socket, 0, n)
	t.Cleanup(func() { closeNodes(nodes) })
	for i := 0; i < n; i++ {
		s, err := NewSocket("127.0.0.1:0", append(testOptions(t), opts...)...)
		if err != nil {
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		if i > 0 {
			joinVia(t, s, nodes[rng.IntN(len(nodes))])
		}
		nodes = append(nodes, s)
	}
	return nodes
}

// joinVia joins s to the ring through via. A join whose answer does not
// come in time is tried again, as an application would, until a deadline
// of three tries: the answer reaches a joining node only over a link its
// owner dials to it within the RPC timeout (the ring has no route to it
// yet), and a TLS handshake under -race on a loaded 2-core machine
// sometimes takes longer (115 of 4867 dials while a 64-node ring was
// built at a load average of 14; 17 of 20 such builds lost a join).
func joinVia(t testing.TB, s, via *Socket) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*testRequest+testRPC)
	defer cancel()
	for {
		_, err := s.Join(ctx, via.Addr().String())
		if err == nil {
			return
		}
		if !errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			t.Fatalf("%s joining via %s: %v", s.ID().Short(), via.ID().Short(), err)
		}
		t.Logf("%s joining via %s: %v; joining again", s.ID().Short(), via.ID().Short(), err)
	}
}

func sortedIDs(nodes []*Socket) []protocol.NodeID {
	ids := make([]protocol.NodeID, len(nodes))
	for i, s := range nodes {
		ids[i] = s.ID()
	}
	slices.SortFunc(ids, func(a, b protocol.NodeID) int { return a.Compare(b) })
	return ids
}

// ringProblem returns "" if every node's successor and predecessor match
// the sorted list of IDs, or a description of the first mismatch.
func ringProblem(nodes []*Socket) string {
	ids := sortedIDs(nodes)
	n := len(ids)
	pos := make(map[protocol.NodeID]int, n)
	for i, id := range ids {
		pos[id] = i
	}
	bad := 0
	first := ""
	for _, s := range nodes {
		i := pos[s.ID()]
		wantSucc, wantPred := ids[(i+1)%n], ids[(i+n-1)%n]
		succ := s.Successor().ID
		pred, ok := s.Predecessor()
		if n == 1 {
			continue
		}
		if succ != wantSucc || !ok || pred.ID != wantPred {
			bad++
			if first == "" {
				first = fmt.Sprintf("%s: successor %s (want %s), predecessor %s (want %s)",
					s.ID().Short(), succ.Short(), wantSucc.Short(), pred.ID.Short(), wantPred.Short())
			}
		}
	}
	if bad == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d nodes wrong; first: %s", bad, n, first)
}

// waitRing waits until the ring has converged.
func waitRing(t testing.TB, nodes []*Socket, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last string
	if err := testnet.WaitFor(ctx, func() bool { last = ringProblem(nodes); return last == "" }); err != nil {
		t.Fatalf("ring of %d did not converge within %v: %s", len(nodes), within, last)
	}
	return time.Since(start)
}

// fingerProblem returns "" if every node's finger table matches the
// oracle: finger i is the owner of ID + 2^i (zero where that is the node
// itself).
func fingerProblem(nodes []*Socket) string {
	ids := sortedIDs(nodes)
	bad := 0
	first := ""
	for _, s := range nodes {
		fingers := s.Fingers()
		for i := range IDBits {
			want, _ := Owner(ids, FingerStart(s.ID(), i))
			if want == s.ID() {
				want = protocol.NodeID{}
			}
			if fingers[i].ID != want {
				bad++
				if first == "" {
					first = fmt.Sprintf("%s finger %d: %s, want %s", s.ID().Short(), i, fingers[i].ID.Short(), want.Short())
				}
			}
		}
	}
	if bad == 0 {
		return ""
	}
	return fmt.Sprintf("%d wrong fingers; first: %s", bad, first)
}

func waitFingers(t testing.TB, nodes []*Socket, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last string
	if err := testnet.WaitFor(ctx, func() bool { last = fingerProblem(nodes); return last == "" }); err != nil {
		t.Fatalf("fingers of %d nodes did not converge within %v: %s", len(nodes), within, last)
	}
	return time.Since(start)
}

func randomKey(rng *rand.Rand) protocol.NodeID {
	var k protocol.NodeID
	for i := range k {
		k[i] = byte(rng.Uint32())
	}
	return k
}

// lookupStats are the hop figures of a batch of lookups.
type lookupStats struct {
	n, wrong, failed int
	hopsSum, hopsMax int
	firstProblem     string
}

func (ls lookupStats) mean() float64 {
	if ok := ls.n - ls.failed; ok > 0 {
		return float64(ls.hopsSum) / float64(ok)
	}
	return 0
}

// checkLookups looks up n random keys from random nodes, workers at a time,
// and compares each owner with the oracle.
func checkLookups(t testing.TB, nodes []*Socket, n int, rng *rand.Rand) lookupStats {
	t.Helper()
	ids := sortedIDs(nodes)
	type job struct {
		from *Socket
		key  protocol.NodeID
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var ls lookupStats
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				ctx, cancel := context.WithTimeout(context.Background(), 2*testRequest)
				res, err := j.from.LookupDetail(ctx, j.key)
				cancel()
				want, _ := Owner(ids, j.key)
				mu.Lock()
				ls.n++
				switch {
				case err != nil:
					ls.failed++
					if ls.firstProblem == "" {
						ls.firstProblem = fmt.Sprintf("lookup of %s from %s: %v", j.key, j.from.ID().Short(), err)
					}
				case res.Owner.ID != want:
					ls.wrong++
					if ls.firstProblem == "" {
						ls.firstProblem = fmt.Sprintf("lookup of %s from %s: owner %s, want %s", j.key, j.from.ID().Short(), res.Owner.ID.Short(), want.Short())
					}
				}
				if err == nil {
					ls.hopsSum += res.Hops
					ls.hopsMax = max(ls.hopsMax, res.Hops)
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- job{nodes[rng.IntN(len(nodes))], randomKey(rng)}
	}
	close(jobs)
	wg.Wait()
	return ls
}
