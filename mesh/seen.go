package mesh

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// seenShards splits the seen-cache so that readers of different
// connections rarely wait on the same lock.
const seenShards = 16

// seenCache remembers the IDs of broadcasts already handled, bounded by
// entries. Age is bounded by the flood rules: a message older than the
// window is dropped before the cache is consulted, so an entry evicted after
// the window can never start a second flood.
//
// Each shard is a first-in-first-out set: an open-addressing hash table of
// IDs (linear probing, at most half full) and a ring of the IDs in the
// order they were added, which says what to evict. Marking an ID allocates
// nothing once the shard has grown to its bound (the tables double until
// then), and a lookup is one multiply and, usually, one cache line. An
// entry is never refreshed, so first-in-first-out is the order a
// least-recently-used cache would evict in too.
//
// The copies of a flood reach a node within milliseconds of each other,
// so most lookups are for IDs marked moments ago. A small direct-mapped
// array of the latest IDs (a subset of the table) answers those from a few
// cache lines; only the first copy of a message has to search the table,
// whose lines are cold once it holds more than the caches do.
type seenCache struct {
	shards [seenShards]seenShard
	maxAge int64
	// youngEvictions counts entries evicted while their message could still
	// arrive (younger than the window): the cache is too small for the load.
	youngEvictions atomic.Uint64
}

// seenRecent is the number of latest IDs a shard answers without its table.
const seenRecent = 256

type seenShard struct {
	mu     sync.Mutex
	table  []uint64    // slot: stored key (0: empty); len is a power of two
	shift  uint        // 64 - log2(len(table))
	ring   []seenEntry // entries in insertion order, oldest at head once full
	head   int
	limit  int                // entries kept
	recent [seenRecent]uint64 // latest keys by recentSlot; all are in table
}

// recentSlot returns key's place in the recent array.
func recentSlot(key uint64) int { return int((key * 0x9e3779b97f4a7c15) >> (64 - 8)) }

type seenEntry struct {
	key    uint64
	origin int64
}

// seenKey maps an ID to a table key; 0 marks an empty slot.
func seenKey(id protocol.MessageID) uint64 {
	if id == 0 {
		return 1
	}
	return uint64(id)
}

func newSeenCache(size int, maxAge time.Duration) (*seenCache, error) {
	c := &seenCache{maxAge: int64(maxAge)}
	per := max(size/seenShards, 1)
	for i := range c.shards {
		c.shards[i].limit = per
	}
	return c, nil
}

func (c *seenCache) shard(id protocol.MessageID) *seenShard {
	return &c.shards[uint64(id)%seenShards]
}

// seen reports whether id is known (a cheap check before validation).
func (c *seenCache) seen(id protocol.MessageID) bool {
	key := seenKey(id)
	s := c.shard(id)
	s.mu.Lock()
	found := s.recent[recentSlot(key)] == key
	if !found {
		_, found = s.find(key)
	}
	s.mu.Unlock()
	return found
}

// mark records id and reports whether it was new. It is atomic, so two
// copies of a message arriving at once on two connections are handled once.
func (c *seenCache) mark(id protocol.MessageID, origin int64) (fresh bool) {
	key := seenKey(id)
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := recentSlot(key)
	if s.recent[r] == key {
		return false
	}
	if _, found := s.find(key); found {
		return false
	}
	if len(s.ring) == s.limit {
		old := s.ring[s.head]
		s.remove(old.key)
		if or := recentSlot(old.key); s.recent[or] == old.key {
			s.recent[or] = 0
		}
		if time.Now().UnixNano()-old.origin < c.maxAge {
			c.youngEvictions.Add(1)
		}
		s.ring[s.head] = seenEntry{key, origin}
		s.head++
		if s.head == len(s.ring) {
			s.head = 0
		}
	} else {
		s.ring = append(s.ring, seenEntry{key, origin})
	}
	if 2*(len(s.ring)) > len(s.table) {
		s.grow()
	}
	s.insert(key)
	s.recent[r] = key
	return true
}

// slot returns the home slot of key.
func (s *seenShard) slot(key uint64) int {
	return int((key * 0x9e3779b97f4a7c15) >> s.shift)
}

// find returns key's slot, or where it would go and false.
func (s *seenShard) find(key uint64) (int, bool) {
	if len(s.table) == 0 {
		return 0, false
	}
	mask := len(s.table) - 1
	for i := s.slot(key); ; i = (i + 1) & mask {
		switch s.table[i] {
		case key:
			return i, true
		case 0:
			return i, false
		}
	}
}

func (s *seenShard) insert(key uint64) {
	i, found := s.find(key)
	if !found {
		s.table[i] = key
	}
}

// remove deletes key, shifting later entries of its probe run back so
// that lookups never need tombstones.
func (s *seenShard) remove(key uint64) {
	i, found := s.find(key)
	if !found {
		return
	}
	mask := len(s.table) - 1
	for j := (i + 1) & mask; s.table[j] != 0; j = (j + 1) & mask {
		// The entry at j may move to the hole at i unless its home slot
		// lies cyclically in (i, j].
		home := s.slot(s.table[j])
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.table[i] = s.table[j]
			i = j
		}
	}
	s.table[i] = 0
}

// grow doubles the table (from 16 slots), up to twice the entry limit.
func (s *seenShard) grow() {
	n := max(16, 2*len(s.table))
	old := s.table
	s.table = make([]uint64, n)
	s.shift = uint(64 - log2(n))
	for _, k := range old {
		if k != 0 {
			s.insert(k)
		}
	}
}

func log2(n int) int {
	b := 0
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

func (c *seenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.ring)
		s.mu.Unlock()
	}
	return n
}
