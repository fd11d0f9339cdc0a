package chord

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// slowMaintenance are the maintenance timers for large rings: 64 nodes
// under the race detector on 2 cores cannot afford a lookup per node every
// 50 ms.
func slowMaintenance() []Option {
	return []Option{
		WithStabilizeInterval(100 * time.Millisecond),
		WithFixFingersInterval(100 * time.Millisecond),
		WithCheckPredecessorInterval(300 * time.Millisecond),
	}
}

// TestRingConverges builds rings by successive joins through random
// members, waits until every successor and predecessor is right, then
// checks 1000 random lookups from random nodes against the oracle.
func TestRingConverges(t *testing.T) {
	for _, n := range []int{8, 32} {
		t.Run(itoa(n), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(n), 1))
			start := time.Now()
			nodes := buildRing(t, n, rng)
			built := time.Since(start)
			conv := waitRing(t, nodes, convergeWithin)
			ls := checkLookups(t, nodes, 1000, rng)
			if ls.wrong > 0 || ls.failed > 0 {
				t.Fatalf("%d nodes: %d of %d lookups wrong, %d failed; %s", n, ls.wrong, ls.n, ls.failed, ls.firstProblem)
			}
			t.Logf("%d nodes: built in %v, converged %v later; 1000 lookups correct, hops mean %.2f max %d",
				n, built.Round(time.Millisecond), conv.Round(time.Millisecond), ls.mean(), ls.hopsMax)
		})
	}
}

// TestRing64Hops builds a 64-node ring, waits for the ring and then the
// finger tables to converge, and checks lookups and their hop counts:
// mean <= log2(64)/2 + 1 = 4, max <= 2*log2(64) = 12.
func TestRing64Hops(t *testing.T) {
	if testing.Short() {
		t.Skip("64 nodes: skipped in -short mode")
	}
	rng := rand.New(rand.NewPCG(64, 1))
	opts := slowMaintenance()
	if raceEnabled {
		// 64 nodes keep their links under the race detector's limit of
		// 8128 goroutines with a cap of 32 links each.
		opts = append(opts, WithMaxLinks(32))
	}
	start := time.Now()
	nodes := buildRing(t, 64, rng, opts...)
	built := time.Since(start)
	conv := waitRing(t, nodes, convergeWithin)
	fing := waitFingers(t, nodes, convergeWithin)
	answered := func() (responses, signed uint64) {
		for _, s := range nodes {
			st := s.Stats()
			responses += st.Responses
			signed += st.SignedAnswers
		}
		return responses, signed
	}
	resp0, signed0 := answered()
	ls := checkLookups(t, nodes, 1000, rng)
	resp1, signed1 := answered()
	if ls.wrong > 0 || ls.failed > 0 {
		t.Fatalf("%d of %d lookups wrong, %d failed; %s", ls.wrong, ls.n, ls.failed, ls.firstProblem)
	}
	var links int
	var evictions uint64
	for _, s := range nodes {
		st := s.Stats()
		links += st.Links
		evictions += st.Evictions
	}
	t.Logf("64 nodes: built in %v, ring converged %v later, fingers %v after that; goroutines %d, links/node %.1f, evictions %d",
		built.Round(time.Millisecond), conv.Round(time.Millisecond), fing.Round(time.Millisecond),
		runtime.NumGoroutine(), float64(links)/64, evictions)
	t.Logf("64 nodes, 1000 lookups from random nodes: hops mean %.2f, max %d", ls.mean(), ls.hopsMax)
	t.Logf("answers: %d while the ring was built, %d of them signed; %d during the lookups (fix-fingers included), %d signed",
		resp0, signed0, resp1-resp0, signed1-signed0)
	if m := ls.mean(); m > 4 {
		t.Errorf("mean hops %.2f > 4", m)
	}
	if ls.hopsMax > 12 {
		t.Errorf("max hops %d > 12", ls.hopsMax)
	}
	// The nodes' own histograms agree with what the callers saw.
	var count, sum uint64
	for _, s := range nodes {
		st := s.Stats()
		for h, c := range st.Hops {
			count += c
			sum += uint64(h) * c
		}
	}
	if count != 1000 || sum != uint64(ls.hopsSum) {
		t.Errorf("Stats.Hops counts %d lookups, %d hops; callers saw 1000 and %d", count, sum, ls.hopsSum)
	}
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}
