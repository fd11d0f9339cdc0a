package chord

import (
	"slices"
	"sync"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// ringState is what a node knows about the ring: its successor list, its
// predecessor and its finger table. It is guarded by Socket.rmu; routing
// reads an immutable snapshot (ringView) instead.
type ringState struct {
	succs      []PeerInfo // successor list, ring order, never self; empty: alone
	pred       PeerInfo   // zero: unknown
	fingers    [IDBits]PeerInfo
	nextFinger int
}

// ringView is an immutable snapshot of ringState for the routing path.
type ringView struct {
	succs []PeerInfo
	pred  PeerInfo
	// cands are every node routing may use (fingers, successors,
	// predecessor), deduplicated and sorted by clockwise distance from
	// this node, nearest first.
	cands []PeerInfo
	// fingers is the number of distinct fingers.
	fingers int
}

// publishLocked rebuilds the routing snapshot; s.rmu must be held.
func (s *Socket) publishLocked() {
	st := &s.st
	v := &ringView{succs: slices.Clone(st.succs), pred: st.pred}
	seen := make(map[protocol.NodeID]bool, len(st.succs)+8)
	add := func(p PeerInfo, finger bool) {
		if p.ID.IsZero() || p.ID == s.id || seen[p.ID] {
			return
		}
		seen[p.ID] = true
		v.cands = append(v.cands, p)
	}
	for _, p := range st.succs {
		add(p, false)
	}
	add(st.pred, false)
	fingerSeen := make(map[protocol.NodeID]bool, 8)
	for _, f := range st.fingers {
		if !f.ID.IsZero() && f.ID != s.id && !fingerSeen[f.ID] {
			fingerSeen[f.ID] = true
		}
		add(f, true)
	}
	v.fingers = len(fingerSeen)
	self := s.id
	slices.SortFunc(v.cands, func(a, b PeerInfo) int {
		return distance(self, a.ID).cmp(distance(self, b.ID))
	})
	s.view.Store(v)
}

// isNeighbour reports whether id is a current successor or the
// predecessor: links to them are never evicted.
func (s *Socket) isNeighbour(id protocol.NodeID) bool {
	v := s.view.Load()
	if v.pred.ID == id {
		return true
	}
	for _, p := range v.succs {
		if p.ID == id {
			return true
		}
	}
	return false
}

// setSuccessorsLocked makes first the successor and fills the list from
// rest (the successor's own list), skipping this node, dead nodes and
// duplicates, up to r entries. A list that comes round to this node stops
// there (a ring smaller than r).
func (s *Socket) setSuccessorsLocked(first PeerInfo, rest []PeerInfo) {
	list := make([]PeerInfo, 0, s.cfg.successors)
	seen := map[protocol.NodeID]bool{}
	for _, p := range append([]PeerInfo{first}, rest...) {
		if len(list) == s.cfg.successors || p.ID == s.id {
			break
		}
		if p.ID.IsZero() || seen[p.ID] || s.isDeadLocked(p) {
			continue
		}
		seen[p.ID] = true
		list = append(list, p)
	}
	s.st.succs = list
}

// removeNodeLocked forgets id everywhere (successor list, predecessor,
// fingers).
func (s *Socket) removeNodeLocked(id protocol.NodeID) {
	s.st.succs = slices.DeleteFunc(s.st.succs, func(p PeerInfo) bool { return p.ID == id })
	if s.st.pred.ID == id {
		s.st.pred = PeerInfo{}
	}
	for i := range s.st.fingers {
		if s.st.fingers[i].ID == id {
			s.st.fingers[i] = PeerInfo{}
		}
	}
}

// deadSet remembers nodes that left or failed recently, so that stale
// successor lists from other nodes do not bring them back. An entry names
// a node at one address — the address that could not be reached, as a
// third party's list gave it — or at every address (Addr ""), for a node
// that said itself it was leaving. So a neighbour that lists an honest
// node with an address of its own making only gets that pair forgotten,
// not the node. An entry ends when its TTL passes or when a connection to
// the node comes up.
type deadSet struct {
	mu  sync.Mutex
	m   map[PeerInfo]time.Time
	ttl time.Duration
}

// maxDead bounds the dead set.
const maxDead = 1024

// add remembers p as dead (p.Addr "": at every address).
func (d *deadSet) add(p PeerInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if len(d.m) >= maxDead {
		for k, t := range d.m {
			if now.Sub(t) > d.ttl || len(d.m) >= maxDead {
				delete(d.m, k)
			}
		}
	}
	d.m[p] = now
}

// remove forgets every entry of node id.
func (d *deadSet) remove(id protocol.NodeID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.m {
		if k.ID == id {
			delete(d.m, k)
		}
	}
}

// has reports whether p is dead: the node at every address, or at p.Addr.
func (d *deadSet) has(p PeerInfo) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hasLocked(PeerInfo{ID: p.ID}) || (p.Addr != "" && d.hasLocked(p))
}

func (d *deadSet) hasLocked(k PeerInfo) bool {
	t, ok := d.m[k]
	if ok && time.Since(t) > d.ttl {
		delete(d.m, k)
		return false
	}
	return ok
}

func (s *Socket) isDeadLocked(p PeerInfo) bool { return s.dead.has(p) }

func (s *Socket) forgetDead(id protocol.NodeID) { s.dead.remove(id) }
