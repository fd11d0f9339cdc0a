package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Application requests and calls (docs/protocol.md §12.3). A request is a
// whisper with sub-flag AppRequest whose first packet is a header naming a
// request ID (and, for a call, a tag and its arguments); the answer is a
// whisper with sub-flag AppResponse and the same ID. Either goes over a
// direct link, or through the mesh as a broadcast with the same sub-flag
// and the target's node ID as its first packet (like a forward), so a node
// any number of hops away can be asked.

// appCall is what Message.Route holds for a received request: Reply on
// that message answers it, correlated by id.
type appCall struct {
	id   uint64
	tag  string
	args []byte
	once sync.Once // one answer per request
}

// pendingReq is a request of this node's waiting for its answer.
type pendingReq struct {
	to   protocol.NodeID
	done chan *base.Message // buffered 1: the answer, header first
}

// requests holds this node's pending requests and calls, bounded
// (WithMaxPendingCalls). An answer takes its entry out, so a second one
// finds nothing: late and duplicate answers are dropped and counted.
type requests struct {
	mu      sync.Mutex
	pending map[uint64]*pendingReq
	next    uint64
	max     int
}

func newRequests(max int) *requests {
	return &requests{pending: make(map[uint64]*pendingReq), next: uint64(time.Now().UnixNano()), max: max}
}

func (r *requests) open(to protocol.NodeID) (uint64, *pendingReq, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= r.max {
		return 0, nil, fmt.Errorf("%w: %d requests and calls pending (WithMaxPendingCalls)", ErrTooManyRequests, r.max)
	}
	r.next++
	p := &pendingReq{to: to, done: make(chan *base.Message, 1)}
	r.pending[r.next] = p
	return r.next, p, nil
}

func (r *requests) close(id uint64) {
	r.mu.Lock()
	delete(r.pending, id)
	r.mu.Unlock()
}

// take removes and returns the pending request id if from is the node it
// was sent to.
func (r *requests) take(id uint64, from protocol.NodeID) (*pendingReq, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pending[id]
	if !ok {
		return nil, false
	}
	if p.to != from {
		return p, false
	}
	delete(r.pending, id)
	return p, true
}

func (r *requests) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Request sends packets to node to as a request and waits for its answer:
// the receiver gets a message with Flag flags.AppRequest (on its handlers
// or Recv) and answers it with Message.Reply, whose packets come back as
// the returned message's Packets (Flag flags.AppResponse, Sender to). The
// two are correlated by a request ID; an answer is taken only from the node
// asked, proven (Message.Proven: its signature, or the link it came on),
// never from a relay, and only once: late and duplicate answers are
// dropped and counted (Stats.LateAnswers, Stats.RefusedAnswers). The node
// is reached as for Whisper, however many hops away: hop by hop along the
// next-hop table's path, at once, or after a route search if the table
// does not know it.
//
// It fails with ErrTimeout when ctx ends first (the request is forgotten,
// and so is the table's path to the node if the request took one, so
// that the next message searches for the node again),
// ErrNoRoute when the node cannot be found, ErrTooManyRequests when
// WithMaxPendingCalls requests and calls are pending already, ErrNoPackets
// without packets and ErrClosed after Close.
func (s *Socket) Request(ctx context.Context, to protocol.NodeID, packets ...[]byte) (*base.Message, error) {
	if len(packets) == 0 {
		return nil, ErrNoPackets
	}
	m, _, err := s.request(ctx, to, "", nil, packets)
	return m, err
}

// request sends an AppRequest (a call if tag is not empty) and waits for
// the answer: the message, its packets after the header, and the header.
func (s *Socket) request(ctx context.Context, to protocol.NodeID, tag string, args []byte, packets [][]byte) (*base.Message, protocol.AppResponse, error) {
	var none protocol.AppResponse
	if s.lc.Closed() {
		return nil, none, ErrClosed
	}
	if to == s.ID() {
		return nil, none, fmt.Errorf("%w: request to this node itself", ErrNoRoute)
	}
	id, p, err := s.reqs.open(to)
	if err != nil {
		return nil, none, err
	}
	defer s.reqs.close(id)
	hdr := protocol.MarshalAppRequest(&protocol.AppRequest{ID: id, Tag: tag, Args: args})
	out := make([][]byte, 0, len(packets)+1)
	out = append(out, hdr)
	out = append(out, packets...)
	via, err := s.send(ctx, to, flags.AppRequest, out, true)
	if err != nil {
		return nil, none, err
	}
	s.ctr.requestsSent.Add(1)
	select {
	case m := <-p.done:
		resp, _ := protocol.UnmarshalAppResponse(m.Packets[0]) // checked when it arrived
		m.Packets = m.Packets[1:]
		return m, resp, nil
	case <-ctx.Done():
		s.ctr.requestTimeouts.Add(1)
		if via != nil && s.hops.forget(to, via) {
			// No answer along the path the table gave: a neighbour on
			// it may swallow routed messages, or the path broke. The
			// next message to the node searches for it afresh.
			s.ctr.routesForgotten.Add(1)
		}
		return nil, none, fmt.Errorf("%w: no answer from %s: %w", ErrTimeout, to, ctx.Err())
	case <-s.lc.Closing():
		return nil, none, ErrClosed
	}
}

// answer sends the answer to request c from node to.
func (s *Socket) answer(ctx context.Context, to protocol.NodeID, c *appCall, status protocol.AppStatus, body []byte, packets [][]byte) error {
	sent := false
	var err error
	c.once.Do(func() {
		sent = true
		hdr := protocol.MarshalAppResponse(&protocol.AppResponse{ID: c.id, Status: status, Body: body})
		out := make([][]byte, 0, len(packets)+1)
		out = append(out, hdr)
		out = append(out, packets...)
		if err = s.whisper(ctx, to, flags.AppResponse, out, false); err == nil {
			s.ctr.answersSent.Add(1)
		}
	})
	if !sent {
		return fmt.Errorf("%w: request already answered", ErrAnswered)
	}
	return err
}

// replyTo is base's Layer.Reply: the answer to a request, correlated by
// its ID, or a plain whisper back to the sender of any other message.
func (s *Socket) replyTo(ctx context.Context, m *base.Message, packets [][]byte) error {
	if c, ok := m.Route.(*appCall); ok && m.Flag == flags.AppRequest {
		return s.answer(ctx, m.Sender, c, protocol.AppOK, nil, packets)
	}
	return s.reply(ctx, m.Sender, packets)
}

// handleApp takes an application request or answer on the reader that
// read it (or the verification worker): an answer completes a pending
// request at once; a request goes on to the dispatcher, with its ID in
// Message.Route. It reports whether it consumed m.
func (s *Socket) handleApp(m *base.Message) bool {
	packets := m.Packets
	switch m.Type {
	case flags.Broadcast:
		// Through the mesh: relayed already (handleFlood); only the
		// target handles it.
		var target protocol.NodeID
		if len(packets) < 2 || len(packets[0]) != len(target) {
			s.log.Debug("malformed forwarded app message", "sender", m.Sender.Short())
			return true
		}
		copy(target[:], packets[0])
		if target != s.ID() {
			return true
		}
		// The packets alias the envelope being relayed: copy them.
		return s.takeApp(m, m.Flag, copyPackets(packets[1:]), true)
	case flags.Whisper:
		if len(packets) == 0 {
			return true
		}
		return s.takeApp(m, m.Flag, packets, false)
	}
	return true
}

// takeApp handles an application request or answer (sub) with packets
// header first; forwarded says it came through the mesh (flooded or
// routed), its packets copied already, and is handed to the dispatcher
// as a whisper; else m is a whisper over a direct link, whose packets
// alias the reader's buffer, and goes on as it is unless consumed. It
// reports whether it consumed m.
func (s *Socket) takeApp(m *base.Message, sub flags.Flag, packets [][]byte, forwarded bool) bool {
	if len(packets) == 0 {
		return true
	}
	if sub == flags.AppResponse {
		if !forwarded {
			packets = copyPackets(packets) // they alias the reader's buffer
		}
		s.takeAnswer(m, packets)
		return true
	}
	req, err := protocol.UnmarshalAppRequest(packets[0])
	if err != nil {
		s.ctr.badRequests.Add(1)
		s.log.Debug("malformed app request", "sender", m.Sender.Short(), "err", err)
		return true
	}
	c := &appCall{id: req.ID, tag: req.Tag, args: req.Args}
	if req.Tag == "" {
		packets = packets[1:] // a plain request: the user's packets
		if len(packets) == 0 {
			s.ctr.badRequests.Add(1)
			return true
		}
	}
	if !forwarded {
		m.Packets = packets
		m.Route = c
		return false
	}
	s.injectAsWhisper(m, flags.AppRequest, packets, c)
	return true
}

// takeAnswer completes the pending request an answer is for, if it came
// from the node asked, proven. packets belong to it alone.
func (s *Socket) takeAnswer(m *base.Message, packets [][]byte) {
	resp, err := protocol.UnmarshalAppResponse(packets[0])
	if err != nil {
		s.ctr.badRequests.Add(1)
		s.log.Debug("malformed app response", "sender", m.Sender.Short(), "err", err)
		return
	}
	if !m.Proven {
		s.ctr.refusedAnswers.Add(1)
		return
	}
	p, ok := s.reqs.take(resp.ID, m.Sender)
	if !ok {
		if p != nil {
			s.ctr.refusedAnswers.Add(1) // from a node other than the one asked
		} else {
			s.ctr.lateAnswers.Add(1)
		}
		return
	}
	p.done <- &base.Message{
		Type:     flags.Whisper,
		Flag:     flags.AppResponse,
		Sender:   m.Sender,
		Seq:      m.Seq,
		Time:     m.Time,
		Hops:     m.Hops,
		HopLimit: m.HopLimit,
		Packets:  packets,
		ID:       m.ID,
		Conn:     m.Conn,
		Proven:   m.Proven,
	}
}

// copyPackets copies packets into one new buffer.
func copyPackets(in [][]byte) [][]byte {
	n := 0
	for _, p := range in {
		n += len(p)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(in))
	for i, p := range in {
		buf = append(buf, p...)
		out[i] = buf[len(buf)-len(p) : len(buf) : len(buf)]
	}
	return out
}
