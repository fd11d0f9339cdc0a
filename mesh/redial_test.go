package mesh

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// holeDialer is a base.DialFunc for which some addresses are black holes:
// their SYNs go unanswered, so a dial hangs until its context ends. It
// counts the dials hanging at once, and the most there ever were.
type holeDialer struct {
	mu             sync.Mutex
	holes          map[string]bool
	inflight, peak int
	total          int
}

func newHoleDialer() *holeDialer { return &holeDialer{holes: make(map[string]bool)} }

// addHoles makes n black-holed addresses, learnt by s as n fake members.
// They are in 127.0.0.0/8 but never dialled for real.
func (h *holeDialer) addHoles(n int) (addrs []string) {
	for i := range n {
		a := fmt.Sprintf("127.%d.%d.%d:9", 100+i/65536, (i/256)%256, i%256)
		h.setHole(a, true)
		addrs = append(addrs, a)
	}
	return addrs
}

// setHole makes addr a black hole (on) or an ordinary address (off).
func (h *holeDialer) setHole(addr string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holes[addr] = on
}

func (h *holeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h.mu.Lock()
	if !h.holes[addr] {
		h.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	h.inflight++
	h.total++
	h.peak = max(h.peak, h.inflight)
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.inflight--
	h.mu.Unlock()
	return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
}

func (h *holeDialer) stats() (inflight, peak, total int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inflight, h.peak, h.total
}

// learnHoles puts fake members at black-holed addresses into s's table of
// known peers, as if peer exchange had brought them.
func learnHoles(t testing.TB, s *Socket, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		rec, _ := fakeRecord(t, a)
		learnRecord(t, s, rec)
	}
}

// newRedialNode starts a node with discovery, an outgoing quota of 2,
// short dial timeouts and the black holes of hd. Probes are off: these
// tests are about maintenance dials.
func newRedialNode(t *testing.T, hd *holeDialer) *Socket {
	return startCluster(t, 1, WithDiscovery(true), WithMaxOutgoing(2), WithMaxKnownPeers(2048), WithProbe(0, 1),
		WithDialTimeout(250*time.Millisecond),
		WithMaintenance(50*time.Millisecond, 10*time.Millisecond, 200*time.Millisecond),
		WithBaseOptions(base.WithDialer(hd.dial))).nodes[0]
}

// TestLostNeighbourReplacedPastBlackHoles: a node whose table of known
// peers is full of black-holed addresses, heard of more recently than the
// one live member it is not linked to, replaces a lost neighbour within a
// few dial timeouts, because it dials the member it had a link with
// lately first. Before, it dialled the table one entry at a time in random
// order (here 250 ms per black hole: about two minutes on average to reach
// the live member).
func TestLostNeighbourReplacedPastBlackHoles(t *testing.T) {
	const holes = 1000
	live := startCluster(t, 3) // discovery off: they only accept
	hd := newHoleDialer()
	x := newRedialNode(t, hd)
	ctx := ctxT(t, 30*time.Second)
	for _, o := range live.nodes {
		if err := x.Connect(ctx, o.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	// x drops its link to node 2 (cleanly: node 2 stays a good address),
	// then hears of a thousand members, all black holes.
	c2, ok := x.Base().Conn(live.nodes[2].ID())
	if !ok {
		t.Fatal("no link to node 2")
	}
	_ = c2.Close()
	testnet.Eventually(t, 5*time.Second, func() bool { return len(x.Peers()) == 2 }, "x to drop node 2")
	learnHoles(t, x, hd.addHoles(holes))
	if n := x.Stats().KnownPeers; n < holes+3 {
		t.Fatalf("x knows %d peers, want at least %d", n, holes+3)
	}

	// Node 0 leaves: x has a free slot, and the only live member it has
	// no link with is node 2.
	if err := live.nodes[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testnet.Eventually(t, 4*time.Second, func() bool {
		c, ok := x.Base().Conn(live.nodes[2].ID())
		return ok && c.Peer().Outbound
	}, "x to replace its lost neighbour with node 2")
	_, _, tried := hd.stats()
	t.Logf("replaced after %v, %d black-holed dials", time.Since(start).Round(time.Millisecond), tried)
	if out := x.Stats().Outgoing; out != 2 {
		t.Fatalf("x has %d outgoing links, want 2", out)
	}
}

// TestShortNodeAsksForListsWhenDialsFail: a node short of links that knows
// only black holes asks its neighbours for fresh peer lists as soon as a
// dial fails, and so finds a member that joined a neighbour meanwhile.
// Before, it asked only after trying every known address once (a thousand
// dial timeouts here).
func TestShortNodeAsksForListsWhenDialsFail(t *testing.T) {
	const holes = 1000
	live := startCluster(t, 3) // discovery off
	hd := newHoleDialer()
	x := newRedialNode(t, hd)
	ctx := ctxT(t, 30*time.Second)
	for _, i := range []int{0, 1} {
		if err := x.Connect(ctx, live.nodes[i].Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	learnHoles(t, x, hd.addHoles(holes))
	// Node 0 leaves; node 1, asked at once for its list, names nobody new.
	if err := live.nodes[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, func() bool { _, _, n := hd.stats(); return n > 0 },
		"x to dial a black hole")
	// Only now does node 2 join node 1; x learns of it only by asking.
	if err := live.nodes[2].Connect(ctx, live.nodes[1].Addr().String()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testnet.Eventually(t, 4*time.Second, func() bool {
		c, ok := x.Base().Conn(live.nodes[2].ID())
		return ok && c.Peer().Outbound
	}, "x to find node 2 through a fresh peer list")
	_, _, tried := hd.stats()
	t.Logf("found after %v, %d black-holed dials, %d list requests", time.Since(start).Round(time.Millisecond), tried, x.Stats().PeerListRequests)
	if x.Stats().PeerListRequests == 0 {
		t.Fatal("PeerListRequests is 0")
	}
}

// TestDialsRunConcurrently: peer maintenance dials several known peers at
// once, as many as the free outgoing slots allow up to the bound on dials
// in flight (default 4), never more. Before, it dialled one at a time.
func TestDialsRunConcurrently(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxOutgoing int
		opts        []Option
		want        int
	}{
		{"bound by the default dial limit", 8, nil, DefaultMaxDials},
		{"bound by WithMaxDials", 8, []Option{WithMaxDials(3)}, 3},
		{"bound by the free slots", 2, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd := newHoleDialer()
			addrs := hd.addHoles(64)
			// Probes off: a probe is a dial beyond these bounds.
			x := startCluster(t, 1, append([]Option{WithDiscovery(true), WithMaxOutgoing(tc.maxOutgoing), WithProbe(0, 1),
				WithDialTimeout(300 * time.Millisecond),
				WithMaintenance(20*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond),
				WithBaseOptions(base.WithDialer(hd.dial))}, tc.opts...)...).nodes[0]
			learnHoles(t, x, addrs)
			testnet.Eventually(t, 10*time.Second, func() bool { _, peak, _ := hd.stats(); return peak >= tc.want },
				"%d dials in flight at once", tc.want)
			// Let several rounds of dials time out and start again.
			testnet.Eventually(t, 10*time.Second, func() bool { _, _, n := hd.stats(); return n >= 4*tc.want },
				"more rounds of dials")
			if _, peak, _ := hd.stats(); peak != tc.want {
				t.Fatalf("up to %d dials in flight at once, want at most %d", peak, tc.want)
			}
			if st := x.Stats(); st.DialsInFlight > tc.want || st.DialFailures == 0 {
				t.Fatalf("stats: %d dials in flight, %d failures", st.DialsInFlight, st.DialFailures)
			}
		})
	}
}

func TestMaxDialsValidated(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := NewSocket("127.0.0.1:0", WithMaxDials(n)); !errorsIs(err, ErrInvalidOption) {
			t.Errorf("WithMaxDials(%d): %v, want ErrInvalidOption", n, err)
		}
	}
}
