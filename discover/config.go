package discover

import (
	"crypto/ed25519"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Defaults of Config and Limits.
const (
	DefaultPort       = 47474
	DefaultAddress    = "255.255.255.255"
	DefaultInterval   = 5 * time.Second
	DefaultMaxPeers   = 256                    // peers listed at once
	DefaultMaxAge     = 30 * time.Second       // a datagram's time may be this far off this node's clock
	DefaultAnswerWait = 250 * time.Millisecond // how long Discover waits for answers to its probe

	DefaultRate       = 200  // datagrams handled per second, all sources
	DefaultSourceRate = 10   // datagrams handled per second from one address (burst: twice that)
	DefaultMaxSources = 1024 // addresses rate-limited separately
	DefaultAnswerRate = 50   // answers sent per second
	DefaultVerifyRate = 200  // signatures checked per second
)

// Limits bound what a flood of datagrams can cost. Each rate is also the
// burst of its bucket (the per-source one's burst is twice its rate).
// Zero fields take the defaults.
type Limits struct {
	// Rate bounds the datagrams read that are looked at beyond their
	// size, from all sources together. Default: DefaultRate (200/s).
	Rate int
	// SourceRate bounds the datagrams handled from one IP address a
	// second. Default: DefaultSourceRate (10/s).
	SourceRate int
	// MaxSources bounds the addresses rate-limited separately (each
	// about 100 bytes); a new address beyond it is dropped until one
	// falls idle. Default: DefaultMaxSources (1024).
	MaxSources int
	// AnswerRate bounds the answers sent a second. Default:
	// DefaultAnswerRate (50/s).
	AnswerRate int
	// VerifyRate bounds the signatures checked a second (tens of µs
	// each). Default: DefaultVerifyRate (200/s).
	VerifyRate int
}

func (l *Limits) fill() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.Rate, DefaultRate)
	def(&l.SourceRate, DefaultSourceRate)
	def(&l.MaxSources, DefaultMaxSources)
	def(&l.AnswerRate, DefaultAnswerRate)
	def(&l.VerifyRate, DefaultVerifyRate)
}

func (l *Limits) validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"rate", l.Rate}, {"source rate", l.SourceRate}, {"max sources", l.MaxSources}, {"answer rate", l.AnswerRate}, {"verify rate", l.VerifyRate}} {
		if err := optcheck.CheckPositive("discovery "+f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

// Keyring is what the Service needs of a network keyring
// (*base.Keyring satisfies it): the keys, the primary one first. The
// primary key proves this node's datagrams; a datagram is accepted if it
// proves any of them.
type Keyring interface {
	Keys() [][]byte
}

// Identity is who the Service speaks for.
type Identity struct {
	// Key is the node's Ed25519 public key; the node ID derives from it.
	Key ed25519.PublicKey
	// Sign signs with the node's private key.
	Sign Signer
	// Protocol is the node's protocol ID: datagrams of another are
	// ignored.
	Protocol protocol.ProtocolID
	// Keyring, if not nil, proves this node's datagrams, and datagrams
	// without a proof under one of its keys are ignored.
	Keyring Keyring
	// Addrs returns the addresses to advertise (listen addresses, most
	// preferred first; an unspecified host such as "0.0.0.0:4444" is
	// read by receivers as the datagram's source address).
	Addrs func() []string
}

// Config configures a Service.
type Config struct {
	// Listen is the UDP address probes are received on. Default:
	// ":Port" (all interfaces) of the Port of Targets' first entry.
	// With SO_REUSEADDR (set on Linux), several nodes of one host can
	// share it and all hear a broadcast probe.
	Listen string
	// Targets are where probes are sent: a broadcast address
	// ("255.255.255.255:47474", or a subnet's), a multicast group
	// ("239.0.0.1:47474"), or a list of unicast addresses (the on-host
	// scan of a port range). Default: DefaultAddress:DefaultPort.
	Targets []string
	// Interval is the time between probes (each jittered by ±25 %); also
	// a peer is listed until 3 intervals after it was last heard from.
	// Default: DefaultInterval (5 s).
	Interval time.Duration
	// Invisible sends probes but never answers, and marks its probes as
	// hidden, so that this node finds the others but is not listed by
	// them.
	Invisible bool
	// MaxPeers bounds the peers listed at once (a few hundred bytes each); a
	// new peer beyond it is dropped (Stats.TableFull) until one expires.
	// Default: DefaultMaxPeers (256).
	MaxPeers int
	// MaxAge is how far a datagram's time may be from this node's clock
	// (either way). Default: DefaultMaxAge (30 s).
	MaxAge time.Duration
	// AnswerWait is how long Discover waits for answers after it probes.
	// Default: DefaultAnswerWait (250 ms).
	AnswerWait time.Duration
	// Limits bound the cost of a flood of datagrams.
	Limits Limits
	// OnPeer, if not nil, is called (on the Service's reading goroutine;
	// it must not block) with every verified peer heard from, each time.
	OnPeer func(Peer)
	// ListenPacket opens the UDP sockets, with lc's socket options (a
	// hook for tests that open them in a network namespace). Default:
	// lc.ListenPacket.
	ListenPacket func(lc *net.ListenConfig, network, address string) (net.PacketConn, error)
	// Logger receives debug logs of drops (rate-limited). Default:
	// silent.
	Logger *slog.Logger
}

// Validate checks the Config as New does, without opening anything;
// errors match base.ErrInvalidOption.
func (c Config) Validate() error {
	_, err := c.settings()
	return err
}

// settings is a Config with defaults filled and addresses parsed.
type settings struct {
	Config
	targets   []netip.AddrPort
	multicast netip.Addr // the group of a multicast target, if any
}

func (c Config) settings() (*settings, error) {
	if len(c.Targets) == 0 {
		c.Targets = []string{netip.AddrPortFrom(netip.MustParseAddr(DefaultAddress), DefaultPort).String()}
	}
	st := &settings{}
	for _, t := range c.Targets {
		ap, err := netip.ParseAddrPort(t)
		if err != nil || ap.Port() == 0 {
			return nil, optcheck.Invalid("discovery target %q: want ip:port", t)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().IsMulticast() {
			if len(c.Targets) != 1 {
				return nil, optcheck.Invalid("a multicast discovery target must be the only one")
			}
			st.multicast = ap.Addr()
		}
		st.targets = append(st.targets, ap)
	}
	if c.Listen == "" {
		c.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), st.targets[0].Port()).String()
		if st.targets[0].Addr().Is6() {
			c.Listen = netip.AddrPortFrom(netip.IPv6Unspecified(), st.targets[0].Port()).String()
		}
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.AnswerWait == 0 {
		c.AnswerWait = DefaultAnswerWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Limits.fill()
	for _, e := range []error{
		optcheck.CheckPositive("discovery interval", c.Interval),
		optcheck.CheckPositive("discovery max peers", c.MaxPeers),
		optcheck.CheckPositive("discovery max age", c.MaxAge),
		optcheck.CheckPositive("discovery answer wait", c.AnswerWait),
		c.Limits.validate(),
	} {
		if e != nil {
			return nil, e
		}
	}
	st.Config = c
	return st, nil
}
