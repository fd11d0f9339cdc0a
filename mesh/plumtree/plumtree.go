// Package plumtree is the state machine of meshsock's broadcast trees and
// loss repair (docs/protocol.md §12.7), without any I/O: package mesh feeds
// it what happens (links that come and go, copies that arrive, relays that
// were dropped, announcements, grafts, prunes and pulls) and sends what it
// asks for. It is not safe for concurrent use; the caller serialises it.
//
// In tree mode every link is eager (payloads are pushed over it) or lazy
// (only announcements, IHAVE, are sent over it), after Plumtree (Leitão,
// Pereira, Rodrigues, 2007): a new link is eager; a duplicate prunes the
// link it came on to lazy, so the eager links form a spanning tree out of
// the flood itself; a node that hears of a broadcast only by announcement
// pulls it after a timeout, grafting the link back. In flood mode every
// link stays eager and only copies a relay dropped are announced. In both
// modes announcements of missing broadcasts are pulled from their
// announcers, one after another, within bounds.
package plumtree

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// Ref names a broadcast on the wire: origin and sequence number.
type Ref = protocol.BroadcastRef

// Peer names a neighbour.
type Peer = protocol.NodeID

// Config bounds the state machine; every field but PruneDelay must be
// positive.
type Config struct {
	// Tree selects tree mode (eager and lazy links); false is flood mode.
	Tree bool
	// PullTimeout is how long a node waits for a broadcast it heard of by
	// announcement before it pulls it, and then for each pull before it
	// asks the next announcer.
	PullTimeout time.Duration
	// RepairWindow is how long after the first announcement a missing
	// broadcast is pulled at all.
	RepairWindow time.Duration
	// AnnounceInterval is how long announcements are batched.
	AnnounceInterval time.Duration
	// MaxQueued bounds the announcements queued for one peer; more are
	// dropped (counted).
	MaxQueued int
	// MaxMissing bounds the missing broadcasts tracked in all, and
	// MaxMissingPerPeer those one peer announced first.
	MaxMissing, MaxMissingPerPeer int
	// MaxPullsPerPeer bounds the pulls outstanding at one peer.
	MaxPullsPerPeer int
	// MaxAnnouncers bounds the announcers remembered per missing broadcast.
	MaxAnnouncers int
	// PruneDelay spreads prunes: a link whose duplicates reach the prune
	// score is pruned by a duplicate that comes a random time in
	// [0, PruneDelay) later, and not if its score falls back first. Zero:
	// at once. See pruneAt.
	PruneDelay time.Duration
	// Relink is how long a peer whose link went down is owed
	// announcements: those queued for it then, and those of the
	// broadcasts relayed or sent since (Owe). A new link to it within
	// Relink (one that replaced a duplicate connection, or a
	// reconnection) sends them, so that it pulls what it missed while
	// away; after Relink they are forgotten. Zero: nothing outlives a
	// link. At most maxDeparted peers are owed, each at most
	// protocol.MaxBroadcastRefs.
	Relink time.Duration
}

// Kind is what an Action sends.
type Kind uint8

// Actions.
const (
	SendIHave Kind = iota + 1 // an IHAVE with Refs
	SendGraft                 // a GRAFT with Refs (none: "I flood")
	SendPrune                 // a PRUNE
	SendWant                  // an IWANT with Refs
)

// Action is a message the caller must send to To.
type Action struct {
	To   Peer
	Kind Kind
	Refs []Ref
}

// Counters are the state machine's counts since it was made.
type Counters struct {
	Announced      uint64 // references sent in IHAVEs
	AnnounceDrops  uint64 // announcements dropped: a peer's queue was full
	PullsSent      uint64 // references asked for in IWANTs and GRAFTs
	Grafts, Prunes uint64 // GRAFT and PRUNE messages sent
	Repairs        uint64 // broadcasts that arrived after this node pulled them
	MissingRefused uint64 // announcements not tracked: no room
	GaveUp         uint64 // missing broadcasts no announcer delivered in the repair window
	// OwedForgotten counts announcements owed to peers whose link went
	// down (Config.Relink) that were never sent: the peer did not link
	// again in time, or more were owed than the bounds hold.
	OwedForgotten uint64
}

type peerState struct {
	lazy bool // tree mode: only announcements go to this peer
	// prunedAt is when this link was last pruned (either end): copies p
	// pushed before its end knew are no sign that it still pushes.
	prunedAt time.Time
	// dups scores the link's redundancy (see pruneAt); pruneDue is when
	// a duplicate prunes it (zero: the score is below pruneAt).
	dups     int
	pruneDue time.Time
	pinned   bool // the peer floods: never prune it
	// graftedAt is when this link was last grafted (either end): the
	// tree lost a branch and this link replaces it, so the duplicates
	// that follow until the old branch is pruned do not prune it.
	graftedAt time.Time
	queued    []Ref // announcements not yet sent
	pulls     int   // pulls outstanding at this peer
	missing   int   // missing entries this peer announced first
}

type missing struct {
	announcers []Peer
	next       int       // the announcer to ask next
	asked      Peer      // whom the outstanding pull is at
	pulling    bool      // a pull is outstanding at asked
	heard      time.Time // the first announcement
	pulled     bool      // a pull was sent at all
	wanted     bool      // the outstanding pull is an IWANT (not a GRAFT)
	due        time.Time // when to pull (again)
	giveUp     time.Time
}

// State is one node's broadcast link state.
type State struct {
	cfg     Config
	peers   map[Peer]*peerState
	missing map[Ref]*missing
	flushAt time.Time // when queued announcements go out (zero: none queued)
	ctr     Counters
	// repaired holds the last broadcasts that arrived by pull (a ring of
	// repairedKeep): a copy pushed later is late, not redundant, and
	// prunes nothing.
	repaired    map[Ref]struct{}
	repairedLog []Ref
	repairedAt  int
	// lateness is a decaying maximum of how long after their first
	// announcement broadcasts arrived pushed: the pull timeout adapts to
	// it (timeout).
	lateness time.Duration
	lateAt   time.Time // when lateness last decayed
	// upstream is, per origin, the neighbour its last broadcast was pushed
	// from (at most maxUpstream origins).
	upstream map[Peer]Peer
	// departed holds the announcements queued for peers whose link went
	// down, for Config.Relink.
	departed map[Peer]*departedPeer
}

// departedPeer is what a peer whose link went down at is still owed.
type departedPeer struct {
	queued []Ref
	at     time.Time
}

// maxDeparted bounds the peers whose announcements outlive their link.
const maxDeparted = 16

// maxUpstream bounds the origins whose upstream neighbour is remembered.
const maxUpstream = 4096

// A link is pruned once its score reaches pruneAt: each duplicate adds
// pruneDup, each new broadcast pushed over it takes pruneFresh off (not
// below 0). A link of a cycle brings duplicates for at least some
// origins, one the tree needs mostly news. Pruning on one duplicate, as
// Plumtree does, splits a cycle at more than one link when broadcasts of
// several origins cross it at once (measured: the eager links fell apart
// and most broadcasts had to be pulled). Even so, a cycle's links reach
// the score at about the same time when broadcasts cross it fast, and two
// links cut at once split the tree (measured: 35 grafts and 74 prunes in
// 7 s of a 16-node bench at 30 k broadcasts/s, each graft after pulls);
// so a link reaching the score is pruned only after a random delay
// (Config.PruneDelay), by which time the first cut has stopped the
// duplicates on the others and news has taken their scores back down.
// The score is capped at pruneCap, so that it falls back soon.
const (
	pruneCap   = 2 * pruneAt
	pruneAt    = 8
	pruneDup   = 2
	pruneFresh = 1
)

// repairedKeep is how many repaired broadcasts a State remembers.
const repairedKeep = 1024

// New returns an empty state.
func New(cfg Config) *State {
	return &State{cfg: cfg, peers: make(map[Peer]*peerState), missing: make(map[Ref]*missing),
		repaired: make(map[Ref]struct{}), upstream: make(map[Peer]Peer), departed: make(map[Peer]*departedPeer)}
}

// Counters returns the counts so far.
func (s *State) Counters() Counters { return s.ctr }

// Links returns how many links are eager and how many lazy.
func (s *State) Links() (eager, lazy int) {
	for _, p := range s.peers {
		if p.lazy {
			lazy++
		} else {
			eager++
		}
	}
	return eager, lazy
}

// Missing returns how many broadcasts are being waited for.
func (s *State) Missing() int { return len(s.missing) }

// LinkUp records a new link to p: eager, as Plumtree adds every new
// neighbour to its eager set (a duplicate will prune it if the tree does
// not need it). It takes over the announcements p's previous link left
// (Config.Relink), and reports whether there are any: then Tick is due.
func (s *State) LinkUp(p Peer) (due bool) {
	ps, ok := s.peers[p]
	if !ok {
		ps = &peerState{}
		s.peers[p] = ps
	}
	d, ok := s.departed[p]
	if !ok {
		return false
	}
	delete(s.departed, p)
	n := min(len(d.queued), s.cfg.MaxQueued-len(ps.queued))
	s.ctr.AnnounceDrops += uint64(len(d.queued) - n)
	ps.queued = append(ps.queued, d.queued[:n]...)
	if len(ps.queued) == 0 {
		return false
	}
	if s.flushAt.IsZero() {
		s.flushAt = d.at // due now: they waited for this link
	}
	return true
}

// LinkDown forgets p as a link and as an announcer; p is owed the
// announcements queued for it for Config.Relink. Broadcasts whose pull was
// outstanding at p are pulled from their next announcer at once.
func (s *State) LinkDown(p Peer, now time.Time) {
	if ps, ok := s.peers[p]; ok && s.cfg.Relink > 0 {
		d := s.departedPeer(p, now)
		for _, r := range ps.queued {
			s.owe(d, r)
		}
	}
	delete(s.peers, p)
	for o, u := range s.upstream {
		if u == p {
			delete(s.upstream, o)
		}
	}
	for r, m := range s.missing {
		if m.pulling && m.asked == p {
			m.pulling = false
			m.due = now
		}
		if i := slices.Index(m.announcers, p); i >= 0 {
			m.announcers = slices.Delete(m.announcers, i, i+1)
			if m.next > i {
				m.next--
			}
		}
		if len(m.announcers) == 0 {
			delete(s.missing, r)
		}
	}
}

// departedPeer returns what p, whose link went down at now, is owed, made
// if need be: room is made by the peer that left first.
func (s *State) departedPeer(p Peer, now time.Time) *departedPeer {
	if d, ok := s.departed[p]; ok {
		return d
	}
	if len(s.departed) >= maxDeparted {
		var first Peer
		var at time.Time
		for q, d := range s.departed {
			if at.IsZero() || d.at.Before(at) {
				first, at = q, d.at
			}
		}
		s.ctr.OwedForgotten += uint64(len(s.departed[first].queued))
		delete(s.departed, first)
	}
	d := &departedPeer{at: now}
	s.departed[p] = d
	return d
}

// Owe records r, a broadcast relayed or sent, as owed to every peer
// whose link went down within Config.Relink: announced to it if it links
// again in time.
func (s *State) Owe(r Ref) {
	for _, d := range s.departed {
		s.owe(d, r)
	}
}

// owe adds r to what d is owed, if there is room.
func (s *State) owe(d *departedPeer, r Ref) {
	if len(d.queued) >= protocol.MaxBroadcastRefs {
		s.ctr.OwedForgotten++
		return
	}
	d.queued = append(d.queued, r)
}

// Departed returns how many peers whose link went down are owed
// announcements.
func (s *State) Departed() int { return len(s.departed) }

// Eager reports whether payloads go to p: always in flood mode, in tree
// mode unless the link was pruned. A peer without a link is not eager.
func (s *State) Eager(p Peer) bool {
	ps, ok := s.peers[p]
	return ok && !ps.lazy
}

// Announce queues an announcement of r for p: a lazy link in tree mode,
// or a neighbour a copy of r could not be queued for (its queue was full,
// or its link was closing). It goes out with the next batch, or, if p's
// link is down, over p's next link within Config.Relink.
func (s *State) Announce(r Ref, p Peer, now time.Time) {
	if ps, ok := s.peers[p]; ok {
		s.queue(ps, r, now)
		return
	}
	if s.cfg.Relink > 0 {
		// A copy that found p's link closing, which has gone since.
		s.owe(s.departedPeer(p, now), r)
	}
}

// Queued returns the announcements queued for p, not yet sent.
func (s *State) Queued(p Peer) []Ref {
	if ps, ok := s.peers[p]; ok {
		return slices.Clone(ps.queued)
	}
	return nil
}

// Push marks which of peers get only an announcement of r, a broadcast
// this node is about to relay to them: in tree mode those behind lazy links
// and, for one it pulled (pulled), also the one towards r's origin
// (Upstream), or every one if that is not known. skip1 and skip2 get
// neither payload nor announcement and are not marked. With announce, the
// announcements are queued as Announce does. The marks are appended to
// lazy[:0]; eager counts the peers not marked.
func (s *State) Push(r Ref, peers []Peer, skip1, skip2 Peer, pulled, announce bool, now time.Time, lazy []bool) (marks []bool, eager int) {
	marks = lazy[:0]
	up, known := s.upstream[r.Origin]
	for _, p := range peers {
		ps, ok := s.peers[p]
		l := (!ok || ps.lazy || (pulled && (!known || p == up))) && p != skip1 && p != skip2
		marks = append(marks, l)
		if !l {
			eager++
		} else if announce && ok {
			s.queue(ps, r, now)
		}
	}
	return marks, eager
}

func (s *State) queue(ps *peerState, r Ref, now time.Time) {
	if len(ps.queued) >= s.cfg.MaxQueued {
		s.ctr.AnnounceDrops++
		return
	}
	ps.queued = append(ps.queued, r)
	if s.flushAt.IsZero() {
		s.flushAt = now.Add(s.cfg.AnnounceInterval)
	}
}

// Received records the arrival of a copy of r from p that passed the seen
// check as the first one (fresh) or not. A fresh copy ends any wait for r
// (a Repair if it was pulled) and, in tree mode, makes p's link eager.
// A duplicate in tree mode prunes p's link (the returned actions hold the
// PRUNE), unless the first copy came by pull: then p's copy was late, not
// redundant.
func (s *State) Received(r Ref, p Peer, fresh bool, now time.Time) []Action {
	if fresh {
		pushed := true
		if m, ok := s.missing[r]; ok {
			if m.pulled {
				s.ctr.Repairs++
				s.noteRepaired(r)
			}
			// A copy p sent because this node asked for it alone is no
			// sign that p pushes to it.
			pushed = !(m.pulling && m.wanted && m.asked == p)
			if !(m.pulling && m.asked == p) {
				// It came by itself: the eager path is that slow now.
				s.noteLateness(now.Sub(m.heard), now)

			}
			s.drop(r, m)
		}
		if ps, ok := s.peers[p]; ok && s.cfg.Tree && pushed {
			ps.dups = max(0, ps.dups-pruneFresh)
			if ps.dups < pruneAt {
				ps.pruneDue = time.Time{}
			}
			if now.Sub(ps.prunedAt) > s.cfg.PullTimeout {
				ps.lazy = false
			}
		}
		if pushed && s.cfg.Tree {
			if _, ok := s.upstream[r.Origin]; !ok && len(s.upstream) >= maxUpstream {
				for o := range s.upstream { // drop any one
					delete(s.upstream, o)
					break
				}
			}
			s.upstream[r.Origin] = p
		}
		return nil
	}
	ps, ok := s.peers[p]
	if !ok || !s.cfg.Tree || ps.lazy || ps.pinned {
		return nil
	}
	if _, late := s.repaired[r]; late {
		return nil
	}
	if !ps.graftedAt.IsZero() && now.Sub(ps.graftedAt) < s.graftHold() {
		return nil
	}
	if ps.dups = min(ps.dups+pruneDup, pruneCap); ps.dups < pruneAt {
		return nil
	}
	if ps.pruneDue.IsZero() {
		ps.pruneDue = now
		if s.cfg.PruneDelay > 0 {
			ps.pruneDue = now.Add(rand.N(s.cfg.PruneDelay))
		}
	}
	if now.Before(ps.pruneDue) {
		return nil
	}
	ps.dups = 0
	ps.pruneDue = time.Time{}
	ps.lazy = true
	ps.prunedAt = now
	s.ctr.Prunes++
	return []Action{{To: p, Kind: SendPrune}}
}

// noteLateness folds one pushed arrival, late by d after its first
// announcement, into the maximum, which decays by an eighth every
// lateDecay: by time, not by arrivals, so that a burst of timely copies
// does not wipe out what the late ones said.
func (s *State) noteLateness(d time.Duration, now time.Time) {
	for i := 0; i < 64 && now.Sub(s.lateAt) >= lateDecay; i++ {
		s.lateness -= s.lateness / 8
		s.lateAt = s.lateAt.Add(lateDecay)
	}
	if now.Sub(s.lateAt) >= lateDecay {
		s.lateAt = now
	}
	s.lateness = max(s.lateness, d)
}

// lateDecay is how often the lateness maximum decays by an eighth.
const lateDecay = 100 * time.Millisecond

// timeout is the pull timeout now: the configured one, or 1.5 times how
// late pushed copies have been arriving recently (at most 8 times the
// configured one), so that a loaded mesh does not pull what is merely
// queued.
func (s *State) timeout() time.Duration {
	return min(max(s.cfg.PullTimeout, s.lateness*3/2), 8*s.cfg.PullTimeout)
}

// graftHold is how long a grafted link is not pruned: three pull timeouts.
// A graft closes a cycle until the branch it replaces is pruned; were the
// new link pruned instead, the branch would stay broken and the next
// broadcasts would be pulled and grafted again (measured at 16 nodes,
// window 64: about 100 grafts and 70 prunes per node in 10 s, and about
// two broadcasts in three pulled by some node).
func (s *State) graftHold() time.Duration { return 3 * s.cfg.PullTimeout }

// PullTimeout returns the pull timeout in use now.
func (s *State) PullTimeout() time.Duration { return s.timeout() }

func (s *State) noteRepaired(r Ref) {
	if len(s.repairedLog) < repairedKeep {
		s.repairedLog = append(s.repairedLog, r)
	} else {
		delete(s.repaired, s.repairedLog[s.repairedAt])
		s.repairedLog[s.repairedAt] = r
		s.repairedAt = (s.repairedAt + 1) % repairedKeep
	}
	s.repaired[r] = struct{}{}
}

// Upstream returns the neighbour the last broadcast of origin was pushed
// from: in a tree, the one towards the origin. The others, downstream,
// lack a broadcast this node lacked, and a copy it pulled goes to them.
func (s *State) Upstream(origin Peer) (Peer, bool) {
	p, ok := s.upstream[origin]
	return p, ok
}

// Known ends any wait for r without counting a repair: it arrived in a way
// Received did not see (this node sent it).
func (s *State) Known(r Ref) {
	if m, ok := s.missing[r]; ok {
		s.drop(r, m)
	}
}

func (s *State) drop(r Ref, m *missing) {
	if m.pulling {
		if ps, ok := s.peers[m.asked]; ok && ps.pulls > 0 {
			ps.pulls--
		}
	}
	if len(m.announcers) > 0 {
		if ps, ok := s.peers[m.announcers[0]]; ok && ps.missing > 0 {
			ps.missing--
		}
	}
	delete(s.missing, r)
}

// IHave records p's announcement of refs; have says whether this node has
// seen a broadcast already. Those it has not are pulled from p after the
// pull timeout, unless they arrive first.
func (s *State) IHave(p Peer, refs []Ref, have func(Ref) bool, now time.Time) {
	ps, ok := s.peers[p]
	if !ok {
		return
	}
	for _, r := range refs {
		if m, ok := s.missing[r]; ok {
			if len(m.announcers) < s.cfg.MaxAnnouncers && !slices.Contains(m.announcers, p) {
				m.announcers = append(m.announcers, p)
			}
			continue
		}
		if have(r) {
			continue
		}
		if len(s.missing) >= s.cfg.MaxMissing || ps.missing >= s.cfg.MaxMissingPerPeer {
			s.ctr.MissingRefused++
			continue
		}
		ps.missing++
		s.missing[r] = &missing{announcers: []Peer{p}, heard: now, due: now.Add(s.timeout()), giveUp: now.Add(s.cfg.RepairWindow)}
	}
}

// Graft records p's GRAFT: its link becomes eager; with no references, p
// floods, and its link is never pruned. The caller serves the references.
func (s *State) Graft(p Peer, refs []Ref, now time.Time) {
	ps, ok := s.peers[p]
	if !ok {
		return
	}
	ps.lazy = false
	ps.graftedAt = now
	ps.pruneDue = time.Time{}
	if len(refs) == 0 {
		ps.pinned = true
	}
}

// Prune records p's PRUNE: in tree mode p's link becomes lazy; a node in
// flood mode answers with an empty GRAFT (it floods, so p should keep the
// link eager).
func (s *State) Prune(p Peer, now time.Time) []Action {
	ps, ok := s.peers[p]
	if !ok {
		return nil
	}
	if !s.cfg.Tree {
		s.ctr.Grafts++
		return []Action{{To: p, Kind: SendGraft}}
	}
	ps.lazy = true
	ps.prunedAt = now
	ps.pruneDue = time.Time{}
	return nil
}

// Tick returns what is due at now: queued announcements (in batches of at
// most protocol.MaxBroadcastRefs) and pulls of missing broadcasts (an
// IWANT, or in tree mode a GRAFT, to the next announcer), and when Tick
// should run next (zero: nothing is pending).
func (s *State) Tick(now time.Time) ([]Action, time.Time) {
	var out []Action
	if !s.flushAt.IsZero() && !now.Before(s.flushAt) {
		s.flushAt = time.Time{}
		for p, ps := range s.peers {
			// The actions take the queue's array; the next queue starts
			// at the size of this one, which is what it will likely need.
			size := len(ps.queued)
			for len(ps.queued) > 0 {
				n := min(len(ps.queued), protocol.MaxBroadcastRefs)
				out = append(out, Action{To: p, Kind: SendIHave, Refs: ps.queued[:n:n]})
				s.ctr.Announced += uint64(n)
				ps.queued = ps.queued[n:]
			}
			ps.queued = nil
			if size > 0 {
				ps.queued = make([]Ref, 0, size)
			}
		}
	}
	pulls := map[Peer][]Ref{}
	var next time.Time
	for r, m := range s.missing {
		if now.Before(m.due) {
			next = earliest(next, m.due)
			continue
		}
		if m.pulling {
			if ps, ok := s.peers[m.asked]; ok && ps.pulls > 0 {
				ps.pulls--
			}
			m.pulling = false
		}
		if !now.Before(m.giveUp) {
			s.ctr.GaveUp++
			s.drop(r, m)
			continue
		}
		// The next announcer with room for a pull, round robin.
		for range m.announcers {
			if m.next >= len(m.announcers) {
				m.next = 0
			}
			p := m.announcers[m.next]
			m.next++
			ps := s.peers[p]
			if ps == nil || ps.pulls >= s.cfg.MaxPullsPerPeer || len(pulls[p]) >= protocol.MaxBroadcastRefs {
				continue
			}
			ps.pulls++
			m.asked, m.pulling, m.pulled = p, true, true
			pulls[p] = append(pulls[p], r)
			break
		}
		m.due = now.Add(s.timeout())
		next = earliest(next, m.due)
	}
	// In tree mode one link is grafted per round, the one most is pulled
	// over: the tree lost a branch here, and that link replaces it. Pulls
	// over the others are IWANTs: grafting several links at once would
	// close cycles, whose duplicates prune links elsewhere.
	var graft Peer
	if s.cfg.Tree {
		best := 0
		for p, refs := range pulls {
			if len(refs) > best || (len(refs) == best && peerLess(p, graft)) {
				graft, best = p, len(refs)
			}
		}
	}
	for p, refs := range pulls {
		kind := SendWant
		if s.cfg.Tree && p == graft {
			kind = SendGraft
			s.ctr.Grafts++
			if ps := s.peers[p]; ps != nil {
				ps.lazy = false
				ps.graftedAt = now
			}
		}
		for _, r := range refs {
			s.missing[r].wanted = kind == SendWant
		}
		s.ctr.PullsSent += uint64(len(refs))
		out = append(out, Action{To: p, Kind: kind, Refs: refs})
	}
	for p, d := range s.departed {
		until := d.at.Add(s.cfg.Relink)
		if !now.Before(until) {
			s.ctr.OwedForgotten += uint64(len(d.queued))
			delete(s.departed, p)
			continue
		}
		next = earliest(next, until)
	}
	if !s.flushAt.IsZero() {
		next = earliest(next, s.flushAt)
	}
	return out, next
}

func peerLess(a, b Peer) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
