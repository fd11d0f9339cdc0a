package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Routed unicast (docs/protocol.md §12.5): a whisper, an application
// request or an answer for a node this node has no link to travels hop by
// hop, each node sending it on to the neighbour its next-hop table names
// for the target (nexthop.go), as a whisper-type envelope with sub-flag
// Routed signed by its origin:
//
//	packets: [target node ID (16 bytes), carried sub-flag (1 byte), packet 1, …, packet n]
//
// Relays forward the envelope bytes unchanged (only the hop byte grows), so
// the target checks the origin's signature as for any routed message. Every
// node sheds copies it has seen by (origin, seq), as for broadcasts, so a
// message that meets a loop or a flooded copy is handled once; the hop
// limit bounds how far it goes. A relay that knows no next hop (its entry
// went with a link) sends the envelope on to all its other neighbours, who
// route it by their own tables: a flood that ends where a table knows the
// way.

// routedCarries says which sub-flags a routed message may carry.
func routedCarries(sub flags.Flag) bool {
	return sub == flags.Whisper || sub == flags.AppRequest || sub == flags.AppResponse
}

// parseRouted splits a routed message's packets into its target, the
// sub-flag it carries and the carried packets (which alias the input).
func parseRouted(packets [][]byte) (target protocol.NodeID, sub flags.Flag, rest [][]byte, err error) {
	if len(packets) < 3 {
		return target, 0, nil, fmt.Errorf("%w: routed message with %d packets, want at least 3", protocol.ErrMalformed, len(packets))
	}
	if len(packets[0]) != len(target) {
		return target, 0, nil, fmt.Errorf("%w: routed target of %d bytes", protocol.ErrMalformed, len(packets[0]))
	}
	if len(packets[1]) != 1 || !routedCarries(flags.Flag(packets[1][0])) {
		return target, 0, nil, fmt.Errorf("%w: routed message carries %x", protocol.ErrMalformed, packets[1])
	}
	copy(target[:], packets[0])
	return target, flags.Flag(packets[1][0]), packets[2:], nil
}

// routedHopLimit is the hop limit of this node's routed messages: the
// mesh's, but at least 2, so that every node verifies them
// (docs/protocol.md §5.3) whatever WithHopLimit says.
func (s *Socket) routedHopLimit() uint8 { return max(s.cfg.hopLimit, 2) }

// sendRouted sends packets with sub-flag sub to node to as a routed
// message through neighbour via. It waits for room in via's queue as any
// whisper does.
func (s *Socket) sendRouted(ctx context.Context, to protocol.NodeID, via *base.Conn, sub flags.Flag, packets [][]byte) error {
	all := make([][]byte, 0, len(packets)+2)
	all = append(all, to[:], []byte{byte(sub)})
	all = append(all, packets...)
	env, id, err := s.base.NewEnvelope(flags.Whisper, flags.Routed, s.routedHopLimit(), all)
	if err != nil {
		return err
	}
	via, err = s.sendOrReplaced(via, func(c *base.Conn) error { return c.SendEnvelope(ctx, 0, env) })
	if err != nil {
		if s.lc.Closed() {
			return ErrClosed
		}
		return err
	}
	s.ctr.routedSent.Add(1)
	if s.cfg.tracer != nil {
		s.cfg.tracer.Trace(TraceEvent{Kind: TraceRoutedRelay, ID: id, Sender: s.ID(), Peer: via.ID()})
	}
	return nil
}

// nextHop returns the neighbour to send a routed message for node to
// through, other than the one it came from: the node itself if it is a
// neighbour, else the table's entry; nil if neither.
func (s *Socket) nextHop(to, from protocol.NodeID) *base.Conn {
	if c, ok := s.base.Conn(to); ok && c.Err() == nil {
		return c
	}
	if c := s.hops.lookup(to); c != nil && c.ID() != from {
		return c
	}
	return nil
}

// routedPrefilter is dropDuplicate for routed messages: it sheds, before
// their signature is checked, copies this node has seen or sent, stale
// ones and those past their hop limit, and charges the rest to the
// neighbour's flood budget (a neighbour sending routed messages costs
// this node as much as one sending broadcasts).
func (s *Socket) routedPrefilter(m *base.Message) bool {
	from := m.Conn.ID()
	if m.Sender == s.ID() {
		s.ctr.routedDuplicates.Add(1)
		return true
	}
	now := time.Now().UnixNano()
	if s.outOfBounds(m, from, now) {
		return true
	}
	switch s.seen.peek(m.Sender, m.Seq, m.HopLimit-m.Hops) {
	case seenDup, seenBehind, seenBetter:
		s.ctr.routedDuplicates.Add(1)
		return true
	}
	l := s.linkOf(m.Conn)
	if wait := l.charge(now, m.Hops-1, len(m.Envelope()), &s.cfg); wait > 0 && !s.overBudget(l, m, now, wait) {
		return true
	}
	return false
}

// handleRouted takes a routed message whose signature is verified: the
// target delivers what it carries; any other node sends it on.
func (s *Socket) handleRouted(m *base.Message) {
	if m.Type != flags.Whisper {
		return // a broadcast with this sub-flag means nothing
	}
	target, sub, rest, err := parseRouted(m.Packets)
	if err != nil {
		s.ctr.routedMalformed.Add(1)
		s.log.Debug("malformed routed message", "sender", m.Sender.Short(), "err", err)
		return
	}
	from := m.Conn.ID()
	now := time.Now().UnixNano()
	if s.outOfBounds(m, from, now) {
		return
	}
	if s.seen.check(m.Sender, m.Seq, m.HopLimit-m.Hops, m.Time.UnixNano(), now, s.linkOf(m.Conn).no) != seenNew {
		s.ctr.routedDuplicates.Add(1)
		return
	}
	// The way back to its origin, whoever it is for.
	s.learnPath(m)
	if target == s.ID() {
		s.ctr.routedDelivered.Add(1)
		s.trace(TraceRoutedDeliver, m, from)
		s.deliverCarried(m, sub, copyPackets(rest))
		return
	}
	if m.Hops >= m.HopLimit {
		s.ctr.routedDrops.Add(1)
		s.trace(TraceHopLimit, m, from)
		return
	}
	env := m.Envelope()
	if c := s.nextHop(target, from); c != nil {
		c, err := s.forward(c, m, env)
		if err != nil {
			s.ctr.routedDrops.Add(1)
			s.trace(TraceRelayDrop, m, c.ID())
			return
		}
		s.ctr.routedRelayed.Add(1)
		s.trace(TraceRoutedRelay, m, c.ID())
		return
	}
	// No next hop: on to every other neighbour, whose tables may know.
	s.ctr.routedFallbacks.Add(1)
	s.trace(TraceRoutedFallback, m, from)
	for _, c := range *s.neighbours.Load() {
		if to := c.ID(); to == from || to == m.Sender {
			continue
		}
		if _, err := s.forward(c, m, env); err != nil {
			s.ctr.routedDrops.Add(1)
			continue
		}
		s.ctr.routedRelayed.Add(1)
	}
}

// deliverCarried hands what a routed message carried to this node's
// handlers, as the whisper, request or answer it stands for.
func (s *Socket) deliverCarried(m *base.Message, sub flags.Flag, packets [][]byte) {
	switch sub {
	case flags.Whisper:
		s.injectAsWhisper(m, flags.Whisper, packets, nil)
	case flags.AppRequest, flags.AppResponse:
		s.takeApp(m, sub, packets, true)
	}
}

// sendAway sends a whisper (sub-flag sub) to node to, which is not a
// neighbour, without waiting for a search: routed by the table if it
// names a next hop, else flooded (whisperThroughMesh). It returns the
// neighbour a routed message went through (nil if it was flooded), and
// starts a background dial to the node if that may help later.
func (s *Socket) sendAway(ctx context.Context, to protocol.NodeID, sub flags.Flag, packets [][]byte, addrs []string) (*base.Conn, error) {
	defer s.dialBehind(to, addrs)
	if via := s.nextHop(to, protocol.NodeID{}); via != nil {
		err := s.sendRouted(ctx, to, via, sub, packets)
		if err == nil || !errors.Is(err, ErrClosed) || s.lc.Closed() {
			return via, err
		}
		// The link closed under us: its entries are gone; flood instead.
		s.hops.forget(to, via)
	}
	s.ctr.routedNoRoute.Add(1)
	return nil, s.whisperThroughMesh(ctx, to, sub, packets)
}

// dialBehind dials node to in the background, as an optimisation: with
// discovery on, an address known for it (or given) and a free outgoing
// slot, at most one dial per node and maxConcurrentAnswers in all, and
// not again within the longest re-dial back-off (WithMaintenance, 30 s)
// after one failed: a node behind a NAT is not dialled for every message
// sent to it. Where no address is known or the dial fails, it asks for a
// hole punch (punchLater). The message that prompted it does not wait.
func (s *Socket) dialBehind(to protocol.NodeID, addrs []string) {
	if !s.cfg.discovery || s.lc.Closed() {
		return
	}
	if len(addrs) == 0 {
		addrs = s.known.addrs(to)
	}
	if len(addrs) == 0 {
		// Nothing to dial (a node behind a NAT advertises nothing
		// dialable): punch through a shared neighbour instead.
		s.punchLater(to)
		return
	}
	if s.slots.free() <= 0 {
		return
	}
	if _, ok := s.base.Conn(to); ok {
		return
	}
	if !s.routes.startDial(to, time.Now().UnixNano()) {
		return
	}
	started := s.lc.Go(func() {
		ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.dialTimeout)
		defer cancel()
		ok := s.dialAddrs(ctx, to, addrs) != nil
		if ok {
			s.ctr.routedDials.Add(1)
		} else {
			s.punchLater(to) // a NAT in the way, perhaps
		}
		now := time.Now()
		s.routes.endDial(to, ok, now.UnixNano(), now.Add(s.cfg.backoffMax).UnixNano())
	})
	if !started {
		s.routes.endDial(to, true, 0, 0)
	}
}
