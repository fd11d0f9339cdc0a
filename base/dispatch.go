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
// (Stats.DispatchDrops): a reader never waits for user code.
type dispatcher struct {
	workers []*dispatchWorker
	queued  atomic.Int64 // messages waiting or being handled, all workers
	bytes   budget       // what they keep alive
	maxMsgs int64
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

func newDispatcher(workers, maxMsgs, maxBytes int) *dispatcher {
	d := &dispatcher{maxMsgs: int64(maxMsgs)}
	d.bytes.max = int64(maxBytes)
	for range workers {
		d.workers = append(d.workers, &dispatchWorker{notify: make(chan struct{}, 1)})
	}
	return d
}

// push queues m (or its copy, see admit) for worker w; queued is false if
// the queue is full. wake reports that the worker's queue was empty, so
// the worker may be asleep: the caller must call wake(w) before it waits
// for anything (a reader wakes it once per burst, see reader.flush).
func (d *dispatcher) push(w int, m *Message) (queued, wake bool) {
	n := d.queued.Add(1)
	if n > d.maxMsgs {
		d.queued.Add(-1)
		return false, false
	}
	m, size, ok := admit(m, int(n-1), &d.bytes)
	if !ok {
		d.queued.Add(-1)
		return false, false
	}
	wk := d.workers[w%len(d.workers)]
	wk.mu.Lock()
	wake = len(wk.q) == 0
	wk.q = append(wk.q, queuedMessage{m, size})
	wk.mu.Unlock()
	return true, wake
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
	}
}
