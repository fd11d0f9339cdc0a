package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// splitNet is a mesh of two halves whose links across can be cut (a
// network cut: nothing passes, nothing is refused, or no route) and
// restored.
type splitNet struct {
	nodes  []*Socket
	n      int   // nodes per half
	half   []int // half[i]: 0 or 1
	setCut func(on bool)
}

// faultSplit starts 2*n nodes on 127.0.0.1 (0..n-1 in half 0, n..2n-1 in
// half 1) whose every connection is dialled through a faultnet.Dialer, so
// that the connections across can be black-holed; while the cut lasts, a
// new connection across is black-holed as soon as it is dialled. The
// nodes are closed when the test ends.
func faultSplit(t testing.TB, n int, opts ...Option) *splitNet {
	t.Helper()
	sn := &splitNet{n: n}
	var (
		mu      sync.Mutex
		cut     bool
		halfOf  = make(map[string]int) // listen address -> half
		dialers []*faultnet.Dialer
	)
	logger := testnet.Logger(t)
	c := &cluster{t: t}
	t.Cleanup(c.closeAll)
	for i := range 2 * n {
		h := i / n
		fd := faultnet.NewDialer(faultnet.Faults{Seed: uint64(i)})
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := fd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			if to, ok := halfOf[addr]; cut && ok && to != h {
				nc.(*faultnet.Conn).BlackHole(true)
			}
			mu.Unlock()
			return nc, nil
		}
		s, err := NewSocket("127.0.0.1:0", append([]Option{
			WithLogger(logger.With("i", i)),
			WithBaseOptions(base.WithDialer(dial)),
		}, opts...)...)
		if err != nil {
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		c.nodes = append(c.nodes, s)
		mu.Lock()
		halfOf[s.Addr().String()] = h
		mu.Unlock()
		sn.nodes = append(sn.nodes, s)
		sn.half = append(sn.half, h)
		dialers = append(dialers, fd)
	}
	sn.setCut = func(on bool) {
		mu.Lock()
		defer mu.Unlock()
		cut = on
		for i, fd := range dialers {
			for _, c := range fd.Conns() {
				if to, ok := halfOf[c.RemoteAddr().String()]; ok && to != sn.half[i] {
					c.BlackHole(on)
				}
			}
		}
	}
	return sn
}

// crossLinks counts the links across the halves, as each end sees them.
func (sn *splitNet) crossLinks() int {
	index := make(map[protocol.NodeID]int, len(sn.nodes))
	for i, s := range sn.nodes {
		index[s.ID()] = i
	}
	n := 0
	for i, s := range sn.nodes {
		for _, p := range s.Peers() {
			if j, ok := index[p.ID]; ok && sn.half[j] != sn.half[i] {
				n++
			}
		}
	}
	return n
}

// halvesConnected reports whether each half's links alone connect it.
func (sn *splitNet) halvesConnected() bool {
	c := &cluster{nodes: sn.nodes}
	for h := range 2 {
		alive := make(map[int]bool)
		for i := range sn.nodes {
			alive[i] = sn.half[i] == h
		}
		if !c.liveConnected(alive) {
			return false
		}
	}
	return true
}

// crossFailures returns the most failed dials in a row that any node
// counts for a member of the other half: how far back-off has grown.
func (sn *splitNet) crossFailures() int {
	most := 0
	for i, s := range sn.nodes {
		for j, o := range sn.nodes {
			if sn.half[j] != sn.half[i] {
				most = max(most, s.known.failuresOf(o.ID()))
			}
		}
	}
	return most
}

// healScenario sets up a partition test: n nodes per half, each with an
// outgoing quota of maxOutgoing, short timers throughout.
type healScenario struct {
	n, maxOutgoing          int
	probeEvery, dialTimeout time.Duration
	backoffMax              time.Duration
	keepalive, silence      time.Duration
	cutHold                 time.Duration // how long the cut lasts once every link across is gone
}

func (p healScenario) options() []Option {
	return []Option{
		WithMaxOutgoing(p.maxOutgoing), WithMaxPeers(32), WithDialTimeout(p.dialTimeout),
		WithMaintenance(50*time.Millisecond, 10*time.Millisecond, p.backoffMax),
		WithProbe(p.probeEvery, DefaultProbeMembers),
		WithBaseOptions(base.WithKeepalive(p.keepalive, p.silence)),
	}
}

// underRace lengthens the dial timeout under the race detector, and the
// cut with it. A dial includes the TLS 1.3 handshake (links are TLS by
// default since wire version 3): about 10 ms of CPU for the two ends under
// -race, four times a plaintext one (BenchmarkHandshake). A node of these
// scenarios keeps up to two handshakes in flight (a maintenance dial and a
// probe), and back-off is capped below the dial timeout, so handshakes that
// time out are redialled at once and their rate never drops: once a loaded
// machine gives the test less CPU than they need within one dial timeout
// (20 nodes, up to 40 handshakes of 10 ms in 300 ms: more than a core),
// every handshake is cut short and no link forms ("every node to fill its
// outgoing quota": 66 links and 2882 handshakes cut short in 20 s). The heal bound is derived from
// the dial timeout, so it grows with it; the cut is held for three dial
// timeouts at least, so that back-off grows across it as before.
func (p healScenario) underRace() healScenario {
	if raceEnabled {
		p.dialTimeout = max(p.dialTimeout, time.Second)
		p.cutHold = max(p.cutHold, 3*p.dialTimeout)
	}
	return p
}

// healBound is what the partition tests assert: the halves re-merge within
// three probe intervals plus a dial timeout of the network's return.
func (p healScenario) healBound() time.Duration { return 3*p.probeEvery + p.dialTimeout }

// run wires sn, cuts it in two until every link across has been dropped,
// holds the cut, restores the network, and asserts that a broadcast from
// one half reaches every node of the other within healBound.
func (p healScenario) run(t *testing.T, sn *splitNet) {
	t.Helper()
	n := sn.n
	ctx := ctxT(t, 60*time.Second)
	// A ring in each half (made with Connect, so never swapped away) keeps
	// each half connected whatever the cut does; the other slots are
	// filled by discovery, from a table that knows every node, as after a
	// while of gossip.
	for i, s := range sn.nodes {
		h := sn.half[i]
		next := sn.nodes[h*n+(i-h*n+1)%n]
		// On a starved machine a TLS handshake under -race can outlast
		// the handshake timeout: try again, as an application would.
		err := s.Connect(ctx, next.Addr().String())
		for try := 1; errors.Is(err, ErrTimeout) && try < 3 && ctx.Err() == nil; try++ {
			err = s.Connect(ctx, next.Addr().String())
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range sn.nodes {
			if o != s {
				learnRecord(t, s, o.Record())
			}
		}
	}
	// (A node may go past its quota while the ring is made: it may dial
	// a peer it learnt of before it makes its own ring link.)
	testnet.Eventually(t, 20*time.Second, func() bool {
		for _, s := range sn.nodes {
			if s.Stats().Outgoing < p.maxOutgoing {
				return false
			}
		}
		return sn.crossLinks() > 0
	}, "every node to fill its outgoing quota, with links across the halves")
	before := make([]int, len(sn.nodes))
	for i, s := range sn.nodes {
		before[i] = s.Stats().Outgoing
	}

	sn.setCut(true)
	testnet.Eventually(t, 20*time.Second, func() bool { return sn.crossLinks() == 0 && sn.halvesConnected() },
		"every link across the cut to drop, each half connected")
	// The cut goes on: a duration of the scenario, not a wait for anything.
	<-time.After(p.cutHold)
	grown := sn.crossFailures()

	in := (&cluster{nodes: sn.nodes}).collect()
	probesOK := func() (n uint64) {
		for _, s := range sn.nodes {
			st := s.Stats()
			n += st.Probes - st.ProbeFailures
		}
		return n
	}
	okBefore := probesOK()
	sn.setCut(false)
	restored := time.Now()
	sent := 0
	err := testnet.WaitFor(ctxT(t, p.healBound()), func() bool {
		// A new broadcast from node 0 on every check; the first one that
		// reaches every node of the other half ends the wait.
		if err := sn.nodes[0].Send(ctx, []byte(fmt.Sprintf("heal-%d", sent))); err != nil {
			t.Errorf("send: %v", err)
		}
		sent++
		for k := range sent {
			all := true
			for j := n; j < 2*n; j++ {
				if in.count(j, fmt.Sprintf("heal-%d", k)) != 1 {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no broadcast from one half reached the whole other half within %v of the network's return (%d links across, %d sent)",
			p.healBound(), sn.crossLinks(), sent)
	}
	t.Logf("re-merged %v after the network returned; back-off for the other half had reached %d failures",
		time.Since(restored).Round(time.Millisecond), grown)
	if grown < 2 {
		t.Errorf("the cut did not make back-off grow (at most %d failures in a row); the scenario is too mild", grown)
	}
	// A swap keeps the quota: no node stays above it (or above what it
	// had before the cut). Each node is checked on its own: a probe in
	// progress may put one node a link over for a moment, and with every
	// node probing, some node may be over at any given instant.
	for i, s := range sn.nodes {
		testnet.Eventually(t, 10*time.Second, func() bool {
			return s.Stats().Outgoing <= max(p.maxOutgoing, before[i])
		}, "node %d back within its outgoing quota", i)
	}
	// Probes are what found the other half: they go on succeeding now.
	testnet.Eventually(t, 3*p.probeEvery, func() bool { return probesOK() > okBefore },
		"a probe to succeed after the network returned")
}

// TestPartitionHeals: two halves of a mesh, each node at its outgoing
// quota, are cut apart (faultnet black holes) until every link across has
// been dropped and the back-off for the other half has grown; then the
// network returns. A broadcast from one half must reach every node of the
// other within three probe intervals plus a dial timeout. Before, a node
// at its quota never dialled again, so the halves stayed apart for good.
func TestPartitionHeals(t *testing.T) {
	p := healScenario{
		n: 10, maxOutgoing: 2,
		probeEvery: 400 * time.Millisecond, dialTimeout: 300 * time.Millisecond,
		backoffMax: 200 * time.Millisecond,
		keepalive:  100 * time.Millisecond, silence: 600 * time.Millisecond,
		cutHold: 2 * time.Second,
	}.underRace()
	p.run(t, faultSplit(t, p.n, p.options()...))
}

// TestProbeSwapsAnAutomaticLink: a node at its outgoing quota (one link
// made by Connect, one by discovery) probes a member it failed to reach
// once that member is reachable again, and keeps the probe link by
// closing the automatic link, never the one made by Connect: the quota
// holds. Before, a node at its quota never dialled again.
func TestProbeSwapsAnAutomaticLink(t *testing.T) {
	others := startCluster(t, 3) // discovery off: u, a, p
	u, a, p := others.nodes[0], others.nodes[1], others.nodes[2]
	hd := newHoleDialer()
	hd.setHole(p.Addr().String(), true)
	x := startCluster(t, 1, WithDiscovery(true), WithMaxOutgoing(2),
		WithDialTimeout(200*time.Millisecond),
		WithMaintenance(20*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond),
		WithProbe(100*time.Millisecond, DefaultProbeMembers),
		WithBaseOptions(base.WithDialer(hd.dial))).nodes[0]
	ctx := ctxT(t, 20*time.Second)
	if err := x.Connect(ctx, u.Addr().String()); err != nil {
		t.Fatal(err)
	}
	// p is heard of last, so dialled first: it fails, and a fills the slot.
	learnRecord(t, x, a.Record())
	learnRecord(t, x, p.Record())
	linked := func(o *Socket) bool {
		c, ok := x.Base().Conn(o.ID())
		return ok && c.Peer().Outbound
	}
	testnet.Eventually(t, 10*time.Second, func() bool {
		return linked(u) && linked(a) && x.known.failuresOf(p.ID()) > 0
	}, "x at its quota, linked to u and a, having failed to reach p")

	hd.setHole(p.Addr().String(), false)
	testnet.Eventually(t, 10*time.Second, func() bool { return linked(p) && !linked(a) },
		"a probe to reach p and swap the link to a for it")
	if !linked(u) {
		t.Fatal("the swap closed the link made by Connect")
	}
	testnet.Eventually(t, 5*time.Second, func() bool { return len(a.Peers()) == 0 }, "a to see its link closed")
	if st := x.Stats(); st.Outgoing != 2 || st.ProbeSwaps != 1 || st.Probes == 0 {
		t.Fatalf("x: %d outgoing, %d probes, %d swaps; want 2 outgoing, 1 swap", st.Outgoing, st.Probes, st.ProbeSwaps)
	}
}

// failuresOf returns how many dials to the member failed in a row (0 if
// it is not known).
func (k *knownPeers) failuresOf(id protocol.NodeID) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		return p.failures
	}
	return 0
}

// TestProbeOptionValidated: a negative interval or no members is refused;
// interval 0 (probing off) is accepted.
func TestProbeOptionValidated(t *testing.T) {
	for _, opt := range []Option{WithProbe(-time.Second, 1), WithProbe(time.Second, 0)} {
		if _, err := NewSocket("127.0.0.1:0", opt); !errorsIs(err, ErrInvalidOption) {
			t.Errorf("bad WithProbe: %v, want ErrInvalidOption", err)
		}
	}
	s, err := NewSocket("127.0.0.1:0", WithProbe(0, 1), WithLogger(testnet.Discard))
	if err != nil {
		t.Fatalf("WithProbe(0, 1): %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// gateDialer is a base.DialFunc that refuses some addresses at once and
// holds dials to others at a gate until the test opens it (or the dial's
// context ends); the rest it dials as usual.
type gateDialer struct {
	mu      sync.Mutex
	refuse  map[string]bool
	gates   map[string]chan struct{}
	waiting map[string]int
}

func newGateDialer() *gateDialer {
	return &gateDialer{refuse: make(map[string]bool), gates: make(map[string]chan struct{}), waiting: make(map[string]int)}
}

// setRefused makes dials to addr fail at once (on) or go through (off).
func (g *gateDialer) setRefused(addr string, on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refuse[addr] = on
}

// closeGate holds every dial to addr from now on until openGate.
func (g *gateDialer) closeGate(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gates[addr] = make(chan struct{})
}

func (g *gateDialer) openGate(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch := g.gates[addr]; ch != nil {
		close(ch)
		delete(g.gates, addr)
	}
}

// held returns how many dials to addr wait at its gate.
func (g *gateDialer) held(addr string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[addr]
}

func (g *gateDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g.mu.Lock()
	if g.refuse[addr] {
		g.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	gate := g.gates[addr]
	if gate != nil {
		g.waiting[addr]++
	}
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.waiting[addr]--
		g.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: err}
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// TestProbeAndDialLandingTogetherKeepTheQuota: a node with a link made by
// Connect and one free outgoing slot probes a member it failed to reach
// and, in the same maintenance round, fills the free slot with an
// automatic dial. The probe lands first and finds the node within its
// quota; the dial lands next and takes it one past. Maintenance must then
// close an automatic link. Before, it trimmed only when automatic links
// alone were over the quota (here two of two), so the node stayed a link
// over for good: what TestPartitionHeals caught now and then under load
// ("node 18 back within its outgoing quota").
func TestProbeAndDialLandingTogetherKeepTheQuota(t *testing.T) {
	others := startCluster(t, 3) // discovery off: u, a, p
	u, a, p := others.nodes[0], others.nodes[1], others.nodes[2]
	pAddr, aAddr := p.Addr().String(), a.Addr().String()
	gd := newGateDialer()
	gd.setRefused(pAddr, true)
	// Back-off of 10 s or more after a failure: the only dial to p within
	// the test is the probe. Dials wait at their gates well within the
	// dial timeout.
	x := startCluster(t, 1, WithDiscovery(true), WithMaxOutgoing(2),
		WithDialTimeout(20*time.Second),
		WithMaintenance(20*time.Millisecond, 20*time.Second, 40*time.Second),
		WithProbe(100*time.Millisecond, DefaultProbeMembers),
		WithBaseOptions(base.WithDialer(gd.dial))).nodes[0]
	ctx := ctxT(t, 30*time.Second)
	if err := x.Connect(ctx, u.Addr().String()); err != nil {
		t.Fatal(err)
	}
	learnRecord(t, x, p.Record())
	testnet.Eventually(t, 10*time.Second, func() bool { return x.known.failuresOf(p.ID()) > 0 },
		"x to fail to reach p once")

	// p is reachable again, behind a gate: the next probe waits there.
	gd.closeGate(pAddr)
	gd.setRefused(pAddr, false)
	testnet.Eventually(t, 10*time.Second, func() bool { return gd.held(pAddr) == 1 }, "a probe to p to wait at its gate")
	// Meanwhile the free slot goes to a maintenance dial to a, held too.
	gd.closeGate(aAddr)
	learnRecord(t, x, a.Record())
	x.kick()
	testnet.Eventually(t, 10*time.Second, func() bool { return gd.held(aAddr) == 1 }, "a dial to a to wait at its gate")

	linked := func(o *Socket) bool {
		c, ok := x.Base().Conn(o.ID())
		return ok && c.Peer().Outbound && c.Err() == nil
	}
	gd.openGate(pAddr)
	testnet.Eventually(t, 10*time.Second, func() bool { return linked(p) }, "the probe to link x to p")
	if st := x.Stats(); st.Outgoing != 2 || st.ProbeSwaps != 0 {
		t.Fatalf("after the probe: %d outgoing, %d swaps; want 2, 0 (the node was within its quota)", st.Outgoing, st.ProbeSwaps)
	}
	gd.openGate(aAddr)
	// The dial to p that failed, then this one: the trim may close the link
	// to a before the test sees it.
	testnet.Eventually(t, 10*time.Second, func() bool { return x.Stats().Dials == 2 }, "the dial to a to end")
	if st := x.Stats(); st.DialFailures != 1 {
		t.Fatalf("%d of x's 2 dials failed; want 1 (the dial to a succeeds)", st.DialFailures)
	}
	// Maintenance runs every 20 ms; give it a hundred rounds.
	testnet.Eventually(t, 2*time.Second, func() bool { return x.Stats().Outgoing <= 2 },
		"x back within its outgoing quota")
	if !linked(u) {
		t.Fatal("the trim closed the link made by Connect")
	}
	if !linked(p) {
		t.Fatal("the trim closed the probe's link, not the dial that took the node past its quota")
	}
	if st := x.Stats(); st.ProbeSwaps != 1 {
		t.Fatalf("%d swaps counted; want 1 (the trim)", st.ProbeSwaps)
	}
}
