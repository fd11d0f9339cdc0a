package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/meshsock/meshsock/discover"
	"github.com/meshsock/meshsock/internal/optcheck"
)

// LAN discovery (package discover, docs/protocol.md §17): a node with
// WithLAN finds the nodes of its network and protocol on the local network
// (or host) by signed UDP datagrams, and feeds what it finds to the table
// of known peers, which the maintenance loop dials: with discovery on
// (WithDiscovery, the default), nodes started with no address to connect
// to form one mesh by themselves.

// Discovered is a node found by LAN discovery: its ID, key, listen
// addresses (an unspecified host replaced by the address its datagram
// came from), where its datagram came from and when.
type Discovered = discover.Peer

// LANStats counts a node's discovery datagrams (Stats.LAN): sent, heard,
// and dropped by cause.
type LANStats = discover.Stats

// LANLimits bound what a flood of discovery datagrams can cost; see
// discover.Limits for the fields and their defaults.
type LANLimits = discover.Limits

// LANConfig configures LAN discovery (WithLAN). The zero value is valid:
// broadcast probes to 255.255.255.255 on port discover.DefaultPort every
// 5 s, with the default bounds.
type LANConfig struct {
	// Port is the UDP port probes are sent to and received on. Default:
	// discover.DefaultPort (47474). With OnHost it is ignored: each node
	// uses its own TCP port number.
	Port int
	// Address is where probes go: a broadcast address (default
	// 255.255.255.255; a subnet's, such as 192.168.1.255, reaches that
	// subnet only) or a multicast group (such as 239.255.47.47, which
	// the node joins on the interface the kernel picks; Linux only).
	// Ignored with OnHost.
	Address string
	// Interval is the time between probes (jittered); a node not heard
	// from for 3 intervals is no longer listed. Default: 5 s.
	Interval time.Duration
	// Invisible makes the node probe but never answer, and mark its
	// probes hidden: it finds the others (and dials them) but is not
	// listed by them.
	Invisible bool
	// MaxPeers bounds the nodes listed at once. Default: 256.
	MaxPeers int
	// OnHost probes the ports of the range (WithPortRange, required) on
	// 127.0.0.1 instead of the network: each node receives on the UDP
	// port of its TCP port number, on 127.0.0.1 only.
	OnHost bool
	// Limits bound datagrams handled per second (all sources, and each
	// source address), signatures checked per second and answers sent
	// per second; zero fields take discover's defaults.
	Limits LANLimits
	// ListenPacket opens the discovery sockets (a hook for tests that run
	// nodes in network namespaces). Default: the system's.
	ListenPacket func(lc *net.ListenConfig, network, address string) (net.PacketConn, error)
}

// lanConfig is the mesh's part of the config for LAN discovery and port
// ranges.
type lanConfig struct {
	on        bool
	cfg       LANConfig
	portStart int
	portCount int // 0: no range
}

// WithLAN turns on LAN discovery: the node sends signed probes on the
// local network (or host, cfg.OnHost) at once and every cfg.Interval,
// answers those of other nodes of its protocol and network (unless
// cfg.Invisible), and dials the nodes it finds as it dials peers learnt by
// peer exchange (WithDiscovery must be on, as it is by default). Socket.Discover
// lists them; Stats.LAN counts datagrams and drops. Default: off.
func WithLAN(cfg LANConfig) Option {
	return func(c *config) error {
		if cfg.Port < 0 || cfg.Port > 65535 {
			return optcheck.Invalid("LAN discovery port %d", cfg.Port)
		}
		if cfg.Address != "" {
			if _, err := netip.ParseAddr(cfg.Address); err != nil {
				return optcheck.Invalid("LAN discovery address %q: %v", cfg.Address, err)
			}
		}
		dc := discover.Config{Interval: cfg.Interval, MaxPeers: cfg.MaxPeers, Limits: cfg.Limits}
		if err := dc.Validate(); err != nil {
			return err
		}
		c.lan.on, c.lan.cfg = true, cfg
		return nil
	}
}

// WithPortRange makes the node listen on the first free TCP port of
// start, start+1, ..., start+count-1, on the host of NewSocket's address
// ("127.0.0.1", "127.0.0.1:0", "" for every interface; a non-zero port
// there is an error), as app-net binds the first free port of
// PORT_START..PORT_START+PORT_RANGE. With WithLAN's OnHost, nodes of one
// host find each other by probing that range. NewSocket fails with an
// error matching ErrNoFreePort (and ErrListen) when every port is taken.
// Default: no range.
func WithPortRange(start, count int) Option {
	return func(c *config) error {
		if count <= 0 || start <= 0 || start+count-1 > 65535 {
			return optcheck.Invalid("port range %d+%d: want 1 <= start, start+count-1 <= 65535, count >= 1", start, count)
		}
		c.lan.portStart, c.lan.portCount = start, count
		return nil
	}
}

// validateLAN checks the options that depend on each other.
func (c *config) validateLAN() error {
	if c.lan.on && c.lan.cfg.OnHost && c.lan.portCount == 0 {
		return optcheck.Invalid("on-host LAN discovery needs WithPortRange")
	}
	return nil
}

// rangeHost returns the host NewSocket's address gives a port range.
func rangeHost(addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, nil // a bare host
	}
	if port != "" && port != "0" {
		return "", optcheck.Invalid("a port range and a listen port (%q) given", addr)
	}
	return host, nil
}

// listenRange listens on the first free port of the range; with on-host
// discovery it also takes the UDP port of the same number on 127.0.0.1,
// and moves on to the next port if either is taken.
func (c *config) listenRange(addr string) (net.Listener, net.PacketConn, error) {
	host, err := rangeHost(addr)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for p := c.lan.portStart; p < c.lan.portStart+c.lan.portCount; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !c.lan.on || !c.lan.cfg.OnHost {
			return ln, nil, nil
		}
		pc, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			_ = ln.Close()
			errs = append(errs, err)
			continue
		}
		return ln, pc, nil
	}
	last := errs[len(errs)-1]
	return nil, nil, fmt.Errorf("%w: ports %d to %d on %q (last: %w)", ErrNoFreePort,
		c.lan.portStart, c.lan.portStart+c.lan.portCount-1, host, last)
}

// startLAN starts LAN discovery, if on; onHost is the UDP socket
// listenRange took for on-host discovery.
func (s *Socket) startLAN(onHost net.PacketConn) error {
	lc := s.cfg.lan.cfg
	cfg := discover.Config{
		Interval:     lc.Interval,
		Invisible:    lc.Invisible,
		MaxPeers:     lc.MaxPeers,
		Limits:       lc.Limits,
		OnPeer:       s.heardNearby,
		ListenPacket: lc.ListenPacket,
		Logger:       s.log,
	}
	if lc.OnHost {
		cfg.Listen = onHost.LocalAddr().String()
		for p := s.cfg.lan.portStart; p < s.cfg.lan.portStart+s.cfg.lan.portCount; p++ {
			cfg.Targets = append(cfg.Targets, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		}
		given := onHost
		cfg.ListenPacket = func(l *net.ListenConfig, network, address string) (net.PacketConn, error) {
			if address == cfg.Listen && given != nil {
				pc := given
				given = nil
				return pc, nil
			}
			return l.ListenPacket(context.Background(), network, address)
		}
	} else {
		port, addr := lc.Port, lc.Address
		if port == 0 {
			port = discover.DefaultPort
		}
		if addr == "" {
			addr = discover.DefaultAddress
		}
		cfg.Targets = []string{net.JoinHostPort(addr, strconv.Itoa(port))}
	}
	id := discover.Identity{
		Key:      s.base.PublicKey(),
		Sign:     s.base.Sign,
		Protocol: s.base.Protocol().ID(),
		Addrs:    func() []string { return s.rec.Load().Addrs },
	}
	if kr := s.base.NetworkKey(); kr != nil {
		id.Keyring = kr
	}
	svc, err := discover.New(cfg, id)
	if err != nil {
		return err
	}
	s.lan = svc
	return nil
}

// heardNearby takes a node LAN discovery found into the table of known
// peers, and wakes the maintenance loop to dial it.
func (s *Socket) heardNearby(p discover.Peer) {
	if p.ID == s.ID() {
		return
	}
	s.known.heardNearby(p.ID, p.Addrs)
	s.kick()
}

// Discover returns the nodes LAN discovery lists (WithLAN): those heard
// from within the last 3 intervals, most recent first. Unless one was
// heard from within the last interval, it probes first and waits a
// moment (discover.DefaultAnswerWait, 250 ms) for answers. It fails with
// ErrNoLAN without WithLAN, ErrClosed after Close, and, if ctx ends
// first, returns the nodes listed then with an error matching ErrTimeout.
func (s *Socket) Discover(ctx context.Context) ([]Discovered, error) {
	if s.lc.Closed() {
		return nil, ErrClosed
	}
	if s.lan == nil {
		return nil, ErrNoLAN
	}
	peers, err := s.lan.Discover(ctx)
	switch {
	case errors.Is(err, discover.ErrClosed):
		return nil, ErrClosed
	case err != nil:
		return peers, fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return peers, nil
}

// lanStats returns the discovery counters (zero without WithLAN).
func (s *Socket) lanStats() LANStats {
	if s.lan == nil {
		return LANStats{}
	}
	return s.lan.Stats()
}

// closeLAN stops LAN discovery.
func (s *Socket) closeLAN() {
	if s.lan != nil {
		_ = s.lan.Close()
	}
}
