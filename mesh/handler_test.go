package mesh

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestReadmeSample runs the README's usage sample many times, several at
// once so that the goroutines compete for the CPU as in a busy program: two
// nodes, Connect, then a Send by the listening side at once. In round 1 it
// failed 1 run in 10 to 3 (Connect returned before the listener had the
// link, so the Send found no neighbour).
func TestReadmeSample(t *testing.T) {
	runs := 500
	if raceEnabled || testing.Short() {
		runs = 200
	}
	const parallel = 8
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	sample := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, err := NewSocket("127.0.0.1:0", quiet)
		if err != nil {
			return err
		}
		defer a.Close(ctx)
		b, err := NewSocket("127.0.0.1:0", quiet)
		if err != nil {
			return err
		}
		defer b.Close(ctx)
		if err := b.Connect(ctx, a.Addr().String()); err != nil {
			return fmt.Errorf("Connect: %w", err)
		}
		if len(a.Peers()) != 1 {
			return errors.New("Connect returned before the listener had the link")
		}
		if err := a.Send(ctx, []byte("hello, mesh")); err != nil {
			return fmt.Errorf("Send right after Connect: %w", err)
		}
		msg, err := b.Recv(ctx)
		if err != nil || string(msg.Packets[0]) != "hello, mesh" || msg.Sender != a.ID() {
			return fmt.Errorf("Recv: %v %w", msg, err)
		}
		if err := msg.Reply(ctx, []byte("hi back")); err != nil {
			return fmt.Errorf("Reply: %w", err)
		}
		if r, err := a.Recv(ctx); err != nil || string(r.Packets[0]) != "hi back" {
			return fmt.Errorf("reply: %v %w", r, err)
		}
		return nil
	}
	var failed atomic.Int64
	var first sync.Once
	var wg sync.WaitGroup
	for w := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < runs; i += parallel {
				if err := sample(); err != nil {
					failed.Add(1)
					first.Do(func() { t.Errorf("run %d: %v", i, err) })
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d runs failed", n, runs)
	}
}

// TestEchoFromHandlers: two nodes answer each other from their handlers
// with msg.Reply, many exchanges in flight at once over small send queues.
// In round 1 handlers ran on the readers: once more was in flight than the
// TCP buffers hold, each reader blocked in Reply on a full queue towards
// the other, nobody read, and the link stalled until the write timeout.
func TestEchoFromHandlers(t *testing.T) {
	small := 100_000
	if raceEnabled || testing.Short() {
		small = 20_000
	}
	for _, tc := range []struct {
		name         string
		size, chains int
		rounds       int
	}{
		{"small", 8, 32, small},
		{"large", 256 << 10, 128, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, 2, WithBaseOptions(base.WithSendQueue(4, 64<<20)))
			c.wire([][2]int{{0, 1}})
			var exchanges atomic.Int64
			done := make(chan struct{})
			var doneOnce sync.Once
			for _, n := range c.nodes {
				n.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
					if exchanges.Add(1) >= int64(tc.rounds) {
						doneOnce.Do(func() { close(done) })
						return true
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := m.Reply(ctx, m.Packets[0]); err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("Reply from a handler: %v", err)
					}
					return true
				}))
			}
			ctx := ctxT(t, 60*time.Second)
			for i := range tc.chains {
				p := make([]byte, tc.size) // random: compression must not shrink it
				_, _ = crand.Read(p)
				binary.BigEndian.PutUint64(p, uint64(i))
				if err := c.nodes[0].Whisper(ctx, c.nodes[1].ID(), p); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("%d of %d exchanges after 60 s", exchanges.Load(), tc.rounds)
			}
			for i, n := range c.nodes {
				if st := n.Stats(); st.Disconnects != 0 || st.DispatchDrops != 0 {
					t.Fatalf("node %d: %d disconnects, %d dispatch drops", i, st.Disconnects, st.DispatchDrops)
				}
			}
		})
	}
}

// TestCloseFromCallbacks: Close called from a handler, a subscriber or a
// tracer returns (round 1: it waited for the reader it was running on).
func TestCloseFromCallbacks(t *testing.T) {
	for _, where := range []string{"handler", "subscriber", "tracer"} {
		t.Run(where, func(t *testing.T) {
			returned := make(chan error, 1)
			var once sync.Once
			var node *Socket
			closeNode := func() { once.Do(func() { returned <- node.Close(context.Background()) }) }
			var opts []Option
			if where == "tracer" {
				opts = append(opts, WithTracer(TracerFunc(func(e TraceEvent) {
					if e.Kind == TraceDeliver {
						closeNode()
					}
				})))
			}
			c := startCluster(t, 2, opts...)
			node = c.nodes[1]
			switch where {
			case "handler":
				node.RegisterHandler(base.HandlerFunc(func(*Message) bool { closeNode(); return true }))
			case "subscriber":
				node.Subscribe(func(e base.Event) {
					if e.Kind == base.EventMessage {
						closeNode()
					}
				})
			}
			c.wire([][2]int{{0, 1}})
			if err := c.nodes[0].Send(ctxT(t, 10*time.Second), []byte("quit")); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-returned:
				if err != nil {
					t.Fatalf("Close from a %s: %v", where, err)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("Close from a %s did not return", where)
			}
			testnet.Eventually(t, 10*time.Second, func() bool { return len(c.nodes[0].Peers()) == 0 },
				"the other node to see the link go")
		})
	}
}

// TestBaseOptionsCannotOverrideMesh: connection-level options given with
// WithBaseOptions cannot change what the mesh relies on (round 1 applied
// them last: base.WithConnHook made Send fail, base.WithMaxConns overrode
// WithMaxPeers).
func TestBaseOptionsCannotOverrideMesh(t *testing.T) {
	c := startCluster(t, 4)
	hub, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithMaxPeers(3), WithMaxOutgoing(1),
		WithBaseOptions(base.WithMaxConns(1)), WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Close(context.Background()) })
	ctx := ctxT(t, 10*time.Second)
	for i := range 3 {
		if err := c.nodes[i].Connect(ctx, hub.Addr().String()); err != nil {
			t.Fatalf("peer %d of WithMaxPeers(3): %v", i+1, err)
		}
	}
	if err := c.nodes[3].Connect(ctx, hub.Addr().String()); !errors.Is(err, ErrConnLimit) {
		t.Fatalf("a fourth peer: %v, want ErrConnLimit", err)
	}
	if err := hub.Send(ctx, []byte("still a mesh")); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if m, err := c.nodes[i].Recv(ctx); err != nil || string(m.Packets[0]) != "still a mesh" {
			t.Fatalf("node %d: %v %v", i, m, err)
		}
	}
}

// TestTracerDeliverMeansDelivered: a broadcast that the full receive queue
// drops is traced as a deliver-drop, not as delivered (round 1 reported
// every new broadcast as delivered before it reached the queue).
func TestTracerDeliverMeansDelivered(t *testing.T) {
	var mu sync.Mutex
	kinds := map[TraceKind]int{}
	tracer := TracerFunc(func(e TraceEvent) {
		mu.Lock()
		kinds[e.Kind]++
		if e.Kind == TraceDeliverDrop && !errors.Is(e.Reason, base.ErrRecvFull) {
			t.Errorf("deliver-drop reason %v, want ErrRecvFull", e.Reason)
		}
		mu.Unlock()
	})
	c := startCluster(t, 1, WithTracer(tracer), WithBaseOptions(base.WithRecvQueue(1)))
	sender := startCluster(t, 1)
	c.nodes = append(c.nodes, sender.nodes...)
	c.wire([][2]int{{1, 0}})
	ctx := ctxT(t, 10*time.Second)
	const sent = 5
	for range sent {
		if err := sender.nodes[0].Send(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return kinds[TraceDeliver]+kinds[TraceDeliverDrop] == sent
	}, "every broadcast traced as delivered or dropped")
	mu.Lock()
	defer mu.Unlock()
	st := c.nodes[0].Stats()
	if kinds[TraceDeliver] != 1 || kinds[TraceDeliverDrop] != sent-1 || st.DeliverDrops != sent-1 || st.BroadcastsDelivered != 1 {
		t.Fatalf("traced %d delivered, %d dropped; stats %d delivered, %d dropped; want 1 and %d",
			kinds[TraceDeliver], kinds[TraceDeliverDrop], st.BroadcastsDelivered, st.DeliverDrops, sent-1)
	}
}

// TestSendWithoutPackets: Send and Whisper need at least one packet.
func TestSendWithoutPackets(t *testing.T) {
	c := startCluster(t, 2)
	c.wire([][2]int{{0, 1}})
	ctx := ctxT(t, 10*time.Second)
	if err := c.nodes[0].Send(ctx); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Send(): %v, want ErrNoPackets", err)
	}
	if err := c.nodes[0].Whisper(ctx, c.nodes[1].ID()); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Whisper(): %v, want ErrNoPackets", err)
	}
}

// TestWhisperFromHandlerSearchesRoute: a handler whispers to a node two hops
// away, which needs a route search whose answer arrives on the handler's
// own connection (round 1: the handler held that connection's reader, so
// the search waited out the route timeout).
func TestWhisperFromHandlerSearchesRoute(t *testing.T) {
	opts := []Option{WithDiscovery(true), WithRouteTimeout(20 * time.Second)}
	c := startCluster(t, 2, opts...)
	// Node 2 advertises an address nobody can dial, so node 0 cannot dial
	// back with its answer: the answer floods back through node 1, over the
	// connection the handler's message came on.
	n2, err := NewSocket("127.0.0.1:0", append(opts, WithAdvertiseAddr("127.0.0.1:1"), WithLogger(testnet.Logger(t)))...)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = append(c.nodes, n2)
	c.wire(testnet.Line(3))
	result := make(chan error, 1)
	far := c.nodes[0].ID()
	c.nodes[2].RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if string(m.Packets[0]) != "find node 0" {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		err := c.nodes[2].Whisper(ctx, far, []byte("found you"))
		if err == nil && time.Since(start) > 10*time.Second {
			err = fmt.Errorf("the route search took %v", time.Since(start))
		}
		result <- err
		return true
	}))
	in := c.collect() // after the handler above, which claims only its message
	if err := c.nodes[1].Whisper(ctxT(t, 10*time.Second), c.nodes[2].ID(), []byte("find node 0")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("Whisper from a handler: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Whisper from a handler did not return")
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return in.count(0, "found you") == 1 })
}
