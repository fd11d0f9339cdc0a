package mesh

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
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

	// all paces every new broadcast this neighbour sends (WithFloodBudget);
	// own paces, and cuts, those it originates itself, with hop byte 0
	// (WithOriginBudget). Only the connection's reader touches them.
	all, own budget
	timer    *time.Timer // pause's, made on first use

	// rb bounds what the neighbour's peer records cost this node; the
	// goroutine that runs Handle for the link's messages touches it.
	rb recordBudget

	// pb bounds the punch messages the neighbour sends (punch.go); only
	// the connection's reader touches it.
	pb punchBudget
}

// budget is a token bucket in messages and bytes per second, a sixteenth
// of a second of each deep, that paces what a neighbour sends rather than
// dropping it: a broadcast that finds the bucket short waits, on the
// connection's reader, until its tokens are due, so the neighbour's own
// sending slows down (its Send blocks; what it relays and cannot queue,
// it drops) and nothing it originates is lost here.
//
// A budget that cuts (the one for what the neighbour originates) also
// halves its rate, every budgetWindow, down to minBudgetScale, while the
// neighbour uses nine tenths of it or more and still has to wait: it
// sends at the budget without a pause, as a flooder does. The rate
// doubles back every second in which nothing had to wait. A burst the
// bucket absorbs costs nothing, while a flood is cut to a trickle within
// about 100 ms. What a neighbour relays is never cut, only paced:
// a node downstream of a flooder relays its flood too, beside honest
// traffic, and must not be taken for the flooder.
type budget struct {
	rate, byteRate float64 // configured, per second (0: not set up)
	cuts           bool
	msgs, bytes    float64 // tokens; negative while a broadcast waits for them
	scale          float64 // share of the configured rate granted now
	last           int64   // when the tokens were last topped up, Unix ns
	winStart       int64   // the current window's start, Unix ns
	taken, waited  int     // broadcasts charged in the current window, and those that waited
	lastWait       int64   // the end of the last window in which a broadcast waited
	lastScale      int64   // when scale last changed, Unix ns
	floorSince     int64   // since when scale has been at its floor (0: it is not)
}

const (
	// minBudgetScale is the smallest share of its budget a neighbour is
	// cut down to.
	minBudgetScale = 1.0 / 16
	// budgetWindow is how long a neighbour's use of its budget is measured
	// over before the budget is cut, or restored.
	budgetWindow = int64(25 * time.Millisecond)
	// budgetDepth is how much of a second's budget the bucket holds.
	budgetDepth = 1.0 / 16
)

// take charges a broadcast of n bytes to the bucket, topped up to now, and
// returns how long it must wait for its tokens (0: none). A message bigger
// than the bucket's byte depth is charged the depth.
func (b *budget) take(now int64, n int) time.Duration {
	if b.scale == 0 {
		b.scale = 1
		b.msgs, b.bytes = budgetDepth*b.rate, budgetDepth*b.byteRate
		b.last, b.winStart = now, now
	}
	if span := now - b.winStart; span >= budgetWindow {
		used := float64(b.taken) * 1e9 / float64(span) / (b.scale * b.rate)
		switch {
		case b.waited > 0:
			b.lastWait = now
			if b.cuts && used >= 0.9 && b.scale > minBudgetScale {
				b.scale, b.lastScale = max(minBudgetScale, b.scale/2), now
				if b.scale == minBudgetScale {
					b.floorSince = now
				}
			}
		case b.scale < 1 && now-b.lastWait >= int64(time.Second) && now-b.lastScale >= int64(time.Second):
			b.scale, b.lastScale, b.floorSince = min(1, 2*b.scale), now, 0
		}
		b.winStart, b.taken, b.waited = now, 0, 0
	}
	rate, byteRate := b.scale*b.rate, b.scale*b.byteRate
	depth, byteDepth := max(budgetDepth*rate, 1), max(budgetDepth*byteRate, 1)
	if dt := float64(now-b.last) / 1e9; dt > 0 {
		b.msgs = min(depth, b.msgs+dt*rate)
		b.bytes = min(byteDepth, b.bytes+dt*byteRate)
	}
	b.last = now
	b.msgs--
	b.bytes -= min(float64(n), byteDepth)
	b.taken++
	if b.msgs >= 0 && b.bytes >= 0 {
		return 0
	}
	b.waited++
	return time.Duration(max(-b.msgs/rate, -b.bytes/byteRate, 0) * 1e9)
}

// abusing reports whether the budget has been at its floor for at least
// d (0: never).
func (b *budget) abusing(now int64, d time.Duration) bool {
	return d > 0 && b.floorSince != 0 && now-b.floorSince >= int64(d)
}

// charge charges a new broadcast from this neighbour, with hop byte hops
// and envelope size n, to its budgets, and returns how long it must wait.
func (l *link) charge(now int64, hops uint8, n int, cfg *config) time.Duration {
	if l.all.rate == 0 {
		l.all = budget{rate: float64(cfg.floodRate), byteRate: float64(cfg.floodBytes)}
		l.own = budget{rate: float64(cfg.originRate), byteRate: float64(cfg.floodBytes), cuts: true}
	}
	wait := l.all.take(now, n)
	if hops == 0 {
		wait = max(wait, l.own.take(now, n))
	}
	return wait
}

// pause waits for d on the connection's reader, and reports false if the
// connection closed meanwhile.
func (l *link) pause(d time.Duration) bool {
	if l.timer == nil {
		l.timer = time.NewTimer(d)
	} else {
		l.timer.Reset(d)
	}
	select {
	case <-l.timer.C:
		return true
	case <-l.c.Done():
		l.timer.Stop()
		return false
	}
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

// replacement returns the live connection to c's node that replaced c
// (closing, as a duplicate of it), or nil if there is none yet.
func (s *Socket) replacement(c *base.Conn) *base.Conn {
	if cur, ok := s.base.Conn(c.ID()); ok && cur != c {
		return cur
	}
	return nil
}

// rejoinWait bounds how long a message waits for a neighbour whose link
// is closing, or was closed by the peer as a duplicate (sendToNeighbour):
// the connection kept has passed its handshake at one end and is about to
// be registered at the other.
const rejoinWait = time.Second

// maxRejoining bounds the neighbours waited for so.
const maxRejoining = 64

// noteRejoiningLocked keeps track of the neighbours that are expected
// back: c's peer, if c went down because the peer kept another connection
// that is not registered here yet (its Bye said so); it is forgotten when
// a link to it comes up. The caller holds nmu; snap is the new snapshot.
func (s *Socket) noteRejoiningLocked(c *base.Conn, up bool, snap []*base.Conn) {
	id := c.ID()
	if up {
		delete(s.rejoining, id)
		return
	}
	if !errors.Is(c.Err(), base.ErrDuplicate) || slicesContainsID(snap, id) {
		return
	}
	now := time.Now()
	if len(s.rejoining) >= maxRejoining {
		for p, until := range s.rejoining {
			if !now.Before(until) {
				delete(s.rejoining, p)
			}
		}
		if len(s.rejoining) >= maxRejoining {
			return
		}
	}
	s.rejoining[id] = now.Add(rejoinWait)
}

// sendOrReplaced runs send on c, or, if c is closing, on the connection
// that replaced it; it returns the connection it tried last.
func (s *Socket) sendOrReplaced(c *base.Conn, send func(*base.Conn) error) (*base.Conn, error) {
	err := send(c)
	if errors.Is(err, ErrClosed) {
		if cur := s.replacement(c); cur != nil {
			return cur, send(cur)
		}
	}
	return c, err
}

// forward relays m's envelope env to c, or to the connection that
// replaced it (sendOrReplaced).
func (s *Socket) forward(c *base.Conn, m *base.Message, env []byte) (*base.Conn, error) {
	return s.sendOrReplaced(c, func(c *base.Conn) error { return c.ForwardFrom(m.Conn, m.Hops, env) })
}

// closedLinkDrop records that a copy of ref did not go to neighbour to
// because its link was closing: it is announced to it instead, over the
// link that replaces it (Stats.ClosedLinkDrops).
func (s *Socket) closedLinkDrop(to protocol.NodeID, ref protocol.BroadcastRef) {
	s.ctr.closedLinkDrops.Add(1)
	s.rep.missed(ref, to)
}
