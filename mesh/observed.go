package mesh

import (
	"net"
	"net/netip"
	"slices"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// WithObservedQuorum sets how many peers from distinct sources must agree
// on an outside address of this node before its record advertises it
// (base.WithObservedQuorum; docs/protocol.md §9.4); 0 turns it off.
// Default: base.DefaultObservedQuorum (2).
func WithObservedQuorum(n int) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithObservedQuorum(n))
		return nil
	}
}

// refreshObserved signs a new record when the outside addresses the peers
// agree on have changed. It runs on maintainLoop, after a link came or
// went.
func (s *Socket) refreshObserved() {
	learnt := s.base.ObservedAddrs()
	s.addrMu.Lock()
	if slices.Equal(learnt, s.learnt) {
		s.addrMu.Unlock()
		return
	}
	s.learnt = learnt
	old := s.rec.Load()
	addrs := recordAddrs(s.ownAddrs, learnt)
	if slices.Equal(addrs, old.Addrs) {
		s.addrMu.Unlock()
		return
	}
	_, err := s.signRecord(addrs, old.Meta, 0)
	s.addrMu.Unlock()
	if err != nil {
		s.log.Warn("cannot advertise the outside addresses peers agree on", "addrs", learnt, "err", err)
		return
	}
	s.log.Debug("advertising the outside addresses peers agree on", "addrs", addrs)
	s.pushRecord()
	select {
	case s.announceNow <- struct{}{}:
	default:
	}
}

// recordAddrs is the address list of this node's record: the addresses
// the user gave, then the learnt ones it does not hold already, at most
// protocol.MaxRecordAddrs in all. An address given with an unspecified
// host ("0.0.0.0:4000", "[::]:4000") moves after the learnt ones: others
// can dial a learnt one, while that one only tells the port.
func recordAddrs(own, learnt []string) []string {
	if len(learnt) == 0 {
		return slices.Clone(own)
	}
	var first, last []string
	for _, a := range own {
		if unspecifiedHost(a) {
			last = append(last, a)
		} else {
			first = append(first, a)
		}
	}
	out := first
	for _, a := range learnt {
		if len(out)+len(last) >= protocol.MaxRecordAddrs {
			break
		}
		if !slices.Contains(own, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return append(out, last...)
}

// unspecifiedHost reports whether addr's host is empty, 0.0.0.0 or ::.
func unspecifiedHost(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsUnspecified()
}
