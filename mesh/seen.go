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
// entries. It is not golang-lru (as DESIGN.md first planned): entries are
// never touched after they are added, so an LRU evicts in insertion order
// anyway, and a pointer-free table costs the garbage collector nothing to
// scan. docs/architecture.md gives the measured difference. Age is bounded by the flood rules: a message older than the
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
type seenCache struct {
	shards [seenShards]seenShard
	maxAge int64
	// youngEvictions counts entries evicted while their message could still
	// arrive (younger than the window): the cache is too small for the load.
	youngEvictions atomic.Uint64
}

type seenShard struct {
	mu    sync.Mutex
	table []uint64    // slot: stored key (0: empty); len is a power of two
	shift uint        // 64 - log2(len(table))
	ring  []seenEntry // entries in insertion order, oldest at head once full
	head  int
	limit int      // entries kept
	_     [48]byte // one shard per pair of cache lines
}

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
	s := c.shard(id)
	s.mu.Lock()
	_, found := s.find(seenKey(id))
	s.mu.Unlock()
	return found
}

// mark records id, first seen now, and reports whether it was new. It is
// atomic, so two copies of a message arriving at once on two connections
// are handled once.
func (c *seenCache) mark(id protocol.MessageID, origin, now int64) (fresh bool) {
	key := seenKey(id)
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, found := s.find(key); found {
		return false
	}
	if len(s.ring) == s.limit {
		old := s.ring[s.head]
		s.remove(old.key)
		if now-old.origin < c.maxAge {
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
