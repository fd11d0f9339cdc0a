package mesh

import (
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/meshsock/meshsock/protocol"
)

// seenShards splits the seen-cache so that readers of different
// connections rarely wait on the same lock.
const seenShards = 16

// seenCache remembers the IDs of broadcasts already handled, bounded by
// entries (an LRU per shard). Age is bounded by the flood rules: a message
// older than the window is dropped before the cache is consulted, so an
// entry evicted after the window can never start a second flood.
type seenCache struct {
	shards [seenShards]*lru.Cache[protocol.MessageID, int64]
	maxAge int64
	// youngEvictions counts entries evicted while their message could still
	// arrive (younger than the window): the cache is too small for the load.
	youngEvictions atomic.Uint64
}

func newSeenCache(size int, maxAge time.Duration) (*seenCache, error) {
	c := &seenCache{maxAge: int64(maxAge)}
	per := max(size/seenShards, 1)
	for i := range c.shards {
		shard, err := lru.NewWithEvict(per, func(_ protocol.MessageID, origin int64) {
			if time.Now().UnixNano()-origin < c.maxAge {
				c.youngEvictions.Add(1)
			}
		})
		if err != nil {
			return nil, err
		}
		c.shards[i] = shard
	}
	return c, nil
}

func (c *seenCache) shard(id protocol.MessageID) *lru.Cache[protocol.MessageID, int64] {
	return c.shards[uint64(id)%seenShards]
}

// seen reports whether id is known (a cheap check before validation).
func (c *seenCache) seen(id protocol.MessageID) bool { return c.shard(id).Contains(id) }

// mark records id and reports whether it was new. It is atomic, so two
// copies of a message arriving at once on two connections are handled once.
func (c *seenCache) mark(id protocol.MessageID, origin int64) (fresh bool) {
	known, _ := c.shard(id).ContainsOrAdd(id, origin)
	return !known
}

func (c *seenCache) len() int {
	n := 0
	for _, s := range c.shards {
		n += s.Len()
	}
	return n
}
