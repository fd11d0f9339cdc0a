package mesh

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// seenShards splits the seen-state so that readers of different
// connections rarely wait on the same lock.
const seenShards = 16

// seenSweepEvery is how often, at most, a seen-state short of room looks
// for origins that have expired.
const seenSweepEvery = time.Second

// seenVerdict is what the seen-state says of one copy of a broadcast.
type seenVerdict uint8

const (
	// seenNew: the first copy: relay it and deliver it.
	seenNew seenVerdict = iota
	// seenBetter: seen before, but this copy has more hops left than any
	// earlier one, and the best of those had fewer than againBelow: relay
	// it again (further than before), do not deliver.
	seenBetter
	// seenDup: seen before with at least as many hops left.
	seenDup
	// seenBehind: the sequence number is below the origin's window, so
	// whether it was seen is not known: dropped (it may be a replay).
	seenBehind
	// seenRefused: a new origin, and the state has no room it may give
	// to the neighbour the copy came from.
	seenRefused
	// seenNoRoom is internal: seenRefused unless a sweep frees room.
	seenNoRoom
)

// seenState tells new broadcasts from copies and replays by (origin,
// sequence number), not by message: for each origin (the envelope's
// sender) it keeps the highest sequence number accepted and a sliding
// window of the window numbers up to it, one byte each: 0 for not seen,
// else 1 + the most hops any copy of that message had left. A copy is new
// only if its number is in the window and unmarked, or above the window
// (which then slides up); below the window it is refused, since it may
// be a replay. Sequence numbers a node used for whispers leave gaps, which
// cost nothing.
//
// An origin's entry lives as long as a message from it could still pass
// the age check: until age (the age window plus the clock-skew allowance)
// after the newest origin time accepted from it. A replay of anything the
// entry vouched for is then too old by the flood rules, so an entry is
// never given up while it is young: when the state is full, new origins
// are refused instead (seenRefused), and from three quarters full on, a
// new origin is refused from a neighbour that introduced at least half of
// the origins tracked, so one flooding neighbour cannot take the last
// quarter from the others. Origins already tracked go on as before.
//
// The memory is pointer-free and allocation-free once the state has grown
// to its bound: per shard an open-addressing index (linear probing, at
// most half full) into a table of entries, and one flat byte slice of
// windows. The index hashes node IDs with a random per-node seed, so that
// a peer cannot choose IDs that collide.
type seenState struct {
	shards [seenShards]seenShard
	window uint64 // sequence numbers per origin, a power of two
	maxAge int64  // ns: the age window plus the clock-skew allowance
	limit  int64  // origins in all
	// againBelow: a copy with more hops left is seenBetter only while the
	// best before had fewer than this many left (WithRelayAgainBelow).
	againBelow uint8
	seed0      uint64
	seed1      uint64

	used      atomic.Int64 // origins tracked, expired or not
	lastSweep atomic.Int64
	hmu       sync.Mutex
	held      map[uint32]int64 // origins each neighbour introduced, by link number

	refused, behind atomic.Uint64
}

type seenShard struct {
	mu      sync.Mutex
	index   []int32 // slot: entry number + 1 (0: empty); len is a power of two
	shift   uint    // 64 - log2(len(index))
	entries []originEntry
	marks   []uint8 // entry i's window is marks[i*window : (i+1)*window]
	free    []int32 // entry numbers released by a sweep
	limit   int
	_       [40]byte // one shard per pair of cache lines
}

type originEntry struct {
	origin protocol.NodeID
	hash   uint64
	top    uint64 // highest sequence number accepted
	last   int64  // newest origin time accepted, Unix ns (sender's clock)
	link   uint32 // the neighbour whose copy created the entry (0: none)
	live   bool
}

func newSeenState(origins, window int, maxAge time.Duration, againBelow uint8) *seenState {
	c := &seenState{
		window:     uint64(window),
		againBelow: againBelow,
		maxAge:     int64(maxAge),
		limit:      int64(origins),
		seed0:      rand.Uint64() | 1,
		seed1:      rand.Uint64() | 1,
		held:       make(map[uint32]int64),
	}
	// The bound holds for the state as a whole; a shard may take up to
	// twice its even share, so that an uneven spread of origins over the
	// shards does not refuse any before the state is full.
	per := 2 * ((origins + seenShards - 1) / seenShards)
	for i := range c.shards {
		c.shards[i].limit = per
	}
	return c
}

func (c *seenState) hash(id protocol.NodeID) uint64 {
	a := binary.LittleEndian.Uint64(id[:8]) ^ c.seed0
	b := binary.LittleEndian.Uint64(id[8:]) ^ c.seed1
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo ^ a
}

// peek says what check would say of a copy, without changing anything:
// the prefilter's cheap look before base copies the message. It never
// answers seenRefused (a new origin reads as seenNew).
func (c *seenState) peek(origin protocol.NodeID, seq uint64, left uint8) seenVerdict {
	h := c.hash(origin)
	s := &c.shards[h%seenShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.find(origin, h)
	if !ok {
		return seenNew
	}
	e := &s.entries[i]
	if seq > e.top {
		return seenNew
	}
	if e.top-seq >= c.window {
		return seenBehind
	}
	switch b := s.marks[uint64(i)*c.window+seq&(c.window-1)]; {
	case b == 0:
		return seenNew
	case left+1 > b && b <= c.againBelow:
		return seenBetter
	}
	return seenDup
}

// check records a copy of broadcast (origin, seq) that has left hops left
// and origin time at, arriving now from neighbour link, and says what to do
// with it. It is atomic: of two copies arriving at once on two
// connections, one is new and the other a duplicate (or better).
func (c *seenState) check(origin protocol.NodeID, seq uint64, left uint8, at, now int64, link uint32) seenVerdict {
	h := c.hash(origin)
	v := c.check1(origin, h, seq, left, at, link)
	if v == seenNoRoom {
		if c.sweepDue(now) {
			c.sweep(now)
			v = c.check1(origin, h, seq, left, at, link)
		}
		if v == seenNoRoom {
			c.refused.Add(1)
			v = seenRefused
		}
	}
	if v == seenBehind {
		c.behind.Add(1)
	}
	return v
}

func (c *seenState) check1(origin protocol.NodeID, h, seq uint64, left uint8, at int64, link uint32) seenVerdict {
	s := &c.shards[h%seenShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.find(origin, h); ok {
		v := c.mark(s, i, seq, left)
		if v == seenNew && at > s.entries[i].last {
			s.entries[i].last = at
		}
		return v
	}
	if !c.reserve(link) {
		return seenNoRoom
	}
	i := s.alloc(c.window)
	if i < 0 {
		c.used.Add(-1)
		return seenNoRoom
	}
	s.entries[i] = originEntry{origin: origin, hash: h, top: seq, last: at, link: link, live: true}
	w := s.marks[uint64(i)*c.window : uint64(i+1)*c.window]
	clear(w)
	w[seq&(c.window-1)] = left + 1
	s.insert(i)
	c.hmu.Lock()
	c.held[link]++
	c.hmu.Unlock()
	return seenNew
}

// mark records seq in entry i's window.
func (c *seenState) mark(s *seenShard, i int, seq uint64, left uint8) seenVerdict {
	e := &s.entries[i]
	w := s.marks[uint64(i)*c.window : uint64(i+1)*c.window]
	mask := c.window - 1
	if seq > e.top {
		if d := seq - e.top; d >= c.window {
			clear(w)
		} else {
			for k := uint64(1); k <= d; k++ {
				w[(e.top+k)&mask] = 0
			}
		}
		e.top = seq
		w[seq&mask] = left + 1
		return seenNew
	}
	if e.top-seq >= c.window {
		return seenBehind
	}
	b := &w[seq&mask]
	switch {
	case *b == 0:
		*b = left + 1
		return seenNew
	case left+1 > *b && *b <= c.againBelow:
		*b = left + 1
		return seenBetter
	}
	return seenDup
}

// reserve takes room for one more origin, introduced by neighbour link,
// if it may have it: always below three quarters of the bound; above, only
// if it introduced less than half of the origins tracked.
func (c *seenState) reserve(link uint32) bool {
	used := c.used.Add(1)
	if used > c.limit {
		c.used.Add(-1)
		return false
	}
	if 4*(used-1) < 3*c.limit {
		return true
	}
	c.hmu.Lock()
	mine := c.held[link]
	c.hmu.Unlock()
	if 2*mine < used-1 {
		return true
	}
	c.used.Add(-1)
	return false
}

func (c *seenState) sweepDue(now int64) bool {
	last := c.lastSweep.Load()
	return now-last >= int64(seenSweepEvery) && c.lastSweep.CompareAndSwap(last, now)
}

// sweep releases the entries of origins from which nothing younger than
// the age window can arrive any more.
func (c *seenState) sweep(now int64) {
	for k := range c.shards {
		s := &c.shards[k]
		s.mu.Lock()
		for i := range s.entries {
			e := &s.entries[i]
			if !e.live || now-e.last <= c.maxAge {
				continue
			}
			s.remove(i)
			e.live = false
			s.free = append(s.free, int32(i))
			c.used.Add(-1)
			c.hmu.Lock()
			if c.held[e.link]--; c.held[e.link] <= 0 {
				delete(c.held, e.link)
			}
			c.hmu.Unlock()
		}
		s.mu.Unlock()
	}
}

// alloc returns a free entry number, growing the tables up to the bound,
// or -1.
func (s *seenShard) alloc(window uint64) int {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return int(i)
	}
	if len(s.entries) >= s.limit {
		return -1
	}
	s.entries = append(s.entries, originEntry{})
	s.marks = append(s.marks, make([]uint8, window)...)
	if 2*len(s.entries) > len(s.index) {
		s.grow()
	}
	return len(s.entries) - 1
}

// slot returns the home slot of hash h.
func (s *seenShard) slot(h uint64) int {
	return int((h * 0x9e3779b97f4a7c15) >> s.shift)
}

// find returns the entry number of origin, or false.
func (s *seenShard) find(origin protocol.NodeID, h uint64) (int, bool) {
	if len(s.index) == 0 {
		return 0, false
	}
	mask := len(s.index) - 1
	for j := s.slot(h); ; j = (j + 1) & mask {
		x := s.index[j]
		if x == 0 {
			return 0, false
		}
		if e := &s.entries[x-1]; e.hash == h && e.origin == origin {
			return int(x - 1), true
		}
	}
}

// insert adds entry i to the index.
func (s *seenShard) insert(i int) {
	mask := len(s.index) - 1
	j := s.slot(s.entries[i].hash)
	for s.index[j] != 0 {
		j = (j + 1) & mask
	}
	s.index[j] = int32(i + 1)
}

// remove deletes entry i from the index, shifting later entries of its
// probe run back so that lookups never need tombstones.
func (s *seenShard) remove(i int) {
	mask := len(s.index) - 1
	j := s.slot(s.entries[i].hash)
	for s.index[j] != int32(i+1) {
		j = (j + 1) & mask
	}
	for k := (j + 1) & mask; s.index[k] != 0; k = (k + 1) & mask {
		// The entry at k may move to the hole at j unless its home slot
		// lies cyclically in (j, k].
		home := s.slot(s.entries[s.index[k]-1].hash)
		if (k > j && (home <= j || home > k)) || (k < j && home <= j && home > k) {
			s.index[j] = s.index[k]
			j = k
		}
	}
	s.index[j] = 0
}

// grow doubles the index (from 16 slots) and rebuilds it.
func (s *seenShard) grow() {
	n := max(16, 2*len(s.index))
	s.index = make([]int32, n)
	s.shift = uint(64 - bits.Len(uint(n-1)))
	for i := range s.entries {
		if s.entries[i].live {
			s.insert(i)
		}
	}
}

// len returns the number of origins tracked (expired ones included until a
// sweep releases them).
func (c *seenState) len() int { return int(c.used.Load()) }
