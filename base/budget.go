package base

import (
	"sync/atomic"
	"unsafe"
)

// What a queued message costs, and how the receive-side queues keep that
// honest.
//
// A message the reader made from a small frame lives in the reader's
// buffers: its body in a 16 KiB slab shared with the frames around it and
// the Message in a block of 32. While it waits in a queue it keeps both
// alive, whatever its own size, so a queue of small messages taken from
// many slabs (a slow consumer whose full queue admits a message now and
// then) would hold 20 KiB or more per message. Only the first
// pinnedQueued messages of each queue may stay there, and only while
// they take no more than an eighth of the queue's byte bound; a message
// queued behind them is copied out first, into memory of its own of
// exactly its size. A consumer that keeps up never lets a queue grow that
// long, so the hot path copies nothing.
//
// Each queue counts what its messages keep alive against its byte bound:
// a message still in the reader's buffers counts a whole slab and block
// (messageSize), one with memory of its own its buffer and its Message
// (ownSize).

// pinnedQueued is how many messages in each queue may still live in the
// reader's buffers: at most about 1.4 MiB per queue (and at most an
// eighth of its byte bound).
const pinnedQueued = 64

// messageOverhead is a Message's own size in bytes.
const messageOverhead = int64(unsafe.Sizeof(Message{}))

// packetHeader is the size of one entry of a Packets slice.
const packetHeader = int64(unsafe.Sizeof([]byte(nil)))

// messageSize is what m keeps alive while it waits in a queue.
func messageSize(m *Message) int64 {
	if m.slab {
		return slabSize + msgBlock*messageOverhead
	}
	return ownSize(m)
}

// ownSize is what m keeps alive once it has memory of its own (after
// detach, for a message from the reader's buffers): the buffer its
// envelope lives in, or its packets for a message made locally, its
// packet list beyond the inline entries, and the Message.
func ownSize(m *Message) int64 {
	var n int64
	switch {
	case m.slab:
		n = int64(len(m.envelope)) // detach copies exactly that
	case m.envelope != nil:
		n = int64(cap(m.envelope))
	default:
		for _, p := range m.Packets {
			n += int64(cap(p))
		}
	}
	if len(m.Packets) > len(m.inline) {
		n += int64(len(m.Packets)) * packetHeader
	}
	return n + messageOverhead
}

// detach returns a copy of m, a message that lives in the reader's
// buffers, with memory of its own: the envelope is copied and the packets
// point into the copy, wherever a layer left them (chord drops its route
// header packet, for one). A packet that is not part of the envelope is
// left as it is.
func (m *Message) detach() *Message {
	d := new(Message)
	*d = *m
	d.slab = false
	d.envelope = make([]byte, len(m.envelope))
	copy(d.envelope, m.envelope)
	if len(m.Packets) <= len(d.inline) {
		d.Packets = d.inline[:len(m.Packets)]
	} else {
		d.Packets = make([][]byte, len(m.Packets))
	}
	for i, p := range m.Packets {
		if off, ok := offsetIn(m.envelope, p); ok {
			d.Packets[i] = d.envelope[off : off+len(p) : off+len(p)]
		} else {
			d.Packets[i] = p
		}
	}
	return d
}

// offsetIn reports where p lies within buf, if it does.
func offsetIn(buf, p []byte) (int, bool) {
	if len(p) == 0 {
		return 0, true // an empty packet: any place will do
	}
	b := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	q := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	if len(p) > len(buf) || q < b || q-b > uintptr(len(buf)-len(p)) {
		return 0, false
	}
	return int(q - b), true
}

// budget is a queue's byte bound, shared by the goroutines that fill and
// drain it.
type budget struct {
	used atomic.Int64
	max  int64
}

// take reserves n bytes. One message larger than the whole bound may go
// into an empty queue, so that any message the frame limit allows can be
// handled at all.
func (b *budget) take(n int64) bool {
	if u := b.used.Add(n); u > b.max && u != n {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes.
func (b *budget) give(n int64) { b.used.Add(-n) }

// admit reserves room in a queue with byte bound b and backlog messages
// already waiting, for m or, when m would have to leave the reader's
// buffers, for its copy. It returns the message to queue and what it
// counts; false when there is no room.
func admit(m *Message, backlog int, b *budget) (*Message, int64, bool) {
	if m.slab && backlog < pinnedQueued {
		size := messageSize(m)
		if int64(backlog+1)*size <= b.max/8 && b.take(size) {
			return m, size, true
		}
	}
	size := ownSize(m)
	if !b.take(size) {
		return m, 0, false
	}
	if m.slab {
		m = m.detach()
	}
	return m, size, true
}
