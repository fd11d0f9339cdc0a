package base

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Admission: how many connections the socket lets in, in total and per
// source. A source is the remote IP address masked to a prefix
// (WithSourcePrefix: one IPv4 address, one IPv6 /64 by default); loopback
// addresses are exempt by default (WithLoopbackExempt), so that a cluster
// on one host is bound by the totals only.
//
// Two tables are bounded, each in total and per source:
//
//   - pending handshakes: WithMaxPendingHandshakes, WithMaxPendingPerSource;
//   - live connections that peers dialled to this node: WithMaxConns,
//     WithMaxConnsPerSource.
//
// A newcomer over its source's bound is refused with a connection-limit
// verdict. When a table is full in total, a newcomer from a source with
// fewer entries displaces an entry of the source with the most, provided
// that source keeps at least as many as the newcomer's will have (it has at
// least two more), so displacement never goes back and forth: the oldest
// handshake of that source still waiting for the peer's Hello, or the
// newest live connection of that source. Exempt connections are never
// displaced and count as a source of their own with none. Connections this
// node dialled are its own choice: they count towards WithMaxConns only.

// sourceOf returns the source of a remote address, and false if per-source
// limits do not apply to it: an exempt loopback address, or an address
// that is not an IP address (a custom listener's).
func (s *Socket) sourceOf(a net.Addr) (netip.Prefix, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap().WithZone("")
	if s.cfg.loopbackExempt && ip.IsLoopback() {
		return netip.Prefix{}, false
	}
	bits := s.cfg.sourceBits6
	if ip.Is4() {
		bits = s.cfg.sourceBits4
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

// pendingSet tracks the accepted connections in handshake, in total and by
// source.
type pendingSet struct {
	mu    sync.Mutex
	total int
	bySrc map[netip.Prefix][]*pendingConn // oldest first; counted sources only
}

// pendingConn is one accepted connection in its handshake.
type pendingConn struct {
	nc        net.Conn
	src       netip.Prefix
	counted   bool // per-source limits apply
	waiting   bool // the peer's first frame (Preamble) is not read yet: it may be displaced
	displaced bool // its slot went to a newcomer
	left      bool // no longer in the set
}

// enterPending takes a pending-handshake slot for a newly accepted
// connection. When there is none, it returns why, and whether the
// connection's own source is over its bound.
func (s *Socket) enterPending(nc net.Conn) (pc *pendingConn, why string, bySource bool) {
	pc = &pendingConn{nc: nc, waiting: true}
	pc.src, pc.counted = s.sourceOf(nc.RemoteAddr())
	p := &s.pend
	p.mu.Lock()
	defer p.mu.Unlock()
	mine := 0
	if pc.counted {
		mine = len(p.bySrc[pc.src])
		if mine >= s.cfg.maxPendingPerSrc {
			return nil, fmt.Sprintf("%d handshakes pending from %s", mine, pc.src), true
		}
	}
	if p.total >= s.cfg.maxPending {
		victim := p.victimLocked(mine)
		if victim == nil {
			return nil, fmt.Sprintf("%d handshakes pending", p.total), false
		}
		// The victim's handshake is blocked reading the peer's Hello (or
		// about to be): a read deadline in the past ends it, and it then
		// refuses its peer with a verdict (handshake).
		victim.displaced = true
		p.removeLocked(victim)
		_ = victim.nc.SetReadDeadline(time.Unix(1, 0))
		s.ctr.handshakesDisplaced.Add(1)
	}
	p.total++
	if pc.counted {
		if p.bySrc == nil {
			p.bySrc = make(map[netip.Prefix][]*pendingConn)
		}
		p.bySrc[pc.src] = append(p.bySrc[pc.src], pc)
	}
	return pc, "", false
}

// victimLocked picks the handshake a newcomer whose source has mine
// pending handshakes may displace: the oldest one still waiting for the
// peer's Hello, of the source with the most, if that source has at least
// mine+2. The caller holds mu.
func (p *pendingSet) victimLocked(mine int) *pendingConn {
	var victim *pendingConn
	most := mine + 1
	for _, list := range p.bySrc {
		if len(list) <= most {
			continue
		}
		for _, pc := range list {
			if pc.waiting {
				victim, most = pc, len(list)
				break
			}
		}
	}
	return victim
}

// removeLocked takes pc out of the set. The caller holds mu.
func (p *pendingSet) removeLocked(pc *pendingConn) {
	if pc.left {
		return
	}
	pc.left = true
	p.total--
	if !pc.counted {
		return
	}
	list := p.bySrc[pc.src]
	for i, x := range list {
		if x == pc {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.bySrc, pc.src)
	} else {
		p.bySrc[pc.src] = list
	}
}

// leave frees pc's slot, if it was not displaced already.
func (p *pendingSet) leave(pc *pendingConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeLocked(pc)
}

// firstFrameRead marks that pc's handshake has read the peer's first frame
// (its Preamble), so it can no longer be displaced; false if it was
// displaced already.
func (p *pendingSet) firstFrameRead(pc *pendingConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.waiting = false
	return !pc.displaced
}

// isDisplaced reports whether pc's slot went to a newcomer.
func (p *pendingSet) isDisplaced(pc *pendingConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pc.displaced
}

// roomLocked decides whether a new connection from src (counted: the
// per-source limits apply; inbound: a peer dialled it) may be added, for a
// peer this node has no live connection to. why is empty if it may; victim
// is then a connection to displace first, or nil. bySource says that the
// refusal is the source's limit. The caller holds mu.
func (s *Socket) roomLocked(src netip.Prefix, counted, inbound bool) (victim *Conn, why string, bySource bool) {
	live, mine := 0, 0
	for _, x := range s.conns {
		if x.Err() != nil {
			continue
		}
		live++
		if counted && x.srcCounted && x.src == src {
			mine++
		}
	}
	if inbound && counted && mine >= s.cfg.connsPerSource() {
		return nil, fmt.Sprintf("%d connections from %s", mine, src), true
	}
	if live < s.cfg.maxConns {
		return nil, "", false
	}
	if inbound {
		if victim = s.displaceableLocked(mine); victim != nil {
			return victim, "", false
		}
	}
	return nil, fmt.Sprintf("%d connections", s.cfg.maxConns), false
}

// displaceableLocked picks the connection a newcomer whose source has mine
// connections may displace: the newest of the source with the most
// connections, if that source has at least mine+2. The caller holds mu.
func (s *Socket) displaceableLocked(mine int) *Conn {
	per := make(map[netip.Prefix]int)
	top, most := netip.Prefix{}, mine+1
	for _, x := range s.conns {
		if x.Err() != nil || !x.srcCounted {
			continue
		}
		per[x.src]++
		if n := per[x.src]; n > most {
			top, most = x.src, n
		}
	}
	if !top.IsValid() {
		return nil
	}
	var victim *Conn
	for _, x := range s.conns {
		if x.Err() == nil && x.srcCounted && x.src == top && (victim == nil || x.admitted > victim.admitted) {
			victim = x
		}
	}
	return victim
}

// displace closes c, an inbound connection whose slot goes to a newcomer
// from a less represented source, with a Bye that says why.
func (c *Conn) displace() {
	c.closeWithByeErr(fmt.Sprintf("displaced: the node is full and %s has the most connections", c.src),
		ErrConnLimit)
}

// count returns the number of pending handshakes holding a slot.
func (p *pendingSet) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}
