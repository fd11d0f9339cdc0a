package mesh

import (
	"sync"

	"github.com/meshsock/meshsock/protocol"
)

// cacheEntryOverhead is what an entry of the message cache counts on top
// of its envelope: map slot and its share of the map's buckets, queue
// slot, slice header, allocation rounding.
const cacheEntryOverhead = 128

// msgCache keeps the envelopes of recent broadcasts, byte for byte as
// received (signatures included), to serve pulls (WithMessageCache). It is
// bounded in bytes; the oldest entries go first.
type msgCache struct {
	mu    sync.Mutex
	max   int
	used  int
	m     map[protocol.BroadcastRef]cachedMsg
	order []protocol.BroadcastRef // insertion order; order[head:] are live or stale keys
	head  int
}

type cachedMsg struct {
	env  []byte
	hops uint8 // the hop byte to send it with
}

func newMsgCache(max int) *msgCache {
	return &msgCache{max: max, m: make(map[protocol.BroadcastRef]cachedMsg)}
}

// put keeps a copy of env under r, unless it is held already or larger
// than the whole cache.
func (c *msgCache) put(r protocol.BroadcastRef, hops uint8, env []byte) {
	size := len(env) + cacheEntryOverhead
	if size > c.max {
		return
	}
	cp := make([]byte, len(env))
	copy(cp, env)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[r]; ok {
		return
	}
	for c.used+size > c.max && c.head < len(c.order) {
		old := c.order[c.head]
		c.order[c.head] = protocol.BroadcastRef{}
		c.head++
		if e, ok := c.m[old]; ok {
			c.used -= len(e.env) + cacheEntryOverhead
			delete(c.m, old)
		}
	}
	if c.head > 1024 && 2*c.head > len(c.order) {
		c.order = append(c.order[:0], c.order[c.head:]...)
		c.head = 0
	}
	c.m[r] = cachedMsg{env: cp, hops: hops}
	c.order = append(c.order, r)
	c.used += size
}

// get returns the envelope held under r.
func (c *msgCache) get(r protocol.BroadcastRef) (cachedMsg, bool) {
	c.mu.Lock()
	e, ok := c.m[r]
	c.mu.Unlock()
	return e, ok
}

// bytes returns what the cache holds.
func (c *msgCache) bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
