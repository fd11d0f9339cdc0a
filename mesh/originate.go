package mesh

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// originate floods a new broadcast of this node's to every neighbour. A
// neighbour whose send queue is full is waited for, all of them together
// for at most the slow wait (WithSlowNeighbour); one still full then is
// marked slow and its copy dropped, and later sends do not wait for it
// while it stays slow; a copy is dropped only if it still finds the queue
// full when originate is done waiting. So a neighbour that stops reading
// costs the origin one slow wait, not a blocked Send, and the healthy ones
// get every message. Only when no neighbour takes the message does
// originate wait longer, for all of them at once, until one has room or
// ctx ends: then every link is congested and the producer must slow down.
// It returns an error only if no neighbour took the message, and then
// announces it to none either.
//
// A link that is closing (two nodes that dialled each other at once keep
// one connection and close the other) gets the copy over the connection
// that replaced it, or an announcement once there is one. When every link
// is closing, originate waits for the neighbours to change and tries
// again, until ctx ends.
func (s *Socket) originate(ctx context.Context, sub flags.Flag, packets [][]byte) error {
	env, id, err := s.base.NewEnvelope(flags.Broadcast, sub, s.cfg.hopLimit, packets)
	if err != nil {
		return err
	}
	// Cached to serve pulls; in tree mode pushed over the eager links
	// only, and announced over the lazy ones once it has left.
	ref, cached := s.rep.own(env)
	for {
		s.nmu.Lock()
		changed := s.nchanged // taken before the neighbours: no change is missed
		s.nmu.Unlock()
		err := s.originateOnce(ctx, env, id, ref, cached)
		if !errors.Is(err, errLinksClosing) {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: every link was closing: %w", ErrTimeout, context.Cause(ctx))
		case <-s.lc.Closing():
			return ErrClosed
		}
	}
}

// errLinksClosing is originateOnce's word that no neighbour took the
// message because every link it tried was closing.
var errLinksClosing = errors.New("mesh: every link is closing")

// originateOnce is one attempt of originate's on the neighbours of now.
func (s *Socket) originateOnce(ctx context.Context, env []byte, id protocol.MessageID, ref protocol.BroadcastRef, cached bool) error {
	ns := *s.neighbours.Load()
	if len(ns) == 0 {
		return fmt.Errorf("%w: no neighbours to broadcast to", ErrNoRoute)
	}
	var lazy []*base.Conn
	if cached && s.rep.tree {
		var buf [32]bool
		if mask := s.rep.ownLazyLinks(ref, ns, buf[:]); mask != nil {
			eager := make([]*base.Conn, 0, len(ns))
			for i, c := range ns {
				if mask[i] {
					lazy = append(lazy, c)
				} else {
					eager = append(eager, c)
				}
			}
			ns = eager
		}
	}
	var (
		first   error
		sent    int
		buf     [16]*base.Conn
		full    = buf[:0] // neighbours whose queue was full
		closing []protocol.NodeID
	)
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	trySend := func(c *base.Conn) error { return c.TrySendEnvelope(0, env) }
	try := func(ns []*base.Conn) {
		for _, c := range ns {
			c, err := s.sendOrReplaced(c, trySend)
			switch {
			case err == nil:
				sent++
				if l := s.linkOf(c); l.slowSince.Load() != 0 {
					l.slowSince.Store(0) // it caught up
				}
			case errors.Is(err, ErrQueueFull):
				full = append(full, c)
			case errors.Is(err, ErrClosed):
				closing = append(closing, c.ID())
			default:
				fail(err)
			}
		}
	}
	try(ns)
	if sent == 0 && len(lazy) > 0 {
		// No eager link took the payload (they closed, or their queues
		// are full): the lazy ones get it too, as when this node has no
		// eager link. Announced to them only, it would spread even if
		// this Send failed, and a caller that sends it again would have
		// it delivered twice.
		try(lazy)
		lazy = nil
	}
	// The announcements go out only if the payload did: a Send that
	// fails leaves no trace of the broadcast.
	defer func() {
		if sent == 0 {
			return
		}
		s.rep.announce(ref, lazy)
		if cached {
			for _, to := range closing {
				s.closedLinkDrop(to, ref)
			}
		}
	}()
	if sent == 0 && len(full) == 0 && first == nil && len(closing) > 0 {
		return errLinksClosing
	}
	if len(full) == 0 {
		return s.originated(ctx, sent, first)
	}
	// Wait for the full ones that are not known to be slow, all together
	// for at most the slow wait. Those without a copy stay in full.
	start := time.Now()
	wctx, cancel := context.WithDeadline(ctx, start.Add(s.cfg.slowWait))
	waiting := full[:0]
	for _, c := range full {
		l := s.linkOf(c)
		if l.slowSince.Load() != 0 {
			waiting = append(waiting, c)
			continue
		}
		switch err := c.SendEnvelope(wctx, 0, env); {
		case err == nil:
			sent++
		case errors.Is(err, ErrTimeout) && ctx.Err() == nil:
			// The slow wait ran out, not the caller's patience.
			l.slowSince.CompareAndSwap(0, time.Now().UnixNano())
			waiting = append(waiting, c)
		default:
			// Drop policy (ErrQueueFull, counted by base), closed, or
			// ctx ended.
			fail(err)
		}
	}
	cancel()
	full = waiting
	// No neighbour took it: every link is congested, and the producer
	// must wait until one has room, whichever it is.
	if sent == 0 && first == nil && len(full) > 0 {
		var err error
		sent, full, err = s.waitRoom(ctx, full, env)
		if err != nil {
			fail(err)
		}
	}
	if sent > 0 {
		for _, c := range full {
			// Offered once more: its queue may have room by now, after
			// the waits for the others. A copy is dropped only if it finds
			// the queue full.
			switch err := c.TrySendEnvelope(0, env); {
			case err == nil:
				s.linkOf(c).slowSince.Store(0)
			case errors.Is(err, ErrQueueFull):
				s.slowDrop(s.linkOf(c), id, start)
				if cached {
					s.rep.missed(ref, c.ID())
				}
			}
		}
	}
	return s.originated(ctx, sent, first)
}

// waitRoom waits, when none of the full neighbours took env, for any of
// them to have room, all at once, until ctx ends or the socket closes,
// and queues env for every one that has room then. It returns how many
// took it, the others, and the first error other than a full queue (a
// neighbour that closed is not waited for).
func (s *Socket) waitRoom(ctx context.Context, full []*base.Conn, env []byte) (int, []*base.Conn, error) {
	var first error
	cases := make([]reflect.SelectCase, 0, 2+2*len(full))
	recv := func(ch <-chan struct{}) reflect.SelectCase {
		return reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)}
	}
	for len(full) > 0 {
		cases = append(cases[:0], recv(ctx.Done()), recv(s.lc.Closing()))
		for _, c := range full {
			room := c.RoomFor(env)
			if room == nil {
				// The Drop policy: a full queue is not waited for (the
				// drop counted by base).
				if err := c.SendEnvelope(ctx, 0, env); err != nil {
					return 0, full, err
				}
				s.linkOf(c).slowSince.Store(0)
				rest := make([]*base.Conn, 0, len(full)-1)
				for _, o := range full {
					if o != c {
						rest = append(rest, o)
					}
				}
				return 1, rest, nil
			}
			cases = append(cases, recv(room), recv(c.Done()))
		}
		if i, _, _ := reflect.Select(cases); i < 2 {
			break // ctx ended, or the socket is closing
		}
		sent, rest := 0, full[:0]
		for _, c := range full {
			switch err := c.TrySendEnvelope(0, env); {
			case err == nil:
				sent++
				s.linkOf(c).slowSince.Store(0)
			case errors.Is(err, ErrQueueFull):
				rest = append(rest, c)
			case first == nil:
				first = err
			}
		}
		full = rest
		if sent > 0 {
			return sent, full, nil
		}
	}
	return 0, full, first
}

// originated is originate's result: nil if any neighbour took the message.
func (s *Socket) originated(ctx context.Context, sent int, first error) error {
	if sent > 0 {
		return nil
	}
	if s.lc.Closed() {
		return ErrClosed
	}
	if first == nil {
		first = fmt.Errorf("%w: no neighbour's send queue had room: %w", ErrTimeout, context.Cause(ctx))
	}
	return first
}

// slowDrop gives up this node's copy of broadcast id for slow neighbour l,
// and closes the link once it has been slow for the slow bound.
func (s *Socket) slowDrop(l *link, id protocol.MessageID, now time.Time) {
	s.ctr.slowDrops.Add(1)
	to := l.c.ID()
	if s.cfg.tracer != nil {
		s.cfg.tracer.Trace(TraceEvent{Kind: TraceSlowDrop, ID: id, Sender: s.ID(), Peer: to})
	}
	since := l.slowSince.Load()
	if since == 0 || now.UnixNano()-since < int64(s.cfg.slowClose) {
		return
	}
	reason := fmt.Errorf("%w: neighbour too slow: its send queue stayed full for %v", ErrClosed,
		now.Sub(time.Unix(0, since)).Round(time.Millisecond))
	if l.abort(reason) {
		s.ctr.slowClosed.Add(1)
		s.log.Warn("closing a slow neighbour", "peer", to.Short(), "err", reason)
		if s.cfg.tracer != nil {
			s.cfg.tracer.Trace(TraceEvent{Kind: TraceSlowClose, ID: id, Sender: s.ID(), Peer: to})
		}
	}
}
