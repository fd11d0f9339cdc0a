package testnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/base"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeTB records failures instead of failing the real test. FailNow ends
// the calling goroutine, as testing does, so Eventually runs on its own
// goroutine.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msgs   []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) FailNow() {
	f.mu.Lock()
	f.failed = true
	f.mu.Unlock()
	runtime.Goexit()
}

// runFake runs fn with a fake TB on its own goroutine and waits for it.
func runFake(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestEventuallySucceeds(t *testing.T) {
	var n atomic.Int32
	f := runFake(func(tb testing.TB) {
		Eventually(tb, 5*time.Second, func() bool { return n.Add(1) >= 5 }, "counter reaches 5")
	})
	if f.failed {
		t.Fatalf("Eventually failed: %v", f.msgs)
	}
	if got := n.Load(); got != 5 {
		t.Errorf("cond called %d times, want 5", got)
	}
}

func TestEventuallyFailsOnTimeout(t *testing.T) {
	start := time.Now()
	f := runFake(func(tb testing.TB) {
		Eventually(tb, 50*time.Millisecond, func() bool { return false }, "widget %d ready", 7)
	})
	elapsed := time.Since(start)
	if !f.failed {
		t.Fatal("Eventually did not fail")
	}
	if len(f.msgs) != 1 || !strings.Contains(f.msgs[0], "widget 7 ready") {
		t.Errorf("failure message = %q, want it to contain %q", f.msgs, "widget 7 ready")
	}
	if elapsed < 50*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("Eventually gave up after %v, want about 50ms", elapsed)
	}
}

func TestEventuallyMessages(t *testing.T) {
	for _, tc := range []struct {
		args []any
		want string
	}{
		{nil, "(no description)"},
		{[]any{"plain"}, "plain"},
		{[]any{42}, "42"},
		{[]any{"%s=%d", "x", 3}, "x=3"},
	} {
		if got := message(tc.args); got != tc.want {
			t.Errorf("message(%v) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestWaitFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := WaitFor(ctx, func() bool { return false })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor on a false condition = %v, want DeadlineExceeded", err)
	}
	if err := WaitFor(context.Background(), func() bool { return true }); err != nil {
		t.Errorf("WaitFor on a true condition = %v", err)
	}
	// The condition is checked once more when ctx ends.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	calls := 0
	err = WaitFor(ctx2, func() bool { calls++; return calls > 1 })
	if err != nil {
		t.Errorf("WaitFor ignored a condition true at the deadline: %v", err)
	}
}

func checkSimple(t *testing.T, name string, n int, edges [][2]int) {
	t.Helper()
	seen := map[[2]int]bool{}
	for _, e := range edges {
		if e[0] == e[1] {
			t.Errorf("%s: self-loop %v", name, e)
		}
		if e[0] < 0 || e[0] >= n || e[1] < 0 || e[1] >= n {
			t.Errorf("%s: edge %v out of range for %d nodes", name, e, n)
		}
		k := [2]int{min(e[0], e[1]), max(e[0], e[1])}
		if seen[k] {
			t.Errorf("%s: duplicate edge %v", name, e)
		}
		seen[k] = true
	}
}

func TestTopologies(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5, 16} {
		line, ring, star, full := Line(n), Ring(n), Star(n), Full(n)
		for name, edges := range map[string][][2]int{"line": line, "ring": ring, "star": star, "full": full} {
			checkSimple(t, fmt.Sprintf("%s(%d)", name, n), n, edges)
			if !IsConnected(n, edges) {
				t.Errorf("%s(%d) is not connected", name, n)
			}
		}
		if len(line) != n-1 {
			t.Errorf("Line(%d) has %d edges", n, len(line))
		}
		if n >= 3 && len(ring) != n {
			t.Errorf("Ring(%d) has %d edges", n, len(ring))
		}
		if n >= 3 {
			for i, d := range Degrees(n, ring) {
				if d != 2 {
					t.Errorf("Ring(%d): node %d has degree %d", n, i, d)
				}
			}
		}
		if deg := Degrees(n, star); n > 1 && deg[0] != n-1 {
			t.Errorf("Star(%d): hub degree %d", n, deg[0])
		}
		if len(full) != n*(n-1)/2 {
			t.Errorf("Full(%d) has %d edges", n, len(full))
		}
	}
}

func TestRandom(t *testing.T) {
	for _, tc := range []struct{ n, degree int }{{2, 1}, {10, 1}, {10, 3}, {50, 4}, {6, 10}} {
		for seed := uint64(0); seed < 20; seed++ {
			edges := Random(tc.n, tc.degree, rand.New(rand.NewPCG(seed, 1)))
			name := fmt.Sprintf("Random(%d,%d) seed %d", tc.n, tc.degree, seed)
			checkSimple(t, name, tc.n, edges)
			if !IsConnected(tc.n, edges) {
				t.Fatalf("%s is not connected: %v", name, edges)
			}
			want := max(tc.n-1, min(tc.n*tc.degree/2, tc.n*(tc.n-1)/2))
			if len(edges) != want {
				t.Errorf("%s has %d edges, want %d", name, len(edges), want)
			}
			again := Random(tc.n, tc.degree, rand.New(rand.NewPCG(seed, 1)))
			if !slices.Equal(edges, again) {
				t.Errorf("%s is not deterministic", name)
			}
		}
	}
	if Random(1, 3, rand.New(rand.NewPCG(1, 1))) != nil {
		t.Error("Random(1) has edges")
	}
}

func TestIsConnected(t *testing.T) {
	if IsConnected(4, [][2]int{{0, 1}, {2, 3}}) {
		t.Error("two components reported connected")
	}
	if IsConnected(3, [][2]int{{0, 1}, {1, 5}}) {
		t.Error("out-of-range edge reported connected")
	}
	if !IsConnected(0, nil) || !IsConnected(1, nil) {
		t.Error("trivial graphs reported disconnected")
	}
	if IsConnected(2, nil) {
		t.Error("two lone nodes reported connected")
	}
}

func TestWire(t *testing.T) {
	edges := Full(12)
	var (
		mu      sync.Mutex
		dialled = map[[2]int]int{}
		active  atomic.Int32
		peak    atomic.Int32
	)
	err := Wire(context.Background(), 12, edges, func(ctx context.Context, from, to int) error {
		n := active.Add(1)
		defer active.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		runtime.Gosched()
		mu.Lock()
		dialled[[2]int{from, to}]++
		mu.Unlock()
		if from == 3 && to == 7 {
			return errors.New("boom")
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "edge 3-7: boom") {
		t.Errorf("Wire error = %v, want it to name edge 3-7", err)
	}
	if len(dialled) != len(edges) {
		t.Errorf("dialled %d edges, want %d", len(dialled), len(edges))
	}
	for e, k := range dialled {
		if k != 1 {
			t.Errorf("edge %v dialled %d times", e, k)
		}
	}
	if p := peak.Load(); p > MaxDials {
		t.Errorf("%d dials at once, limit %d", p, MaxDials)
	}
	if err := Wire(context.Background(), 2, [][2]int{{0, 2}}, func(context.Context, int, int) error { return nil }); err == nil {
		t.Error("Wire accepted an out-of-range edge")
	}
}

func TestStartBaseRing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("ring", func(t *testing.T) {
		socks := StartBase(t, 4)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ConnectBase(ctx, socks, Ring(4)); err != nil {
			t.Fatal(err)
		}
		Eventually(t, 5*time.Second, func() bool {
			for _, s := range socks {
				if s.Stats().Connections != 2 {
					return false
				}
			}
			return true
		}, "every node of the ring has 2 connections")
		if err := socks[0].Broadcast(ctx, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{1, 3} {
			m, err := socks[i].Recv(ctx)
			if err != nil || string(m.Packets[0]) != "hi" {
				t.Fatalf("node %d: %v %v", i, m, err)
			}
		}
	})
	// The sub-test's cleanup closed every socket: the deferred leak check
	// above sees no goroutine of theirs.
}

func TestNewBaseDialOnly(t *testing.T) {
	s := NewBase(t, "", base.WithLogger(Discard))
	if s.Addr() != nil {
		t.Errorf("dial-only socket listens on %v", s.Addr())
	}
}
