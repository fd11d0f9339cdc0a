package chord

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// link is an open connection to another node and when it was last used
// (a message sent or received on it), for the LRU.
type link struct {
	conn  *base.Conn
	since int64        // UnixNano when it came up
	used  atomic.Int64 // UnixNano
}

// linkTable maps node IDs to their live connection. base keeps one
// connection per node, and chord reuses it for everything; the table adds
// the use times for eviction.
type linkTable struct {
	mu sync.RWMutex
	m  map[protocol.NodeID]*link
}

func newLinkTable() *linkTable {
	return &linkTable{m: make(map[protocol.NodeID]*link)}
}

// live returns the open connection to id, or nil.
func (t *linkTable) live(id protocol.NodeID) *base.Conn {
	t.mu.RLock()
	l := t.m[id]
	t.mu.RUnlock()
	if l == nil || l.conn.Err() != nil {
		return nil
	}
	return l.conn
}

// use returns the open connection to id, or nil, and marks it used.
func (t *linkTable) use(id protocol.NodeID) *base.Conn {
	t.mu.RLock()
	l := t.m[id]
	t.mu.RUnlock()
	if l == nil || l.conn.Err() != nil {
		return nil
	}
	l.used.Store(time.Now().UnixNano())
	return l.conn
}

// touch marks the link of c used, if c is the current link to its node.
func (t *linkTable) touch(c *base.Conn) {
	if c == nil {
		return
	}
	t.mu.RLock()
	l := t.m[c.ID()]
	t.mu.RUnlock()
	if l != nil && l.conn == c {
		l.used.Store(time.Now().UnixNano())
	}
}

// up records a new connection and returns the number of links.
func (t *linkTable) up(c *base.Conn) int {
	now := time.Now().UnixNano()
	l := &link{conn: c, since: now}
	l.used.Store(now)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[c.ID()] = l
	return len(t.m)
}

// down forgets c if it is the current link to its node, and reports
// whether it was.
func (t *linkTable) down(c *base.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.m[c.ID()]; l != nil && l.conn == c {
		delete(t.m, c.ID())
		return true
	}
	return false
}

func (t *linkTable) ids() []protocol.NodeID {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]protocol.NodeID, 0, len(t.m))
	for id := range t.m {
		out = append(out, id)
	}
	return out
}

func (t *linkTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// victims returns the least recently used links beyond max that are not
// protected and are older than minAge, oldest first.
func (t *linkTable) victims(max int, protected func(protocol.NodeID) bool, minAge time.Duration) []*base.Conn {
	t.mu.RLock()
	n := len(t.m)
	if n <= max {
		t.mu.RUnlock()
		return nil
	}
	type cand struct {
		c    *base.Conn
		used int64
	}
	youngest := time.Now().Add(-minAge).UnixNano()
	cands := make([]cand, 0, n)
	for id, l := range t.m {
		if !protected(id) && l.since <= youngest {
			cands = append(cands, cand{l.conn, l.used.Load()})
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(cands, func(a, b cand) int {
		switch {
		case a.used < b.used:
			return -1
		case a.used > b.used:
			return 1
		}
		return 0
	})
	excess := min(n-max, len(cands))
	out := make([]*base.Conn, excess)
	for i := range out {
		out[i] = cands[i].c
	}
	return out
}

// protectedSet returns the nodes whose links are never evicted: the
// successors, the predecessor, and the r linked nodes nearest behind this
// one, which likely keep this node in their own successor lists (evicting
// those would only make them dial again at their next stabilization).
func (s *Socket) protectedSet() map[protocol.NodeID]bool {
	v := s.view.Load()
	set := make(map[protocol.NodeID]bool, 2*len(v.succs)+2)
	for _, p := range v.succs {
		set[p.ID] = true
	}
	if !v.pred.ID.IsZero() {
		set[v.pred.ID] = true
	}
	behind := s.links.ids()
	behind = slices.DeleteFunc(behind, func(id protocol.NodeID) bool { return set[id] })
	slices.SortFunc(behind, func(a, b protocol.NodeID) int {
		return distance(a, s.id).cmp(distance(b, s.id))
	})
	for _, id := range behind[:min(len(behind), s.cfg.successors)] {
		set[id] = true
	}
	return set
}

// connChanged is chord's base connection hook: it keeps the link table
// current, starts eviction when over the cap, and has stabilization look
// at once when a link to a successor or the predecessor goes down.
func (s *Socket) connChanged(c *base.Conn, up bool) {
	if up {
		s.forgetDead(c.ID())
		if s.links.up(c) > s.cfg.maxLinks {
			kick(s.evictWake)
		}
		return
	}
	if !s.links.down(c) {
		return
	}
	s.calls.failPeer(c.ID(), fmt.Errorf("%w: %s", errLinkClosed, c.ID().Short()))
	if s.isNeighbour(c.ID()) && !s.lc.Closed() {
		kick(s.stabWake)
	}
}

// evictLoop closes least recently used links while there are more than the
// cap. It runs on its own goroutine because closing a link waits for it to
// flush. A link younger than linkGrace is spared (the call it was opened
// for must be able to finish, or nodes that need a slot would keep
// evicting each other), so the cap can be exceeded for that long; a ticker
// catches up once such links age.
func (s *Socket) evictLoop() {
	t := time.NewTicker(s.cfg.stabilize)
	defer t.Stop()
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-s.evictWake:
		case <-t.C:
		}
		if s.links.len() <= s.cfg.maxLinks {
			continue
		}
		protected := s.protectedSet()
		for _, c := range s.links.victims(s.cfg.maxLinks, func(id protocol.NodeID) bool { return protected[id] }, s.linkGrace()) {
			if s.lc.Closed() {
				return
			}
			s.ctr.evictions.Add(1)
			s.log.Debug("closing least recently used link", "peer", c.ID().Short(), "links", s.links.len(), "cap", s.cfg.maxLinks)
			_ = c.Close()
		}
	}
}

// linkGrace is how long a new link is spared from eviction: long enough
// for the call it was opened for (min(RPC timeout, 1 s)).
func (s *Socket) linkGrace() time.Duration { return min(s.cfg.rpcTimeout, time.Second) }

// hardLinkLimit is the connection layer's limit for a link cap: handshakes
// beyond it are refused (ErrConnLimit). The gap lets the cap bend while
// new links are young.
func hardLinkLimit(maxLinks int) int { return 2*maxLinks + 16 }

// kick wakes a loop without blocking; kicks coalesce.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
