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
// counted (Stats.DispatchDrops): a reader never waits for user code.
type dispatcher struct {
	workers  []*dispatchWorker
	queued   atomic.Int64 // messages waiting or being handled, all workers
	bytes    atomic.Int64 // their sizes (see messageSize)
	maxMsgs  int64
	maxBytes int64
}

type dispatchWorker struct {
	mu     sync.Mutex
	q      []*Message
	notify chan struct{} // capacity 1: wakes the worker
}

func newDispatcher(workers, maxMsgs, maxBytes int) *dispatcher {
	d := &dispatcher{maxMsgs: int64(maxMsgs), maxBytes: int64(maxBytes)}
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

// push queues m for worker w; false if the queue is full.
func (d *dispatcher) push(w int, m *Message) bool {
	size := messageSize(m)
	if d.queued.Add(1) > d.maxMsgs {
		d.queued.Add(-1)
		return false
	}
	// One oversized message may go into an empty queue, so that any
	// message the frame limit allows can be handled at all.
	if b := d.bytes.Add(size); b > d.maxBytes && b != size {
		d.bytes.Add(-size)
		d.queued.Add(-1)
		return false
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
	return true
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
		// The batch leaves the bound once handled, in one update: the
		// counters are shared with every reader of the socket.
		var size int64
		for _, m := range batch {
			size += messageSize(m)
			if !s.lc.Closed() {
				s.handleUser(m)
			}
		}
		d.bytes.Add(-size)
		d.queued.Add(-int64(len(batch)))
		clear(batch)
		if s.lc.Closed() {
			d.discard(wk)
			return
		}
	}
}

func (d *dispatcher) discard(wk *dispatchWorker) {
	wk.mu.Lock()
	for _, m := range wk.q {
		d.bytes.Add(-messageSize(m))
		d.queued.Add(-1)
	}
	wk.q = nil
	wk.mu.Unlock()
}
