package base

import (
	"sync"
	"sync/atomic"
)

// The dispatcher runs user code off the connection readers (yamux's rule:
// no user code on the receive loop). A reader decodes a message, sheds
// duplicates, lets the layer relay it and handle its control messages, and
// then queues it for a dispatcher worker, which runs the user handlers and
// puts what none claims on the receive queue. A slow handler therefore
// delays the messages behind it on its worker, never the reading of frames,
// relays or keepalive.
//
// Each connection is served by one worker, so its messages are handled in
// the order they arrived. The queue is bounded for the whole socket, in
// messages and in bytes; a message that finds it full is dropped and
// counted (Stats.DispatchDrops): a reader never waits for user code. When
// the socket has more than one connection, one connection's messages may
// hold at most their fair share of it (WithFairShare), so that one
// flooding neighbour leaves room for the others' (Stats.ShareDrops).
type dispatcher struct {
	workers  []*dispatchWorker
	queued   atomic.Int64 // messages waiting or being handled, all workers
	bytes    atomic.Int64 // their sizes (see messageSize)
	maxMsgs  int64
	maxBytes int64
	// One connection's messages may hold at most shareMsgs and shareBytes
	// of the queue (0: no bound; WithFairShare).
	shareMsgs, shareBytes int64
}

type dispatchWorker struct {
	mu     sync.Mutex
	q      []*Message
	notify chan struct{} // capacity 1: wakes the worker
}

func newDispatcher(workers, maxMsgs, maxBytes, sharePercent int) *dispatcher {
	d := &dispatcher{maxMsgs: int64(maxMsgs), maxBytes: int64(maxBytes)}
	if sharePercent < 100 {
		d.shareMsgs = max(int64(maxMsgs)*int64(sharePercent)/100, 1)
		d.shareBytes = max(int64(maxBytes)*int64(sharePercent)/100, 1)
	}
	for range workers {
		d.workers = append(d.workers, &dispatchWorker{notify: make(chan struct{}, 1)})
	}
	return d
}

// messageSize is what a queued message counts against the byte bound: the
// envelope its packets alias (or the packets of a message made locally)
// plus the Message itself.
func messageSize(m *Message) int64 {
	n := len(m.envelope)
	if m.envelope == nil {
		for _, p := range m.Packets {
			n += len(p)
		}
	}
	return int64(n) + messageOverhead
}

// messageOverhead approximates a Message's own size in bytes.
const messageOverhead = 256

// push queues m for worker w; ErrDispatchFull if the queue is full, and,
// if shared (the socket has more than one connection), ErrDispatchShare if
// the messages of m's connection already hold their fair share of it.
func (d *dispatcher) push(w int, m *Message, shared bool) error {
	size := messageSize(m)
	if d.queued.Add(1) > d.maxMsgs {
		d.queued.Add(-1)
		return ErrDispatchFull
	}
	// One oversized message may go into an empty queue, so that any
	// message the frame limit allows can be handled at all.
	if b := d.bytes.Add(size); b > d.maxBytes && b != size {
		d.bytes.Add(-size)
		d.queued.Add(-1)
		return ErrDispatchFull
	}
	if c := m.Conn; c != nil && d.shareMsgs > 0 {
		n := c.dispatched.Add(1)
		b := c.dispatchedBytes.Add(size)
		if shared && (n > d.shareMsgs || (b > d.shareBytes && b != size)) {
			c.dispatched.Add(-1)
			c.dispatchedBytes.Add(-size)
			d.bytes.Add(-size)
			d.queued.Add(-1)
			return ErrDispatchShare
		}
	}
	wk := d.workers[w%len(d.workers)]
	wk.mu.Lock()
	wake := len(wk.q) == 0
	wk.q = append(wk.q, m)
	wk.mu.Unlock()
	if wake {
		select {
		case wk.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// done releases what m held of the queue.
func (d *dispatcher) done(m *Message) {
	size := messageSize(m)
	if c := m.Conn; c != nil && d.shareMsgs > 0 {
		c.dispatched.Add(-1)
		c.dispatchedBytes.Add(-size)
	}
	d.bytes.Add(-size)
	d.queued.Add(-1)
}

// run is a worker's loop: it takes everything queued in one swap and
// handles it in order, until the socket closes (what is still queued then
// is dropped: Recv fails with ErrClosed from then on anyway).
func (d *dispatcher) run(wk *dispatchWorker, s *Socket) {
	var batch []*Message
	closing := s.lc.Closing()
	for {
		select {
		case <-wk.notify:
		case <-closing:
			d.discard(wk)
			return
		}
		wk.mu.Lock()
		batch, wk.q = wk.q, batch[:0]
		wk.mu.Unlock()
		for i, m := range batch {
			s.handleUser(m)
			d.done(m)
			batch[i] = nil
			if s.lc.Closed() {
				for _, m := range batch[i+1:] {
					d.done(m)
				}
				clear(batch)
				d.discard(wk)
				return
			}
		}
	}
}

func (d *dispatcher) discard(wk *dispatchWorker) {
	wk.mu.Lock()
	for _, m := range wk.q {
		d.done(m)
	}
	wk.q = nil
	wk.mu.Unlock()
}
