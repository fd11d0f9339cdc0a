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

// Route requests find a node this node is not connected to (py2p's
// request/response): the requester floods a Request naming the target and
// its own address; the target dials the requester and answers over that new
// connection (or floods the answer if the requester does not listen); the
// requester then has a direct connection to deliver over.
//
// Request packets:  [request ID (8 bytes BE), target node ID (16), requester address (UTF-8)]
// Response packets: [request ID (8 bytes BE), target node ID (16), target address (UTF-8)]

// maxConcurrentAnswers bounds the goroutines dialling back requesters.
const maxConcurrentAnswers = 16

type pendingRoute struct {
	target protocol.NodeID
	done   chan struct{}
	once   sync.Once
	addr   string
}

// router holds the route requests in flight, bounded; each is removed by
// the call that made it when it ends, so nothing outlives its timeout.
type router struct {
	mu      sync.Mutex
	pending map[uint64]*pendingRoute
	next    uint64
	max     int
	answers chan struct{} // semaphore for answer goroutines
}

func newRouter(max int) *router {
	return &router{
		pending: make(map[uint64]*pendingRoute),
		next:    uint64(time.Now().UnixNano()),
		max:     max,
		answers: make(chan struct{}, maxConcurrentAnswers),
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

// resolve completes a pending request; late or duplicate answers are dropped.
func (r *router) resolve(id uint64, target protocol.NodeID, addr string) bool {
	r.mu.Lock()
	p, ok := r.pending[id]
	r.mu.Unlock()
	if !ok || p.target != target {
		return false
	}
	p.once.Do(func() {
		p.addr = addr
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

// route returns a direct connection to the target, making one if needed.
func (s *Socket) route(ctx context.Context, to protocol.NodeID) (*base.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.routeTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	// A known address saves the flood, if an outgoing slot is free.
	if addr, ok := s.known.addr(to); ok {
		if c, _, err := s.dialAuto(ctx, addr); err == nil && c != nil && c.ID() == to {
			return c, nil
		}
	}
	id, p, err := s.routes.open(to)
	if err != nil {
		return nil, err
	}
	defer s.routes.close(id)
	s.ctr.routeRequests.Add(1)
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], id)
	if err := s.floodControl(ctx, flags.Request, idb[:], to[:], []byte(s.base.AdvertisedAddr())); err != nil {
		s.ctr.routeFailures.Add(1)
		if s.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrNoRoute, to, err)
	}
	for {
		select {
		case <-p.done:
			if c, ok := s.base.Conn(to); ok {
				return c, nil
			}
			if p.addr != "" {
				c, _, err := s.dialAuto(ctx, p.addr)
				if err == nil && c != nil && c.ID() == to {
					return c, nil
				}
			}
			s.ctr.routeFailures.Add(1)
			if s.isClosed() {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("%w: %s answered but could not be reached", ErrNoRoute, to)
		case <-ctx.Done():
			s.ctr.routeFailures.Add(1)
			if s.isClosed() {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("%w: no answer from %s within %v: %w", ErrNoRoute, to, s.cfg.routeTimeout, ctx.Err())
		}
	}
}

// floodControl originates a broadcast carrying a library sub-flag.
func (s *Socket) floodControl(ctx context.Context, sub flags.Flag, packets ...[]byte) error {
	env, id, err := s.base.NewEnvelope(flags.Broadcast, sub, s.cfg.hopLimit, packets)
	if err != nil {
		return err
	}
	ns := *s.neighbours.Load()
	if len(ns) == 0 {
		return fmt.Errorf("%w: no neighbours", ErrNoRoute)
	}
	now := time.Now().UnixNano()
	s.seen.mark(id, now, now)
	for _, c := range ns {
		_ = c.SendEnvelope(ctx, 0, env)
	}
	return nil
}

func parseRoutePackets(m *base.Message) (id uint64, target protocol.NodeID, addr string, ok bool) {
	if len(m.Packets) != 3 || len(m.Packets[0]) != 8 || len(m.Packets[1]) != 16 || len(m.Packets[2]) > 255 {
		return 0, target, "", false
	}
	copy(target[:], m.Packets[1])
	return binary.BigEndian.Uint64(m.Packets[0]), target, string(m.Packets[2]), true
}

// handleRequest answers a route request for this node.
func (s *Socket) handleRequest(m *base.Message) {
	id, target, requesterAddr, ok := parseRoutePackets(m)
	if !ok {
		s.log.Debug("malformed route request", "sender", m.Sender.Short())
		return
	}
	if target != s.ID() || m.Sender == s.ID() {
		return
	}
	s.known.add(m.Sender, requesterAddr)
	var idb [8]byte
	binary.BigEndian.PutUint64(idb[:], id)
	packets := [][]byte{idb[:], target[:], []byte(s.base.AdvertisedAddr())}
	requester := m.Sender
	// Dialling back takes a round trip; it must not stall this reader.
	select {
	case s.routes.answers <- struct{}{}:
	default:
		s.log.Debug("too many route answers in flight; request ignored", "requester", requester.Short())
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.routes.answers }()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.dialTimeout)
		defer cancel()
		c, ok := s.base.Conn(requester)
		if !ok && requesterAddr != "" {
			// Only within a free outgoing slot; else flood the answer.
			if cc, _, err := s.dialAuto(ctx, requesterAddr); err == nil && cc != nil && cc.ID() == requester {
				c, ok = cc, true
			}
		}
		if ok {
			env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Response, 1, packets)
			if err == nil && c.SendControl(env) == nil {
				return
			}
		}
		_ = s.floodControl(ctx, flags.Response, packets...)
	}()
}

// handleResponse completes this node's pending route request.
func (s *Socket) handleResponse(m *base.Message) {
	id, target, addr, ok := parseRoutePackets(m)
	if !ok || target != m.Sender {
		s.log.Debug("malformed route response", "sender", m.Sender.Short())
		return
	}
	s.known.add(target, addr)
	s.routes.resolve(id, target, addr)
}
