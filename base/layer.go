package base

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshsock/meshsock/internal/logattr"
)

// Layer is how a routing layer built on base (mesh, chord, or one of your
// own) plugs into a Socket. Its functions are fixed when the socket is
// made (NewLayered), so no Option can replace them. Every field may be
// nil.
//
// A received message goes: reader (decode, link control, hop limit) →
// Prefilter → signature verification, when the protocol signs (a pool of
// workers, in batches; see WithVerifyBacklog) → Handle → dispatch to the
// user handlers and Recv. Nothing reaches Handle, and so nothing is
// relayed or delivered, before its signature is verified.
type Layer struct {
	// Prefilter sees each message on its connection's reader, while it
	// still lives in the reader's buffer and before its signature is
	// verified (Message.Proven is false); returning true drops it
	// without a copy or a verification (the flood's duplicates, stale
	// messages). It must not block on anything another connection's
	// reader, or user code, may hold up; a bounded wait that paces this
	// connection's own peer (mesh's flood budget) is fine: it slows that
	// peer only, before this node spends work on its messages. The
	// message is valid only during the call.
	Prefilter func(m *Message) bool
	// Handle sees each message that passed the prefilter and, if the
	// protocol signs and the message must be signed, verification, before
	// any user handler, and reports whether the layer consumed it (its own
	// control messages). It is where a layer relays. It runs on the
	// connection's reader or on a verification worker, one message of a
	// connection at a time and in the order they arrived (a copy proven
	// by another copy's signature comes after the connection's messages
	// that arrived while it waited); it must never block. Messages it does
	// not consume go to the user handlers on a dispatcher goroutine.
	Handle func(m *Message) bool
	// Reply replaces how Message.Reply reaches a sender. Default: a
	// whisper over the direct connection, ErrNoRoute without one.
	Reply ReplyFunc
	// ConnHook is called synchronously when a connection becomes the
	// current one to its node (up) and when the current one is removed
	// (down), before the public events, serialised and in registry order.
	// It must not block and must not call Connect.
	ConnHook func(c *Conn, up bool)
	// Delivered is told of each message handed to the user: claimed by a
	// user handler or queued for Recv.
	Delivered func(m *Message)
	// Dropped is told of each message dropped on its way to the user, and
	// why (ErrDispatchFull, ErrRecvFull, ErrNoPackets, ErrHopLimit, or an
	// error matching ErrBadSignature). For ErrHopLimit the message is the
	// reader's scratch copy, valid only during the call, and its Hops is
	// the hop byte as received.
	Dropped func(m *Message, reason error)
}

// Errors that say why a message was dropped before it reached the user,
// for Layer.Dropped.
var (
	// ErrDispatchFull: the dispatch queue (WithDispatchQueue) was full.
	ErrDispatchFull = errors.New("meshsock: dispatch queue full")
	// ErrRecvFull: the receive queue (WithRecvQueue) was full.
	ErrRecvFull = errors.New("meshsock: receive queue full")
	// ErrDispatchShare: the messages from the connection this one came on
	// already held their fair share of the dispatch queue (WithFairShare).
	// It matches ErrDispatchFull.
	ErrDispatchShare = fmt.Errorf("%w: the connection's fair share is used up", ErrDispatchFull)
	// ErrHopLimit: the message's hop byte was not below its hop limit: it
	// was relayed past the limit, or the byte was forged. Such a message is
	// dropped on arrival (Stats.HopDrops), before any layer sees it.
	ErrHopLimit = errors.New("meshsock: message past its hop limit")
)

// NewLayered is NewSocket for a routing layer: l's functions are installed
// after the options have been applied.
func NewLayered(addr string, l Layer, opts ...Option) (*Socket, error) {
	return newSocket(addr, l, opts)
}

func (s *Socket) reply(ctx context.Context, m *Message, packets [][]byte) error {
	if len(packets) == 0 {
		return ErrNoPackets
	}
	if s.layer.Reply != nil {
		return s.layer.Reply(ctx, m, packets)
	}
	return s.Whisper(ctx, m.Sender, packets...)
}

// dispatch takes a message the layer did not consume (on the reader, or
// from Inject) towards the user: through a dispatcher worker when there
// are user handlers, straight to the receive queue (which never blocks)
// when there are none. The worker is woken at once: a reader may wait
// after this (for the network, or in the layer's flood budget), and a
// wake deferred to a later point in its loop would hold the message that
// long (measured: p99 45 ms instead of 1.5 ms under a flood).
func (s *Socket) dispatch(m *Message, worker int) {
	if len(*s.handlers.Load()) == 0 {
		s.Deliver(m)
		return
	}
	wake, err := s.disp.push(worker, m, s.nconns.Load() > 1)
	if wake {
		s.disp.wake(worker)
	}
	if err != nil {
		s.ctr.dispatchDrops.Add(1)
		if errors.Is(err, ErrDispatchShare) {
			s.ctr.shareDrops.Add(1)
			s.noteDrop("a connection's share of the dispatch queue used up; message dropped", m.Conn)
		} else {
			s.noteDrop("dispatch queue full; message dropped", m.Conn)
		}
		if s.layer.Dropped != nil {
			s.layer.Dropped(m, err)
		}
	}
}

// handleUser runs the user handlers on a dispatcher worker, then queues an
// unclaimed message for Recv.
func (s *Socket) handleUser(m *Message) {
	for _, h := range *s.handlers.Load() {
		if s.runHandler(h, m) {
			if s.layer.Delivered != nil {
				s.layer.Delivered(m)
			}
			return
		}
	}
	s.Deliver(m)
}

// runHandler calls h, recovering a panic: the message counts as claimed,
// the panic is counted and logged, and the worker goes on.
func (s *Socket) runHandler(h Handler, m *Message) (claimed bool) {
	defer func() {
		if r := recover(); r != nil {
			s.ctr.handlerPanics.Add(1)
			s.log.Error("handler panicked", "panic", r, "sender", m.Sender.Short(), logattr.Stack(2))
			s.problem("a handler panicked", fmt.Errorf("%v", r))
			claimed = true
		}
	}()
	return h.Handle(m)
}
