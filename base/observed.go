package base

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Observed addresses (docs/protocol.md §9.4): each side of a handshake
// tells the other where it sees it (Hello.Observed). One peer's word is
// not enough to advertise an address: a node takes an outside address only
// when peers from WithObservedQuorum distinct sources agree on it.

// DefaultObservedQuorum is how many independent peers must agree on an
// outside address before ObservedAddrs returns it (WithObservedQuorum).
const DefaultObservedQuorum = 2

// WithObservedQuorum sets how many peers, each from a distinct source
// (its IP address cut to the source prefix, WithSourcePrefix; loopback
// included), must vouch for an outside address of this node before
// ObservedAddrs returns it; 0 turns learning off. Default:
// DefaultObservedQuorum (2). With 1, a single peer can make a routing
// layer advertise any address it likes.
func WithObservedQuorum(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return optcheck.Invalid("observed-address quorum %d is negative", n)
		}
		c.observedQuorum = n
		return nil
	}
}

// Observed returns where the peer says it sees this node: on a connection
// this node dialled, its outside address and the port of the outgoing
// connection (after any NAT); on one the peer dialled, the address the
// peer dialled. It is "" when the peer did not say, or said something
// that is not an "ip:port" with a specified, unicast IP. It is the peer's
// claim; see Socket.ObservedAddrs for what the node makes of several.
func (c *Conn) Observed() string { return c.observed }

// parseObserved returns s normalised ("ip:port") if it is a usable
// observed address, else "".
func parseObserved(s string) string {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return ""
	}
	ip := ap.Addr().Unmap()
	if ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() {
		return ""
	}
	return netip.AddrPortFrom(ip, ap.Port()).String()
}

// observedFor is the observed address this node puts in its Hello: the
// connection's remote address (for the dialer the address it dialled, for
// the acceptor the peer's), or "" if it does not fit.
func observedFor(remote net.Addr) string {
	if remote == nil {
		return ""
	}
	s := remote.String()
	if len(s) > protocol.MaxObservedLen {
		return ""
	}
	return s
}

// observedState is what the socket has learnt of its outside addresses.
type observedState struct {
	mu     sync.Mutex
	learnt []string // the addresses agreed on last, most vouched for first
}

// candidate is the dialable address c's observation points to, or "": on
// a link the peer dialled, the address it reached this node at; on a link
// this node dialled, the observed IP with this node's listen port, if the
// node listens on an unspecified address (the observed port is then the
// outgoing connection's, which nobody can dial).
func (s *Socket) candidate(c *Conn) string {
	if c.observed == "" {
		return ""
	}
	if !c.peer.Outbound {
		return c.observed
	}
	if s.ln == nil {
		return ""
	}
	la, ok := s.ln.Addr().(*net.TCPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return ""
	}
	ap := netip.MustParseAddrPort(c.observed) // parseObserved made it
	return net.JoinHostPort(ap.Addr().String(), strconv.Itoa(la.Port))
}

// observerSource is the source a peer's vote counts for: its IP address
// cut to the source prefix. Loopback is not exempt here: each loopback
// address is a source of its own.
func (s *Socket) observerSource(c *Conn) (netip.Prefix, bool) {
	ta, ok := c.raw.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap().WithZone("")
	bits := s.cfg.sourceBits6
	if ip.Is4() {
		bits = s.cfg.sourceBits4
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// ObservedAddrs returns the outside addresses of this node that its peers
// agree on, most vouched for first: each live link's Observed gives one
// candidate (the address the peer dialled, or, on a link this node
// dialled, the observed IP with the listen port when the node listens on
// an unspecified address), and a candidate counts once per source
// (WithSourcePrefix) of the peers that give it. Candidates that
// WithObservedQuorum sources give are returned, at most
// protocol.MaxRecordAddrs. Once agreed on, addresses are kept until a
// quorum agrees on others, so losing links does not make them flap, and no
// peer below the quorum can make the node drop them either. The node's own
// advertised address is never among them.
func (s *Socket) ObservedAddrs() []string {
	o := &s.observed
	o.mu.Lock()
	defer o.mu.Unlock()
	if s.cfg.observedQuorum == 0 {
		return nil
	}
	votes := make(map[string]map[netip.Prefix]bool)
	for _, c := range s.Conns() {
		cand := s.candidate(c)
		if cand == "" || cand == s.advertised {
			continue
		}
		src, ok := s.observerSource(c)
		if !ok {
			continue
		}
		if votes[cand] == nil {
			votes[cand] = make(map[netip.Prefix]bool)
		}
		votes[cand][src] = true
	}
	var agreed []string
	for a, srcs := range votes {
		if len(srcs) >= s.cfg.observedQuorum {
			agreed = append(agreed, a)
		}
	}
	if len(agreed) > 0 {
		slices.SortFunc(agreed, func(a, b string) int {
			if c := cmp.Compare(len(votes[b]), len(votes[a])); c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
		if len(agreed) > protocol.MaxRecordAddrs {
			agreed = agreed[:protocol.MaxRecordAddrs]
		}
		if !slices.Equal(agreed, o.learnt) {
			s.log.Info("peers agree on this node's outside address", "addrs", agreed)
		}
		o.learnt = agreed
	}
	return slices.Clone(o.learnt)
}
