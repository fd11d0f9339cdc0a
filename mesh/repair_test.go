package mesh

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// sendAll sends messages payloads [first, first+count) from random nodes
// of from, senders at once, and fails the test on an error.
func sendAll(t *testing.T, nodes []*Socket, first, count, senders int, seed uint64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := ctxT(t, 60*time.Second)
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := first + w; i < first+count; i += senders {
				if err := nodes[r.IntN(len(nodes))].Send(ctx, payload(i)); err != nil {
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
}

// checkExactlyOnce waits until each of nodes (indexes into the cluster)
// has every payload in [first, first+count) that it did not send, and
// then, once the network is quiet, that none came twice.
func checkExactlyOnce(t *testing.T, c *cluster, in *inbox, nodes []int, first, count int, quiet func()) {
	t.Helper()
	missing := func() (int, string) {
		total, detail := 0, ""
		for _, n := range nodes {
			k := 0
			for i := first; i < first+count; i++ {
				if in.count(n, string(payload(i))) == 0 && !in.sentBy(n, string(payload(i))) {
					k++
				}
			}
			if k > 0 {
				st := c.nodes[n].Stats()
				detail += fmt.Sprintf("\nnode %d misses %d; relay drops %d, repair %+v", n, k, st.RelayDrops, st.RepairStats)
			}
			total += k
		}
		return total, detail
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if testnet.WaitFor(ctx, func() bool { k, _ := missing(); return k == 0 }) != nil {
		k, detail := missing()
		t.Fatalf("%d deliveries missing:%s", k, detail)
	}
	quiet()
	for _, n := range nodes {
		for i := first; i < first+count; i++ {
			if got := in.count(n, string(payload(i))); got > 1 {
				t.Fatalf("node %d got message %d %d times", n, i, got)
			}
		}
	}
}

func (c *cluster) repairTotals() (st RepairStats, relayDrops uint64) {
	for _, s := range c.nodes {
		if s.lc.Closed() {
			continue
		}
		x := s.Stats()
		relayDrops += x.RelayDrops
		st.Announcements += x.Announcements
		st.PullsSent += x.PullsSent
		st.PullsServed += x.PullsServed
		st.PullsRefused += x.PullsRefused
		st.Repairs += x.Repairs
		st.Grafts += x.Grafts
		st.Prunes += x.Prunes
		st.EagerLinks += x.EagerLinks
		st.LazyLinks += x.LazyLinks
		st.RepairsGivenUp += x.RepairsGivenUp
	}
	return st, relayDrops
}

// TestTreeExactlyOnce: in tree mode, broadcasts from random nodes reach
// every node exactly once, and the flood's duplicates prune links to lazy.
func TestTreeExactlyOnce(t *testing.T) {
	const n = 16
	c := startCluster(t, n, WithBroadcastMode(Tree))
	c.wire(testnet.Random(n, 4, rand.New(rand.NewPCG(16, 4))))
	in := c.collectOrigins()
	const messages = 400
	sendAll(t, c.nodes, 0, messages, 4, 1)
	checkExactlyOnce(t, c, in, allNodes(n), 0, messages, c.waitQuiet)
	st, _ := c.repairTotals()
	if st.LazyLinks == 0 || st.Prunes == 0 {
		t.Fatalf("no link was pruned: %+v", st)
	}
	t.Logf("repair: %+v", st)
}

func allNodes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// TestBurstTinyQueuesExactlyOnce: with send queues of a few messages, a
// burst makes relays drop copies; announcements and pulls recover every
// one of them, in both modes.
func TestBurstTinyQueuesExactlyOnce(t *testing.T) {
	for _, mode := range []BroadcastMode{Flood, Tree} {
		t.Run(mode.String(), func(t *testing.T) {
			const n = 10
			var kmu sync.Mutex
			kinds := map[TraceKind]int{}
			t.Cleanup(func() { kmu.Lock(); t.Logf("trace kinds: %v", kinds); kmu.Unlock() })
			c := startCluster(t, n, WithBroadcastMode(mode), WithSignedBroadcasts(false),
				WithTracer(TracerFunc(func(e TraceEvent) { kmu.Lock(); kinds[e.Kind]++; kmu.Unlock() })),
				WithBaseOptions(base.WithSendQueue(4, 1<<20)))
			c.wire(testnet.Random(n, 3, rand.New(rand.NewPCG(10, 3))))
			in := c.collectOrigins()
			const messages = 1500
			sendAll(t, c.nodes, 0, messages, 6, 2)
			checkExactlyOnce(t, c, in, allNodes(n), 0, messages, c.waitQuiet)
			st, drops := c.repairTotals()
			t.Logf("relay drops %d, repair: %+v", drops, st)
			if drops > 0 && st.Repairs == 0 {
				t.Fatalf("%d relay drops but no repair", drops)
			}
		})
	}
}

// TestMixedModes: tree and flood nodes in one mesh deliver everything
// exactly once.
func TestMixedModes(t *testing.T) {
	const n = 12
	c := &cluster{t: t}
	t.Cleanup(c.closeAll)
	for i := 0; i < n; i++ {
		mode := Flood
		if i%2 == 0 {
			mode = Tree
		}
		s, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithMaxOutgoing(64), WithMaxPeers(64),
			WithMembership(false), WithLogger(testnet.Logger(t).With("i", i)), WithBroadcastMode(mode))
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, s)
	}
	c.wire(testnet.Random(n, 4, rand.New(rand.NewPCG(12, 4))))
	in := c.collectOrigins()
	const messages = 300
	sendAll(t, c.nodes, 0, messages, 4, 3)
	checkExactlyOnce(t, c, in, allNodes(n), 0, messages, c.waitQuiet)
	st, _ := c.repairTotals()
	t.Logf("repair: %+v", st)
}

// sentBy reports whether node sent payload p, as far as the deliveries of
// the others tell (collectOrigins): the origin does not deliver its own.
func (in *inbox) sentBy(node int, p string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.origin != nil && in.origin[p] == node+1
}

// collectOrigins is collect, with the origin of each payload remembered
// from the first delivery's sender.
func (c *cluster) collectOrigins() *inbox {
	in := &inbox{counts: make([]map[string]int, len(c.nodes)), per: make([]int, len(c.nodes)), origin: map[string]int{}}
	index := map[string]int{}
	for i, s := range c.nodes {
		index[string(s.ID().String())] = i
	}
	for i, s := range c.nodes {
		in.counts[i] = make(map[string]int)
		s.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
			in.mu.Lock()
			p := string(m.Packets[0])
			in.counts[i][p]++
			in.per[i]++
			in.total++
			in.origin[p] = index[m.Sender.String()] + 1
			in.mu.Unlock()
			return true
		}))
	}
	return in
}

func TestRepairOptionsValidated(t *testing.T) {
	for name, opt := range map[string]Option{
		"mode":      WithBroadcastMode(BroadcastMode(7)),
		"cache":     WithMessageCache(0),
		"timeout":   WithPullTimeout(0),
		"window":    WithRepairWindow(-time.Second),
		"interval":  WithAnnounceInterval(0),
		"missing":   WithRepairLimits(3, 1, 1),
		"pulls":     WithRepairLimits(64, 0, 1),
		"announced": WithRepairLimits(64, 1, 0),
	} {
		if _, err := NewSocket("127.0.0.1:0", opt); !errorsIs(err, ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if Tree.String() != "tree" || Flood.String() != "flood" || BroadcastMode(7).String() != "BroadcastMode(7)" {
		t.Fatal("mode names")
	}
}

// cacheEnv is a broadcast envelope for r whose size and content follow
// from r, so that a test can tell a right answer from a stale one.
func cacheEnv(r protocol.BroadcastRef, size int) []byte {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(r.Seq) + byte(i) + r.Origin[0]
	}
	e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: r.Origin, Seq: r.Seq, HopLimit: 8, Packets: [][]byte{payload}}
	return e.AppendTo(nil)
}

// TestMessageCacheBounded: the cache keeps to its byte bound, oldest out,
// and refuses an entry larger than itself without giving up the others.
func TestMessageCacheBounded(t *testing.T) {
	c := newMsgCache(4 << 10)
	for i := range 200 {
		r := protocol.BroadcastRef{Seq: uint64(i)}
		c.put(r, 1, cacheEnv(r, 100))
		if c.bytes() > c.max {
			t.Fatalf("%d bytes held, bound %d", c.bytes(), c.max)
		}
	}
	if _, ok := c.get(protocol.BroadcastRef{Seq: 100}); ok {
		t.Fatal("an old entry outlived the bound")
	}
	newest := protocol.BroadcastRef{Seq: 199}
	if e, ok := c.get(newest); !ok || e.hops != 1 || !bytes.Equal(e.env, cacheEnv(newest, 100)) {
		t.Fatal("the newest entry is gone")
	}
	huge := protocol.BroadcastRef{Seq: 999}
	c.put(huge, 1, cacheEnv(huge, c.max)) // larger than the cache: not kept
	if _, ok := c.get(huge); ok {
		t.Fatal("kept an entry larger than the cache")
	}
	if _, ok := c.get(newest); !ok {
		t.Fatal("an entry too large to keep flushed the others")
	}
}

// TestMessageCacheIndexCounted: the index grows when a get catches up
// with many small entries, and counts against the bound: slabs make room.
func TestMessageCacheIndexCounted(t *testing.T) {
	c := newMsgCache(16 << 10)
	for i := range 2000 {
		r := protocol.BroadcastRef{Seq: uint64(i)}
		c.put(r, 1, cacheEnv(r, 0))
	}
	newest := protocol.BroadcastRef{Seq: 1999}
	if _, ok := c.get(newest); !ok {
		t.Fatal("the newest entry is gone")
	}
	if c.bytes() > c.max {
		t.Fatalf("%d bytes held once the index caught up, bound %d", c.bytes(), c.max)
	}
}

// TestMessageCacheModel puts envelopes of every size (some larger than a
// slab) under refs that repeat, across index growth and many slab drops,
// with gets now and then (the index catches up on a get, so slabs are also
// dropped whole before it saw them), and checks that what get returns is
// what was put under that ref, that the newest entries are all held, and
// that the bound holds throughout.
func TestMessageCacheModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := newMsgCache(256 << 10)
	sizeOf := func(r protocol.BroadcastRef) int {
		if r.Seq%97 == 0 {
			return 20<<10 + int(r.Seq%1000) // larger than a slab
		}
		return int(r.Seq*7919) % 600
	}
	var recent []protocol.BroadcastRef // newest last
	recentBytes := 0
	for i := range 200_000 {
		r := protocol.BroadcastRef{Seq: uint64(rng.IntN(5000))}
		r.Origin[0] = byte(rng.IntN(4))
		c.put(r, 1, cacheEnv(r, sizeOf(r)))
		if c.bytes() > c.max {
			t.Fatalf("step %d: %d bytes held, bound %d", i, c.bytes(), c.max)
		}
		recent = append(recent, r)
		recentBytes += len(cacheEnv(r, sizeOf(r))) + cacheEntryHeader
		// What was put within the last quarter of the bound is held
		// (slabs go whole, and the index takes its share).
		for recentBytes > c.max/4 {
			recentBytes -= len(cacheEnv(recent[0], sizeOf(recent[0]))) + cacheEntryHeader
			recent = recent[1:]
		}
		if rng.IntN(50) != 0 {
			continue
		}
		for _, want := range recent {
			if _, ok := c.get(want); !ok {
				t.Fatalf("step %d: %v, put within the last %d bytes, is gone", i, want, recentBytes)
			}
		}
		used := 0
		for _, slot := range c.index {
			if slot.hash != 0 {
				used++
			}
		}
		if used != c.entries {
			t.Fatalf("step %d: %d index slots in use, %d entries counted", i, used, c.entries)
		}
		if c.bytes() > c.max {
			t.Fatalf("step %d: %d bytes held after gets, bound %d", i, c.bytes(), c.max)
		}
		for range 20 {
			r := protocol.BroadcastRef{Seq: uint64(rng.IntN(5000))}
			r.Origin[0] = byte(rng.IntN(4))
			if got, ok := c.get(r); ok && !bytes.Equal(got.env, cacheEnv(r, sizeOf(r))) {
				t.Fatalf("step %d: get %v returned another envelope", i, r)
			}
		}
	}
}

// BenchmarkMessageCachePut: what the relay path pays to cache a broadcast,
// with the cache full (every put evicts).
func BenchmarkMessageCachePut(b *testing.B) {
	c := newMsgCache(4 << 20)
	var origins [16]protocol.NodeID
	for i := range origins {
		origins[i][0], origins[i][9] = byte(i), byte(3*i)
	}
	env := cacheEnv(protocol.BroadcastRef{}, 256)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.put(protocol.BroadcastRef{Origin: origins[i%16], Seq: uint64(i / 16)}, 1, env)
	}
}
