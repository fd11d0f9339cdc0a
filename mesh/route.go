package mesh

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Route requests find a node this node is not connected to and knows no
// next hop for (py2p's request/response): the requester floods a Request
// naming the target and carrying its own record; the target answers over
// a link to the requester if it has one, else floods the answer at once,
// and dials the requester in the background (discovery on, a free
// outgoing slot) as an optimisation. The flooded answer teaches every
// node's next-hop table the way to the target (nexthop.go), so the
// requester then sends routed messages (routed.go), or over the link the
// target dialled.
//
// Request packets:  [request ID (8 bytes BE), target node ID (16), requester's record]
// Response packets: [request ID (8 bytes BE), target node ID (16), target's record]
// Forward packets:  [target node ID (16), the whisper's packets...]
//
// Addresses travel only in the records (protocol.Record), signed by the
// node they name, so no relay can change where the answer is dialled.

// maxConcurrentAnswers bounds the goroutines flooding route answers, and
// the background dials (dialBehind).
const maxConcurrentAnswers = 16

type pendingRoute struct {
	target protocol.NodeID
	done   chan struct{}
	once   sync.Once
	addrs  []string // the target's, from its record
}

// router holds the route requests in flight, bounded; each is removed by
// the call that made it when it ends, so nothing outlives its timeout.
type router struct {
	mu      sync.Mutex
	pending map[uint64]*pendingRoute
	next    uint64
	max     int
	answers chan struct{}                // semaphore for answer goroutines
	dialing map[protocol.NodeID]struct{} // background dials (dialBehind), at most maxConcurrentAnswers
	failed  map[protocol.NodeID]int64    // background dials that failed: not again before (Unix ns)
}

// maxFailedDials bounds the memory of failed background dials.
const maxFailedDials = 1024

func newRouter(max int) *router {
	return &router{
		pending: make(map[uint64]*pendingRoute),
		next:    uint64(time.Now().UnixNano()),
		max:     max,
		answers: make(chan struct{}, maxConcurrentAnswers),
		dialing: make(map[protocol.NodeID]struct{}),
		failed:  make(map[protocol.NodeID]int64),
	}
}

// startDial claims the background dial to node to; false if one is in
// progress already, too many are, or one failed less than the back-off
// ago.
func (r *router) startDial(to protocol.NodeID, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.dialing[to]; ok || len(r.dialing) >= maxConcurrentAnswers || r.failed[to] > now {
		return false
	}
	r.dialing[to] = struct{}{}
	return true
}

// endDial ends the background dial to node to; if it failed, no other
// starts before retry (Unix ns). The memory of failures is bounded: past
// it, expired ones are swept, and a failure that still finds no room is
// forgotten (the node may be dialled again sooner).
func (r *router) endDial(to protocol.NodeID, ok bool, now, retry int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.dialing, to)
	if ok {
		delete(r.failed, to)
		return
	}
	if len(r.failed) >= maxFailedDials {
		for id, until := range r.failed {
			if until <= now {
				delete(r.failed, id)
			}
		}
	}
	if len(r.failed) < maxFailedDials {
		r.failed[to] = retry
	}
}

func (r *router) open(target protocol.NodeID) (uint64, *pendingRoute, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= r.max {
		return 0, nil, fmt.Errorf("%w: %d in flight", ErrTooManyRequests, r.max)
	}
	r.next++
	p := &pendingRoute{target: target, done: make(chan struct{})}
	r.pending[r.next] = p
	return r.next, p, nil
}

func (r *router) close(id uint64) {
	r.mu.Lock()
	delete(r.pending, id)
	r.mu.Unlock()
}

// awaits reports whether request id, for target, is in flight.
func (r *router) awaits(id uint64, target protocol.NodeID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pending[id]
	return ok && p.target == target
}

// resolve completes a pending request; late or duplicate answers are dropped.
func (r *router) resolve(id uint64, target protocol.NodeID, addrs []string) bool {
	r.mu.Lock()
	p, ok := r.pending[id]
	r.mu.Unlock()
	if !ok || p.target != target {
		return false
	}
	p.once.Do(func() {
		p.addrs = addrs
		close(p.done)
	})
	return true
}

func (r *router) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending {
		p.once.Do(func() { close(p.done) })
	}
}

func (r *router) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// route searches for node to, which is neither a neighbour nor in the
// next-hop table: it floods a route request and waits for the answer,
// which teaches the table the way to the target (a flooded answer) or
// comes over a link the target dialled. It returns the addresses of the
// target's record, for a background dial. It does not dial itself: a
// direct link is an optimisation, never a precondition, and a dial to an
// address that does not answer would hold the message up. It fails with
// ErrNoRoute when the node does not answer in time (WithRouteTimeout).
func (s *Socket) route(ctx context.Context, to protocol.NodeID) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.routeTimeout)
	defer cancel()
	stop := context.AfterFunc(s.lc.Context(), cancel)
	defer stop()

	id, p, err := s.routes.open(to)
	if err != nil {
		return nil, err
	}
	defer s.routes.close(id)
	s.ctr.routeRequests.Add(1)
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], id)
	if err := s.floodControl(ctx, flags.Request, idb[:], to[:], s.rec.Load().Bytes()); err != nil {
		s.ctr.routeFailures.Add(1)
		if s.lc.Closed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrNoRoute, to, err)
	}
	select {
	case <-p.done:
		if s.lc.Closed() {
			s.ctr.routeFailures.Add(1)
			return nil, ErrClosed
		}
		return p.addrs, nil
	case <-ctx.Done():
		s.ctr.routeFailures.Add(1)
		if s.lc.Closed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: no answer from %s within %v: %w", ErrNoRoute, to, s.cfg.routeTimeout, ctx.Err())
	}
}

// dialAddrs dials the addresses in order, each inside an outgoing slot,
// until one reaches node to, and returns that connection; nil if none
// does, no slot is free or ctx ends.
func (s *Socket) dialAddrs(ctx context.Context, to protocol.NodeID, addrs []string) *base.Conn {
	for _, a := range addrs {
		c, reserved, err := s.dialAuto(ctx, a)
		if err == nil && c != nil && c.ID() == to {
			return c
		}
		if !reserved || ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// whisperThroughMesh sends a whisper to a node this node has no link to as
// a Forward broadcast: packets [target node ID, packets...], flooded by the
// normal rules and delivered only at the target (handleForward).
// An application request or answer (sub) travels the same way, as a
// broadcast with its own sub-flag (handleApp).
func (s *Socket) whisperThroughMesh(ctx context.Context, to protocol.NodeID, sub flags.Flag, packets [][]byte) error {
	fwd := make([][]byte, 0, len(packets)+1)
	fwd = append(fwd, to[:])
	fwd = append(fwd, packets...)
	if sub == flags.Whisper {
		sub = flags.Forward
	}
	if err := s.floodControl(ctx, sub, fwd...); err != nil {
		if s.lc.Closed() {
			return ErrClosed
		}
		return err
	}
	s.ctr.meshRoutedWhispers.Add(1)
	return nil
}

// handleForward hands a whisper that came through the mesh to this node's
// user handlers (then Recv), exactly as if it had come over a direct link,
// if this node is its target. handleFlood has relayed it already; every
// other node only relays it.
func (s *Socket) handleForward(m *base.Message) {
	var target protocol.NodeID
	if len(m.Packets) == 0 || len(m.Packets[0]) != len(target) {
		s.log.Debug("malformed forwarded whisper", "sender", m.Sender.Short())
		return
	}
	copy(target[:], m.Packets[0])
	if target != s.ID() {
		return
	}
	// The packets alias the envelope, which is being relayed: copy them,
	// so that the user may keep or change them as those of any whisper.
	n := 0
	for _, p := range m.Packets[1:] {
		n += len(p)
	}
	buf := make([]byte, 0, n)
	packets := make([][]byte, len(m.Packets)-1)
	for i, p := range m.Packets[1:] {
		buf = append(buf, p...)
		packets[i] = buf[len(buf)-len(p) : len(buf) : len(buf)]
	}
	s.injectAsWhisper(m, flags.Whisper, packets, nil)
}

// injectAsWhisper hands a message that reached its target through the
// mesh (a broadcast carrying the target) to the handlers as the whisper
// it stands for: same sender, sequence, proof and link, the given
// sub-flag, packets and route.
func (s *Socket) injectAsWhisper(m *base.Message, flag flags.Flag, packets [][]byte, route any) {
	s.base.Inject(&base.Message{
		Type:     flags.Whisper,
		Flag:     flag,
		Sender:   m.Sender,
		Seq:      m.Seq,
		Time:     m.Time,
		Hops:     m.Hops,
		HopLimit: m.HopLimit,
		Packets:  packets,
		ID:       m.ID,
		Conn:     m.Conn,
		Proven:   m.Proven,
		Route:    route,
	})
}

// floodControl originates a broadcast carrying a library sub-flag (see
// originate). It returns an error only if no neighbour took it.
func (s *Socket) floodControl(ctx context.Context, sub flags.Flag, packets ...[]byte) error {
	return s.originate(ctx, sub, packets)
}

// parseRoutePackets splits a route request or response into its request
// ID, target and record bytes (decoded by takeRecords).
func parseRoutePackets(m *base.Message) (id uint64, target protocol.NodeID, rec []byte, ok bool) {
	if len(m.Packets) != 3 || len(m.Packets[0]) != 8 || len(m.Packets[1]) != 16 || len(m.Packets[2]) > protocol.MaxRecordSize {
		return 0, target, nil, false
	}
	copy(target[:], m.Packets[1])
	return binary.BigEndian.Uint64(m.Packets[0]), target, m.Packets[2], true
}

// handleRequest answers a route request for this node.
func (s *Socket) handleRequest(m *base.Message) {
	id, target, recBytes, ok := parseRoutePackets(m)
	if !ok {
		s.log.Debug("malformed route request", "sender", m.Sender.Short())
		return
	}
	if target != s.ID() || m.Sender == s.ID() {
		return
	}
	rec := s.takeRecords([][]byte{recBytes}, m.Sender, m)[0]
	if rec == nil {
		return
	}
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], id)
	packets := [][]byte{idb[:], target[:], s.rec.Load().Bytes()}
	requester := m.Sender
	// Over a link to the requester if there is one; else flooded at once
	// (it also teaches the requester's table the way here). A dial to
	// the requester would hold the answer up for as long as the dial
	// takes: it is made in the background, as an optimisation.
	if c, ok := s.base.Conn(requester); ok {
		env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Response, 1, packets)
		if err == nil && c.SendControl(env) == nil {
			return
		}
	}
	// The flood must not hold up this reader: a goroutine, bounded.
	select {
	case s.routes.answers <- struct{}{}:
	default:
		s.log.Debug("too many route answers in flight; request ignored", "requester", requester.Short())
		return
	}
	started := s.lc.Go(func() {
		defer func() { <-s.routes.answers }()
		ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.dialTimeout)
		defer cancel()
		_ = s.floodControl(ctx, flags.Response, packets...)
	})
	if !started {
		<-s.routes.answers
	}
	s.dialBehind(requester, rec.Addrs)
}

// handleResponse completes this node's pending route request. Only the
// node that asked takes the target's record: a flooded answer reaches
// every node, and the others do not spend a signature check on it.
func (s *Socket) handleResponse(m *base.Message) {
	id, target, recBytes, ok := parseRoutePackets(m)
	if !ok || target != m.Sender {
		s.log.Debug("malformed route response", "sender", m.Sender.Short())
		return
	}
	if !s.routes.awaits(id, target) {
		return
	}
	rec := s.takeRecords([][]byte{recBytes}, target, m)[0]
	if rec == nil {
		return
	}
	s.routes.resolve(id, target, rec.Addrs)
}
