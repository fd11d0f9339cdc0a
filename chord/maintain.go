package chord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// The Chord maintenance protocol (Stoica et al., with a successor list):
//
//   - stabilize: ask the successor for its predecessor and successor list;
//     adopt the predecessor as successor if it lies between (and repeat,
//     up to r times, while the new one's predecessor does); rebuild the
//     successor list; notify the successor; make sure every successor has
//     a link. A successor that does not answer is dropped and the next one
//     tried, so a crashed node is routed around at once.
//   - notify: "I might be your predecessor".
//   - check-predecessor: probe the predecessor, forget it if silent.
//   - fix-fingers: look up one finger start per tick; finger entries whose
//     start falls before the successor need no lookup.
//   - leave: tell the predecessor and the successor about each other.

// maintainLoop runs stabilize and check-predecessor.
func (s *Socket) maintainLoop() {
	st := time.NewTicker(s.cfg.stabilize)
	defer st.Stop()
	cp := time.NewTicker(s.cfg.checkPred)
	defer cp.Stop()
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-st.C:
		case <-s.stabWake:
		case <-cp.C:
			s.checkPredecessor()
			continue
		}
		s.stabilize()
		if len(s.view.Load().succs) == 0 {
			s.base.Rejoin(s.joinFunc()) // alone: at most once per JoinConfig.Refresh
		}
	}
}

// fingerLoop runs fix-fingers.
func (s *Socket) fingerLoop() {
	t := time.NewTicker(s.cfg.fixFingers)
	defer t.Stop()
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-t.C:
		}
		s.fixFingers()
	}
}

// connectTo returns a link to p, dialling it if needed. A different node
// answering at p's address is an error.
func (s *Socket) connectTo(ctx context.Context, p PeerInfo) (*base.Conn, error) {
	if c := s.links.use(p.ID); c != nil {
		return c, nil
	}
	if p.Addr == "" {
		return nil, fmt.Errorf("%w: no address for %s", ErrNoRoute, p.ID.Short())
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.rpcTimeout)
	defer cancel()
	c, err := s.base.Connect(ctx, p.Addr)
	if err != nil {
		return nil, err
	}
	if c.ID() != p.ID {
		return nil, fmt.Errorf("%w: %s answers at %s, not %s", ErrNoRoute, c.ID().Short(), p.Addr, p.ID.Short())
	}
	return c, nil
}

// getNeighbours asks p for its predecessor and successor list.
func (s *Socket) getNeighbours(p PeerInfo) (neighbours, error) {
	c, err := s.connectTo(s.lc.Context(), p)
	if err != nil {
		return neighbours{}, err
	}
	cl, err := s.calls.open(kindRPC, false, p.ID, protocol.NodeID{})
	if err != nil {
		return neighbours{}, err
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.GetNeighbours, 1, [][]byte{encodeNeighbours(neighbours{id: cl.id})})
	if err == nil {
		err = c.SendControl(env)
	}
	if err != nil {
		s.calls.drop(cl)
		return neighbours{}, err
	}
	t := time.NewTimer(s.cfg.rpcTimeout)
	defer t.Stop()
	select {
	case <-cl.done:
	case <-t.C:
		if s.calls.drop(cl) {
			return neighbours{}, fmt.Errorf("%w: get-neighbours from %s", ErrTimeout, p.ID.Short())
		}
		<-cl.done
	}
	if cl.err != nil {
		return neighbours{}, cl.err
	}
	return cl.nb, nil
}

// handleGetNeighbours answers a question with this node's live
// predecessor and successors, or completes this node's own call.
func (s *Socket) handleGetNeighbours(m *base.Message) {
	if len(m.Packets) != 1 || m.Sender != m.Conn.ID() {
		s.malformed(m, "get-neighbours", fmt.Errorf("%w: %d packets", protocol.ErrMalformed, len(m.Packets)))
		return
	}
	n, err := decodeNeighbours(m.Packets[0])
	if err != nil {
		s.malformed(m, "get-neighbours", err)
		return
	}
	if n.answer {
		from := m.Conn.ID()
		c := s.calls.take(n.id, func(c *call) bool { return c.kind == kindRPC && c.peer == from })
		if c == nil {
			s.ctr.late.Add(1)
			return
		}
		c.nb = n
		close(c.done)
		return
	}
	v := s.view.Load()
	ans := neighbours{id: n.id, answer: true}
	if !v.pred.ID.IsZero() && s.links.live(v.pred.ID) != nil {
		ans.pred = v.pred
	}
	for _, p := range v.succs {
		if s.links.live(p.ID) != nil {
			ans.succs = append(ans.succs, p)
		}
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.GetNeighbours, 1, [][]byte{encodeNeighbours(ans)})
	if err == nil {
		_ = m.Conn.SendControl(env)
	}
}

// stabilize runs one round of Chord's stabilize.
func (s *Socket) stabilize() {
	s.ctr.stabilizations.Add(1)
	for range s.cfg.successors + 1 {
		if s.lc.Closed() {
			return
		}
		v := s.view.Load()
		if len(v.succs) == 0 {
			s.stabilizeAlone()
			return
		}
		succ := v.succs[0]
		nb, err := s.getNeighbours(succ)
		if err != nil {
			if s.lc.Closed() {
				return
			}
			s.log.Debug("successor unreachable; trying the next", "succ", succ.ID.Short(), "err", err)
			s.nodeFailed(succ, err)
			continue
		}
		// Walk back while the successor's predecessor lies between us: a
		// node that joined between us (several, after a burst of joins).
		for range s.cfg.successors {
			x := nb.pred
			if x.ID.IsZero() || x.ID == s.id || !strictlyBetween(x.ID, s.id, succ.ID) || s.dead.has(x) {
				break
			}
			nbx, err := s.getNeighbours(x)
			if err != nil {
				s.log.Debug("successor's predecessor unreachable", "node", x.ID.Short(), "err", err)
				break
			}
			succ, nb = x, nbx
		}
		s.rmu.Lock()
		s.setSuccessorsLocked(succ, nb.succs)
		s.publishLocked()
		s.rmu.Unlock()
		s.notify(succ)
		s.connectSuccessors()
		return
	}
}

// stabilizeAlone handles a node with no successor: a predecessor that
// notified it, or else the nearest live node it still knows, becomes its
// successor (two-node rings start this way; a node whose successors all
// failed recovers this way).
func (s *Socket) stabilizeAlone() {
	v := s.view.Load()
	var pick PeerInfo
	for _, p := range v.cands {
		if s.links.live(p.ID) != nil {
			pick = p
			break
		}
	}
	if pick.ID.IsZero() {
		return
	}
	s.rmu.Lock()
	if len(s.st.succs) == 0 {
		s.setSuccessorsLocked(pick, nil)
		s.publishLocked()
	}
	s.rmu.Unlock()
	kick(s.stabWake)
}

// notify tells succ that this node might be its predecessor.
func (s *Socket) notify(succ PeerInfo) {
	c := s.links.live(succ.ID)
	if c == nil {
		return
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.ChordNotify, 1, nil)
	if err == nil {
		_ = c.SendControl(env)
	}
}

// handleNotify adopts the sender as predecessor if it is nearer than the
// current one (or the current one is gone). A node alone takes it as its
// successor too.
func (s *Socket) handleNotify(m *base.Message) {
	x := PeerInfo{ID: m.Conn.ID(), Addr: m.Conn.Peer().Addr}
	if len(m.Packets) != 0 || m.Sender != x.ID || x.Addr == "" {
		s.malformed(m, "notify", fmt.Errorf("%w: %d packets, address %q", protocol.ErrMalformed, len(m.Packets), x.Addr))
		return
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	changed := false
	if p := s.st.pred; p.ID != x.ID && (p.ID.IsZero() || s.links.live(p.ID) == nil || strictlyBetween(x.ID, p.ID, s.id)) {
		s.st.pred = x
		changed = true
		s.log.Debug("new predecessor", "pred", x.ID.Short())
	}
	if len(s.st.succs) == 0 {
		s.setSuccessorsLocked(x, nil)
		changed = true
		kick(s.stabWake)
	}
	if changed {
		s.publishLocked()
	}
}

// connectSuccessors makes sure every successor has a link (the successor
// list only helps routing over live links); one that cannot be reached is
// dropped.
func (s *Socket) connectSuccessors() {
	for _, p := range s.view.Load().succs {
		if s.lc.Closed() {
			return
		}
		if s.links.live(p.ID) != nil {
			continue
		}
		if _, err := s.connectTo(s.lc.Context(), p); err != nil && !s.lc.Closed() {
			s.log.Debug("successor unreachable", "node", p.ID.Short(), "err", err)
			s.nodeFailed(p, err)
		}
	}
}

// nodeFailed forgets a node that could not be reached. A node that could
// not even be dialled at its address (or where another node answers) is
// also remembered as dead at that address for a while, so stale successor
// lists from other nodes do not bring it back; one that only timed out (it
// may just be slow), was full, or whose link closed (it may have evicted
// us) is not.
func (s *Socket) nodeFailed(p PeerInfo, err error) {
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrConnLimit) && !errors.Is(err, errLinkClosed) {
		s.dead.add(p)
	}
	s.rmu.Lock()
	s.removeNodeLocked(p.ID)
	s.publishLocked()
	s.rmu.Unlock()
}

// checkPredecessor probes the predecessor and forgets it if it does not
// answer. A probe that timed out while frames kept arriving over the
// predecessor's link does not count: the predecessor is alive, only slow
// (a loaded machine), and forgetting it would make this node take its
// keys: a node with no live predecessor owns the keys in (prev, self] of
// whatever reaches it (next, rule 1), so a lookup for a key of the slow
// node that skipped it would be answered here, wrongly. A predecessor that
// is gone closes its link, or falls silent and is forgotten at the first
// probe, as before.
func (s *Socket) checkPredecessor() {
	p := s.view.Load().pred
	if p.ID.IsZero() {
		return
	}
	c := s.links.live(p.ID)
	var heard uint64
	if c != nil {
		heard = c.Stats().FramesIn
	}
	_, err := s.getNeighbours(p)
	if err != nil && errors.Is(err, ErrTimeout) && c != nil && s.links.live(p.ID) == c && c.Stats().FramesIn > heard {
		s.log.Debug("predecessor slow to answer but its link is alive; keeping it", "pred", p.ID.Short(), "err", err)
		return
	}
	if err != nil && !s.lc.Closed() {
		s.log.Debug("predecessor unreachable; forgetting it", "pred", p.ID.Short(), "err", err)
		s.rmu.Lock()
		if s.st.pred.ID == p.ID {
			s.st.pred = PeerInfo{}
			s.publishLocked()
		}
		s.rmu.Unlock()
	}
}

// fixFingers refreshes the next finger that needs a lookup, filling the
// entries before it that equal the successor and the entries after it
// that share its owner.
func (s *Socket) fixFingers() {
	s.rmu.Lock()
	if len(s.st.succs) == 0 {
		s.st.fingers = [IDBits]PeerInfo{}
		s.st.nextFinger = 0
		s.publishLocked()
		s.rmu.Unlock()
		return
	}
	succ := s.st.succs[0]
	i := s.st.nextFinger
	changed := false
	for i < IDBits && Between(FingerStart(s.id, i), s.id, succ.ID) {
		if s.st.fingers[i] != succ {
			s.st.fingers[i] = succ
			changed = true
		}
		i++
	}
	if i == IDBits {
		s.st.nextFinger = 0
	} else {
		s.st.nextFinger = i
	}
	if changed {
		s.publishLocked()
	}
	s.rmu.Unlock()
	if i == IDBits {
		return
	}

	start := FingerStart(s.id, i)
	s.ctr.fingerLookups.Add(1)
	ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.reqTimeout)
	res, err := s.lookup(ctx, start, false, nil)
	cancel()
	if err != nil {
		s.ctr.fingerFailures.Add(1)
		s.rmu.Lock()
		s.st.nextFinger = (i + 1) % IDBits
		s.rmu.Unlock()
		if !s.lc.Closed() {
			s.log.Debug("finger lookup failed", "i", i, "err", err)
		}
		return
	}
	// Routing uses a finger only over a live link. The answer usually
	// came over one (the owner dialled us); a node with no room left
	// does without (fewer fingers, more hops, no churn of links).
	owner := res.Owner
	if owner.ID == s.id {
		owner = PeerInfo{}
	}
	s.rmu.Lock()
	s.st.fingers[i] = owner
	j := i + 1
	if !owner.ID.IsZero() && owner.ID != start {
		for j < IDBits && Between(FingerStart(s.id, j), start, owner.ID) {
			s.st.fingers[j] = owner
			j++
		}
	}
	s.st.nextFinger = j % IDBits
	s.publishLocked()
	s.rmu.Unlock()
}

// sendLeave tells the predecessor and the successor that this node is
// leaving, with what they need to close the gap.
func (s *Socket) sendLeave() {
	v := s.view.Load()
	if len(v.succs) == 0 && v.pred.ID.IsZero() {
		return
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Leave, 1, [][]byte{encodeLeave(v.pred, v.succs)})
	if err != nil {
		return
	}
	targets := []protocol.NodeID{v.pred.ID}
	if len(v.succs) > 0 {
		targets = append(targets, v.succs[0].ID)
	}
	for i, id := range targets {
		if id.IsZero() || slices.Contains(targets[:i], id) {
			continue
		}
		if c := s.links.live(id); c != nil {
			_ = c.SendControl(env)
		}
	}
}

// handleLeave closes the gap a leaving neighbour leaves: its successors
// replace it in the successor list, its predecessor becomes ours.
func (s *Socket) handleLeave(m *base.Message) {
	leaver := m.Conn.ID()
	if len(m.Packets) != 1 || m.Sender != leaver {
		s.malformed(m, "leave", fmt.Errorf("%w: %d packets", protocol.ErrMalformed, len(m.Packets)))
		return
	}
	pred, succs, err := decodeLeave(m.Packets[0])
	if err != nil {
		s.malformed(m, "leave", err)
		return
	}
	s.log.Debug("neighbour leaving", "node", leaver.Short())
	s.ctr.leaves.Add(1)
	s.dead.add(PeerInfo{ID: leaver}) // it says so itself: at every address
	s.rmu.Lock()
	if i := slices.IndexFunc(s.st.succs, func(p PeerInfo) bool { return p.ID == leaver }); i >= 0 {
		list := slices.Concat(s.st.succs[:i], succs, s.st.succs[i+1:])
		if len(list) > 0 {
			s.setSuccessorsLocked(list[0], list[1:])
		} else {
			s.st.succs = nil
		}
	}
	if s.st.pred.ID == leaver {
		s.st.pred = PeerInfo{}
		// The leaver's predecessor comes before it: a node it names
		// between itself and us would be our predecessor already.
		if !pred.ID.IsZero() && strictlyBetween(pred.ID, s.id, leaver) && !s.dead.has(pred) {
			s.st.pred = pred
		}
	}
	s.removeNodeLocked(leaver)
	s.publishLocked()
	s.rmu.Unlock()
	kick(s.stabWake)
}
