package harness

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// tracker records which node got which broadcast. Everything it touches on
// a delivery is preallocated: one bit per (node, message), one counter and
// one timestamp slot per message.
type tracker struct {
	n, m  int
	seed  uint64
	start time.Time // monotonic reference for in-process timestamps

	bits      [][]uint64     // per node: bit k set once the node has message k
	remaining []atomic.Int32 // per message: nodes still to get it
	// stamp is, per message, the send time (ns since start) until the
	// message is covered, then its coverage latency. In procs mode it
	// holds the largest delivery latency reported so far.
	stamp []atomic.Int64

	sent       atomic.Int64 // broadcasts handed to Send successfully
	sendErrors atomic.Int64
	completed  atomic.Int64 // broadcasts every node has
	duplicates atomic.Int64 // arrivals at a node that already had the message
	bogus      atomic.Int64 // payloads the harness did not send
	lastDone   atomic.Int64 // ns since start of the latest completion

	window chan struct{} // one token per broadcast in flight
}

func newTracker(n, m, window int, seed uint64) *tracker {
	t := &tracker{
		n: n, m: m, seed: seed,
		start:     time.Now(),
		bits:      make([][]uint64, n),
		remaining: make([]atomic.Int32, m),
		stamp:     make([]atomic.Int64, m),
		window:    make(chan struct{}, window),
	}
	words := (m + 63) / 64
	backing := make([]uint64, n*words)
	for i := range t.bits {
		t.bits[i] = backing[i*words : (i+1)*words : (i+1)*words]
	}
	for i := range t.remaining {
		t.remaining[i].Store(int32(n - 1))
	}
	return t
}

// origin returns the node that sends message k: a seeded hash, so the
// choice does not depend on which sender goroutine takes the message.
func (t *tracker) origin(k int) int {
	return int(mix(t.seed, uint64(k)) % uint64(t.n))
}

// mix hashes k under seed: a seeded choice per operation that does not
// depend on which goroutine performs it.
func mix(seed, k uint64) uint64 {
	x := k*0x9e3779b97f4a7c15 ^ seed
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	return x
}

func (t *tracker) now() int64 { return int64(time.Since(t.start)) }

// sending records that message k is about to leave its origin: the origin
// counts as having it, so an echo back to it is a duplicate. stamp says
// whether to note the send time here (in-process runs).
func (t *tracker) sending(k int, stamp bool) {
	o := t.origin(k)
	atomic.OrUint64(&t.bits[o][k>>6], 1<<(k&63))
	if stamp {
		t.stamp[k].Store(t.now())
	}
}

// sendFailed gives back the window token of a broadcast that never left.
func (t *tracker) sendFailed() {
	t.sendErrors.Add(1)
	<-t.window
}

// mark sets node's bit for message k and reports whether it was new.
func (t *tracker) mark(node int, k int) bool {
	bit := uint64(1) << (k & 63)
	if atomic.OrUint64(&t.bits[node][k>>6], bit)&bit != 0 {
		t.duplicates.Add(1)
		return false
	}
	return true
}

// deliver records an in-process arrival of payload at node.
func (t *tracker) deliver(node int, payload []byte) {
	if len(payload) < PayloadHeader {
		t.bogus.Add(1)
		return
	}
	k := int(binary.LittleEndian.Uint32(payload))
	if k >= t.m || node < 0 || node >= t.n {
		t.bogus.Add(1)
		return
	}
	if !t.mark(node, k) {
		return
	}
	if t.remaining[k].Add(-1) == 0 {
		now := t.now()
		t.stamp[k].Store(now - t.stamp[k].Load())
		t.done(now)
	}
}

// deliverLatency records an arrival measured elsewhere (procs mode): lat
// is the time from Send to this node's arrival; the message's coverage
// latency is the largest of them.
func (t *tracker) deliverLatency(node int, k int, lat int64) {
	if k < 0 || k >= t.m || node < 0 || node >= t.n {
		t.bogus.Add(1)
		return
	}
	if !t.mark(node, k) {
		return
	}
	for {
		old := t.stamp[k].Load()
		if lat <= old || t.stamp[k].CompareAndSwap(old, lat) {
			break
		}
	}
	if t.remaining[k].Add(-1) == 0 {
		t.done(t.now())
	}
}

func (t *tracker) done(now int64) {
	t.completed.Add(1)
	for {
		old := t.lastDone.Load()
		if now <= old || t.lastDone.CompareAndSwap(old, now) {
			break
		}
	}
	<-t.window
}

// missing counts, over the first sent messages, those some node never got
// and the (node, message) arrivals missing.
func (t *tracker) missing(sent int) (messages, arrivals int64) {
	for k := 0; k < sent; k++ {
		if r := t.remaining[k].Load(); r > 0 {
			messages++
			arrivals += int64(r)
		}
	}
	return messages, arrivals
}

// arrivals counts first arrivals at a node other than the origin, over the
// first sent messages.
func (t *tracker) arrivals(sent int) int64 {
	var n int64
	for k := 0; k < sent; k++ {
		n += int64(t.n-1) - int64(t.remaining[k].Load())
	}
	return n
}

// latencies returns the coverage latencies of the covered messages among
// the first sent, sorted.
func (t *tracker) latencies(sent int) []int64 {
	out := make([]int64, 0, sent)
	for k := 0; k < sent; k++ {
		if t.remaining[k].Load() == 0 {
			out = append(out, t.stamp[k].Load())
		}
	}
	slices.Sort(out)
	return out
}

// perNode returns how many broadcasts each node has (its own included).
func (t *tracker) perNode() []int {
	out := make([]int, t.n)
	for i, b := range t.bits {
		for _, w := range b {
			out[i] += bits.OnesCount64(w)
		}
	}
	return out
}
