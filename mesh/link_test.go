package mesh

import (
	"testing"
	"time"
)

// runBudget offers broadcasts to a budget every gap (the sender is never
// held up by more than the budget's waits) for d, and returns how many it
// took per second over the last second.
func runBudget(b *budget, now *int64, gap time.Duration, d time.Duration) float64 {
	end := *now + int64(d)
	taken, lastSec := 0, end-int64(time.Second)
	for *now < end {
		w := b.take(*now, 100)
		*now += int64(w) + int64(gap)
		if *now >= lastSec {
			taken++
		}
	}
	return float64(taken)
}

// TestOriginBudgetCutsFloodsNotBursts: a neighbour that sends without a
// pause at its origin budget is cut to the floor within about 100 ms, and gets its budget back once it has kept within it for a
// second; bursts the bucket absorbs, and a neighbour relaying at the flood
// budget, are never cut.
func TestOriginBudgetCutsFloodsNotBursts(t *testing.T) {
	now := time.Now().UnixNano()
	own := budget{rate: 10000, byteRate: 1 << 30, cuts: true}
	// A flooder offering 100 000/s.
	runBudget(&own, &now, 10*time.Microsecond, 300*time.Millisecond)
	if own.scale != minBudgetScale {
		t.Fatalf("after 300 ms of flooding the budget is at %v, want the floor %v", own.scale, minBudgetScale)
	}
	if got := runBudget(&own, &now, 10*time.Microsecond, 2*time.Second); got > 10000*minBudgetScale*1.1 {
		t.Fatalf("the flooder got %v/s, floor %v/s", got, 10000*minBudgetScale)
	}
	if !own.abusing(now, time.Second) || own.abusing(now, time.Hour) {
		t.Fatal("abusing: wrong about a flooder held at the floor for 2 s")
	}
	// It calms down to 100/s: the budget comes back, doubling each second.
	runBudget(&own, &now, 10*time.Millisecond, 6*time.Second)
	if own.scale != 1 {
		t.Fatalf("after 6 s within budget it is at %v, want 1", own.scale)
	}

	// Bursts of 500 at line rate every 100 ms: 5000/s on average, half
	// the budget.
	bursty := budget{rate: 10000, byteRate: 1 << 30, cuts: true}
	for range 30 {
		runBudget(&bursty, &now, time.Microsecond, 500*time.Microsecond)
		now += int64(100 * time.Millisecond)
	}
	if bursty.scale != 1 {
		t.Fatalf("bursts cut the budget to %v", bursty.scale)
	}
	// A relay at its budget is paced, never cut.
	relay := budget{rate: 10000, byteRate: 1 << 30}
	if got := runBudget(&relay, &now, 10*time.Microsecond, 2*time.Second); relay.scale != 1 || got < 9000 || got > 11000 {
		t.Fatalf("a relay over budget got %v/s at scale %v, want about 10000/s at 1", got, relay.scale)
	}
}
