package mesh

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// TestSeenCacheModel checks the seen-cache against a plain map and queue:
// bounded per shard, and evicting in insertion order (entries are never
// touched after they are added), exact under heavy probing (IDs chosen to
// collide in the same shard and the same home slots).
func TestSeenCacheModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		gen  func(r *rand.Rand) protocol.MessageID
	}{
		{"random", 16 * 50, func(r *rand.Rand) protocol.MessageID { return protocol.MessageID(r.Uint64()) }},
		// Few distinct IDs, all in shard 0: many repeats, long probe runs.
		{"colliding", 16 * 20, func(r *rand.Rand) protocol.MessageID { return protocol.MessageID(r.Uint64N(300) * seenShards) }},
		{"with zero", 16 * 4, func(r *rand.Rand) protocol.MessageID { return protocol.MessageID(r.Uint64N(8) * seenShards) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newSeenCache(tc.size, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			per := tc.size / seenShards
			type model struct {
				set   map[protocol.MessageID]bool
				order []protocol.MessageID
			}
			var shards [seenShards]model
			for i := range shards {
				shards[i].set = map[protocol.MessageID]bool{}
			}
			r := rand.New(rand.NewPCG(1, 2))
			for step := 0; step < 200_000; step++ {
				id := tc.gen(r)
				m := &shards[uint64(id)%seenShards]
				want := m.set[id]
				if got := c.seen(id); got != want {
					t.Fatalf("step %d: seen(%v) = %v, want %v", step, id, got, want)
				}
				if r.IntN(2) == 0 {
					continue
				}
				now := time.Now().UnixNano()
				if fresh := c.mark(id, now, now); fresh == want {
					t.Fatalf("step %d: mark(%v) fresh = %v, want %v", step, id, fresh, !want)
				}
				if !want {
					m.set[id] = true
					m.order = append(m.order, id)
					if len(m.order) > per {
						delete(m.set, m.order[0])
						m.order = m.order[1:]
					}
				}
			}
			total := 0
			for i := range shards {
				total += len(shards[i].order)
			}
			if got := c.len(); got != total || got > tc.size {
				t.Errorf("len = %d, model %d, bound %d", got, total, tc.size)
			}
			if c.youngEvictions.Load() == 0 {
				t.Error("evictions inside the age window were not counted")
			}
		})
	}
}

// TestSeenCacheMarkAllocatesNothing: once the shards have grown to their
// bound, marking and looking up allocate nothing.
func TestSeenCacheMarkAllocatesNothing(t *testing.T) {
	c, _ := newSeenCache(1<<12, time.Minute)
	id := uint64(1)
	fill := func() {
		id = id*0x9e3779b97f4a7c15 + 7
		c.mark(protocol.MessageID(id), 0, 0)
		c.seen(protocol.MessageID(id))
	}
	for range 1 << 13 { // past the bound: tables at full size, evicting
		fill()
	}
	if a := testing.AllocsPerRun(1000, fill); a != 0 {
		t.Errorf("mark+seen allocate %.1f times", a)
	}
}

// BenchmarkSeenCache models a flood at one node: every message is looked
// up and marked once as it first arrives, then looked up again as two more
// copies arrive a little later (the average degree 4 makes about 3.2).
func BenchmarkSeenCache(b *testing.B) {
	c, _ := newSeenCache(DefaultSeenCacheSize, time.Minute)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var recent [64]protocol.MessageID
		x := uint64(time.Now().UnixNano())
		for i := 0; pb.Next(); i++ {
			x = x*0x9e3779b97f4a7c15 + 7
			id := protocol.MessageID(x)
			if !c.seen(id) {
				c.mark(id, 0, 0)
			}
			recent[i%len(recent)] = id
			c.seen(recent[(i+17)%len(recent)])
			c.seen(recent[(i+41)%len(recent)])
		}
	})
}
