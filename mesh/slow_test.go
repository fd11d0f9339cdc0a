package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// stalledPeer is a bare base socket, with opts, that S dials through a
// listener whose connections can stop reading: a neighbour with a slow
// handler, or one that stopped reading its socket.
func (c *cluster) stalledPeer(s *Socket, opts ...base.Option) *faultnet.Conn {
	c.t.Helper()
	ln, err := faultnet.Listen("127.0.0.1:0", faultnet.Faults{})
	if err != nil {
		c.t.Fatal(err)
	}
	peer := testnet.NewBase(c.t, "", append([]base.Option{base.WithListener(ln)}, opts...)...)
	c.extras = append(c.extras, peer)
	if err := s.Connect(ctxT(c.t, 10*time.Second), ln.Addr().String()); err != nil {
		c.t.Fatal(err)
	}
	conns := ln.Conns()
	if len(conns) != 1 {
		c.t.Fatalf("%d connections accepted", len(conns))
	}
	fc := conns[0]
	c.t.Cleanup(func() { fc.StopReading(false) }) // before the sockets close
	return fc
}

// TestSlowNeighbourDoesNotStallSend: Send waited on each neighbour's full
// queue in turn until its context ended, so one neighbour that stopped
// reading held up every broadcast. S has three healthy neighbours and one
// that stops reading. S's sends go on returning promptly (after one slow
// wait: few take that long), the healthy neighbours receive at about the
// rate they did before the stall (measured side by side), and the stalled
// one's copies are counted as dropped.
//
// A healthy neighbour may be marked slow too, and lose copies, when the
// machine is so loaded that its queue stays full for the slow wait (the
// race detector on two busy cores does it): from S's side that is what a
// slow neighbour looks like. So each healthy neighbour must get every
// broadcast or have it counted as dropped for it (in this star nothing
// else delivers it), and such drops are bounded.
func TestSlowNeighbourDoesNotStallSend(t *testing.T) {
	const slowWait = 100 * time.Millisecond
	// drops[i]: S's broadcasts dropped for node i; drops[4]: for the
	// stalled neighbour; unmarked: dropped for a neighbour not marked slow
	// itself. index and links are filled in before the first Send, on
	// whose goroutine S traces its drops.
	var (
		drops    [5]atomic.Int64
		unmarked atomic.Int64
		index    map[protocol.NodeID]int
		links    map[protocol.NodeID]*link
	)
	// The stalled link must outlast the test however slow the machine:
	// neither S's write timeout nor the stalled end's silence timeout may
	// end it, nor the slow bound.
	long := 5 * time.Minute
	c := startCluster(t, 4, WithSlowNeighbour(slowWait, long),
		WithBaseOptions(base.WithSendQueue(64, 1<<20), base.WithWriteTimeout(long)),
		WithTracer(TracerFunc(func(e TraceEvent) {
			if e.Kind == TraceSlowDrop {
				drops[index[e.Peer]].Add(1)
				if links[e.Peer].slowSince.Load() == 0 {
					unmarked.Add(1)
				}
			}
		})))
	c.wire([][2]int{{0, 1}, {0, 2}, {0, 3}})
	stalled := c.stalledPeer(c.nodes[0], base.WithKeepalive(10*time.Second, long))
	index = map[protocol.NodeID]int{c.extras[0].ID(): 4}
	for i := 1; i < 4; i++ {
		index[c.nodes[i].ID()] = i
	}
	links = make(map[protocol.NodeID]*link)
	for _, conn := range *c.nodes[0].neighbours.Load() {
		links[conn.ID()] = c.nodes[0].linkOf(conn)
	}
	in := c.collect()
	s := c.nodes[0]
	data := noise(4 << 10)

	// phase sends n broadcasts (each Send allowed 2 s, as a producer
	// might) and waits until the healthy neighbours have them all, or have
	// them counted as dropped.
	type phaseStats struct {
		took    time.Duration // until the healthy neighbours had them all
		longest time.Duration // the longest Send
		waited  int           // Sends that took the slow wait or longer
		healthy [3]int        // dropped for each healthy neighbour
		stalled int           // dropped for the stalled one
	}
	sent := 0
	healthyDrops := func(i int) int { return int(drops[i].Load()) }
	accounted := func() bool {
		for i := 1; i < 4; i++ {
			if in.received(i)+healthyDrops(i) < sent {
				return false
			}
		}
		return true
	}
	phase := func(n int) (ps phaseStats) {
		var before [5]int
		for i := range before {
			before[i] = int(drops[i].Load())
		}
		start := time.Now()
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			t0 := time.Now()
			err := s.Send(ctx, append(payload(sent+i), data...))
			cancel()
			if err != nil {
				t.Fatalf("Send %d: %v", sent+i, err)
			}
			d := time.Since(t0)
			ps.longest = max(ps.longest, d)
			if d >= slowWait {
				ps.waited++
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("%d broadcasts took over a minute (longest Send %v)", i+1, ps.longest)
			}
		}
		sent += n
		testnet.Eventually(t, 60*time.Second, accounted,
			"the healthy neighbours to get %d broadcasts each, or have them counted as dropped", sent)
		for i := 1; i < 4; i++ {
			if got, lost := in.received(i), healthyDrops(i); got+lost != sent {
				t.Fatalf("node %d got %d broadcasts and lost %d of %d", i, got, lost, sent)
			}
			ps.healthy[i-1] = healthyDrops(i) - before[i]
		}
		ps.stalled = int(drops[4].Load()) - before[4]
		ps.took = time.Since(start)
		return ps
	}
	const n = 3000
	var phases [3]phaseStats
	phases[0] = phase(n)
	stalled.StopReading(true)
	// Enough to fill the kernel's buffers and the stalled link's queue.
	phases[1] = phase(n)
	phases[2] = phase(n)
	for i, name := range []string{"before the stall", "while it filled", "after"} {
		ps := phases[i]
		t.Logf("%s: %v for %d broadcasts; longest Send %v, %d Sends of the slow wait or longer; dropped for the healthy %v, for the stalled %d",
			name, ps.took, n, ps.longest, ps.waited, ps.healthy, ps.stalled)
	}
	st := s.Stats()
	if drops[4].Load() == 0 {
		t.Fatal("the stalled neighbour's copies were not counted as dropped")
	}
	if got, want := st.SlowDrops, uint64(drops[1].Load()+drops[2].Load()+drops[3].Load()+drops[4].Load()); got != want {
		t.Fatalf("SlowDrops %d, %d traced", got, want)
	}
	// The healthy neighbours are not held back by the stalled one: a copy
	// is dropped only for a neighbour itself marked slow, and ...
	if n := unmarked.Load(); n > 0 {
		t.Fatalf("%d copies dropped for neighbours not marked slow", n)
	}
	for i, ps := range phases {
		// A Send that waited for the stalled neighbour would take the slow
		// wait; a loaded machine makes a few take that long anyway, while
		// every queue is full (the first Send after the stall, too).
		if i > 0 && ps.waited > n/10 {
			t.Fatalf("%d of %d Sends took the slow wait (%v) or longer with a neighbour stalled", ps.waited, n, slowWait)
		}
		// ... a healthy one only while the machine starves it for a slow
		// wait at a time, whether or not another is stalled: not most of
		// what S sends.
		for j, lost := range ps.healthy {
			if lost >= n/2 {
				t.Fatalf("node %d, a healthy neighbour, lost %d of %d broadcasts (%d before the stall)", j+1, lost, n, phases[0].healthy[j])
			}
		}
	}
	// Generous: the goal is at most 5 % slower; this catches a Send that
	// waits on the stalled neighbour.
	if before, after := phases[0].took, phases[2].took; after > 3*before+time.Second {
		t.Fatalf("the healthy neighbours took %v for %d broadcasts with one neighbour stalled, %v before", after, n, before)
	}
	if st.SlowClosed != 0 || len(s.Peers()) != 4 {
		t.Fatalf("the slow link was closed before its bound: %d closed, %d peers", st.SlowClosed, len(s.Peers()))
	}
}

// TestSlowNeighbourClosed: a neighbour that stays slow for the bound is
// disconnected, counted and traced.
func TestSlowNeighbourClosed(t *testing.T) {
	traced := make(chan TraceEvent, 1)
	c := startCluster(t, 2, WithSlowNeighbour(20*time.Millisecond, 300*time.Millisecond),
		WithBaseOptions(base.WithSendQueue(16, 1<<20)),
		WithTracer(TracerFunc(func(e TraceEvent) {
			if e.Kind == TraceSlowClose {
				select {
				case traced <- e:
				default:
				}
			}
		})))
	c.wire(testnet.Line(2))
	s := c.nodes[0]
	stalled := c.stalledPeer(s)
	stalled.StopReading(true)
	data := noise(16 << 10)
	ctx := ctxT(t, 30*time.Second)
	for i := 0; s.Stats().SlowClosed == 0; i++ {
		if err := s.Send(ctx, data); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		if ctx.Err() != nil {
			t.Fatal("the slow neighbour was never closed")
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(s.Peers()) == 1 }, "the slow link to go")
	select {
	case e := <-traced:
		if e.Peer == c.nodes[1].ID() {
			t.Fatal("the healthy neighbour was named")
		}
	default:
		t.Fatal("closing the slow link was not traced")
	}
}

// noise returns n random bytes, which compression cannot shrink.
func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// neighbourTest is S, one node, with bare neighbours that can stop
// reading, S's broadcasts dropped for each counted by the tracer.
type neighbourTest struct {
	*cluster
	s     *Socket
	peers []*neighbourPeer // in the order S sends to them
	drops map[protocol.NodeID]*atomic.Int64
}

// neighbourPeer is one of S's bare neighbours.
type neighbourPeer struct {
	fc   *faultnet.Conn
	sock *base.Socket // its end
	link *link        // S's end
	seen int          // the highest payload number it received (-1: none)
}

// newNeighbourTest starts S, with a slow wait of a minute (never reached:
// the tests mark neighbours slow themselves), short send queues and
// baseOpts, and n neighbours whose links outlast the test however slow
// the machine.
func newNeighbourTest(t *testing.T, n int, baseOpts ...base.Option) *neighbourTest {
	return newNeighbourTestWith(t, n, nil, baseOpts...)
}

// newNeighbourTestWith is newNeighbourTest with S's options opts too.
func newNeighbourTestWith(t *testing.T, n int, opts []Option, baseOpts ...base.Option) *neighbourTest {
	long := 5 * time.Minute
	nt := &neighbourTest{drops: make(map[protocol.NodeID]*atomic.Int64)}
	nt.cluster = startCluster(t, 1, append([]Option{WithSlowNeighbour(time.Minute, long),
		WithBaseOptions(append([]base.Option{base.WithSendQueue(4, 1<<20), base.WithWriteTimeout(long)}, baseOpts...)...),
		WithTracer(TracerFunc(func(e TraceEvent) {
			if e.Kind == TraceSlowDrop {
				nt.drops[e.Peer].Add(1) // the map is filled before the first Send
			}
		}))}, opts...)...)
	nt.s = nt.nodes[0]
	byID := make(map[protocol.NodeID]*neighbourPeer)
	for range n {
		fc := nt.stalledPeer(nt.s, base.WithKeepalive(10*time.Second, long))
		sock := nt.extras[len(nt.extras)-1]
		byID[sock.ID()] = &neighbourPeer{fc: fc, sock: sock, seen: -1}
		nt.drops[sock.ID()] = new(atomic.Int64)
	}
	for _, c := range *nt.s.neighbours.Load() {
		p := byID[c.ID()]
		p.link = nt.s.linkOf(c)
		nt.peers = append(nt.peers, p)
	}
	if len(nt.peers) != n {
		t.Fatalf("%d neighbours, want %d", len(nt.peers), n)
	}
	return nt
}

func (nt *neighbourTest) dropped(p *neighbourPeer) int64 { return nt.drops[p.sock.ID()].Load() }

// markSlow marks ps slow, as a slow wait that ran out would.
func markSlow(ps ...*neighbourPeer) {
	for _, p := range ps {
		p.link.slowSince.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// received reports whether p has received broadcast number i, reading
// what it has.
func (p *neighbourPeer) received(i int) bool {
	for p.seen < i {
		m, ok := p.sock.TryRecv()
		if !ok {
			return false
		}
		var n int
		if _, err := fmt.Sscanf(string(m.Packets[0]), "msg-%d", &n); err == nil {
			p.seen = max(p.seen, n)
		}
	}
	return true
}

// waitParked waits until a goroutine is blocked in a select inside
// function fn (as a stack trace names it): a send that got as far as
// waiting for room.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testnet.Eventually(t, 30*time.Second, func() bool {
		n := runtime.Stack(buf, true)
		for n == len(buf) {
			buf = make([]byte, 2*len(buf))
			n = runtime.Stack(buf, true)
		}
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			if strings.Contains(head, "[select") && strings.Contains(g, fn) {
				return true
			}
		}
		return false
	}, "a goroutine to wait in %s", fn)
}

// fill stops every neighbour reading and sends broadcasts, numbered from
// *i on, with the neighbours marked slow before each (so their copies are
// dropped, not waited for, once their queues are full), until one finds
// no room for a second: every queue is full and its link's writer
// blocked.
// It returns the number of the last broadcast p's queue took (-1: none).
func (nt *neighbourTest) fill(t *testing.T, i *int, data []byte, p *neighbourPeer) int {
	t.Helper()
	for _, q := range nt.peers {
		q.fc.StopReading(true)
	}
	last := -1
	for start := *i; ; *i++ {
		if *i-start > 10000 {
			t.Fatal("the queues never filled")
		}
		markSlow(nt.peers...)
		dropped := nt.dropped(p)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := nt.s.Send(ctx, payload(*i), data)
		cancel()
		if errors.Is(err, ErrTimeout) {
			return last // no queue had room for a second
		}
		if err != nil {
			t.Fatalf("Send %d: %v", *i, err)
		}
		if nt.dropped(p) == dropped {
			last = *i
		}
	}
}

// TestCongestedSendWaitsForAny: when no neighbour had room, Send waited
// for the full queues one at a time, a slow wait each, so it could go on
// waiting for a neighbour that had stopped reading while another had
// room. S's two neighbours stop reading, and their queues fill while both
// are known to be slow; a Send then waits. Once the second in S's order
// reads again, Send returns, long before its context ends, however long
// the first one stays stalled.
func TestCongestedSendWaitsForAny(t *testing.T) {
	nt := newNeighbourTest(t, 2)
	stuck, freed := nt.peers[0], nt.peers[1]
	data := noise(32 << 10)
	i := 0
	nt.fill(t, &i, data, stuck)
	before := nt.dropped(stuck)
	ctx := ctxT(t, 30*time.Second)
	res := make(chan error, 1)
	go func() { res <- nt.s.Send(ctx, payload(i), data) }()
	waitParked(t, "mesh.(*Socket).originate")
	freed.fc.StopReading(false)
	if err := <-res; err != nil {
		t.Fatalf("Send: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Send returned only when its context ended: it waited for the stalled neighbour")
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return freed.received(i) }, "the freed neighbour to get the broadcast")
	if got := nt.dropped(stuck); got != before+1 {
		t.Fatalf("%d copies dropped for the stalled neighbour, want 1", got-before)
	}
}

// TestCongestedSendDropPolicy: under the Drop policy a Send that finds
// every neighbour's queue full does not wait: it fails with ErrQueueFull.
func TestCongestedSendDropPolicy(t *testing.T) {
	nt := newNeighbourTest(t, 2, base.WithQueuePolicy(base.Drop))
	for _, p := range nt.peers {
		p.fc.StopReading(true)
	}
	data := noise(32 << 10)
	ctx := ctxT(t, 30*time.Second)
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("the queues never filled")
		}
		markSlow(nt.peers...)
		err := nt.s.Send(ctx, payload(i), data)
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Send %d: %v, want ErrQueueFull", i, err)
		}
		break
	}
	if ctx.Err() != nil {
		t.Fatal("Send waited for its context to end")
	}
}

// TestSlowDropRechecksRoom: a neighbour known to be slow whose queue was
// full when a Send began lost its copy even when its queue had room again
// by the time the Send, having waited for another neighbour, gave up on
// it. S's two neighbours stop reading and their queues fill; one is known
// to be slow, the other not, and a Send waits for the second. Meanwhile
// the slow one reads its backlog, then the other one too: the slow one
// gets its copy.
func TestSlowDropRechecksRoom(t *testing.T) {
	nt := newNeighbourTest(t, 2)
	slow, waited := nt.peers[0], nt.peers[1]
	data := noise(32 << 10)
	i := 0
	last := nt.fill(t, &i, data, slow)
	if last < 0 {
		t.Fatal("the slow neighbour's queue took nothing")
	}
	waited.link.slowSince.Store(0) // full, but not known to be slow
	before := nt.dropped(slow)
	ctx := ctxT(t, 30*time.Second)
	res := make(chan error, 1)
	go func() { res <- nt.s.Send(ctx, payload(i), data) }()
	waitParked(t, "mesh.(*Socket).originate") // waiting for the second one
	slow.fc.StopReading(false)
	testnet.Eventually(t, 30*time.Second, func() bool { return slow.received(last) }, "the slow neighbour to read its backlog")
	waited.fc.StopReading(false)
	if err := <-res; err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := nt.dropped(slow); got != before {
		t.Fatalf("the slow neighbour's copy was dropped though its queue had room (%d drops)", got-before)
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return slow.received(i) }, "the slow neighbour to get the broadcast")
}
