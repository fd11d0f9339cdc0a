package chord

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Routing is recursive: a message for a key travels hop by hop over links
// the nodes already hold, each node choosing the next hop from its own
// tables, and the owner answers the requester directly (docs/chord.md §3).
// A relay forwards the envelope bytes unchanged (only the hop byte grows).

// next decides where a message for key goes from this node. prev is the
// node it came from (zero if this node originated it). It returns local if
// this node owns the key, otherwise the link of the next hop; if no
// suitable node has a live link, c is nil and alt is the best node to dial
// (zero if the node knows none).
//
// The rules, in order:
//  1. key == self, or key in (low, self] where low is the nearer of the
//     live predecessor and prev: the key is ours. prev counts because a
//     node only ever sends a key in (prev, us] to us as its owner (rule 3;
//     a node that forwards by fingers sends keys beyond us), so a node
//     whose predecessor is unknown or just died still accepts its keys.
//     prev is ignored when it is the key itself: a joining node asking for
//     the owner of its own ID, which is not on the ring yet.
//  2. key in (prev, pred]: the previous hop took us for the owner, but we
//     know a nearer predecessor (it joined since); hand it back to it.
//  3. key in (self, s] for the first live successor s that follows it: s
//     owns it (the successor list gives the owner straight away, not only
//     for the first successor).
//  4. the closest preceding live node of the key among fingers, successors
//     and predecessor.
//  5. a node alone on its ring owns every key.
func (s *Socket) next(key, prev protocol.NodeID) (local bool, c *base.Conn, alt PeerInfo) {
	self := s.id
	if key == self {
		return true, nil, alt
	}
	v := s.view.Load()
	var predConn *base.Conn
	pred := v.pred.ID
	if !pred.IsZero() {
		if predConn = s.links.live(pred); predConn == nil {
			pred = protocol.NodeID{}
		}
	}
	low := pred
	if !prev.IsZero() && prev != self && prev != key && (low.IsZero() || distance(prev, self).cmp(distance(low, self)) < 0) {
		low = prev
	}
	if !low.IsZero() && Between(key, low, self) {
		return true, nil, alt
	}
	if predConn != nil && !prev.IsZero() && prev != pred && Between(key, prev, pred) {
		return false, predConn, alt
	}
	for _, p := range v.succs {
		if !Between(key, self, p.ID) {
			continue
		}
		if c := s.links.use(p.ID); c != nil {
			return false, c, alt
		}
		if alt.ID.IsZero() {
			alt = p
		}
	}
	for i := len(v.cands) - 1; i >= 0; i-- {
		p := v.cands[i]
		if !strictlyBetween(p.ID, self, key) {
			continue
		}
		if c := s.links.use(p.ID); c != nil {
			return false, c, alt
		}
		if alt.ID.IsZero() {
			alt = p
		}
	}
	if len(v.succs) == 0 {
		return true, nil, PeerInfo{}
	}
	return false, nil, alt
}

// handle is chord's built-in handler. It routes, answers and consumes
// chord's own messages; a routed message that reaches its owner continues,
// header stripped and Route set, to the user handlers and Recv. Other
// library sub-flags are dropped.
func (s *Socket) handle(m *base.Message) bool {
	<-s.ready
	s.links.touch(m.Conn)
	switch m.Flag {
	case flags.Forward, flags.Request, flags.FindSuccessor:
		return s.handleRouted(m)
	case flags.Response:
		s.handleResponse(m)
		return true
	case flags.GetNeighbours:
		s.handleGetNeighbours(m)
		return true
	case flags.ChordNotify:
		s.handleNotify(m)
		return true
	case flags.Leave:
		s.handleLeave(m)
		return true
	case flags.Broadcast, flags.Whisper:
		return false
	}
	if m.Flag.IsReserved() {
		s.log.Debug("dropping message with a library flag chord does not use", "flag", m.Flag, "sender", m.Sender.Short())
		return true
	}
	return false
}

// malformed counts and logs a message dropped as malformed.
func (s *Socket) malformed(m *base.Message, what string, err error) {
	s.ctr.malformed.Add(1)
	args := []any{"flag", m.Flag, "sender", m.Sender.Short(), "err", err}
	if m.Conn != nil {
		args = append(args, "link", m.Conn.ID().Short())
	}
	s.warn("dropping malformed "+what, args...)
}

// warn logs a dropped message or a bound that was hit: at Warn at most once
// a second per node, at Debug otherwise (a flood of them cannot flood the
// log; the counters in Stats hold the exact figures).
func (s *Socket) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last >= int64(time.Second) && s.lastWarn.CompareAndSwap(last, now) {
		s.log.Warn(msg+" (further drops this second are only counted)", args...)
		return
	}
	s.log.Debug(msg, args...)
}

// handleRouted delivers a routed message here if this node owns its key,
// and forwards it one hop otherwise.
func (s *Socket) handleRouted(m *base.Message) bool {
	if m.Type != flags.Whisper || len(m.Packets) == 0 {
		s.malformed(m, "routed message", fmt.Errorf("%w: type %s, %d packets", protocol.ErrMalformed, m.Type, len(m.Packets)))
		return true
	}
	h, err := decodeRouteHeader(m.Packets[0])
	if err == nil && m.Flag == flags.FindSuccessor && (h.id == 0 || len(m.Packets) != 1) {
		err = fmt.Errorf("%w: find-successor with request ID %d and %d packets", protocol.ErrMalformed, h.id, len(m.Packets))
	}
	if err == nil && m.Flag == flags.Request && h.id == 0 {
		err = fmt.Errorf("%w: request without an ID", protocol.ErrMalformed)
	}
	if err == nil && h.bounces == 0 && h.origin != m.Sender {
		// On its first leg a routed message comes from its origin; only
		// a bounced leg is sent by another node (the bouncer).
		err = fmt.Errorf("%w: origin %s is not the sender %s", protocol.ErrMalformed, h.origin.Short(), m.Sender.Short())
	}
	if err != nil {
		s.malformed(m, "routed message", err)
		return true
	}
	if m.Hops > m.HopLimit {
		s.ctr.hopLimit.Add(1)
		s.warn("dropping routed message past its hop limit", "hops", m.Hops, "limit", m.HopLimit, "origin", h.origin.Short())
		return true
	}
	local, c, alt := s.next(h.key, m.Conn.ID())
	if local {
		return s.deliverRouted(m, h)
	}
	if m.Hops >= m.HopLimit {
		s.ctr.hopLimit.Add(1)
		s.warn("routed message reached its hop limit", "limit", m.HopLimit, "key", h.key.Short(), "origin", h.origin.Short())
		s.answerFailure(h, int(h.prior)+int(m.Hops), fmt.Sprintf("hop limit %d reached at %s", m.HopLimit, s.id.Short()))
		return true
	}
	if c == nil {
		s.forwardLater(alt, m.Hops, m.Envelope(), &h)
		return true
	}
	if err := c.Forward(m.Hops, m.Envelope()); err != nil {
		s.ctr.noRoute.Add(1)
		if !errors.Is(err, ErrClosed) {
			s.answerFailure(h, int(h.prior)+int(m.Hops), "forward: "+err.Error())
		}
		return true
	}
	s.ctr.forwarded.Add(1)
	return true
}

// deliverRouted handles a routed message at its owner: a lookup is
// answered here; a request or one-way message goes on to the user
// handlers with its Route.
func (s *Socket) deliverRouted(m *base.Message, h routeHeader) bool {
	hops := int(h.prior) + int(m.Hops)
	if m.Flag == flags.FindSuccessor {
		// The answer names this node, the owner, and nothing else.
		s.answer(context.Background(), answerToOf(h), statusOK, hops, nil, false)
		return true
	}
	s.ctr.delivered.Add(1)
	m.Packets = m.Packets[1:]
	// The envelope's sender is proven (its signature); the origin the
	// route header names is only if it is that sender (a bounced message
	// names the requester it was bounced for).
	m.Proven = m.Proven && h.origin == m.Sender
	m.Sender = h.origin
	m.Route = &Route{
		Key:       h.key,
		Origin:    PeerInfo{ID: h.origin, Addr: h.addr},
		RequestID: h.id,
		Hops:      hops,
		Bounces:   int(h.bounces),
		direct:    h.direct,
	}
	return false
}

// answerFailure tells a requester that its request could not go on.
func (s *Socket) answerFailure(h routeHeader, hops int, reason string) {
	if h.id == 0 {
		return
	}
	s.answer(context.Background(), answerToOf(h), statusNoRoute, hops, [][]byte{reasonText(reason)}, false)
}

// answerTo is what a node needs to answer a request: the requester, whether
// it has room for a new link, and what the answer is bound to.
type answerTo struct {
	origin  PeerInfo        // the requester and its address
	direct  bool            // the requester has room for a new link
	id      uint64          // the request ID
	key     protocol.NodeID // the key the request reached this node for
	bounces uint8           // times it was bounced on the way
}

// answerToOf is the answerTo of a routed message's header.
func answerToOf(h routeHeader) answerTo {
	return answerTo{origin: PeerInfo{ID: h.origin, Addr: h.addr}, direct: h.direct, id: h.id, key: h.key, bounces: h.bounces}
}

// answer sends a response to a requester, naming this node as the one
// that answers (the owner, for a lookup). Over this node's own link to the
// requester — one it holds, or one a courier dials — it goes unsigned (the
// link authenticates it); along the ring, where other nodes relay it, it
// carries this node's signature (checkAnswer). With block, a full send
// queue is waited for under ctx (base's Block policy); without, it drops.
func (s *Socket) answer(ctx context.Context, a answerTo, status uint8, hops int, packets [][]byte, block bool) error {
	if a.origin.ID == s.id {
		s.resolveLocal(a.id, status, hops, packets)
		return nil
	}
	ans := &answerParts{
		h:       responseHeader{to: a.origin.ID, id: a.id, status: status, hops: uint8(min(hops, 255)), bounces: a.bounces, key: a.key, from: s.self()},
		packets: packets,
	}
	env, err := s.answerEnvelope(ans, false)
	if err != nil {
		return err
	}
	s.ctr.responses.Add(1)
	if c := s.links.use(ans.h.to); c != nil {
		return sendOn(ctx, c, env, block)
	}
	return s.sendFar(ans.h.to, a.origin.Addr, a.direct, env, ans)
}

// answerParts is an answer as answer built it, kept to be signed if it
// has to go along the ring after all.
type answerParts struct {
	h       responseHeader // unsigned
	packets [][]byte
}

// detach copies the packets, for a courier that sends the answer after
// the caller (a handler that may reuse its buffers) has returned.
func (a *answerParts) detach() *answerParts {
	cp := make([][]byte, len(a.packets))
	for i, p := range a.packets {
		cp[i] = append([]byte(nil), p...)
	}
	return &answerParts{h: a.h, packets: cp}
}

// answerEnvelope encodes a response envelope for a, signed or not.
func (s *Socket) answerEnvelope(a *answerParts, signed bool) ([]byte, error) {
	h := a.h
	if signed {
		s.signAnswer(&h, a.packets)
		s.ctr.signedAnswers.Add(1)
	}
	all := make([][]byte, 0, len(a.packets)+1)
	all = append(all, encodeResponseHeader(h))
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Response, s.cfg.hopLimit, append(all, a.packets...))
	return env, err
}

// sendOn sends an envelope this node created over c: with block, waiting
// for room in a full queue under ctx; without, dropping.
func sendOn(ctx context.Context, c *base.Conn, env []byte, block bool) error {
	if block {
		return c.SendEnvelope(ctx, 0, env)
	}
	return c.Forward(0, env)
}

// sendTo sends an envelope addressed to node to (a reply to a one-way
// message, routable towards to's ID): over the link to it, or as sendFar.
func (s *Socket) sendTo(ctx context.Context, to protocol.NodeID, addr string, direct bool, env []byte, block bool) error {
	if c := s.links.use(to); c != nil {
		return sendOn(ctx, c, env, block)
	}
	return s.sendFar(to, addr, direct, env, nil)
}

// sendFar sends an envelope addressed to node to, which this node has no
// link to: over a new link a courier dials (never on the caller's
// goroutine) if both ends have room for it (direct: the requester said it
// has); otherwise along the ring. A requester the ring does not lead to (a
// node still joining) is dialled in any case. An answer (ans, of which env
// is the unsigned envelope) is signed before it goes along the ring.
func (s *Socket) sendFar(to protocol.NodeID, addr string, direct bool, env []byte, ans *answerParts) error {
	if addr != "" {
		direct = direct && s.hasRoom()
		if !direct {
			direct, _, _ = s.next(to, protocol.NodeID{})
		}
		if direct {
			if ans != nil {
				ans = ans.detach()
			}
			if s.hire(courierJob{kind: jobAnswer, to: PeerInfo{ID: to, Addr: addr}, env: env, ans: ans}) {
				return nil
			}
		}
	}
	s.ctr.replyFallbacks.Add(1)
	if ans != nil {
		var err error
		if env, err = s.answerEnvelope(ans, true); err != nil {
			return err
		}
	}
	return s.ringSend(to, env, false)
}

// ringSend routes an envelope addressed to node to along the ring, towards
// its ID (which it owns while it is on the ring). With dial (on a courier),
// a next hop without a link is dialled here; otherwise by a courier.
func (s *Socket) ringSend(to protocol.NodeID, env []byte, dial bool) error {
	local, c, alt := s.next(to, protocol.NodeID{})
	switch {
	case local:
		return fmt.Errorf("%w: %s is not on the ring", ErrNoRoute, to.Short())
	case c != nil:
		return c.Forward(0, env)
	case alt.ID.IsZero():
		return fmt.Errorf("%w: no link towards %s", ErrNoRoute, to.Short())
	case dial:
		ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.rpcTimeout)
		defer cancel()
		c, err := s.connectTo(ctx, alt)
		if err != nil {
			return fmt.Errorf("%w: towards %s: %w", ErrNoRoute, to.Short(), err)
		}
		return c.Forward(0, env)
	case s.hire(courierJob{kind: jobForward, to: alt, env: env}):
		return nil
	}
	return fmt.Errorf("%w: no link towards %s and the couriers are busy", ErrNoRoute, to.Short())
}

// forwardLater has a courier dial the next hop of a routed message when no
// suitable node has a live link (links are evicted, or closed by the other
// side's cap). A request that cannot go on gets a failure answer.
func (s *Socket) forwardLater(next PeerInfo, hops uint8, env []byte, h *routeHeader) {
	if next.ID.IsZero() || !s.hire(courierJob{kind: jobForward, to: next, env: env, hops: hops, hdr: h}) {
		s.ctr.noRoute.Add(1)
		s.warn("no link towards a key and no courier free; message dropped", "next", next.ID.Short())
		if h != nil {
			s.answerFailure(*h, int(h.prior)+int(hops), "no live link towards the key at "+s.id.Short())
		}
	}
}

// jobKind says what a courier does when its dial fails.
type jobKind uint8

const (
	jobAnswer  jobKind = iota + 1 // an answer for a requester: fall back to the ring
	jobForward                    // a routed message for its next hop: fail the request
)

// courierJob is an envelope for a node this node has no link to.
type courierJob struct {
	kind jobKind
	to   PeerInfo
	env  []byte
	hops uint8        // hop byte to send with it
	hdr  *routeHeader // jobForward of a routed message: whom to tell if it fails
	ans  *answerParts // jobAnswer of a response: signed for the ring if the dial fails
}

// hasRoom reports whether this node may open a link that is not needed
// for routing to work (to answer a requester directly, to a finger) without
// pushing another out.
func (s *Socket) hasRoom() bool { return s.links.len() < s.cfg.maxLinks }

// hire queues a job for the couriers without waiting; false if they are
// all busy and the queue is full.
func (s *Socket) hire(j courierJob) bool {
	select {
	case s.courier <- j:
		return true
	default:
		return false
	}
}

// courierLoop dials nodes that a message must reach but that this node has
// no link to, so that readers never wait for a dial.
func (s *Socket) courierLoop() {
	for {
		select {
		case <-s.lc.Closing():
			return
		case j := <-s.courier:
			s.deliverJob(j)
		}
	}
}

func (s *Socket) deliverJob(j courierJob) {
	ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.rpcTimeout)
	c, err := s.connectTo(ctx, j.to)
	cancel()
	if err == nil {
		if j.kind == jobAnswer {
			s.ctr.replyDials.Add(1)
		}
		if err = c.Forward(j.hops, j.env); err == nil {
			if j.kind == jobForward {
				s.ctr.forwarded.Add(1)
			}
			return
		}
	}
	if s.lc.Closed() {
		return
	}
	switch j.kind {
	case jobAnswer:
		s.ctr.replyFallbacks.Add(1)
		env := j.env
		if j.ans != nil {
			if env, err = s.answerEnvelope(j.ans, true); err != nil {
				s.ctr.replyFailures.Add(1)
				return
			}
		}
		if err := s.ringSend(j.to.ID, env, true); err != nil {
			s.ctr.replyFailures.Add(1)
			s.log.Debug("answer undeliverable", "to", j.to.ID.Short(), "addr", j.to.Addr, "err", err)
		}
	case jobForward:
		s.ctr.noRoute.Add(1)
		s.log.Debug("next hop unreachable", "node", j.to.ID.Short(), "err", err)
		if j.hdr != nil {
			s.answerFailure(*j.hdr, int(j.hdr.prior)+int(j.hops), fmt.Sprintf("next hop %s unreachable from %s", j.to.ID.Short(), s.id.Short()))
		}
	}
}

// handleResponse completes a pending call, or routes the response on
// towards its requester.
func (s *Socket) handleResponse(m *base.Message) {
	if m.Type != flags.Whisper || len(m.Packets) == 0 {
		s.malformed(m, "response", fmt.Errorf("%w: type %s, %d packets", protocol.ErrMalformed, m.Type, len(m.Packets)))
		return
	}
	h, err := decodeResponseHeader(m.Packets[0])
	if err != nil {
		s.malformed(m, "response", err)
		return
	}
	if h.to != s.id {
		local, c, alt := s.next(h.to, m.Conn.ID())
		switch {
		case local || (c == nil && alt.ID.IsZero()):
			s.ctr.replyFailures.Add(1)
			s.log.Debug("response for a node not on the ring dropped", "to", h.to.Short())
		case m.Hops >= m.HopLimit:
			s.ctr.hopLimit.Add(1)
		case c == nil:
			s.forwardLater(alt, m.Hops, m.Envelope(), nil)
		default:
			if c.Forward(m.Hops, m.Envelope()) == nil {
				s.ctr.forwarded.Add(1)
			}
		}
		return
	}
	packets := m.Packets[1:]
	c := s.calls.peek(h.id)
	if c != nil {
		if err := checkAnswer(c, &h, packets, m); err != nil {
			s.ctr.badAnswers.Add(1)
			args := []any{"id", h.id, "names", h.from.ID.Short(), "sender", m.Sender.Short(), "err", err}
			if m.Conn != nil {
				args = append(args, "link", m.Conn.ID().Short())
			}
			s.warn("dropping an answer its pending call cannot accept", args...)
			return
		}
		c = s.calls.take(h.id, func(x *call) bool { return x == c })
	}
	if c == nil {
		s.ctr.late.Add(1)
		s.log.Debug("late, duplicate or unexpected answer dropped", "id", h.id, "from", h.from.ID.Short())
		return
	}
	m.Packets = packets
	m.Sender = h.from.ID
	m.Route = &Route{RequestID: h.id, Hops: int(h.hops)}
	c.msg, c.status, c.hops = m, h.status, int(h.hops)
	if c.kind == kindLookup && h.status == statusOK {
		c.owner = h.from
	}
	if h.status != statusOK && len(packets) > 0 {
		c.reason = string(packets[0])
	}
	close(c.done)
}

// resolveLocal completes a call this node answered itself (a request for a
// key it owns).
func (s *Socket) resolveLocal(id uint64, status uint8, hops int, packets [][]byte) {
	c := s.calls.take(id, func(c *call) bool { return c.kind != kindRPC })
	if c == nil {
		s.ctr.late.Add(1)
		return
	}
	cp := make([][]byte, len(packets))
	for i, p := range packets {
		cp[i] = append([]byte(nil), p...)
	}
	c.msg = &base.Message{
		Type:    flags.Whisper,
		Flag:    flags.Response,
		Sender:  s.id,
		Time:    time.Now(),
		Packets: cp,
		Route:   &Route{RequestID: id, Hops: hops},
	}
	c.status, c.hops = status, hops
	if c.kind == kindLookup && status == statusOK {
		c.owner = s.self()
	}
	if status != statusOK && len(cp) > 0 {
		c.reason = string(cp[0])
	}
	close(c.done)
}

// reply is chord's base.ReplyFunc, behind Message.Reply: a request is
// answered to its requester (directly, however it travelled); any other
// message gets a one-way message back to its sender.
func (s *Socket) reply(ctx context.Context, m *base.Message, packets [][]byte) error {
	<-s.ready
	if s.lc.Closed() {
		return ErrClosed
	}
	r, _ := m.Route.(*Route)
	if r != nil && r.RequestID != 0 && r.Origin.ID != (protocol.NodeID{}) {
		a := answerTo{origin: r.Origin, direct: r.direct, id: r.RequestID, key: r.Key, bounces: uint8(min(r.Bounces, MaxBounces))}
		return s.answer(ctx, a, statusOK, r.Hops, packets, true)
	}
	to := m.Sender
	addr := ""
	if r != nil {
		addr = r.Origin.Addr
	} else if m.Conn != nil && m.Conn.ID() == to {
		addr = m.Conn.Peer().Addr
	}
	if to == s.id {
		return s.SendTo(ctx, to, packets...)
	}
	direct := r == nil || r.direct
	env, err := s.routedEnvelope(flags.Forward, routeHeader{key: to, origin: s.id, addr: s.addr, direct: s.hasRoom()}, s.cfg.hopLimit, packets)
	if err != nil {
		return err
	}
	return s.sendTo(ctx, to, addr, direct, env, true)
}

// routedEnvelope encodes a routed message: header packet, then packets.
func (s *Socket) routedEnvelope(sub flags.Flag, h routeHeader, hopLimit uint8, packets [][]byte) ([]byte, error) {
	all := make([][]byte, 0, len(packets)+1)
	all = append(all, encodeRouteHeader(h))
	all = append(all, packets...)
	env, _, err := s.base.NewEnvelope(flags.Whisper, sub, hopLimit, all)
	return env, err
}
