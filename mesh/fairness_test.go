package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// TestFloodingNeighbourHeldToItsBudget: one hostile neighbour of node 0
// floods unique broadcasts as fast as node 0 reads them while the four
// honest nodes (a ring) broadcast. Node 0 used to relay the flood at full
// rate to every node and application, and honest deliveries were lost.
// Now it reads the flooder no faster than its budget (counting the
// broadcasts it held back), and every honest broadcast reaches every
// honest node exactly once.
func TestFloodingNeighbourHeldToItsBudget(t *testing.T) {
	// The honest nodes send 1000 broadcasts/s in all, 250/s each, so no
	// link carries more than that of honest traffic; both budgets are well
	// above it.
	const rate = 2000
	c := startCluster(t, 4, WithFloodBudget(20000, 1<<30, 0), WithOriginBudget(rate))
	c.wire(testnet.Ring(4))
	in := c.collect()
	conn := c.intruder(c.nodes[0])
	spy := c.extras[len(c.extras)-1]

	stop := make(chan struct{})
	var junk atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		origin := newOrigin()
		ctx := ctxT(t, 60*time.Second)
		for seq := uint64(1); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := conn.SendEnvelope(ctx, 0, craft(origin, seq, time.Now(), 16, []byte("junk"))); err != nil {
				select {
				case <-stop:
				default:
					t.Errorf("flood: %v", err)
				}
				return
			}
			junk.Add(1)
		}
	}()

	const perNode = 500 // two seconds' worth
	start := time.Now()
	errs := make(chan error, len(c.nodes))
	var senders sync.WaitGroup
	for i, s := range c.nodes {
		senders.Add(1)
		go func() {
			defer senders.Done()
			ctx := ctxT(t, 60*time.Second)
			tick := time.NewTicker(4 * time.Millisecond) // 250/s from each node
			defer tick.Stop()
			for k := range perNode {
				<-tick.C
				if err := s.Send(ctx, []byte(fmt.Sprintf("honest-%d-%d", i, k))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	senders.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Send: %v", err)
	}
	want := perNode * len(c.nodes) * (len(c.nodes) - 1)
	if err := testnet.WaitFor(ctxT(t, 30*time.Second), func() bool { return honestSum(in) >= want }); err != nil {
		for i, s := range c.nodes {
			st := s.Stats()
			t.Logf("node %d: %d held back over budget, %d relay drops, %d dispatch drops", i, st.BudgetWaits, st.RelayDrops, st.DispatchDrops)
		}
		t.Fatalf("%d of %d honest deliveries", honestSum(in), want)
	}
	close(stop)
	// Cut the flooder off at both ends: node 0 would otherwise go on
	// reading, at its budget, what the flooder had queued and buffered.
	conn.Abort(errors.New("flood over"))
	if victim, ok := c.nodes[0].Base().Conn(spy.ID()); ok {
		victim.Abort(errors.New("flood over"))
	}
	wg.Wait()
	elapsed := time.Since(start)
	c.waitQuietAmong()

	for node := range c.nodes {
		for i := range c.nodes {
			for k := range perNode {
				want := 1
				if i == node {
					want = 0
				}
				if got := in.count(node, fmt.Sprintf("honest-%d-%d", i, k)); got != want {
					t.Fatalf("node %d got honest broadcast %d-%d %d times, want %d", node, i, k, got, want)
				}
			}
		}
	}
	st := c.nodes[0].Stats()
	sent := junk.Load()
	admitted := in.count(0, "junk")
	// The bucket is a sixteenth of a second deep.
	bound := int(float64(rate)*elapsed.Seconds()) + rate/16 + 1
	t.Logf("flood: %d sent in %v, %d admitted (bound %d), %d held back over budget", sent, elapsed, admitted, bound, st.BudgetWaits)
	if admitted > bound {
		t.Fatalf("node 0 admitted %d junk broadcasts in %v, budget %d/s", admitted, elapsed, rate)
	}
	if st.BudgetWaits == 0 {
		t.Fatal("no broadcast was counted as held back over budget")
	}
	for node := 1; node < len(c.nodes); node++ {
		if got := in.count(node, "junk"); got > admitted {
			t.Fatalf("node %d delivered %d junk broadcasts, more than node 0 admitted (%d)", node, got, admitted)
		}
	}
}

// honestSum counts the deliveries that are not junk.
func honestSum(in *inbox) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := in.total
	for _, m := range in.counts {
		n -= m["junk"]
	}
	return n
}

// TestAbusiveNeighbourClosed: a neighbour held to its smallest budget for
// the abuse bound is disconnected, counted and traced.
func TestAbusiveNeighbourClosed(t *testing.T) {
	var traced atomic.Int64
	c := startCluster(t, 1, WithFloodBudget(1<<20, 1<<30, 2*time.Second), WithOriginBudget(1000),
		WithTracer(TracerFunc(func(e TraceEvent) {
			if e.Kind == TraceAbuseClose {
				traced.Add(1)
			}
		})))
	conn := c.intruder(c.nodes[0])
	origin := newOrigin()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for seq := uint64(1); conn.Err() == nil; seq++ {
		if err := conn.SendEnvelope(ctx, 0, craft(origin, seq, time.Now(), 16, []byte("junk"))); err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the flooding neighbour was never disconnected")
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("disconnected after %v of abuse, bound 2 s", took)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return c.nodes[0].Stats().AbusiveClosed == 1 }, "the closing to be counted")
	if traced.Load() != 1 {
		t.Fatalf("traced %d closings, want 1", traced.Load())
	}
	if st := c.nodes[0].Stats(); st.BudgetWaits == 0 {
		t.Fatal("no broadcast was held back over budget")
	}
	// It cannot come back for a fresh budget: its identity is banned.
	intruder := c.extras[len(c.extras)-1]
	if _, err := intruder.Connect(ctxT(t, 10*time.Second), c.nodes[0].Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("the flooder's reconnect: %v, want ErrNotAuthorized (banned)", err)
	}
}
