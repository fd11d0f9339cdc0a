package mesh

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// seenModel is the seen-state's rules written plainly: per origin, the
// highest number accepted and a map of the best hops left per number.
type seenModel struct {
	window uint64
	top    map[protocol.NodeID]uint64
	marks  map[protocol.NodeID]map[uint64]uint8
}

func (m *seenModel) check(o protocol.NodeID, seq uint64, left uint8) seenVerdict {
	top, ok := m.top[o]
	if !ok {
		m.top[o] = seq
		m.marks[o] = map[uint64]uint8{seq: left + 1}
		return seenNew
	}
	if seq+m.window <= top {
		return seenBehind
	}
	if seq > top {
		m.top[o] = seq
	}
	b := m.marks[o][seq]
	switch {
	case b == 0:
		m.marks[o][seq] = left + 1
		return seenNew
	case left+1 > b:
		m.marks[o][seq] = left + 1
		return seenBetter
	}
	return seenDup
}

// TestSeenStateModel checks the seen-state against the plain model: copies
// of broadcasts from a few origins, numbers jumping ahead (gaps, as
// whispers leave) and falling back (late copies, replays), with more or
// fewer hops left, peek agreeing with check.
func TestSeenStateModel(t *testing.T) {
	const window = 64
	c := newSeenState(1024, window, time.Hour, 255)
	m := &seenModel{window: window, top: map[protocol.NodeID]uint64{}, marks: map[protocol.NodeID]map[uint64]uint8{}}
	origins := make([]protocol.NodeID, 40)
	next := make([]uint64, len(origins))
	for i := range origins {
		origins[i] = protocol.NewNodeID()
		next[i] = 1 << 40
	}
	r := rand.New(rand.NewPCG(1, 2))
	counts := map[seenVerdict]int{}
	for step := range 300_000 {
		i := r.IntN(len(origins))
		var seq uint64
		switch r.IntN(10) {
		case 0: // a gap
			next[i] += r.Uint64N(3 * window)
			seq = next[i]
		case 1, 2, 3: // the next number
			next[i]++
			seq = next[i]
		default: // an earlier one: a late copy or a replay
			seq = next[i] - r.Uint64N(2*window)
		}
		left := uint8(r.IntN(4))
		peek := c.peek(origins[i], seq, left)
		want := m.check(origins[i], seq, left)
		if peek != want {
			t.Fatalf("step %d: peek = %d, want %d", step, peek, want)
		}
		if got := c.check(origins[i], seq, left, 0, 0, 1); got != want {
			t.Fatalf("step %d: check(origin %d, seq %d, left %d) = %d, want %d", step, i, seq, left, got, want)
		}
		counts[want]++
	}
	for _, v := range []seenVerdict{seenNew, seenBetter, seenDup, seenBehind} {
		if counts[v] == 0 {
			t.Errorf("verdict %d never came up", v)
		}
	}
	if got := c.len(); got != len(origins) {
		t.Errorf("len = %d, want %d", got, len(origins))
	}
	if got := c.behind.Load(); got != uint64(counts[seenBehind]) {
		t.Errorf("behind = %d, want %d", got, counts[seenBehind])
	}
}

// TestSeenStateFullKeepsYoung: a full seen-state refuses new origins
// rather than forget a young one; a neighbour that introduced most of the
// origins is refused first; expired origins make room again.
func TestSeenStateFullKeepsYoung(t *testing.T) {
	const limit = 16 * 8
	age := time.Minute
	c := newSeenState(limit, 64, age, 255)
	now := time.Now().UnixNano()
	honest := make([]protocol.NodeID, 0, limit)
	// The flooder (link 1) fills three quarters with made-up origins.
	for range 3 * limit / 4 {
		if v := c.check(protocol.NewNodeID(), 1, 0, now, now, 1); v != seenNew {
			t.Fatalf("below three quarters: %d", v)
		}
	}
	if v := c.check(protocol.NewNodeID(), 1, 0, now, now, 1); v != seenRefused {
		t.Fatalf("the neighbour holding most of the state was not refused: %d", v)
	}
	// Others fill the last quarter, and then are refused too. A shard may
	// be full before the whole state is, so count rather than expect.
	for range limit {
		id := protocol.NewNodeID()
		if c.check(id, 1, 0, now, now, 2) == seenNew {
			honest = append(honest, id)
		}
	}
	if c.len() > limit {
		t.Fatalf("%d origins tracked, bound %d", c.len(), limit)
	}
	if len(honest) < limit/8 {
		t.Fatalf("only %d honest origins admitted in the last quarter", len(honest))
	}
	if c.refused.Load() == 0 {
		t.Fatal("refusals were not counted")
	}
	// Nothing young was forgotten: every origin still knows its message.
	for _, id := range honest {
		if v := c.check(id, 1, 0, now, now, 2); v != seenDup {
			t.Fatalf("a remembered broadcast came back as %d", v)
		}
	}
	// Past the age window everything expires and the state takes new
	// origins again.
	later := now + int64(age) + int64(2*seenSweepEvery)
	if v := c.check(protocol.NewNodeID(), 1, 0, later, later, 2); v != seenNew {
		t.Fatalf("after expiry: %d", v)
	}
	if got := c.len(); got != 1 {
		t.Fatalf("%d origins tracked after the sweep, want 1", got)
	}
}

// TestSeenStateAllocatesNothing: once the tables have grown to their
// bound, checking allocates nothing, whether origins are known or new
// (refused: the state is full).
func TestSeenStateAllocatesNothing(t *testing.T) {
	c := newSeenState(1<<10, 1024, time.Minute, DefaultRelayAgainBelow)
	known := make([]protocol.NodeID, 1<<10)
	for i := range known {
		known[i] = protocol.NewNodeID()
		c.check(known[i], 1, 0, 0, 0, 1)
	}
	seq, i := uint64(1), 0
	fresh := protocol.NewNodeID()
	step := func() {
		seq++
		i = (i + 1) % len(known)
		c.peek(known[i], seq, 0)
		c.check(known[i], seq, 0, 0, 0, 1)
		fresh[0]++
		c.check(fresh, 1, 0, 0, 0, 1)
	}
	if a := testing.AllocsPerRun(1000, step); a != 0 {
		t.Errorf("check allocates %.1f times", a)
	}
}

// BenchmarkSeenState models a flood at one node: every message is peeked
// and checked as it first arrives, then peeked again as two more copies
// arrive a little later (the average degree 4 makes about 3.2).
func BenchmarkSeenState(b *testing.B) {
	c := newSeenState(DefaultSeenOrigins, DefaultSeenWindow, time.Minute, DefaultRelayAgainBelow)
	origins := make([]protocol.NodeID, 16)
	for i := range origins {
		origins[i] = protocol.NewNodeID()
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		seq := uint64(time.Now().UnixNano())
		for i := 0; pb.Next(); i++ {
			o := origins[i%len(origins)]
			seq++
			if c.peek(o, seq, 3) == seenNew {
				c.check(o, seq, 3, 0, 0, 1)
			}
			c.peek(o, seq-17, 3)
			c.peek(o, seq-41, 3)
		}
	})
}
