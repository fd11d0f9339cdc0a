package mesh

import (
	"context"
	"sync"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// dialSlots enforces WithMaxOutgoing on automatic dials (peer exchange,
// route searches, route answers): outbound links plus automatic dials in
// flight never exceed the cap. Every automatic dial reserves a slot first
// and gives it back once base.Connect has returned; a link it made is by
// then registered (base runs the connection hook before Connect returns)
// and holds the slot as an outbound link instead. A dial that failed,
// reused an existing link or lost to an inbound duplicate leaves nothing
// behind. Links made by the user's Connect count too, so automatic dials
// stop once the user has dialled as many.
type dialSlots struct {
	mu       sync.Mutex
	max      int
	outbound map[protocol.NodeID]*base.Conn // registered outbound links, by peer
	reserved int                            // automatic dials in flight
}

func newDialSlots(max int) *dialSlots {
	return &dialSlots{max: max, outbound: make(map[protocol.NodeID]*base.Conn)}
}

// reserve takes a slot for an automatic dial, if one is free.
func (d *dialSlots) reserve() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.outbound)+d.reserved >= d.max {
		return false
	}
	d.reserved++
	return true
}

// release gives back a slot taken by reserve.
func (d *dialSlots) release() {
	d.mu.Lock()
	d.reserved--
	d.mu.Unlock()
}

// free returns how many automatic dials could start now.
func (d *dialSlots) free() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.max - len(d.outbound) - d.reserved
}

// linkChanged follows the registry from the connection hook. A link is
// counted from its "up" until its "down", even while it is closing, so the
// count never drops before the link is gone; a new link to a node replaces
// the old one.
func (d *dialSlots) linkChanged(c *base.Conn, up bool) {
	id := c.ID()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case up && c.Peer().Outbound:
		d.outbound[id] = c
	case up:
		delete(d.outbound, id)
	case d.outbound[id] == c:
		delete(d.outbound, id)
	}
}

// outboundLinks returns the registered outbound links.
func (d *dialSlots) outboundLinks() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.outbound)
}

// dialAuto dials addr for an automatic purpose inside a reserved outgoing
// slot. reserved is false, and nothing was dialled, when no slot was free.
func (s *Socket) dialAuto(ctx context.Context, addr string) (c *base.Conn, reserved bool, err error) {
	if !s.slots.reserve() {
		return nil, false, nil
	}
	defer s.slots.release()
	c, err = s.base.Connect(ctx, addr)
	return c, true, err
}
