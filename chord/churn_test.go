package chord

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// kill makes s vanish as if its process died: no Leave, no flush; its
// links and listener close under the peers.
func kill(s *Socket) { _ = s.close(context.Background(), false) }

// prober runs lookups from random live nodes until stopped and records
// the longest call: no call may hang past its timeout.
type prober struct {
	mu      sync.Mutex
	nodes   []*Socket
	longest time.Duration
	calls   int
	errs    map[string]int
}

func (p *prober) set(nodes []*Socket) {
	p.mu.Lock()
	p.nodes = slices.Clone(nodes)
	p.mu.Unlock()
}

func (p *prober) run(stop <-chan struct{}, seed uint64, timeout time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 99))
	for {
		select {
		case <-stop:
			return
		default:
		}
		p.mu.Lock()
		from := p.nodes[rng.IntN(len(p.nodes))]
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		start := time.Now()
		_, err := from.Lookup(ctx, randomKey(rng))
		d := time.Since(start)
		cancel()
		p.mu.Lock()
		p.calls++
		p.longest = max(p.longest, d)
		if err != nil {
			kind := "other"
			switch {
			case errors.Is(err, ErrTimeout):
				kind = "timeout"
			case errors.Is(err, ErrNoRoute):
				kind = "no route"
			case errors.Is(err, ErrClosed):
				kind = "closed"
			}
			p.errs[kind]++
		}
		p.mu.Unlock()
	}
}

// TestChurn kills 20 % of a 32-node ring abruptly and joins new nodes
// while lookups run; the ring converges again within a bounded number of
// stabilization rounds, every lookup is then correct, and no lookup hung
// past its timeout meanwhile.
func TestChurn(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 1))
	nodes := buildRing(t, 32, rng)
	waitRing(t, nodes, convergeWithin)
	waitFingers(t, nodes, convergeWithin)

	const probeTimeout = 2 * time.Second
	p := &prober{errs: map[string]int{}}
	p.set(nodes)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(stop, uint64(i), probeTimeout)
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	before := map[*Socket]uint64{}
	for _, s := range nodes {
		before[s] = s.Stats().Stabilizations
	}
	// Kill 7 of 32 (20 %, rounded up) at once.
	rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	victims, live := nodes[:7], slices.Clone(nodes[7:])
	p.set(live)
	start := time.Now()
	var kw sync.WaitGroup
	for _, s := range victims {
		kw.Add(1)
		go func() {
			defer kw.Done()
			kill(s)
		}()
	}
	kw.Wait()
	// Join 6 new nodes through random survivors.
	for range 6 {
		s := newNode(t)
		joinVia(t, s, live[rng.IntN(len(live))])
		live = append(live, s)
		before[s] = 0
	}
	p.set(live)
	conv := waitRing(t, live, convergeWithin)
	elapsed := time.Since(start)
	var rounds uint64
	for _, s := range live {
		rounds = max(rounds, s.Stats().Stabilizations-before[s])
	}
	t.Logf("killed 7 of 32 and joined 6: ring correct again %v after the kill, within %d stabilization rounds (interval %v)",
		elapsed.Round(time.Millisecond), rounds, testStabilize)
	_ = conv
	// Routing is right again once the ring is: every lookup agrees with
	// the oracle of live nodes (fingers to dead nodes have no live link
	// and are not used).
	ls := checkLookups(t, live, 1000, rng)
	if ls.wrong > 0 || ls.failed > 0 {
		t.Fatalf("after churn: %d of %d lookups wrong, %d failed; %s", ls.wrong, ls.n, ls.failed, ls.firstProblem)
	}
	// 5-8 rounds on a quiet machine; up to about 60 with four -race runs of
	// the suite at once on 2 cores (slow answers, extra rounds kicked by
	// links going down).
	if rounds > 150 {
		t.Errorf("convergence took %d stabilization rounds", rounds)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Logf("%d lookups during churn: longest %v, errors %v", p.calls, p.longest.Round(time.Millisecond), p.errs)
	if p.longest > probeTimeout+3*time.Second {
		t.Errorf("a lookup took %v, timeout %v", p.longest, probeTimeout)
	}
}

// TestGracefulLeave: nodes that close hand over to their neighbours (the
// neighbours count the Leave), and the ring closes the gap.
func TestGracefulLeave(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	nodes := buildRing(t, 12, rng)
	waitRing(t, nodes, convergeWithin)
	for range 3 {
		i := rng.IntN(len(nodes))
		leaver := nodes[i]
		nodes = slices.Concat(nodes[:i], nodes[i+1:]) // not Delete: buildRing's cleanup shares the array
		succ, pred := leaver.Successor(), mustPred(t, leaver)
		bySucc, byPred := byID(nodes)[succ.ID], byID(nodes)[pred.ID]
		ls, lp := bySucc.Stats().Leaves, byPred.Stats().Leaves
		if err := leaver.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		testnet.Eventually(t, 20*time.Second, func() bool {
			return bySucc.Stats().Leaves == ls+1 && byPred.Stats().Leaves == lp+1
		}, "both neighbours of %s get its hand-over", leaver.ID().Short())
		waitRing(t, nodes, convergeWithin)
	}
	ls := checkLookups(t, nodes, 300, rng)
	if ls.wrong > 0 || ls.failed > 0 {
		t.Fatalf("after leaves: %d wrong, %d failed; %s", ls.wrong, ls.failed, ls.firstProblem)
	}
}

func mustPred(t *testing.T, s *Socket) PeerInfo {
	t.Helper()
	p, ok := s.Predecessor()
	if !ok {
		t.Fatalf("%s has no predecessor", s.ID().Short())
	}
	return p
}
