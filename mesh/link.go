package mesh

import (
	"sync/atomic"

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
