package mesh

import (
	"encoding/binary"
	"hash/maphash"
	"sync"

	"github.com/meshsock/meshsock/protocol"
)

// cacheSlabSize is the most an arena slab of the message cache holds (a
// sixteenth of the cache when that is less): envelopes are appended to
// slabs, and room is made a whole slab, the oldest, at a time.
const cacheSlabSize = 64 << 10

// cacheEntryHeader precedes each envelope in a slab: its length (4
// bytes), its hash (4) and its hop byte.
const cacheEntryHeader = 9

// msgCache keeps the envelopes of recent broadcasts, byte for byte as
// received (signatures included), to serve pulls (WithMessageCache). It is
// bounded in bytes, slabs and index counted; the oldest entries go first.
//
// Every broadcast a node takes goes in, on the relay path, and pulls are
// rare, so the layout is made for put: envelopes are appended to slabs in
// arrival order, and an index of 8-byte slots (linear probing, deletion
// by backward shift, so no tombstones pile up) finds them. The index is
// brought up to date by get, in one pass over what came since the last
// get, not by put: a probe of an index larger than the processor's cache
// per broadcast was most of what the cache cost. Room is made by dropping
// the oldest slab whole (one sequential pass takes its indexed entries out
// of the index), and the slab is reused for the next, so the cache
// allocates nothing once full. The hash is seeded per cache, so a peer
// choosing origin IDs cannot lengthen the probes.
type msgCache struct {
	mu       sync.Mutex
	max      int
	slabSize int
	used     int // slab capacities and index slots, in bytes
	seed     maphash.Seed

	// Entries are numbered by arena position: the bytes appended before
	// them, over all slabs. slabs[i] holds positions [start, start+len).
	slabs   []cacheSlab // oldest first
	next    uint64      // position of the next entry
	indexed uint64      // entries below this position are in the index
	entries int         // entries in the index
	index   []cacheSlot // len is a power of two, at least twice entries
	spare   []byte      // a dropped slab, kept for reuse
}

type cacheSlab struct {
	start uint64
	buf   []byte
}

// cacheSlot is one index slot: 32 bits of the entry's hash, top bit set
// (its home slot, and a quick filter; 0 is an empty slot), and the low 32
// bits of its arena position (live entries span less than 2^32 bytes, so
// these are unique).
type cacheSlot struct {
	hash uint32
	pos  uint32
}

type cachedMsg struct {
	env  []byte
	hops uint8 // the hop byte to send it with
}

func newMsgCache(limit int) *msgCache {
	c := &msgCache{
		max:      limit,
		slabSize: max(min(cacheSlabSize, limit/16), 256),
		seed:     maphash.MakeSeed(),
		index:    make([]cacheSlot, 32),
	}
	c.used = len(c.index) * 8
	return c
}

func (c *msgCache) hash(r protocol.BroadcastRef) uint32 {
	return uint32(maphash.Comparable(c.seed, r)) | 1<<31
}

// put keeps a copy of env under r, unless it is larger than the whole
// cache. It does not look for an earlier copy: the relay path puts each
// broadcast once, the first time the seen-state sees it.
func (c *msgCache) put(r protocol.BroadcastRef, hops uint8, env []byte) {
	need := cacheEntryHeader + len(env)
	h := c.hash(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := c.room(need)
	if buf == nil {
		return // larger than the whole cache
	}
	binary.LittleEndian.PutUint32(buf, uint32(len(env)))
	binary.LittleEndian.PutUint32(buf[4:], h)
	buf[8] = hops
	copy(buf[cacheEntryHeader:], env)
}

// indexNew puts the entries added since the last call in the index.
func (c *msgCache) indexNew() {
	for _, s := range c.slabs {
		end := s.start + uint64(len(s.buf))
		if end <= c.indexed {
			continue
		}
		off := int(max(c.indexed, s.start) - s.start)
		for off < len(s.buf) {
			if 2*(c.entries+1) > len(c.index) {
				c.growIndex()
			}
			size := int(binary.LittleEndian.Uint32(s.buf[off:]))
			h := binary.LittleEndian.Uint32(s.buf[off+4:])
			c.insertSlot(cacheSlot{hash: h, pos: uint32(s.start + uint64(off))})
			c.entries++
			off += cacheEntryHeader + size
		}
		c.indexed = end
	}
}

// room appends need bytes to the arena, dropping old slabs to stay within
// the bound, and returns them (nil if they cannot fit at all).
func (c *msgCache) room(need int) []byte {
	last := len(c.slabs) - 1
	if last < 0 || len(c.slabs[last].buf)+need > cap(c.slabs[last].buf) {
		size := max(c.slabSize, need)
		if size+len(c.index)*8 > c.max {
			return nil
		}
		// A new slab starts past the end of the last one, whatever it
		// left unused, so positions map to slabs by their starts.
		if last >= 0 {
			c.next = c.slabs[last].start + uint64(cap(c.slabs[last].buf))
		}
		for c.used+size > c.max && len(c.slabs) > 0 {
			c.dropOldest()
		}
		buf := c.spare
		c.spare = nil
		if cap(buf) != size {
			buf = make([]byte, 0, size)
		}
		c.slabs = append(c.slabs, cacheSlab{start: c.next, buf: buf[:0]})
		c.used += size
		last = len(c.slabs) - 1
	}
	s := &c.slabs[last]
	n := len(s.buf)
	s.buf = s.buf[:n+need]
	c.next += uint64(need)
	return s.buf[n:]
}

// dropOldest takes the entries of the oldest slab out of the index and
// keeps the slab for reuse.
func (c *msgCache) dropOldest() {
	s := c.slabs[0]
	for off := 0; off < len(s.buf) && s.start+uint64(off) < c.indexed; {
		size := int(binary.LittleEndian.Uint32(s.buf[off:]))
		h := binary.LittleEndian.Uint32(s.buf[off+4:])
		c.deleteSlot(h, uint32(s.start+uint64(off)))
		c.entries--
		off += cacheEntryHeader + size
	}
	c.used -= cap(s.buf)
	if cap(s.buf) == c.slabSize {
		c.spare = s.buf[:0]
	}
	c.slabs[0] = cacheSlab{}
	c.slabs = c.slabs[1:]
	if len(c.slabs) == 0 {
		c.slabs = nil // let the backing array go rather than creep
	}
}

// get returns a copy of the envelope held under r (slabs are reused, so
// what they hold cannot be handed out).
func (c *msgCache) get(r protocol.BroadcastRef) (cachedMsg, bool) {
	h := c.hash(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexNew()
	for c.used > c.max && len(c.slabs) > 0 { // the index grew
		c.dropOldest()
	}
	e, ok := c.find(r, h)
	if !ok {
		return cachedMsg{}, false
	}
	return cachedMsg{env: append([]byte(nil), e[cacheEntryHeader:]...), hops: e[8]}, true
}

// bytes returns what the cache holds: slabs and index.
func (c *msgCache) bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// entryAt returns the entry at the arena position whose low 32 bits are
// pos: header and envelope.
func (c *msgCache) entryAt(pos uint32) []byte {
	for i := len(c.slabs) - 1; i >= 0; i-- {
		s := c.slabs[i]
		if off := pos - uint32(s.start); uint64(off) < uint64(len(s.buf)) {
			size := int(binary.LittleEndian.Uint32(s.buf[off:]))
			return s.buf[off : int(off)+cacheEntryHeader+size]
		}
	}
	return nil
}

func (c *msgCache) find(r protocol.BroadcastRef, h uint32) ([]byte, bool) {
	mask := uint32(len(c.index) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := c.index[i]
		if s.hash == 0 {
			return nil, false
		}
		if s.hash != h {
			continue
		}
		e := c.entryAt(s.pos)
		if e == nil {
			continue
		}
		if _, ref, err := protocol.EnvelopeRef(e[cacheEntryHeader:]); err == nil && ref == r {
			return e, true
		}
	}
}

func (c *msgCache) insertSlot(s cacheSlot) {
	mask := uint32(len(c.index) - 1)
	i := s.hash & mask
	for c.index[i].hash != 0 {
		i = (i + 1) & mask
	}
	c.index[i] = s
}

// deleteSlot takes the slot of (h, pos) out of the index. Backward shift:
// each later slot of the probe run that may move up does, so that every
// key stays reachable from its home without tombstones.
func (c *msgCache) deleteSlot(h, pos uint32) {
	mask := uint32(len(c.index) - 1)
	i := h & mask
	for c.index[i].pos != pos || c.index[i].hash != h {
		if c.index[i].hash == 0 {
			return // not indexed (cannot happen: every entry is)
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; c.index[j].hash != 0; j = (j + 1) & mask {
		home := c.index[j].hash & mask
		if (j-home)&mask >= (j-i)&mask {
			c.index[i] = c.index[j]
			i = j
		}
	}
	c.index[i] = cacheSlot{}
}

func (c *msgCache) growIndex() {
	old := c.index
	c.index = make([]cacheSlot, 2*len(old))
	c.used += len(old) * 8
	for _, s := range old {
		if s.hash != 0 {
			c.insertSlot(s)
		}
	}
}
