package mesh

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// maxPeersPerList bounds the peer list one node sends.
const maxPeersPerList = 64

// peerEntry is one entry of a peer list on the wire: CBOR [id bstr(16), addr tstr].
type peerEntry struct {
	_    struct{} `cbor:",toarray"`
	ID   []byte
	Addr string
}

// knownPeer is a member learnt by peer exchange or met over a link, with
// what this node knows of reaching it.
type knownPeer struct {
	addr     string
	failures int       // automatic dials that failed in a row
	nextTry  time.Time // no maintenance dial before then (back-off)
	heard    time.Time // latest news of it: named in a peer list, or a link
	linked   time.Time // when a link to it was last up (zero: never)
	lost     bool      // its last link ended in an error, not a clean close
	dialing  bool      // a maintenance dial or a probe to it is in flight
}

// unreachable reports whether this node last failed to reach the member:
// a dial to it failed, or its link was lost, and no link has come up since.
func (p *knownPeer) unreachable() bool { return p.failures > 0 || p.lost }

// knownPeers is the bounded table of members to dial, and the dials in
// flight to them. It is ordered by news (least recently heard of first);
// when full, it forgets a member this node never had a link with before
// one it had, so that members beyond a network cut, of whom no news comes,
// are still there to redial when the network returns.
type knownPeers struct {
	mu        sync.Mutex
	lru       *simplelru.LRU[protocol.NodeID, *knownPeer]
	size      int
	dials     int  // maintenance dials in flight (probes not included)
	probing   bool // a probe is in flight
	askWanted bool // a dial failed since peer lists were last asked for
	evictions uint64
}

func newKnownPeers(n int) *knownPeers {
	l, _ := simplelru.NewLRU[protocol.NodeID, *knownPeer](n, nil) // n > 0 is validated
	return &knownPeers{lru: l, size: n}
}

// add records news of a member at addr: a peer list named it, or a route
// request or answer came from it.
func (k *knownPeers) add(id protocol.NodeID, addr string) {
	if addr == "" || id.IsZero() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.addLocked(id, addr, time.Now())
}

func (k *knownPeers) addLocked(id protocol.NodeID, addr string, now time.Time) *knownPeer {
	if p, ok := k.lru.Get(id); ok {
		if p.addr != addr {
			p.addr, p.failures, p.nextTry, p.lost = addr, 0, time.Time{}, false
		}
		p.heard = now
		return p
	}
	if k.lru.Len() >= k.size {
		k.evictLocked()
	}
	p := &knownPeer{addr: addr, heard: now}
	k.lru.Add(id, p)
	return p
}

// evictLocked makes room for one entry: it forgets, of the members not
// being dialled, the one heard of least recently that this node never had
// a link with, or failing those the one heard of least recently.
func (k *knownPeers) evictLocked() {
	var victim, fallback protocol.NodeID
	found, haveFallback := false, false
	for _, id := range k.lru.Keys() { // least recently heard of first
		p, _ := k.lru.Peek(id)
		switch {
		case p.dialing:
		case p.linked.IsZero():
			victim, found = id, true
		case !haveFallback:
			fallback, haveFallback = id, true
		}
		if found {
			break
		}
	}
	if !found {
		if !haveFallback {
			return // every entry is being dialled: the LRU evicts its oldest
		}
		victim = fallback
	}
	k.lru.Remove(victim)
	k.evictions++
}

func (k *knownPeers) addr(id protocol.NodeID) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		return p.addr, true
	}
	return "", false
}

func (k *knownPeers) remove(id protocol.NodeID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lru.Remove(id)
}

// linkChanged follows this node's links (from the connection hook): a link
// that comes up is news and clears the member's failures; one that ends is
// remembered as the member's latest link, and marks it unreachable if it
// ended in an error rather than a clean close.
func (k *knownPeers) linkChanged(c *base.Conn, up bool) {
	id, now := c.ID(), time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Peek(id)
	if up {
		if addr := c.Peer().Addr; addr != "" && !id.IsZero() {
			p, ok = k.addLocked(id, addr, now), true
		}
		if ok {
			p.failures, p.nextTry, p.lost, p.linked = 0, time.Time{}, false, now
		}
		return
	}
	if ok {
		err := c.Err()
		p.linked, p.lost = now, err != nil && !errors.Is(err, ErrClosed)
	}
}

func (k *knownPeers) succeeded(id protocol.NodeID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		p.failures, p.nextTry, p.lost = 0, time.Time{}, false
	}
}

// failed pushes the next maintenance dial back with jittered exponential
// back-off, capped at hi: the member is kept, however often it fails.
func (k *knownPeers) failed(id protocol.NodeID, lo, hi time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.askWanted = true
	p, ok := k.lru.Peek(id)
	if !ok {
		return
	}
	p.failures++
	d := lo << min(p.failures-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	jittered := d/2 + rand.N(d)
	p.nextTry = time.Now().Add(jittered)
}

type candidate struct {
	id   protocol.NodeID
	addr string
}

// ranked is a candidate with what orders it.
type ranked struct {
	candidate
	failures      int
	linked, heard time.Time
}

// takeDue picks up to n members to dial now, best first, and marks them
// as being dialled (dialDone ends that): members whose back-off has
// passed, that skip does not rule out and that are not being dialled
// already. Best is fewest failures in a row, then the most recent link,
// then the most recent news, so that addresses that worked lately, and
// members that neighbours named lately, come before stale ones. It also
// returns how many were due in all.
func (k *knownPeers) takeDue(now time.Time, n int, skip func(protocol.NodeID) bool) (picked []candidate, due int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var all []ranked
	for _, id := range k.lru.Keys() {
		p, _ := k.lru.Peek(id)
		if p.dialing || p.nextTry.After(now) || skip(id) {
			continue
		}
		all = append(all, ranked{candidate{id, p.addr}, p.failures, p.linked, p.heard})
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	slices.SortStableFunc(all, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.failures, b.failures), b.linked.Compare(a.linked), b.heard.Compare(a.heard))
	})
	for _, r := range all[:min(n, len(all))] {
		p, _ := k.lru.Peek(r.id)
		p.dialing = true
		k.dials++
		picked = append(picked, r.candidate)
	}
	return picked, len(all)
}

// takeProbe picks the target of a probe and marks it as being dialled:
// a member that skip does not rule out and that this node last failed to
// reach (see unreachable), chosen at random among the members this node
// had links with most recently (up to members of them), or failing those
// among all. Back-off does not apply. It picks nothing while a probe is in
// flight.
func (k *knownPeers) takeProbe(skip func(protocol.NodeID) bool, members int) (candidate, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.probing {
		return candidate{}, false
	}
	var linked, others []ranked
	for _, id := range k.lru.Keys() {
		p, _ := k.lru.Peek(id)
		if p.dialing || !p.unreachable() || skip(id) {
			continue
		}
		r := ranked{candidate{id, p.addr}, p.failures, p.linked, p.heard}
		if p.linked.IsZero() {
			others = append(others, r)
		} else {
			linked = append(linked, r)
		}
	}
	pool := others
	if len(linked) > 0 {
		slices.SortFunc(linked, func(a, b ranked) int { return b.linked.Compare(a.linked) })
		pool = linked[:min(members, len(linked))]
	}
	if len(pool) == 0 {
		return candidate{}, false
	}
	c := pool[rand.N(len(pool))].candidate
	p, _ := k.lru.Peek(c.id)
	p.dialing = true
	k.probing = true
	return c, true
}

// dialDone ends a dial started by takeDue (probe false) or takeProbe.
func (k *knownPeers) dialDone(id protocol.NodeID, probe bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		p.dialing = false
	}
	if probe {
		k.probing = false
	} else {
		k.dials--
	}
}

// takeAskWanted reports, and clears, whether a dial failed since the last
// call.
func (k *knownPeers) takeAskWanted() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.askWanted
	k.askWanted = false
	return w
}

// dialsInFlight returns the maintenance dials in flight.
func (k *knownPeers) dialsInFlight() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dials
}

func (k *knownPeers) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}

func (k *knownPeers) evicted() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.evictions
}

// sendPeers sends our neighbour list to c; wantReply asks for c's list back.
func (s *Socket) sendPeers(c *base.Conn, wantReply bool) {
	list := make([]peerEntry, 0, maxPeersPerList)
	for _, n := range *s.neighbours.Load() {
		if len(list) == maxPeersPerList {
			break
		}
		if p := n.Peer(); p.Addr != "" && n != c {
			id := p.ID
			list = append(list, peerEntry{ID: id[:], Addr: p.Addr})
		}
	}
	b, err := protocol.MarshalCBOR(list)
	if err != nil {
		s.log.Error("encoding peer list", "err", err)
		return
	}
	want := []byte{0}
	if wantReply {
		want[0] = 1
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Peers, 1, [][]byte{b, want})
	if err != nil {
		return
	}
	_ = c.SendControl(env)
}

// handlePeers merges a neighbour's peer list into the known table.
func (s *Socket) handlePeers(m *base.Message) {
	if len(m.Packets) != 2 || len(m.Packets[1]) != 1 {
		s.log.Debug("malformed peer list", "sender", m.Sender.Short())
		return
	}
	var list []peerEntry
	if err := protocol.UnmarshalCBOR(m.Packets[0], &list); err != nil {
		s.log.Debug("malformed peer list", "sender", m.Sender.Short(), "err", err)
		return
	}
	self := s.ID()
	for i, e := range list {
		if i == maxPeersPerList {
			break
		}
		var id protocol.NodeID
		if len(e.ID) != len(id) {
			continue
		}
		copy(id[:], e.ID)
		if id != self {
			s.known.add(id, e.Addr)
		}
	}
	if m.Packets[1][0] == 1 {
		s.sendPeers(m.Conn, false)
	}
	s.kick()
}

// kick wakes the maintenance loop.
func (s *Socket) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// maintainLoop keeps the outgoing quota filled, on every kick (new peer
// list, lost neighbour, a dial that ended) and on a timer, and probes a
// member it cannot reach on a timer of its own (WithProbe).
func (s *Socket) maintainLoop() {
	t := time.NewTicker(s.cfg.maintainEvery)
	defer t.Stop()
	var probeC <-chan time.Time
	var pt *time.Timer
	if s.cfg.probeEvery > 0 {
		pt = time.NewTimer(jitter(s.cfg.probeEvery))
		defer pt.Stop()
		probeC = pt.C
	}
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-s.wake:
		case <-t.C:
		case <-probeC:
			pt.Reset(jitter(s.cfg.probeEvery))
			if s.cfg.discovery {
				s.probe()
			}
		}
		if s.cfg.discovery {
			s.fillOutgoing()
		}
	}
}

// jitter spreads d over [3d/4, 5d/4), so that nodes started together do
// not probe in step.
func jitter(d time.Duration) time.Duration {
	if d < 4 {
		return d
	}
	return d*3/4 + rand.N(d/2)
}

// skipDial rules out dialling this node itself and nodes it has a link to.
func (s *Socket) skipDial(id protocol.NodeID) bool {
	if id == s.ID() {
		return true
	}
	_, connected := s.base.Conn(id)
	return connected
}

// fillOutgoing starts dials to the best known members (see takeDue) while
// an outgoing slot is free (see dialSlots), at most WithMaxDials at once;
// each dial runs on its own goroutine and kicks the loop when it ends. A
// node still short of links asks its neighbours for fresh peer lists as
// soon as a dial fails or nothing is left to dial, at most once per
// maintenance interval (their answers kick this loop again).
func (s *Socket) fillOutgoing() {
	if v := s.slots.swapVictim(nil); v != nil {
		// Over the quota: a probe's link and another dial landed together.
		s.ctr.probeSwaps.Add(1)
		_ = v.Close()
	}
	free := s.slots.free()
	room := s.cfg.maxDials - s.known.dialsInFlight()
	var picked []candidate
	due := 0
	if n := min(free, room); n > 0 {
		picked, due = s.known.takeDue(time.Now(), n, s.skipDial)
		for _, cand := range picked {
			s.startDial(cand)
		}
	}
	if room < free && due > len(picked) {
		s.ctr.dialsDeferred.Add(1)
	}
	if s.slots.outboundLinks() >= s.cfg.maxOutgoing || time.Since(s.lastAsk) < s.cfg.maintainEvery {
		return
	}
	if s.known.takeAskWanted() || (free > 0 && due == 0) {
		s.lastAsk = time.Now()
		s.ctr.peerListRequests.Add(1)
		for _, n := range *s.neighbours.Load() {
			s.sendPeers(n, true)
		}
	}
}

// startDial dials cand on a goroutine of its own, inside a reserved
// outgoing slot.
func (s *Socket) startDial(cand candidate) {
	if !s.slots.reserve() {
		s.known.dialDone(cand.id, false)
		return
	}
	started := s.lc.Go(func() {
		defer s.kick()
		defer s.known.dialDone(cand.id, false)
		defer s.slots.release()
		c, err := s.dialCandidate(cand)
		s.ctr.dials.Add(1)
		if err != nil {
			s.ctr.dialFailures.Add(1)
			return
		}
		s.slots.markAuto(c)
	})
	if !started {
		s.slots.release()
		s.known.dialDone(cand.id, false)
	}
}

// dialCandidate dials a known member within the dial timeout and records
// the outcome in the table: a link clears its failures; another node at
// that address replaces it; this node itself or another protocol removes
// it; any other failure backs it off.
func (s *Socket) dialCandidate(cand candidate) (*base.Conn, error) {
	ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.dialTimeout)
	c, err := s.base.Connect(ctx, cand.addr)
	cancel()
	switch {
	case err == nil && c.ID() == cand.id:
		s.known.succeeded(cand.id)
	case err == nil:
		// Someone else answers at that address now.
		s.known.remove(cand.id)
		s.known.add(c.ID(), c.Peer().Addr)
	case errors.Is(err, ErrSelfConnect), errors.Is(err, ErrProtocolMismatch):
		s.known.remove(cand.id)
	default:
		s.known.failed(cand.id, s.cfg.backoffMin, s.cfg.backoffMax)
	}
	return c, err
}

// probe starts one dial, on a goroutine of its own, to a member this node
// cannot reach (see takeProbe), whether or not an outgoing slot is free:
// how two halves of a mesh whose nodes are all at their quota find each
// other again after a network cut. A probe link that takes the node past
// its quota replaces a random other outgoing link that an automatic dial
// made (a swap); so a node at its quota probes only if it has such a link.
func (s *Socket) probe() {
	if s.slots.free() <= 0 && !s.slots.hasAuto() {
		return
	}
	cand, ok := s.known.takeProbe(s.skipDial, s.cfg.probeMembers)
	if !ok {
		return
	}
	started := s.lc.Go(func() {
		defer s.kick()
		defer s.known.dialDone(cand.id, true)
		c, err := s.dialCandidate(cand)
		s.ctr.probes.Add(1)
		if err != nil {
			s.ctr.probeFailures.Add(1)
			return
		}
		s.slots.markAuto(c)
		if v := s.slots.swapVictim(c); v != nil {
			s.ctr.probeSwaps.Add(1)
			s.log.Debug("probe reached a member; swapping an outgoing link for it",
				"member", c.ID().Short(), "dropped", v.ID().Short())
			_ = v.Close()
		}
	})
	if !started {
		s.known.dialDone(cand.id, true)
	}
}
