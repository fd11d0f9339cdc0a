package mesh

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// outboundTracker follows a node's outbound links through its connection
// events, which base publishes in registry order, and remembers the most
// that were up at once.
type outboundTracker struct {
	mu          sync.Mutex
	up          map[protocol.NodeID]*base.Conn
	peak        int
	connects    uint64
	disconnects uint64
}

func trackOutbound(s *Socket) (*outboundTracker, func()) {
	tr := &outboundTracker{up: make(map[protocol.NodeID]*base.Conn)}
	cancel := s.Subscribe(func(e base.Event) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		switch e.Kind {
		case base.EventConnect:
			tr.connects++
			if e.Peer.Outbound {
				tr.up[e.Peer.ID] = e.Conn
			} else {
				delete(tr.up, e.Peer.ID) // an inbound link replaced it
			}
			tr.peak = max(tr.peak, len(tr.up))
		case base.EventDisconnect:
			tr.disconnects++
			if tr.up[e.Peer.ID] == e.Conn {
				delete(tr.up, e.Peer.ID)
			}
		}
	})
	return tr, cancel
}

// caughtUp reports whether the tracker has seen every connect and
// disconnect the node has counted so far.
func (tr *outboundTracker) caughtUp(s *Socket) bool {
	st := s.Base().Stats()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.connects == st.Connects && tr.disconnects == st.Disconnects
}

func (tr *outboundTracker) peakOutbound() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.peak
}

// TestMaxOutgoingCapsAutomaticDials: a node with WithMaxOutgoing(2) that
// knows eight peers, whispers to each of them and is whispered to by each
// (route requests it must answer, dial-backs) never has more than two
// outbound links at once: the one it made with Connect and one dialled
// automatically. Every whisper still arrives exactly once. Connect by the
// user is not bound by the cap.
func TestMaxOutgoingCapsAutomaticDials(t *testing.T) {
	const n = 9
	c := startCluster(t, n) // discovery off: a fixed star around node 0
	c.wire(testnet.Star(n))
	in := c.collect()
	xc := startCluster(t, 1, WithDiscovery(true), WithMaxOutgoing(2),
		WithMaintenance(20*time.Millisecond, 5*time.Millisecond, 50*time.Millisecond))
	xin := xc.collect()
	x := xc.nodes[0]
	c.extras = append(c.extras, x.Base()) // waitQuiet counts x's frames too
	tr, stop := trackOutbound(x)
	defer stop()
	ctx := ctxT(t, 60*time.Second)

	if err := x.Connect(ctx, c.nodes[0].Addr().String()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return x.Stats().KnownPeers >= n },
		"x to learn every node of the star from the hub")

	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := x.Whisper(ctx, c.nodes[i].ID(), []byte(fmt.Sprintf("to-%d", i))); err != nil {
				errs <- fmt.Errorf("x to %d: %w", i, err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := c.nodes[i].Whisper(ctx, x.ID(), []byte(fmt.Sprintf("from-%d", i))); err != nil {
				errs <- fmt.Errorf("%d to x: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testnet.Eventually(t, 30*time.Second, func() bool {
		for i := 0; i < n; i++ {
			if in.count(i, fmt.Sprintf("to-%d", i)) != 1 || xin.count(0, fmt.Sprintf("from-%d", i)) != 1 {
				return false
			}
		}
		return true
	}, "every whisper to arrive")
	// Peer exchange fills the free slot sooner or later.
	testnet.Eventually(t, 30*time.Second, func() bool { return x.Stats().Outgoing >= 2 },
		"x to fill its outgoing quota")
	c.waitQuiet()
	testnet.Eventually(t, 10*time.Second, func() bool { return tr.caughtUp(x) }, "the event subscriber to catch up")
	if drops := x.Stats().EventDrops; drops != 0 {
		t.Fatalf("%d events dropped; the sample is incomplete", drops)
	}
	if peak := tr.peakOutbound(); peak != 2 {
		t.Fatalf("x had up to %d outbound links at once; cap 2", peak)
	}
	for i := 0; i < n; i++ {
		if got := in.count(i, fmt.Sprintf("to-%d", i)); got != 1 {
			t.Fatalf("node %d got x's whisper %d times", i, got)
		}
		if got := xin.count(0, fmt.Sprintf("from-%d", i)); got != 1 {
			t.Fatalf("x got node %d's whisper %d times", i, got)
		}
	}

	// Connect by the user goes beyond the cap (up to max peers).
	extra := startCluster(t, 1).nodes[0]
	if err := x.Connect(ctx, extra.Addr().String()); err != nil {
		t.Fatalf("Connect beyond max outgoing: %v", err)
	}
	if out := x.Stats().Outgoing; out != 3 {
		t.Fatalf("after an explicit Connect x has %d outgoing links, want 3", out)
	}
}

// TestConnectBoundByMaxPeers: Connect ignores WithMaxOutgoing but not
// WithMaxPeers: beyond it, it fails with ErrConnLimit.
func TestConnectBoundByMaxPeers(t *testing.T) {
	c := startCluster(t, 4)
	a := startCluster(t, 1, WithMaxOutgoing(1), WithMaxPeers(2)).nodes[0]
	ctx := ctxT(t, 10*time.Second)
	for i := 0; i < 2; i++ {
		if err := a.Connect(ctx, c.nodes[i].Addr().String()); err != nil {
			t.Fatalf("Connect %d of max peers 2: %v", i+1, err)
		}
	}
	if err := a.Connect(ctx, c.nodes[2].Addr().String()); !errors.Is(err, ErrConnLimit) {
		t.Fatalf("Connect beyond max peers: %v, want ErrConnLimit", err)
	}
	if n := len(a.Peers()); n != 2 {
		t.Fatalf("%d peers, want 2", n)
	}
}
