package base

import (
	"context"
	"fmt"
	"sync"
)

// itemKind says what the writer does with a queued item.
type itemKind uint8

const (
	kindMessage itemKind = iota // a message frame: hop byte + envelope
	kindResend                  // resend retained frame number n, uncompressed
	kindBye                     // a Bye message; the writer closes after it
)

// outItem is one queued frame. env is shared between the queues of every
// connection a message goes to and is never modified.
type outItem struct {
	env     []byte
	hops    uint8
	kind    itemKind
	noComp  bool   // send uncompressed whatever was negotiated
	frameNo uint64 // kindResend: which frame
}

// sendQueue is a connection's bounded outbound queue: a data lane bounded by
// messages and bytes, and a small control lane that data cannot starve. The
// writer takes everything queued in one swap, so a batch costs one lock.
type sendQueue struct {
	mu        sync.Mutex
	ctrl      []outItem
	data      []outItem
	dataBytes int
	closed    bool
	space     chan struct{} // closed (and replaced) when the writer frees room
	waiting   bool          // a sender is waiting on space

	maxData, maxBytes, maxCtrl int

	// Relays from one source connection may hold at most shareData
	// messages and shareBytes bytes of the data lane (0: no bound); shares
	// counts what each source queued since the writer's last take, which
	// is all that is queued.
	shareData, shareBytes int
	shares                []sourceShare

	notify chan struct{} // wakes the writer; capacity 1
}

// sourceShare is what relays from one source connection hold of a queue.
type sourceShare struct {
	src         *Conn
	data, bytes int
}

func newSendQueue(maxData, maxBytes, maxCtrl int) *sendQueue {
	return &sendQueue{
		maxData:  maxData,
		maxBytes: maxBytes,
		maxCtrl:  maxCtrl,
		space:    make(chan struct{}),
		notify:   make(chan struct{}, 1),
	}
}

func (q *sendQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// fits reports whether an item of n bytes may join the data lane. An item
// larger than the byte bound is let into an empty queue so it can go at all.
func (q *sendQueue) fits(n int) bool {
	if len(q.data) >= q.maxData {
		return false
	}
	return len(q.data) == 0 || q.dataBytes+n <= q.maxBytes
}

// push adds a data item. With block it waits for room until ctx ends or the
// queue closes; otherwise a full queue returns ErrQueueFull at once.
func (q *sendQueue) push(ctx context.Context, it outItem, block bool, done <-chan struct{}) error {
	n := len(it.env) + 1
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return ErrClosed
		}
		if q.fits(n) {
			q.appendUnlock(it, n)
			return nil
		}
		if !block {
			q.mu.Unlock()
			return ErrQueueFull
		}
		space := q.space
		q.waiting = true
		q.mu.Unlock()
		select {
		case <-space:
		case <-done:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for send queue room: %w", ErrTimeout, ctx.Err())
		}
	}
}

// closedChan is a channel closed from the start.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// room returns a channel closed once an item of n bytes may join the data
// lane: closedChan if it may now or the queue is closed, else the one the
// writer's next take closes.
func (q *sendQueue) room(n int) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.fits(n) {
		return closedChan
	}
	q.waiting = true
	return q.space
}

// pushFrom adds a data item relayed from connection src, without waiting:
// it returns ErrQueueFull if the queue is full, and, if shared (relays may
// come from more than one source), ErrRelayShare if relays from src
// already hold their share of it.
func (q *sendQueue) pushFrom(it outItem, src *Conn, shared bool) error {
	n := len(it.env) + 1
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if !q.fits(n) {
		q.mu.Unlock()
		return ErrQueueFull
	}
	if q.shareData > 0 && src != nil {
		i := 0
		for i < len(q.shares) && q.shares[i].src != src {
			i++
		}
		if i == len(q.shares) {
			q.shares = append(q.shares, sourceShare{src: src})
		}
		sh := &q.shares[i]
		// As for the queue, one item may exceed the byte share on its own.
		if shared && (sh.data >= q.shareData || (sh.data > 0 && sh.bytes+n > q.shareBytes)) {
			q.mu.Unlock()
			return ErrRelayShare
		}
		sh.data++
		sh.bytes += n
	}
	q.appendUnlock(it, n)
	return nil
}

// appendUnlock adds a data item of n bytes and unlocks q. Only the first
// item after the writer's last take needs to wake it: it takes everything
// queued since in one swap.
func (q *sendQueue) appendUnlock(it outItem, n int) {
	wake := len(q.data) == 0 && len(q.ctrl) == 0
	q.data = append(q.data, it)
	q.dataBytes += n
	q.mu.Unlock()
	if wake {
		q.wake()
	}
}

// pushControl adds a control item; it never blocks and reports false when
// the control lane is full.
func (q *sendQueue) pushControl(it outItem) bool {
	q.mu.Lock()
	if q.closed || len(q.ctrl) >= q.maxCtrl {
		q.mu.Unlock()
		return false
	}
	q.ctrl = append(q.ctrl, it)
	q.mu.Unlock()
	q.wake()
	return true
}

// take swaps the queued items out for the (emptied) slices passed in and
// wakes senders waiting for room.
func (q *sendQueue) take(ctrl, data []outItem) ([]outItem, []outItem) {
	q.mu.Lock()
	ctrl, q.ctrl = q.ctrl, ctrl[:0]
	data, q.data = q.data, data[:0]
	q.dataBytes = 0
	clear(q.shares)
	q.shares = q.shares[:0]
	if q.waiting {
		close(q.space)
		q.space = make(chan struct{})
		q.waiting = false
	}
	q.mu.Unlock()
	return ctrl, data
}

// close refuses further items; queued ones stay for a final flush.
func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// lens returns the queued data and control counts.
func (q *sendQueue) lens() (data, ctrl int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.data), len(q.ctrl)
}
