package mesh

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// The next-hop table (docs/mesh.md, "Routed unicast"): for each origin
// whose messages reach this node, the neighbour the first copy of its
// newest message came from. Paths are symmetric, so that neighbour is the
// way back: a routed message for the origin goes to it.
//
// Only messages whose origin is proven (a verified signature) teach a
// path, and only the first copy of a message newer than the one the entry
// was learnt from: a relay can forward genuine messages but neither forge
// nor replay them (the seen-state sheds copies it has had), so the best a
// hostile neighbour can do is be genuinely first. The hop byte is not
// used: it lies outside the signature, and a relay could lower it to
// attract paths.

// DefaultRouteTable is the default bound of the next-hop table, in
// entries (40 bytes each, at most about 100 with the map's overhead: some
// 400 KiB at most).
const DefaultRouteTable = 4096

// routeSample is how many entries eviction looks at to find an old one.
const routeSample = 8

type hopEntry struct {
	via   *base.Conn // the neighbour; dropped when its link goes
	seq   uint64     // the origin's message the path was learnt from
	heard int64      // when (Unix ns)
}

// nextHops is the bounded next-hop table. Lookups and updates take one
// lock; the table is small and the work under it constant (eviction
// samples a few entries).
type nextHops struct {
	mu      sync.Mutex
	m       map[protocol.NodeID]hopEntry
	perVia  map[*base.Conn]int // entries through each neighbour
	max     int
	evicted atomic.Uint64
	refused atomic.Uint64
}

func newNextHops(max int) *nextHops {
	return &nextHops{m: make(map[protocol.NodeID]hopEntry), perVia: make(map[*base.Conn]int), max: max}
}

// putLocked sets origin's entry, keeping the counts per neighbour.
func (t *nextHops) putLocked(origin protocol.NodeID, e hopEntry) {
	if old, ok := t.m[origin]; ok {
		t.dropViaLocked(old.via)
	}
	t.m[origin] = e
	t.perVia[e.via]++
}

func (t *nextHops) deleteLocked(origin protocol.NodeID) {
	if old, ok := t.m[origin]; ok {
		delete(t.m, origin)
		t.dropViaLocked(old.via)
	}
}

func (t *nextHops) dropViaLocked(via *base.Conn) {
	if t.perVia[via]--; t.perVia[via] <= 0 {
		delete(t.perVia, via)
	}
}

// learn notes that the first copy of origin's message seq came over via.
// A message older than the one the entry holds changes nothing; an entry
// through a closed link is replaced. A new origin is refused, once the
// table is three quarters full, if via already holds half of it: one
// neighbour making up origins (each a fresh key) cannot push out the
// paths learnt through the others.
func (t *nextHops) learn(origin protocol.NodeID, via *base.Conn, seq uint64, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[origin]; ok {
		if seq > e.seq || e.via.Err() != nil {
			t.putLocked(origin, hopEntry{via: via, seq: seq, heard: now})
		}
		return
	}
	if len(t.m) >= t.max-t.max/4 && t.perVia[via] >= t.max/2 {
		t.refused.Add(1)
		return
	}
	if len(t.m) >= t.max {
		t.evictLocked()
	}
	t.putLocked(origin, hopEntry{via: via, seq: seq, heard: now})
}

// evictLocked forgets the least recently heard of a few entries (Go's map
// order is random, so they are a sample), preferring one whose link is
// gone.
func (t *nextHops) evictLocked() {
	var (
		victim protocol.NodeID
		oldest int64
		n      int
	)
	for id, e := range t.m {
		if e.via.Err() != nil {
			victim, n = id, 1
			break
		}
		if n == 0 || e.heard < oldest {
			victim, oldest = id, e.heard
		}
		if n++; n == routeSample {
			break
		}
	}
	if n > 0 {
		t.deleteLocked(victim)
		t.evicted.Add(1)
	}
}

// lookup returns the live neighbour to send a message for node to through,
// or nil.
func (t *nextHops) lookup(to protocol.NodeID) *base.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[to]
	if !ok {
		return nil
	}
	if e.via.Err() != nil {
		t.deleteLocked(to)
		return nil
	}
	return e.via
}

// forget drops the entry for node to if it still goes through via.
func (t *nextHops) forget(to protocol.NodeID, via *base.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.m[to]; ok && e.via == via {
		t.deleteLocked(to)
		return true
	}
	return false
}

// linkDown drops every entry through c.
func (t *nextHops) linkDown(c *base.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perVia[c] == 0 {
		return
	}
	for id, e := range t.m {
		if e.via == c {
			delete(t.m, id)
		}
	}
	delete(t.perVia, c)
}

func (t *nextHops) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// learnPath feeds the table from a message that crossed links to get
// here (a broadcast, or a routed message) whose origin is proven.
func (s *Socket) learnPath(m *base.Message) {
	if !m.Proven || m.Sender == s.ID() || m.Sender == m.Conn.ID() {
		return // unproven, ours, or from the neighbour itself (a link is better than any entry)
	}
	s.hops.learn(m.Sender, m.Conn, m.Seq, time.Now().UnixNano())
}

// snapshot returns each known origin's next hop, leaving out entries
// through links that closed.
func (t *nextHops) snapshot() map[protocol.NodeID]protocol.NodeID {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[protocol.NodeID]protocol.NodeID, len(t.m))
	for id, e := range t.m {
		if e.via.Err() == nil {
			out[id] = e.via.ID()
		}
	}
	return out
}

// Routes returns, for each node the next-hop table knows a way to, the
// neighbour a message routed to it goes to first (docs/mesh.md, "Routed
// unicast"): the mesh's paths as far as this node has learnt them.
// Entries through links that have closed are left out.
func (s *Socket) Routes() map[NodeID]NodeID { return s.hops.snapshot() }
