package mesh

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestExactlyOnce floods hundreds of broadcasts, from random nodes at once,
// through lines, rings and random graphs, and checks that every node gets
// every broadcast exactly once.
func TestExactlyOnce(t *testing.T) {
	sizes := []int{3, 16, 64}
	if testing.Short() {
		sizes = []int{3, 16}
	}
	for _, n := range sizes {
		for _, topo := range []string{"line", "ring", "random"} {
			t.Run(fmt.Sprintf("%s-%d", topo, n), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(n), 7))
				var edges [][2]int
				switch topo {
				case "line":
					edges = testnet.Line(n)
				case "ring":
					edges = testnet.Ring(n)
				default:
					edges = testnet.Random(n, 4, rng)
				}
				c := startCluster(t, n)
				c.wire(edges)
				in := c.collect()

				const messages = 300
				const senders = 4
				var wg sync.WaitGroup
				errs := make(chan error, senders)
				for w := 0; w < senders; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx := ctxT(t, 30*time.Second)
						r := rand.New(rand.NewPCG(uint64(w), uint64(n)))
						for i := w; i < messages; i += senders {
							if err := c.nodes[r.IntN(n)].Send(ctx, payload(i)); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("Send: %v", err)
				}
				want := messages * (n - 1) // the origin does not deliver to itself
				testnet.Eventually(t, 60*time.Second, func() bool { return in.sum() >= want },
					"all %d deliveries", want)
				// Wait until every frame sent has been read, so a late
				// duplicate would have shown up before the counts are checked.
				c.waitQuiet()
				for node := 0; node < n; node++ {
					for i := 0; i < messages; i++ {
						got := in.count(node, string(payload(i)))
						if got > 1 {
							t.Fatalf("node %d got message %d %d times", node, i, got)
						}
					}
				}
				if got := in.sum(); got != want {
					t.Fatalf("%d deliveries, want %d", got, want)
				}
				var dropped uint64
				for _, s := range c.nodes {
					st := s.Stats()
					dropped += st.RelayDrops + st.RecvDrops + st.QueueDrops
				}
				if dropped != 0 {
					t.Fatalf("%d messages dropped", dropped)
				}
			})
		}
	}
}

// TestIdenticalPayloadsDeliveredTwice: two sends of the same bytes are two
// messages (py2p merged them when sent in the same second).
func TestIdenticalPayloadsDeliveredTwice(t *testing.T) {
	c := startCluster(t, 3)
	c.wire(testnet.Line(3))
	in := c.collect()
	ctx := ctxT(t, 10*time.Second)
	for range 2 {
		if err := c.nodes[0].Send(ctx, []byte("same")); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(1, "same") == 2 && in.count(2, "same") == 2 })
	c.waitQuiet()
	if in.count(1, "same") != 2 || in.count(2, "same") != 2 {
		t.Fatalf("got %d and %d copies, want 2 each", in.count(1, "same"), in.count(2, "same"))
	}
}

// intruder is a bare base socket speaking the mesh protocol by hand, for
// sending crafted envelopes.
func (c *cluster) intruder(target *Socket) *base.Conn {
	c.t.Helper()
	s := testnet.NewBase(c.t, "")
	conn, err := s.Connect(ctxT(c.t, 10*time.Second), target.Addr().String())
	if err != nil {
		c.t.Fatal(err)
	}
	c.extras = append(c.extras, s)
	return conn
}

// originKeys holds the keys of the origins newOrigin made up, so that
// craft can sign their broadcasts as a real origin would.
var originKeys sync.Map // protocol.NodeID -> ed25519.PrivateKey

// newOrigin makes up a node (a key and its ID) that crafted broadcasts
// come from.
func newOrigin() protocol.NodeID {
	k := base.GenerateKey()
	id := protocol.NodeIDFromKey(k.Public().(ed25519.PublicKey))
	originKeys.Store(id, k)
	return id
}

// craft returns a broadcast of sender's, signed with its key if newOrigin
// made it (unsigned otherwise).
func craft(sender protocol.NodeID, seq uint64, at time.Time, hopLimit uint8, packets ...[]byte) []byte {
	e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: sender, Seq: seq,
		Time: at.UnixNano(), HopLimit: hopLimit, Packets: packets}
	if k, ok := originKeys.Load(sender); ok {
		return e.AppendSigned(nil, k.(ed25519.PrivateKey))
	}
	return e.AppendTo(nil)
}

// TestTooOldDropped: a broadcast older than the age window is dropped and
// counted, not delivered and not relayed.
func TestTooOldDropped(t *testing.T) {
	c := startCluster(t, 2, WithSeenCache(1024, time.Second), WithClockSkew(0))
	c.wire(testnet.Line(2))
	in := c.collect()
	conn := c.intruder(c.nodes[0])
	ctx := ctxT(t, 10*time.Second)
	sender := newOrigin()
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 1, time.Now().Add(-time.Minute), 8, []byte("stale"))); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 2, time.Now(), 8, []byte("fresh"))); err != nil {
		t.Fatal(err)
	}
	// Per-link order: once "fresh" is in, "stale" has been judged.
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(1, "fresh") == 1 })
	if in.count(0, "stale")+in.count(1, "stale") != 0 {
		t.Fatal("a stale broadcast was delivered")
	}
	if got := c.nodes[0].Stats().TooOld; got != 1 {
		t.Fatalf("TooOld = %d, want 1", got)
	}
}

// TestDuplicateFlooderCannotCauseRerelay: a peer that sends the same
// broadcast a hundred times gets it relayed once.
func TestDuplicateFlooderCannotCauseRerelay(t *testing.T) {
	c := startCluster(t, 3)
	c.wire(testnet.Line(3))
	in := c.collect()
	conn := c.intruder(c.nodes[1])
	ctx := ctxT(t, 10*time.Second)
	sender := newOrigin()
	env := craft(sender, 1, time.Now(), 16, []byte("again"))
	for range 100 {
		if err := conn.SendEnvelope(ctx, 0, env); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 2, time.Now(), 16, []byte("end"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(2, "end") == 1 })
	c.waitQuiet()
	for node := 0; node < 3; node++ {
		if got := in.count(node, "again"); got != 1 {
			t.Fatalf("node %d got the repeated broadcast %d times, want 1", node, got)
		}
	}
	if got := c.nodes[1].Stats().Duplicates; got != 99 {
		t.Fatalf("middle node counted %d duplicates, want 99", got)
	}
	for _, i := range []int{0, 2} {
		if got := c.nodes[i].Stats().Duplicates; got != 0 {
			t.Fatalf("node %d saw %d duplicates: the middle node re-relayed", i, got)
		}
	}
}

// TestHopLimit: a broadcast goes no further than its hop limit.
func TestHopLimit(t *testing.T) {
	c := startCluster(t, 5)
	c.wire(testnet.Line(5))
	in := c.collect()
	conn := c.intruder(c.nodes[0])
	ctx := ctxT(t, 10*time.Second)
	sender := newOrigin()
	// The intruder is one hop from node 0, so hop limit 3 reaches nodes 0..2.
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 1, time.Now(), 3, []byte("near"))); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 2, time.Now(), 16, []byte("far"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(4, "far") == 1 })
	for node, want := range []int{1, 1, 1, 0, 0} {
		if got := in.count(node, "near"); got != want {
			t.Fatalf("node %d got the hop-limited broadcast %d times, want %d", node, got, want)
		}
	}
	// A forged hop byte beyond the limit is dropped and counted.
	if err := conn.SendEnvelope(ctx, 9, craft(sender, 3, time.Now(), 3, []byte("forged"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return c.nodes[0].Stats().HopLimitDrops == 1 })
}

// TestSeenCacheBounded: under a sustained flood the seen-state stays at
// one entry per origin (whatever the number of broadcasts) and memory
// stays flat.
func TestSeenCacheBounded(t *testing.T) {
	// Node 0 sends as fast as it can, well above the origin budget
	// without -race, which would cut it as a flooder; this test is about
	// the seen-state.
	// The message cache (which serves pulls) fills to its own bound with
	// the first broadcasts; it is kept small so that the heap shows the
	// seen-state.
	c := startCluster(t, 2, WithSeenCache(1024, time.Minute), WithOriginBudget(1<<30), WithMessageCache(64<<10))
	c.wire(testnet.Line(2))
	in := c.collect()
	ctx := ctxT(t, 60*time.Second)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := c.nodes[0].Send(ctx, payload(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := testnet.WaitFor(ctxT(t, 30*time.Second), func() bool { return in.sum() == to }); err != nil {
			st := c.nodes[1].Stats()
			t.Fatalf("%d of %d delivered; dispatch drops %d, receive drops %d", in.sum(), to, st.DispatchDrops, st.RecvDrops)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	send(0, 5000)
	before := heap()
	send(5000, 25000)
	after := heap()
	st := c.nodes[1].Stats()
	if st.SeenCacheSize != 1 {
		t.Fatalf("seen-state holds %d origins, want 1", st.SeenCacheSize)
	}
	if st.SeenRefused+st.SeenBehind != 0 {
		t.Fatalf("%d refused, %d behind: honest broadcasts dropped", st.SeenRefused, st.SeenBehind)
	}
	if after > before+8<<20 {
		t.Fatalf("heap grew from %d to %d bytes over 20000 more broadcasts", before, after)
	}
	t.Logf("heap %d -> %d bytes; seen-state %d origins", before, after, st.SeenCacheSize)
}

// TestSendWithoutNeighbours fails loudly instead of sending into the void.
func TestSendWithoutNeighbours(t *testing.T) {
	c := startCluster(t, 1)
	err := c.nodes[0].Send(context.Background(), []byte("x"))
	if !errorsIs(err, ErrNoRoute) {
		t.Fatalf("Send with no neighbours: %v, want ErrNoRoute", err)
	}
}

// TestHopByteWrapDropped: a hop byte of 255 once wrapped to 0, so every
// node delivered the broadcast and relayed it with its count reset. It is
// dropped by the first node and counted.
func TestHopByteWrapDropped(t *testing.T) {
	c := startCluster(t, 3)
	c.wire(testnet.Line(3))
	in := c.collect()
	conn := c.intruder(c.nodes[0])
	ctx := ctxT(t, 10*time.Second)
	sender := newOrigin()
	if err := conn.SendEnvelope(ctx, 255, craft(sender, 1, time.Now(), 255, []byte("wrapped"))); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendEnvelope(ctx, 0, craft(sender, 2, time.Now(), 255, []byte("end"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(2, "end") == 1 })
	c.waitQuiet()
	for node := 0; node < 3; node++ {
		if got := in.count(node, "wrapped"); got != 0 {
			t.Fatalf("node %d delivered the wrapped broadcast %d times", node, got)
		}
	}
	if got := c.nodes[0].Stats().HopLimitDrops; got != 1 {
		t.Fatalf("HopLimitDrops = %d, want 1", got)
	}
}

// TestReplayAfterJunkNotRedelivered: a neighbour floods junk broadcasts,
// from one made-up origin and from thousands, and then replays honest
// broadcasts it relayed earlier. The old seen-cache (1024 IDs, first in
// first out) had forgotten them by then and delivered every replay again;
// the seen-state remembers each origin's numbers for the whole age window,
// so none is delivered twice.
func TestReplayAfterJunkNotRedelivered(t *testing.T) {
	c := startCluster(t, 3, WithSeenCache(1024, time.Minute))
	c.wire(testnet.Line(3))
	in := c.collect()
	conn := c.intruder(c.nodes[1])
	spy := c.extras[len(c.extras)-1]
	ctx := ctxT(t, 30*time.Second)

	const honest = 300
	for i := range honest {
		if err := c.nodes[0].Send(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The intruder gets every honest broadcast from node 1 (and node 1's
	// peer list), and keeps the envelopes.
	var replays [][]byte
	for len(replays) < honest {
		m, err := spy.Recv(ctx)
		if err != nil {
			t.Fatalf("intruder got %d of %d broadcasts: %v", len(replays), honest, err)
		}
		if m.Type == flags.Broadcast && m.Flag == flags.Broadcast {
			replays = append(replays, append([]byte(nil), m.Envelope()...))
		}
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.sum() == 2*honest }, "honest deliveries")

	junk := newOrigin()
	for i := range 4000 {
		if err := conn.SendEnvelope(ctx, 0, craft(junk, uint64(i+1), time.Now(), 16, []byte("junk"))); err != nil {
			t.Fatal(err)
		}
		if err := conn.SendEnvelope(ctx, 0, craft(newOrigin(), 1, time.Now(), 16, []byte("junk"))); err != nil {
			t.Fatal(err)
		}
	}
	for _, env := range replays {
		if err := conn.SendEnvelope(ctx, 0, env); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.SendEnvelope(ctx, 0, craft(junk, 1<<20, time.Now(), 16, []byte("end"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return in.count(2, "end") == 1 }, "the end marker")
	c.waitQuiet()
	for node := range 3 {
		for i := range honest {
			if got, want := in.count(node, string(payload(i))), min(node, 1); got != want {
				t.Fatalf("node %d got honest broadcast %d %d times, want %d", node, i, got, want)
			}
		}
	}
	st := c.nodes[1].Stats()
	if st.Duplicates < honest {
		t.Fatalf("node 1 counted %d duplicates, want at least the %d replays", st.Duplicates, honest)
	}
	if st.SeenCacheSize > 1024 || st.SeenRefused == 0 {
		t.Fatalf("seen-state holds %d origins (bound 1024), refused %d", st.SeenCacheSize, st.SeenRefused)
	}
}

// TestRestartedNodeNotTakenForReplay: a node that restarts under the same
// ID goes on broadcasting. Receivers remember its sequence numbers, so
// numbers that started again at 1 would read as replays for the whole age
// window; they start at the clock instead, above the old ones.
func TestRestartedNodeNotTakenForReplay(t *testing.T) {
	c := startCluster(t, 1)
	in := c.collect()
	key := base.GenerateKey()
	ctx := ctxT(t, 20*time.Second)
	for round := range 2 {
		s, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithLogger(testnet.Logger(t)),
			WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Connect(ctx, c.nodes[0].Addr().String()); err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if err := s.Send(ctx, []byte(fmt.Sprintf("round %d: %d", round, i))); err != nil {
				t.Fatal(err)
			}
		}
		testnet.Eventually(t, 10*time.Second, func() bool { return in.sum() == 100*(round+1) },
			"round %d delivered", round)
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		testnet.Eventually(t, 10*time.Second, func() bool { return len(c.nodes[0].Peers()) == 0 }, "the link to go")
	}
	if st := c.nodes[0].Stats(); st.SeenBehind != 0 {
		t.Fatalf("%d broadcasts of the restarted node taken for replays", st.SeenBehind)
	}
}
