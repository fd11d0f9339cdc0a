package mesh

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/mesh/plumtree"
	"github.com/meshsock/meshsock/protocol"
)

// repairer is the I/O around the broadcast state machine (mesh/plumtree):
// it keeps the message cache, tells the state machine what happens on the
// relay path and in the control messages, and sends what it asks for
// (docs/protocol.md §12.7). One mutex serialises the state machine; the
// flood's relay path takes it only when a copy was dropped or a broadcast
// is being waited for.
type repairer struct {
	s     *Socket
	cfg   repairConfig
	tree  bool
	cache *msgCache

	mu     sync.Mutex
	st     *plumtree.State
	wakeAt time.Time // when the loop runs next (zero: nothing pending); under mu

	// serveMu guards backlog: pulls of each neighbour not yet queued for
	// it because its send queue was full.
	serveMu sync.Mutex
	backlog map[protocol.NodeID]*serveBacklog

	waiting atomic.Int64 // broadcasts waited for, as of the last change
	owing   atomic.Int64 // peers owed announcements (plumtree.State.Departed), as of the last change
	kick    chan struct{}

	served, refused, bad atomic.Uint64
	lastBadLog           atomic.Int64
}

func newRepairer(s *Socket, cfg repairConfig) *repairer {
	window := min(cfg.window, s.cfg.seenAge)
	return &repairer{
		s:     s,
		cfg:   cfg,
		tree:  cfg.mode == Tree,
		cache: newMsgCache(cfg.cacheBytes),
		kick:  make(chan struct{}, 1),

		backlog: make(map[protocol.NodeID]*serveBacklog),
		st: plumtree.New(plumtree.Config{
			Tree:              cfg.mode == Tree,
			PullTimeout:       cfg.pullTimeout,
			RepairWindow:      window,
			AnnounceInterval:  cfg.announceInterval,
			MaxQueued:         cfg.maxQueued,
			MaxMissing:        cfg.maxMissing,
			MaxMissingPerPeer: max(1, cfg.maxMissing/4),
			MaxPullsPerPeer:   cfg.maxPulls,
			MaxAnnouncers:     8,
			PruneDelay:        4 * cfg.pullTimeout,
			Relink:            window,
		}),
	}
}

// errTreeNotOneHop says why an announcement or tree control message was
// refused: it was not a one-packet whisper from the link's own peer.
var errTreeNotOneHop = errors.New("mesh: broadcast control must be a one-packet whisper from the link's own peer")

func refOf(m *base.Message) protocol.BroadcastRef {
	return protocol.BroadcastRef{Origin: m.Sender, Seq: m.Seq}
}

// wakeBy makes the loop run by at (the caller holds mu).
func (r *repairer) wakeByLocked(at time.Time) {
	if r.wakeAt.IsZero() || at.Before(r.wakeAt) {
		r.wakeAt = at
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// loop runs the state machine's timers: announcement batches and pulls.
func (r *repairer) loop(done <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-done:
			t.Stop()
			return
		case <-r.kick:
		case <-t.C:
		}
		now := time.Now()
		r.mu.Lock()
		acts, next := r.st.Tick(now)
		r.wakeAt = next
		r.syncLocked()
		r.mu.Unlock()
		r.send(acts)
		if r.serveBacklog() {
			retry := now.Add(r.cfg.announceInterval)
			r.mu.Lock()
			next = earliestTime(next, retry)
			r.wakeAt = next
			r.mu.Unlock()
		}
		if !next.IsZero() {
			t.Reset(max(next.Sub(now), 0))
		}
	}
}

// linkChanged tells the state machine of a link that came up or went.
func (r *repairer) linkChanged(id protocol.NodeID, up bool) {
	now := time.Now()
	r.mu.Lock()
	if up {
		if r.st.LinkUp(id) {
			r.wakeByLocked(now)
		}
	} else {
		r.st.LinkDown(id, now)
		r.wakeByLocked(now)
	}
	r.syncLocked()
	r.mu.Unlock()
}

// syncLocked publishes what the relay path reads without the lock (the
// caller holds mu).
func (r *repairer) syncLocked() {
	r.waiting.Store(int64(r.st.Missing()))
	r.owing.Store(int64(r.st.Departed()))
}

// fresh is told of the first copy of a broadcast, before it is relayed
// to ns: it is cached to serve pulls, ends any wait for it, and is owed to
// the neighbours whose links went down lately (plumtree.State.Owe). In
// tree mode it also marks which of ns get only an announcement
// (lazyLinks), and queues those, under the same lock; in flood mode it
// returns nil.
func (r *repairer) fresh(m *base.Message, from protocol.NodeID, ns []*base.Conn, now time.Time, buf []bool) (lazy []bool) {
	ref := refOf(m)
	r.cache.put(ref, m.Hops, m.Envelope())
	if !r.tree && r.waiting.Load() == 0 && r.owing.Load() == 0 {
		return nil
	}
	r.mu.Lock()
	before := r.st.Counters().Repairs
	r.st.Received(ref, from, true, now)
	repaired := r.st.Counters().Repairs != before
	if m.Hops < m.HopLimit {
		r.st.Owe(ref)
	}
	r.syncLocked()
	if r.tree {
		lazy = r.announceLazyLocked(ref, ns, from, m.Sender, repaired, now, buf)
	}
	r.mu.Unlock()
	if repaired {
		r.s.trace(TraceRepair, m, from)
	}
	return lazy
}

// duplicate is told, in tree mode, of a copy of a broadcast seen before:
// the link it came on is pruned to lazy.
func (r *repairer) duplicate(m *base.Message, from protocol.NodeID) {
	r.mu.Lock()
	acts := r.st.Received(refOf(m), from, false, time.Now())
	r.mu.Unlock()
	if len(acts) > 0 {
		r.s.trace(TracePrune, m, from)
		r.send(acts)
	}
}

// lazyLinks marks, in tree mode, which of ns get only an announcement of
// ref rather than the payload, and queues those announcements. skip1 and
// skip2 get neither. It returns nil in flood mode.
func (r *repairer) lazyLinks(ref protocol.BroadcastRef, ns []*base.Conn, skip1, skip2 protocol.NodeID, buf []bool) []bool {
	if !r.tree {
		return nil
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.announceLazyLocked(ref, ns, skip1, skip2, false, now, buf)
}

// announceLazyLocked is lazyLinks with mu held, for a broadcast this node
// pulled too: then the eager link towards its origin is announced to as
// well (the neighbour there most likely has it: pushed to it, it would
// arrive as a duplicate and prune a link of the tree), or every link if
// that one is not known (one that lacks it pulls it).
func (r *repairer) announceLazyLocked(ref protocol.BroadcastRef, ns []*base.Conn, skip1, skip2 protocol.NodeID, pulled bool, now time.Time, buf []bool) []bool {
	lazy, eager := r.markLazyLocked(ref, ns, skip1, skip2, pulled, true, now, buf)
	if eager < len(lazy) {
		r.wakeByLocked(now.Add(r.cfg.announceInterval))
	}
	return lazy
}

// ownLazyLinks is lazyLinks for a broadcast this node originates, without
// the announcements: the caller queues them (announce) only once the
// payload has left, since a broadcast whose Send fails must not reach
// anyone. It returns nil in flood mode, and when no neighbour would get
// the payload (so that a node whose links were all pruned still pushes
// its own broadcasts).
func (r *repairer) ownLazyLinks(ref protocol.BroadcastRef, ns []*base.Conn, buf []bool) []bool {
	if !r.tree {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	lazy, eager := r.markLazyLocked(ref, ns, protocol.NodeID{}, protocol.NodeID{}, false, false, time.Time{}, buf)
	if eager == 0 {
		return nil
	}
	return lazy
}

// markLazyLocked computes lazyLinks' marks (plumtree.State.Push), queues
// the announcements if told to, and counts the links left eager (the
// caller holds mu).
func (r *repairer) markLazyLocked(ref protocol.BroadcastRef, ns []*base.Conn, skip1, skip2 protocol.NodeID, pulled, announce bool, now time.Time, buf []bool) (lazy []bool, eager int) {
	var ids [32]protocol.NodeID
	peers := ids[:0]
	for _, c := range ns {
		peers = append(peers, c.ID())
	}
	return r.st.Push(ref, peers, skip1, skip2, pulled, announce, now, buf)
}

// announce queues announcements of ref, a broadcast this node sent, for
// the neighbours to (its lazy links), and owes it to those whose links
// went down lately.
func (r *repairer) announce(ref protocol.BroadcastRef, to []*base.Conn) {
	if len(to) == 0 && r.owing.Load() == 0 {
		return
	}
	now := time.Now()
	r.mu.Lock()
	for _, c := range to {
		r.st.Announce(ref, c.ID(), now)
	}
	r.st.Owe(ref)
	if len(to) > 0 {
		r.wakeByLocked(now.Add(r.cfg.announceInterval))
	}
	r.mu.Unlock()
}

// missed is told that a copy of ref could not be queued for neighbour to
// (its queue was full, or its link was closing): it is announced to it, so
// that it can pull it; over to's next link if it has none by then (a
// connection that replaces a duplicate one, or a reconnection within the
// repair window).
func (r *repairer) missed(ref protocol.BroadcastRef, to protocol.NodeID) {
	now := time.Now()
	r.mu.Lock()
	r.st.Announce(ref, to, now)
	r.wakeByLocked(now.Add(r.cfg.announceInterval))
	r.syncLocked()
	r.mu.Unlock()
}

// owe queues again announcements that found no live link to their peer
// (it is closing): they go with a later batch, over the link that replaces
// it, or within the repair window over the peer's next link.
func (r *repairer) owe(to protocol.NodeID, refs []protocol.BroadcastRef) {
	now := time.Now()
	r.mu.Lock()
	for _, ref := range refs {
		r.st.Announce(ref, to, now)
	}
	r.wakeByLocked(now.Add(r.cfg.announceInterval))
	r.syncLocked()
	r.mu.Unlock()
}

// own caches a broadcast this node originates.
func (r *repairer) own(env []byte) (protocol.BroadcastRef, bool) {
	_, ref, err := protocol.EnvelopeRef(env)
	if err != nil {
		return ref, false
	}
	r.cache.put(ref, 0, env)
	return ref, true
}

// have says whether this node has (or cannot take) a broadcast.
func (r *repairer) have(ref protocol.BroadcastRef) bool {
	return ref.Origin == r.s.ID() || r.s.seen.peek(ref.Origin, ref.Seq, 0) != seenNew
}

// handle consumes an IHAVE or a tree control message (§12.7): a one-hop
// whisper from the link's own peer with one packet. Anything else is
// dropped and counted.
func (r *repairer) handle(m *base.Message) {
	from := m.Conn.ID()
	if m.Type != flags.Whisper || m.Sender != from || len(m.Packets) != 1 {
		r.refuse(m, errTreeNotOneHop)
		return
	}
	now := time.Now()
	if m.Flag == flags.IHave {
		scratch := refScratch.Get().(*[]protocol.BroadcastRef)
		defer refScratch.Put(scratch)
		refs, err := protocol.ParseBroadcastRefs((*scratch)[:0], m.Packets[0])
		*scratch = refs
		if err != nil {
			r.refuse(m, err)
			return
		}
		// Most announced broadcasts came by push first: those are dropped
		// here, on the seen-state alone, and an announcement of nothing
		// new takes no lock (the state machine asks have again).
		refs = slices.DeleteFunc(refs, r.have)
		if len(refs) == 0 {
			return
		}
		r.mu.Lock()
		r.st.IHave(from, refs, r.have, now)
		if n := int64(r.st.Missing()); n != r.waiting.Load() {
			r.waiting.Store(n)
			r.wakeByLocked(now.Add(r.cfg.pullTimeout))
		}
		r.mu.Unlock()
		return
	}
	kind, refs, err := protocol.ParseTreeControl(nil, m.Packets[0])
	if err != nil {
		r.refuse(m, err)
		return
	}
	switch kind {
	case protocol.TreeGraft:
		r.mu.Lock()
		r.st.Graft(from, refs, now)
		r.mu.Unlock()
		r.serve(m.Conn, refs)
	case protocol.TreePrune:
		r.mu.Lock()
		acts := r.st.Prune(from, now)
		r.mu.Unlock()
		r.send(acts)
	case protocol.TreeWant:
		r.serve(m.Conn, refs)
	}
}

// serveBacklog is what one neighbour pulled that did not fit its send
// queue yet, oldest first, at most the pull bound (WithRepairLimits).
type serveBacklog struct {
	c    *base.Conn
	refs []protocol.BroadcastRef
	has  map[protocol.BroadcastRef]struct{}
}

// serve sends c the cached envelopes of refs, unchanged, as ordinary
// broadcast frames: the receiver takes them through its prefilter,
// signature check and flood rules like any other copy. A broadcast no
// longer cached is refused (counted). What finds c's send queue full waits
// in c's backlog (bounded by the pull bound; beyond it a pull is dropped
// and the puller asks again) and is sent as the queue drains.
func (r *repairer) serve(c *base.Conn, refs []protocol.BroadcastRef) {
	r.serveMu.Lock()
	b := r.backlog[c.ID()]
	if b != nil && b.c != c {
		delete(r.backlog, c.ID())
		b = nil
	}
	if b == nil {
		b = &serveBacklog{c: c, has: make(map[protocol.BroadcastRef]struct{})}
	}
	for _, ref := range refs {
		if _, dup := b.has[ref]; dup || len(b.refs) >= r.cfg.maxPulls {
			continue
		}
		b.refs = append(b.refs, ref)
		b.has[ref] = struct{}{}
	}
	r.drainLocked(b)
	left := len(b.refs) > 0
	if left {
		r.backlog[c.ID()] = b
	}
	r.serveMu.Unlock()
	if left {
		now := time.Now()
		r.mu.Lock()
		r.wakeByLocked(now.Add(r.cfg.announceInterval))
		r.mu.Unlock()
	}
}

// drainLocked queues what of b fits b's link now.
func (r *repairer) drainLocked(b *serveBacklog) {
	i := 0
	for ; i < len(b.refs); i++ {
		ref := b.refs[i]
		e, ok := r.cache.get(ref)
		if !ok {
			r.refused.Add(1)
			r.traceRef(TracePullRefused, ref, b.c.ID())
			delete(b.has, ref)
			continue
		}
		if err := b.c.TrySendEnvelope(e.hops, e.env); err != nil {
			break
		}
		delete(b.has, ref)
		r.served.Add(1)
		r.traceRef(TracePullServed, ref, b.c.ID())
	}
	b.refs = append(b.refs[:0], b.refs[i:]...)
}

// serveBacklog sends what waits in the backlogs and reports whether any
// is left. Backlogs of links that closed are dropped.
func (r *repairer) serveBacklog() bool {
	r.serveMu.Lock()
	defer r.serveMu.Unlock()
	for id, b := range r.backlog {
		if b.c.Err() == nil {
			r.drainLocked(b)
		}
		if len(b.refs) == 0 || b.c.Err() != nil {
			delete(r.backlog, id)
		}
	}
	return len(r.backlog) > 0
}

func earliestTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// packetScratch and refScratch hold buffers to encode announcements and
// tree control packets into, and to parse announcements into: one of each
// per announcement batch would be most of what the tree mode allocates.
var (
	packetScratch = sync.Pool{New: func() any { return new([]byte) }}
	refScratch    = sync.Pool{New: func() any { return new([]protocol.BroadcastRef) }}
)

// send encodes and queues the state machine's messages on the control
// lanes of their links, which data traffic cannot starve.
func (r *repairer) send(acts []plumtree.Action) {
	for _, a := range acts {
		c, ok := r.s.base.Conn(a.To)
		if !ok {
			if a.Kind == plumtree.SendIHave {
				r.owe(a.To, a.Refs)
			}
			continue
		}
		scratch := packetScratch.Get().(*[]byte)
		sub, pkt := flags.Tree, (*scratch)[:0]
		switch a.Kind {
		case plumtree.SendIHave:
			sub, pkt = flags.IHave, protocol.AppendBroadcastRefs(pkt, a.Refs)
		case plumtree.SendGraft:
			pkt = protocol.AppendTreeControl(pkt, protocol.TreeGraft, a.Refs)
		case plumtree.SendPrune:
			pkt = protocol.AppendTreeControl(pkt, protocol.TreePrune, nil)
		case plumtree.SendWant:
			pkt = protocol.AppendTreeControl(pkt, protocol.TreeWant, a.Refs)
		}
		// Sequence number 0: a one-hop control message takes none of the
		// numbers the node's broadcasts use, which would spread those
		// apart in the receivers' windows (seen-state, §11).
		e := protocol.Envelope{Type: flags.Whisper, Sub: sub, Sender: r.s.ID(), Time: time.Now().UnixNano(),
			HopLimit: 1, Packets: [][]byte{pkt}}
		env := e.AppendTo(make([]byte, 0, e.EncodedLen()))
		*scratch = pkt
		packetScratch.Put(scratch) // env holds a copy
		if a.Kind == plumtree.SendIHave {
			// An announcement goes behind the payloads queued on its
			// link, as a payload would: on the control lane it would
			// overtake them and have the receiver pull what is merely
			// queued. A full data lane takes it on the control lane.
			if err := c.TrySendEnvelope(0, env); err == nil {
				continue
			}
		}
		if err := c.SendControl(env); err != nil {
			if a.Kind == plumtree.SendIHave && errors.Is(err, ErrClosed) {
				r.owe(a.To, a.Refs)
			}
			continue
		}
		if a.Kind == plumtree.SendGraft || a.Kind == plumtree.SendWant {
			for _, ref := range a.Refs {
				r.traceRef(TracePull, ref, a.To)
			}
		}
	}
}

// refuse drops a malformed announcement or tree control message: counted,
// logged at most once a second.
func (r *repairer) refuse(m *base.Message, err error) {
	r.bad.Add(1)
	now := time.Now().UnixNano()
	if last := r.lastBadLog.Load(); now-last >= int64(time.Second) && r.lastBadLog.CompareAndSwap(last, now) {
		r.s.log.Debug("dropping a malformed broadcast control message", "flag", m.Flag, "peer", m.Conn.ID().Short(), "err", err)
	}
}

func (r *repairer) traceRef(k TraceKind, ref protocol.BroadcastRef, peer protocol.NodeID) {
	if r.s.cfg.tracer == nil {
		return
	}
	r.s.cfg.tracer.Trace(TraceEvent{Kind: k, Sender: ref.Origin, Peer: peer})
}

// RepairStats are the counters of broadcast trees and loss repair
// (WithBroadcastMode, WithMessageCache), embedded in Stats.
type RepairStats struct {
	// Announcements counts broadcasts announced to neighbours (IHAVE
	// entries: lazy links in tree mode, and copies a relay could not
	// queue); AnnounceDrops those not announced because the neighbour's
	// announcement queue was full (WithRepairLimits).
	Announcements, AnnounceDrops uint64
	// PullsSent counts broadcasts this node asked a neighbour for
	// (IWANT, or GRAFT in tree mode); PullsServed the pulled broadcasts it
	// sent, from its message cache; PullsRefused the pulls it could not
	// serve because the broadcast was not (or no longer) in the cache
	// (evicted, WithMessageCache).
	PullsSent, PullsServed, PullsRefused uint64
	// Repairs counts broadcasts that reached this node after it pulled
	// them; RepairsGivenUp those it heard of but no announcer delivered
	// within the repair window; MissingRefused announcements not followed
	// up for lack of room (WithRepairLimits). Missing is the number of
	// broadcasts being waited for now.
	Repairs, RepairsGivenUp, MissingRefused uint64
	Missing                                 int
	// Grafts and Prunes count GRAFT and PRUNE messages sent.
	Grafts, Prunes uint64
	// EagerLinks and LazyLinks count this node's links by what it sends
	// over them: payloads, or only announcements (always all eager in
	// flood mode).
	EagerLinks, LazyLinks int
	// OwedForgotten counts announcements owed to neighbours whose link
	// went down that were never sent: the neighbour did not link again
	// within the repair window, or more were owed than the bounds hold
	// (16 neighbours, 1024 broadcasts each).
	OwedForgotten uint64
	// MessageCacheBytes is what the message cache holds.
	MessageCacheBytes int
	// BadTreeMessages counts announcements and tree control messages
	// dropped as malformed or not one-hop.
	BadTreeMessages uint64
}

func (r *repairer) stats() RepairStats {
	r.mu.Lock()
	c := r.st.Counters()
	eager, lazy := r.st.Links()
	missing := r.st.Missing()
	r.mu.Unlock()
	return RepairStats{
		Announcements: c.Announced, AnnounceDrops: c.AnnounceDrops,
		PullsSent: c.PullsSent, PullsServed: r.served.Load(), PullsRefused: r.refused.Load(),
		Repairs: c.Repairs, RepairsGivenUp: c.GaveUp, MissingRefused: c.MissingRefused, Missing: missing,
		Grafts: c.Grafts, Prunes: c.Prunes, EagerLinks: eager, LazyLinks: lazy, OwedForgotten: c.OwedForgotten,
		MessageCacheBytes: r.cache.bytes(), BadTreeMessages: r.bad.Load(),
	}
}
