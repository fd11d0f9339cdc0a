package mesh

import (
	"context"
	"math/rand/v2"
	"slices"
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
//
// The one exception is a probe (WithProbe), which dials without a slot: a
// probe link that takes the node past the cap replaces another outgoing
// link that an automatic dial made (swapVictim), so outbound links plus
// dials in flight never exceed the cap by more than one, and only for as
// long as a probe and its swap take. A probe that lands while the node is
// within its cap swaps nothing, yet a dial in flight (reserved while a
// slot was free, perhaps in the very maintenance round that started the
// probe) may land after it and take the node past the cap: such a link is
// remembered (over), and maintenance closes it.
type dialSlots struct {
	mu       sync.Mutex
	max      int
	outbound map[protocol.NodeID]*base.Conn // registered outbound links, by peer
	auto     map[protocol.NodeID]bool       // those made by automatic dials (swappable)
	over     []*base.Conn                   // automatic links that took the node past its cap, oldest first
	reserved int                            // automatic dials in flight
}

func newDialSlots(max int) *dialSlots {
	return &dialSlots{max: max, outbound: make(map[protocol.NodeID]*base.Conn), auto: make(map[protocol.NodeID]bool)}
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
		delete(d.auto, id) // until markAuto says otherwise
	case up, d.outbound[id] == c:
		delete(d.outbound, id)
		delete(d.auto, id)
	}
}

// markAuto records that c, if it is a current outbound link, was made by
// an automatic dial, so a probe may swap it away; links made by Connect
// never are.
func (d *dialSlots) markAuto(c *base.Conn) {
	if c == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.outbound[c.ID()] != c || d.auto[c.ID()] {
		return
	}
	d.auto[c.ID()] = true
	if d.liveLocked() > d.max {
		d.over = append(d.over, c)
	}
}

// liveLocked counts the outbound links not yet closing.
func (d *dialSlots) liveLocked() int {
	n := 0
	for _, x := range d.outbound {
		if x.Err() == nil {
			n++
		}
	}
	return n
}

// hasAuto reports whether an automatic dial made one of the outbound links.
func (d *dialSlots) hasAuto() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.auto) > 0
}

// outboundLinks returns the registered outbound links.
func (d *dialSlots) outboundLinks() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.outbound)
}

// swapVictim returns the link to close when probe link c took the node
// past its cap: a random outbound link made by an automatic dial other
// than c, else c itself; nil while the node is within its cap. With c nil
// (maintenance) it returns the newest automatic link that took the node
// past its cap and is still up (see over), while the node is past it: a
// dial that landed after a probe that saw no excess. Links made by Connect
// may take the node past its cap: they are never closed, and an excess
// of theirs alone closes no automatic link.
func (d *dialSlots) swapVictim(c *base.Conn) *base.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Links already closing (a swap in progress) count no more.
	d.over = slices.DeleteFunc(d.over, func(x *base.Conn) bool {
		return d.outbound[x.ID()] != x || x.Err() != nil
	})
	if d.liveLocked() <= d.max {
		d.over = d.over[:0]
		return nil
	}
	var v *base.Conn
	if c == nil {
		if len(d.over) == 0 {
			return nil
		}
		v = d.over[len(d.over)-1]
	} else {
		var pool []*base.Conn
		for id := range d.auto {
			if x := d.outbound[id]; x != nil && x.Err() == nil && id != c.ID() {
				pool = append(pool, x)
			}
		}
		switch {
		case len(pool) > 0:
			v = pool[rand.N(len(pool))]
		case d.auto[c.ID()] && d.outbound[c.ID()] == c:
			v = c
		default:
			return nil
		}
	}
	// Forget it now, not when its close is seen, so that a concurrent call
	// (the probe's and maintenance's) does not pick a second victim.
	delete(d.outbound, v.ID())
	delete(d.auto, v.ID())
	d.over = slices.DeleteFunc(d.over, func(x *base.Conn) bool { return x == v })
	if d.liveLocked() <= d.max {
		d.over = d.over[:0]
	}
	return v
}

// dialAuto dials addr for an automatic purpose inside a reserved outgoing
// slot. reserved is false, and nothing was dialled, when no slot was free.
func (s *Socket) dialAuto(ctx context.Context, addr string) (c *base.Conn, reserved bool, err error) {
	if !s.slots.reserve() {
		return nil, false, nil
	}
	defer s.slots.release()
	c, err = s.base.Connect(ctx, addr)
	if err == nil {
		s.slots.markAuto(c)
	}
	return c, true, err
}
