package base

import "github.com/meshsock/meshsock/flags"

// resendWindow keeps a link's most recent compressed frames, oldest first,
// so that one the peer fails to decompress can be sent again uncompressed.
// It holds the envelopes themselves, which may be megabytes each (a small
// compressed frame can stand for a 4 MiB body), so it is bounded three
// ways: in frames (WithResendWindow), in the bytes of the envelopes it
// keeps alive (WithResendBytes) and in age (WithResendAge). The oldest
// frames go first, and a link that stops sending compressed frames
// releases everything, ring included. Writer goroutine only.
type resendWindow struct {
	ring  []retainedFrame // in frame order from head; nil when empty
	head  int
	n     int
	bytes int // sum of frameBytes over the retained frames
}

// retainedFrame is a compressed frame kept for a possible resend. env is
// nil once the frame has been resent.
type retainedFrame struct {
	frameNo uint64
	env     []byte
	at      int64 // when it was written, UnixNano
	hops    uint8
	method  flags.Method
}

// frameBytes is what a retained envelope counts against the byte bound:
// the whole buffer it keeps alive (a decompressed body that is relayed
// may have room to spare).
func frameBytes(env []byte) int { return cap(env) }

// add retains f, first forgetting the oldest frames until it fits. A frame
// larger than maxBytes on its own is not retained.
func (rw *resendWindow) add(f retainedFrame, maxFrames, maxBytes int) {
	size := frameBytes(f.env)
	if size > maxBytes {
		return
	}
	for rw.n > 0 && (rw.n >= maxFrames || rw.bytes+size > maxBytes) {
		rw.dropOldest()
	}
	if rw.n == len(rw.ring) {
		rw.grow(maxFrames)
	}
	rw.ring[(rw.head+rw.n)%len(rw.ring)] = f
	rw.n++
	rw.bytes += size
}

// grow doubles the ring (from 16 frames, up to maxFrames), so that a link
// that compresses little keeps a small one.
func (rw *resendWindow) grow(maxFrames int) {
	ring := make([]retainedFrame, min(max(2*len(rw.ring), 16), maxFrames))
	for i := range rw.n {
		ring[i] = rw.ring[(rw.head+i)%len(rw.ring)]
	}
	rw.ring, rw.head = ring, 0
}

func (rw *resendWindow) dropOldest() {
	f := &rw.ring[rw.head]
	rw.bytes -= frameBytes(f.env)
	*f = retainedFrame{}
	rw.head = (rw.head + 1) % len(rw.ring)
	rw.n--
}

// expire forgets the frames written before cutoff (UnixNano); once none is
// left it releases the ring too.
func (rw *resendWindow) expire(cutoff int64) {
	for rw.n > 0 && rw.ring[rw.head].at < cutoff {
		rw.dropOldest()
	}
	if rw.n == 0 {
		rw.ring, rw.head = nil, 0
	}
}

// take returns retained frame frameNo and forgets its envelope (a frame is
// resent once); false if it is not retained.
func (rw *resendWindow) take(frameNo uint64) (retainedFrame, bool) {
	lo, hi := 0, rw.n
	for lo < hi { // frame numbers increase from head
		mid := int(uint(lo+hi) >> 1)
		if rw.ring[(rw.head+mid)%len(rw.ring)].frameNo < frameNo {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == rw.n {
		return retainedFrame{}, false
	}
	f := &rw.ring[(rw.head+lo)%len(rw.ring)]
	if f.frameNo != frameNo || f.env == nil {
		return retainedFrame{}, false
	}
	out := *f
	rw.bytes -= frameBytes(f.env)
	f.env = nil
	return out, true
}
