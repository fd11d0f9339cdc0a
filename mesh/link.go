package mesh

import (
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
)

// link is the mesh's state of one connection to a neighbour, kept with
// the connection (base.Conn.SetLayerState).
type link struct {
	c  *base.Conn
	no uint32 // unique within the socket, never 0: names the link in the seen-state

	// slowSince is when an origin send last found this neighbour's queue
	// full for longer than the slow wait (Unix ns; 0: not slow). While it
	// is slow, sends do not wait for it: a copy that finds its queue full
	// is dropped. It stops being slow when its queue takes a copy again.
	slowSince atomic.Int64
	closing   atomic.Bool // Abort was called

	// budget admits the new broadcasts this neighbour sends; only the
	// connection's reader touches it.
	budget budget
}

// budget is a token bucket in messages and bytes per second, one second
// of each deep, scaled down while its neighbour abuses it: when it runs
// dry the rate halves, and halves again every further second of refusals
// without a break, down to a sixteenth; every second within budget doubles
// it back. Honest relays downstream of a flooder therefore see the
// flood shrink instead of carrying a full budget's worth of it on top of
// their own traffic.
type budget struct {
	msgs, bytes float64 // tokens
	scale       float64 // share of the configured rate granted now (0: not started)
	last        int64   // when the tokens were last topped up, Unix ns
	lastOver    int64   // the last refusal, Unix ns
	overSince   int64   // the first refusal of the current run, Unix ns
	lastScale   int64   // when scale last changed, Unix ns
}

// minBudgetScale is the smallest share of its budget an abusive neighbour
// is cut down to.
const minBudgetScale = 1.0 / 16

// admit takes a broadcast of n bytes from the bucket, topped up to now, and
// reports whether it had the tokens. A message bigger than the bucket's
// byte depth passes when the bucket is full.
func (b *budget) admit(now int64, n int, cfg *config) bool {
	const second = int64(time.Second)
	if b.scale == 0 {
		b.scale = 1
		b.msgs, b.bytes = float64(cfg.floodRate), float64(cfg.floodBytes)
		b.last = now
	}
	rate, byteRate := b.scale*float64(cfg.floodRate), b.scale*float64(cfg.floodBytes)
	if dt := float64(now-b.last) / 1e9; dt > 0 {
		b.msgs = min(rate, b.msgs+dt*rate)
		b.bytes = min(byteRate, b.bytes+dt*byteRate)
	}
	b.last = now
	need := min(float64(n), byteRate)
	if b.msgs >= 1 && b.bytes >= need {
		b.msgs--
		b.bytes -= need
		if b.scale < 1 && now-b.lastOver > second && now-b.lastScale >= second {
			b.scale = min(1, 2*b.scale) // a second within budget
			b.lastScale = now
		}
		return true
	}
	newRun := now-b.lastOver > second // the last refusal was over a second ago
	if newRun {
		b.overSince = now
	}
	b.lastOver = now
	if (newRun || now-b.lastScale >= second) && b.scale > minBudgetScale {
		b.scale = max(minBudgetScale, b.scale/2)
		b.lastScale = now
		b.msgs = min(b.msgs, b.scale*float64(cfg.floodRate))
		b.bytes = min(b.bytes, b.scale*float64(cfg.floodBytes))
	}
	return false
}

// abusing reports whether the neighbour has been refused, with no second
// free of refusals, for at least d (0: never).
func (b *budget) abusing(now int64, d time.Duration) bool {
	return d > 0 && b.lastOver == now && now-b.overSince >= int64(d)
}

// linkOf returns c's link state, making it on first use.
func (s *Socket) linkOf(c *base.Conn) *link {
	if l, ok := c.LayerState().(*link); ok {
		return l
	}
	return c.SetLayerState(&link{c: c, no: s.linkSeq.Add(1)}).(*link)
}

// abort closes l's connection once, for reason, without waiting.
func (l *link) abort(reason error) bool {
	if !l.closing.CompareAndSwap(false, true) {
		return false
	}
	l.c.Abort(reason)
	return true
}
