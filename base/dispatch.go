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
// messages and in the bytes they keep alive (see budget.go: a message
// queued behind the first few is copied out of the reader's buffers); a
// message that finds it full is dropped and counted
// (Stats.DispatchDrops): a reader never waits for user code. When the
// socket has more than one connection, one connection's messages may hold
// at most their fair share of it (WithFairShare), so that one flooding
// neighbour leaves room for the others' (Stats.ShareDrops).
type dispatcher struct {
	workers []*dispatchWorker
	queued  atomic.Int64 // messages waiting or being handled, all workers
	bytes   budget       // what they keep alive
	maxMsgs int64
	// One connection's messages may hold at most shareMsgs and shareBytes
	// of the queue (0: no bound; WithFairShare).
	shareMsgs, shareBytes int64
}

type dispatchWorker struct {
	mu     sync.Mutex
	q      []queuedMessage
	notify chan struct{} // capacity 1: wakes the worker
}

// queuedMessage is a message in a queue, with the bytes it counts there.
type queuedMessage struct {
	m    *Message
	size int64
}

func newDispatcher(workers, maxMsgs, maxBytes, sharePercent int) *dispatcher {
	d := &dispatcher{maxMsgs: int64(maxMsgs)}
	d.bytes.max = int64(maxBytes)
	if sharePercent < 100 {
		d.shareMsgs = max(int64(maxMsgs)*int64(sharePercent)/100, 1)
		d.shareBytes = max(int64(maxBytes)*int64(sharePercent)/100, 1)
	}
	for range workers {
		d.workers = append(d.workers, &dispatchWorker{notify: make(chan struct{}, 1)})
	}
	return d
}

// push queues m (or its copy, see admit) for worker w. It fails with
// ErrDispatchFull if the queue is full and, if shared (the socket has more
// than one connection), with ErrDispatchShare if the messages of m's
// connection already hold their fair share of it. wake reports that the
// worker's queue was empty, so the worker may be asleep: the caller must
// call wake(w).
func (d *dispatcher) push(w int, m *Message, shared bool) (wake bool, err error) {
	n := d.queued.Add(1)
	if n > d.maxMsgs {
		d.queued.Add(-1)
		return false, ErrDispatchFull
	}
	m, size, ok := admit(m, int(n-1), &d.bytes)
	if !ok {
		d.queued.Add(-1)
		return false, ErrDispatchFull
	}
	if c := m.Conn; c != nil && d.shareMsgs > 0 {
		cn := c.dispatched.Add(1)
		cb := c.dispatchedBytes.Add(size)
		if shared && (cn > d.shareMsgs || (cb > d.shareBytes && cb != size)) {
			c.dispatched.Add(-1)
			c.dispatchedBytes.Add(-size)
			d.bytes.give(size)
			d.queued.Add(-1)
			return false, ErrDispatchShare
		}
	}
	wk := d.workers[w%len(d.workers)]
	wk.mu.Lock()
	wake = len(wk.q) == 0
	wk.q = append(wk.q, queuedMessage{m, size})
	wk.mu.Unlock()
	return wake, nil
}

// unshare releases what a handled or discarded message held of its
// connection's fair share.
func (d *dispatcher) unshare(qm queuedMessage) {
	if c := qm.m.Conn; c != nil && d.shareMsgs > 0 {
		c.dispatched.Add(-1)
		c.dispatchedBytes.Add(-qm.size)
	}
}

// wake wakes worker w if it sleeps.
func (d *dispatcher) wake(w int) {
	select {
	case d.workers[w%len(d.workers)].notify <- struct{}{}:
	default:
	}
}

// run is a worker's loop: it takes everything queued in one swap and
// handles it in order, until the socket closes (what is still queued then
// is dropped: Recv fails with ErrClosed from then on anyway).
func (d *dispatcher) run(wk *dispatchWorker, s *Socket) {
	var batch []queuedMessage
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
		for _, qm := range batch {
			size += qm.size
			if !s.lc.Closed() {
				s.handleUser(qm.m)
			}
			d.unshare(qm)
		}
		d.bytes.give(size)
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
	d.release(wk.q)
	wk.q = nil
	wk.mu.Unlock()
}

// release gives back what queued messages that will not be handled count.
func (d *dispatcher) release(q []queuedMessage) {
	for _, qm := range q {
		d.bytes.give(qm.size)
		d.queued.Add(-1)
		d.unshare(qm)
	}
}
