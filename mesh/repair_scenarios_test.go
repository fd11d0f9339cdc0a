package mesh

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// handPeer links a bare base socket to s and returns it and its link.
func handPeer(t *testing.T, s *Socket, opts ...base.Option) (*base.Socket, *base.Conn) {
	t.Helper()
	p := testnet.NewBase(t, "127.0.0.1:0", opts...)
	c, err := p.Connect(ctxT(t, 10*time.Second), s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(s.Peers()) > 0 }, "the mesh node to see the hand peer")
	return p, c
}

// recvBroadcast returns the next user broadcast p receives (the mesh's
// control messages, which a bare base socket hands to Recv, skipped).
func recvBroadcast(t *testing.T, p *base.Socket) *base.Message {
	t.Helper()
	for {
		m, err := p.Recv(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == flags.Broadcast && m.Flag == flags.Broadcast {
			return m
		}
	}
}

func sendTree(t *testing.T, c *base.Conn, kind protocol.TreeKind, refs ...protocol.BroadcastRef) {
	t.Helper()
	if err := c.SendMessage(ctxT(t, 5*time.Second), flags.Whisper, flags.Tree, protocol.AppendTreeControl(nil, kind, refs)); err != nil {
		t.Fatal(err)
	}
}

// TestPullServedFromCacheThenRefusedWhenEvicted: a pull is answered with
// the original signed envelope from the message cache; once the cache has
// evicted it, the pull is refused and counted.
func TestPullServedFromCacheThenRefusedWhenEvicted(t *testing.T) {
	c := startCluster(t, 1, WithMessageCache(4096))
	a := c.nodes[0]
	p, conn := handPeer(t, a)
	if err := a.Send(ctxT(t, 5*time.Second), []byte("first")); err != nil {
		t.Fatal(err)
	}
	first := recvBroadcast(t, p)
	ref := protocol.BroadcastRef{Origin: first.Sender, Seq: first.Seq}
	firstEnv := slices.Clone(first.Envelope())
	sendTree(t, conn, protocol.TreeWant, ref)
	again := recvBroadcast(t, p)
	if !bytes.Equal(again.Envelope(), firstEnv) || !again.Proven {
		t.Fatalf("the pulled copy is not the original signed envelope (proven %v)", again.Proven)
	}
	// Counted once queued, which the copy's arrival may overtake.
	testnet.Eventually(t, 10*time.Second, func() bool { return a.Stats().PullsServed == 1 }, "the pull to be counted as served")
	if st := a.Stats(); st.PullsRefused != 0 {
		t.Fatalf("refused %d", st.PullsRefused)
	}
	// Enough newer broadcasts to push the first out of 4 KiB.
	for i := range 40 {
		if err := a.Send(ctxT(t, 5*time.Second), payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return a.Stats().MessageCacheBytes <= 4096 }, "the cache to stay in its bound")
	sendTree(t, conn, protocol.TreeWant, ref)
	testnet.Eventually(t, 10*time.Second, func() bool { return a.Stats().PullsRefused == 1 }, "the pull of an evicted broadcast to be refused")
	if st := a.Stats(); st.PullsServed != 1 {
		t.Fatalf("served %d", st.PullsServed)
	}
	// Malformed control is counted, and the link stays.
	if err := conn.SendMessage(ctxT(t, 5*time.Second), flags.Whisper, flags.Tree, []byte{0x09}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return a.Stats().BadTreeMessages == 1 }, "the malformed message to be counted")
	if conn.Err() != nil {
		t.Fatalf("link closed: %v", conn.Err())
	}
}

// TestHostileAnnouncer: a neighbour that announces broadcasts it never
// serves holds at most its share of the repair state, for at most the
// repair window, and the mesh's broadcasts reach the node as before.
func TestHostileAnnouncer(t *testing.T) {
	const window, pullTimeout = 2 * time.Second, 50 * time.Millisecond
	c := startCluster(t, 2, WithRepairLimits(64, 8, 1024), WithRepairWindow(window), WithPullTimeout(pullTimeout))
	c.wire([][2]int{{0, 1}})
	in := c.collectOrigins()
	victim := c.nodes[1]
	_, conn := handPeer(t, victim)
	var refs []protocol.BroadcastRef
	for i := range 2 * protocol.MaxBroadcastRefs {
		var origin protocol.NodeID
		origin[0], origin[1] = byte(i), byte(i>>8)
		refs = append(refs, protocol.BroadcastRef{Origin: origin, Seq: uint64(i)})
	}
	for i := 0; i < len(refs); i += protocol.MaxBroadcastRefs {
		if err := conn.SendMessage(ctxT(t, 5*time.Second), flags.Whisper, flags.IHave,
			protocol.AppendBroadcastRefs(nil, refs[i:i+protocol.MaxBroadcastRefs])); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return victim.Stats().MissingRefused == uint64(len(refs)-16) },
		"the announcements beyond the announcer's share to be refused")
	if st := victim.Stats(); st.Missing > 16 {
		t.Fatalf("one announcer holds %d missing entries, its share is 16", st.Missing)
	}
	sendAll(t, c.nodes[:1], 0, 50, 1, 9)
	checkExactlyOnce(t, c, in, []int{1}, 0, 50, c.waitQuietAmong)
	testnet.Eventually(t, 10*time.Second, func() bool { st := victim.Stats(); return st.Missing == 0 && st.RepairsGivenUp == 16 },
		"the hostile announcements to be given up after the repair window")
	// At most one pull per broadcast per pull timeout, for the window.
	if st := victim.Stats(); st.PullsSent > 16*uint64(window/pullTimeout+1) {
		t.Fatalf("%d pulls for 16 broadcasts", st.PullsSent)
	}
}

// eagerPair finds a link both of whose ends push payloads over it.
func eagerPair(c *cluster, edges [][2]int) ([2]int, bool) {
	for _, e := range edges {
		a, b := c.nodes[e[0]], c.nodes[e[1]]
		a.rep.mu.Lock()
		ab := a.rep.st.Eager(b.ID())
		a.rep.mu.Unlock()
		b.rep.mu.Lock()
		ba := b.rep.st.Eager(a.ID())
		b.rep.mu.Unlock()
		if ab && ba {
			return e, true
		}
	}
	return [2]int{}, false
}

// TestTreeRepairAfterLinkLoss: on a ring in tree mode the eager links
// settle on a path; when one of them goes, the nodes cut off pull and
// graft a lazy link, and every broadcast still arrives exactly once.
func TestTreeRepairAfterLinkLoss(t *testing.T) {
	const n = 8
	c := startCluster(t, n, WithBroadcastMode(Tree))
	edges := testnet.Ring(n)
	c.wire(edges)
	in := c.collectOrigins()
	// One origin, one broadcast at a time, until the tree has settled: a
	// link of the ring is pruned by a duplicate that comes after its prune
	// delay, so broadcasts go on until one does.
	next := 0
	for deadline := time.Now().Add(20 * time.Second); ; next++ {
		if st, _ := c.repairTotals(); st.LazyLinks >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link of the ring pruned after %d broadcasts", next)
		}
		if err := c.nodes[0].Send(ctxT(t, 5*time.Second), payload(next)); err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, c, in, allNodes(n), next, 1, func() {})
	}
	e, ok := eagerPair(c, edges)
	if !ok {
		t.Fatal("no eager link")
	}
	before, _ := c.repairTotals()
	conn, _ := c.nodes[e[0]].Base().Conn(c.nodes[e[1]].ID())
	_ = conn.Close()
	testnet.Eventually(t, 10*time.Second, func() bool {
		return len(c.nodes[e[0]].Peers()) == 1 && len(c.nodes[e[1]].Peers()) == 1
	}, "both ends to see the link gone")
	sendAll(t, c.nodes, next, 100, 2, 5)
	checkExactlyOnce(t, c, in, allNodes(n), next, 100, c.waitQuiet)
	after, _ := c.repairTotals()
	if after.Grafts == before.Grafts || after.Repairs == before.Repairs {
		t.Fatalf("no graft or repair after the link went: before %+v, after %+v", before, after)
	}
}

// TestTreeChurn: 64 nodes in tree mode; a quarter of them close while
// broadcasts go on; every survivor gets every broadcast sent after the
// closes exactly once.
func TestTreeChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("64 nodes")
	}
	const n, killed = 64, 16
	plain := protocol.DefaultProtocol
	plain.Encryption = protocol.EncryptionPlaintext
	plain.Signing = protocol.SigningNone
	c := startCluster(t, n, WithBroadcastMode(Tree), WithProtocol(plain))
	rng := rand.New(rand.NewPCG(64, 16))
	edges := testnet.Random(n, 4, rng)
	// Choose whom to close so that the survivors stay connected.
	var dead []int
	var rest [][2]int
	for {
		dead = rng.Perm(n)[:killed]
		rest = rest[:0]
		for _, e := range edges {
			if !slices.Contains(dead, e[0]) && !slices.Contains(dead, e[1]) {
				rest = append(rest, e)
			}
		}
		if survivorsConnected(n, dead, rest) {
			break
		}
	}
	c.wire(edges)
	in := c.collectOrigins()
	var alive []*Socket
	var aliveIdx []int
	for i, s := range c.nodes {
		if !slices.Contains(dead, i) {
			alive = append(alive, s)
			aliveIdx = append(aliveIdx, i)
		}
	}
	// Warm up, so that a tree has formed.
	sendAll(t, alive, 0, 100, 2, 1)
	checkExactlyOnce(t, c, in, aliveIdx, 0, 100, func() {})
	// Broadcasts go on while a quarter of the nodes close.
	ctx, stop := context.WithCancel(context.Background())
	during := make(chan int, 1)
	go func() {
		// Paced (about 1000/s, at most 2000): a sender that runs free
		// floods the mesh with far more than the repair state holds
		// (WithRepairLimits), which is another test.
		pace := time.NewTicker(time.Millisecond)
		defer pace.Stop()
		i := 100
		for ctx.Err() == nil && i < 2100 {
			if err := alive[i%len(alive)].Send(ctx, payload(i)); err != nil {
				t.Logf("broadcast %d not sent: %v", i, err)
				break
			}
			i++
			select {
			case <-pace.C:
			case <-ctx.Done():
			}
		}
		during <- i
	}()
	for _, d := range dead {
		_ = c.nodes[d].Close(context.Background())
	}
	stop()
	last := <-during
	start := time.Now()
	// Every broadcast sent after the closes reaches every survivor once.
	sendAll(t, alive, last, 200, 4, 2)
	checkExactlyOnce(t, c, in, aliveIdx, last, 200, func() {})
	st, _ := c.repairTotals()
	t.Logf("after the closes: 200 broadcasts everywhere in %v; repairs %d, grafts %d, prunes %d, given up %d",
		time.Since(start).Round(time.Millisecond), st.Repairs, st.Grafts, st.Prunes, st.RepairsGivenUp)
}

func survivorsConnected(n int, dead []int, edges [][2]int) bool {
	index := map[int]int{}
	for i := 0; i < n; i++ {
		if !slices.Contains(dead, i) {
			index[i] = len(index)
		}
	}
	var mapped [][2]int
	for _, e := range edges {
		mapped = append(mapped, [2]int{index[e[0]], index[e[1]]})
	}
	return testnet.IsConnected(len(index), mapped)
}

// TestTreeNoAnnouncementPastHopLimit: a broadcast that arrives with no
// hops left is neither relayed nor announced. It was announced over lazy
// links, and a node beyond the hop limit that lacked it pulled it again
// and again (a pulled copy past its limit is dropped) until the repair
// window ran out. a (hop limit 1), b and c form a triangle; d hangs off a.
// Announcements are held back for an hour, so that what b queued for c can
// be read.
func TestTreeNoAnnouncementPastHopLimit(t *testing.T) {
	plain := protocol.DefaultProtocol
	plain.Encryption = protocol.EncryptionPlaintext
	plain.Signing = protocol.SigningNone
	opts := []Option{WithBroadcastMode(Tree), WithProtocol(plain), WithPullTimeout(10 * time.Millisecond),
		WithAnnounceInterval(time.Hour)}
	c := startCluster(t, 3, opts...) // b, c, d
	a, err := NewSocket("127.0.0.1:0", append([]Option{WithDiscovery(false), WithMembership(false), WithHopLimit(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = append([]*Socket{a}, c.nodes...)
	const ai, bi, ci, di = 0, 1, 2, 3
	c.wire([][2]int{{ai, bi}, {ai, ci}, {bi, ci}, {di, ai}})
	in := c.collectOrigins()
	all := []int{ai, bi, ci, di}
	b, cc := c.nodes[bi], c.nodes[ci]
	bSees := func(p *Socket) bool {
		b.rep.mu.Lock()
		defer b.rep.mu.Unlock()
		return b.rep.st.Eager(p.ID())
	}
	queuedFrom := func(origin *Socket) (n int) {
		b.rep.mu.Lock()
		defer b.rep.mu.Unlock()
		for _, r := range b.rep.st.Queued(cc.ID()) {
			if r.Origin == origin.ID() {
				n++
			}
		}
		return n
	}
	// d's broadcasts reach b over a and over c, until b-c is pruned.
	next := 0
	for deadline := time.Now().Add(20 * time.Second); bSees(cc) || !bSees(a); next++ {
		if time.Now().After(deadline) {
			t.Fatalf("b-c not pruned after %d broadcasts", next)
		}
		if err := c.nodes[di].Send(ctxT(t, 5*time.Second), payload(next)); err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, c, in, all, next, 1, func() {})
	}
	// d's next broadcast b announces to c (the link works as a lazy one)...
	if err := c.nodes[di].Send(ctxT(t, 5*time.Second), payload(next)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, c, in, all, next, 1, func() {})
	if queuedFrom(c.nodes[di]) == 0 {
		t.Fatal("b queued no announcement of d's broadcast for c")
	}
	// ...but not a's, which reaches b with no hops left. (b takes a
	// broadcast's bookkeeping before it hands it to the handlers.)
	if err := a.Send(ctxT(t, 5*time.Second), payload(next+1)); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, c, in, []int{bi, ci, di}, next+1, 1, func() {})
	if n := queuedFrom(a); n != 0 {
		t.Fatalf("b queued %d announcements of a's broadcast for c, which had no hops left", n)
	}
}
