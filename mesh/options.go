package mesh

import (
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Defaults of the mesh's own bounds and timers. The connection-level ones
// are base's (base.Default…).
const (
	DefaultMaxOutgoing        = 4 // py2p's max_outgoing
	DefaultMaxPeers           = 32
	DefaultSeenCacheSize      = 1 << 18 // broadcasts remembered
	DefaultSeenCacheAge       = 60 * time.Second
	DefaultClockSkew          = 5 * time.Second
	DefaultHopLimit           = 128
	DefaultMaxKnownPeers      = 1024
	DefaultMaxPendingRequests = 1024
	DefaultRouteTimeout       = 5 * time.Second
	DefaultDialTimeout        = 5 * time.Second
	DefaultMaintainInterval   = 2 * time.Second
	DefaultBackoffMin         = 100 * time.Millisecond
	DefaultBackoffMax         = 30 * time.Second
	DefaultMaxDials           = 4 // maintenance dials in flight
	DefaultProbeInterval      = 5 * time.Second
	DefaultProbeMembers       = 16
)

// Option configures a mesh Socket; NewSocket validates them and returns an
// error matching ErrInvalidOption for a bad value.
type Option func(*config) error

type config struct {
	maxOutgoing   int
	maxPeers      int
	seenSize      int
	seenAge       time.Duration
	clockSkew     time.Duration
	hopLimit      uint8
	maxKnown      int
	maxPending    int
	routeTimeout  time.Duration
	dialTimeout   time.Duration
	maintainEvery time.Duration
	backoffMin    time.Duration
	backoffMax    time.Duration
	maxDials      int
	probeEvery    time.Duration
	probeMembers  int
	logger        *slog.Logger
	tracer        Tracer
	discovery     bool
	baseOpts      []base.Option
}

func defaultConfig() config {
	return config{
		maxOutgoing:   DefaultMaxOutgoing,
		maxPeers:      DefaultMaxPeers,
		seenSize:      DefaultSeenCacheSize,
		seenAge:       DefaultSeenCacheAge,
		clockSkew:     DefaultClockSkew,
		hopLimit:      DefaultHopLimit,
		maxKnown:      DefaultMaxKnownPeers,
		maxPending:    DefaultMaxPendingRequests,
		routeTimeout:  DefaultRouteTimeout,
		dialTimeout:   DefaultDialTimeout,
		maintainEvery: DefaultMaintainInterval,
		backoffMin:    DefaultBackoffMin,
		backoffMax:    DefaultBackoffMax,
		maxDials:      DefaultMaxDials,
		probeEvery:    DefaultProbeInterval,
		probeMembers:  DefaultProbeMembers,
		logger:        slog.Default(),
		discovery:     true,
	}
}

func (c *config) validate() error {
	if c.maxOutgoing > c.maxPeers {
		return optcheck.Invalid("max outgoing (%d) exceeds max peers (%d)", c.maxOutgoing, c.maxPeers)
	}
	if c.backoffMin > c.backoffMax {
		return optcheck.Invalid("back-off minimum %v exceeds maximum %v", c.backoffMin, c.backoffMax)
	}
	return nil
}

// WithProtocol sets the subnet and encryption; nodes of different protocols
// refuse each other (Connect returns ErrProtocolMismatch).
func WithProtocol(p protocol.Protocol) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithProtocol(p))
		return nil
	}
}

// WithMaxOutgoing caps the connections this node dials automatically: to
// peers learnt by peer exchange, to the target of a whisper, and back to a
// node whose route request it answers (py2p's max_outgoing). Default: 4.
// Each automatic dial reserves a slot first, so outbound links plus such
// dials in flight never exceed n. Connect is not bound by it (only by
// WithMaxPeers), but the links it makes count towards it, so automatic
// dials make correspondingly fewer. Without a free slot, a whisper goes
// through the mesh rather than over a new connection. The one exception
// is a probe (WithProbe): one dial at a time beyond the cap, whose link,
// if it takes the node past the cap, replaces another automatic link.
func WithMaxOutgoing(n int) Option {
	return optcheck.Positive("max outgoing", n, func(c *config) { c.maxOutgoing = n })
}

// WithMaxPeers caps all live connections, in and out. Default: 32.
func WithMaxPeers(n int) Option {
	return optcheck.Positive("max peers", n, func(c *config) { c.maxPeers = n })
}

// WithSeenCache bounds the seen-cache by entries and sets the age window:
// broadcasts older than age (plus the clock-skew allowance) are dropped.
// Defaults: DefaultSeenCacheSize entries, 60 s. Size it above the
// broadcasts a node handles in one window; Stats.SeenEvictionsYoung counts
// entries evicted too early.
func WithSeenCache(size int, age time.Duration) Option {
	return func(c *config) error {
		if size < seenShards {
			return optcheck.Invalid("seen-cache size must be at least %d, got %d", seenShards, size)
		}
		if err := optcheck.CheckPositive("seen-cache age", age); err != nil {
			return err
		}
		c.seenSize, c.seenAge = size, age
		return nil
	}
}

// WithClockSkew sets how far a sender's clock may be off before its
// broadcasts count as too old or too new. It is also the handshake's
// allowance (base.WithClockSkew): a peer whose clock is certainly further
// off is refused, and Connect returns ErrClockSkew. Default: 5 s.
func WithClockSkew(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return optcheck.Invalid("clock skew must not be negative, got %v", d)
		}
		c.clockSkew = d
		c.baseOpts = append(c.baseOpts, base.WithClockSkew(d))
		return nil
	}
}

// WithHopLimit sets how many links this node's broadcasts may cross, a
// second guard behind the seen-cache. Default: 128.
func WithHopLimit(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 255 {
			return optcheck.Invalid("hop limit must be between 1 and 255, got %d", n)
		}
		c.hopLimit = uint8(n)
		return nil
	}
}

// WithMaxKnownPeers bounds the table of members learnt by peer exchange.
// When it is full, news of a new member makes it forget the member heard
// of least recently among those this node never had a link with (or, if
// it had links with all of them, the one heard of least recently), so that
// the members it had links with, such as those beyond a network cut, stay;
// members that fail are kept too, with back-off capped at the maintenance
// maximum. Stats.KnownEvictions counts the members forgotten. Default:
// 1024.
func WithMaxKnownPeers(n int) Option {
	return optcheck.Positive("max known peers", n, func(c *config) { c.maxKnown = n })
}

// WithMaxPendingRequests bounds route requests in flight; beyond it
// Whisper fails with ErrTooManyRequests. Default: 1024.
func WithMaxPendingRequests(n int) Option {
	return optcheck.Positive("max pending requests", n, func(c *config) { c.maxPending = n })
}

// WithRouteTimeout bounds the search for a node that is not connected;
// after it Whisper fails with ErrNoRoute. Default: 5 s.
func WithRouteTimeout(d time.Duration) Option {
	return optcheck.Positive("route timeout", d, func(c *config) { c.routeTimeout = d })
}

// WithDialTimeout bounds each dial made by peer maintenance (and each
// probe). Default: 5 s.
func WithDialTimeout(d time.Duration) Option {
	return optcheck.Positive("dial timeout", d, func(c *config) { c.dialTimeout = d })
}

// WithMaintenance sets how often the node checks its outgoing connections
// and the back-off bounds for re-dialling. Defaults: 2 s, 100 ms to 30 s.
func WithMaintenance(interval, backoffMin, backoffMax time.Duration) Option {
	return func(c *config) error {
		for name, d := range map[string]time.Duration{"maintenance interval": interval,
			"back-off minimum": backoffMin, "back-off maximum": backoffMax} {
			if err := optcheck.CheckPositive(name, d); err != nil {
				return err
			}
		}
		c.maintainEvery, c.backoffMin, c.backoffMax = interval, backoffMin, backoffMax
		return nil
	}
}

// WithMaxDials bounds the dials that peer maintenance has in flight at
// once (each with its own dial timeout), so that a table of known peers
// full of dead or black-holed addresses does not hold up replacing a lost
// neighbour. Dials never outnumber the free outgoing slots either
// (WithMaxOutgoing). Stats.DialsInFlight shows them;
// Stats.DialsDeferred counts the times members were due but had to wait
// for this bound. Default: 4.
func WithMaxDials(n int) Option {
	return optcheck.Positive("max dials", n, func(c *config) { c.maxDials = n })
}

// WithProbe sets how often a node dials one member it cannot reach, to
// find the other side of a network cut once the network returns. Every
// interval (jittered by a quarter either way) it picks a member that is
// not a neighbour and that it last failed to reach (a dial failed, or the
// link ended in an error): at random among the `members` of these that it
// had links with most recently, or, if it had links with none of them,
// among all of them. Back-off does not apply, and the probe dials even
// when the outgoing quota is full: a probe link that takes the node past
// WithMaxOutgoing replaces a random other outgoing link made by an
// automatic dial (never one made by Connect), and a node at its quota
// without such a link does not probe. Two halves of a mesh re-merge about
// one interval after the network returns, however long the cut lasted.
// interval 0 turns probing off. Stats.Probes, ProbeFailures and
// ProbeSwaps count probes. Defaults: 5 s and 16 members.
func WithProbe(interval time.Duration, members int) Option {
	return func(c *config) error {
		if interval < 0 {
			return optcheck.Invalid("probe interval must not be negative, got %v", interval)
		}
		if err := optcheck.CheckPositive("probe members", members); err != nil {
			return err
		}
		c.probeEvery, c.probeMembers = interval, members
		return nil
	}
}

// WithAdvertiseAddr sets the address peers are told to dial (py2p's
// out_addr). Default: the listen address.
func WithAdvertiseAddr(addr string) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithAdvertiseAddr(addr))
		return nil
	}
}

// WithCompression sets the accepted compression methods, most preferred
// first; none disables compression. Default: compress.DefaultMethods().
func WithCompression(methods ...flags.Method) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithCompression(methods...))
		return nil
	}
}

// WithMetadata sets the metadata sent to peers in the handshake.
func WithMetadata(meta map[string]string) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithMetadata(meta))
		return nil
	}
}

// WithLogger sets the structured logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return optcheck.Invalid("logger must not be nil")
		}
		c.logger = l
		c.baseOpts = append(c.baseOpts, base.WithLogger(l))
		return nil
	}
}

// WithTracer installs a hook told of every broadcast delivered, relayed,
// and dropped (duplicate, too old, hop limit, relay queue full).
func WithTracer(t Tracer) Option {
	return func(c *config) error {
		if t == nil {
			return optcheck.Invalid("tracer must not be nil")
		}
		c.tracer = t
		return nil
	}
}

// WithBaseOptions passes connection-level options (queues, timeouts,
// keepalive, frame size, ...) to the underlying base.Socket.
func WithBaseOptions(opts ...base.Option) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, opts...)
		return nil
	}
}

// WithDiscovery turns automatic dialling on or off: of peers learnt by
// peer exchange, of whisper targets and of nodes whose route requests this
// node answers. Default: on. Off, the node keeps exactly the connections
// made with Connect and those other nodes dial to it (tests and benchmarks
// of fixed topologies): it still swaps peer lists but does not replace lost
// neighbours, and a whisper to a node that is not a neighbour goes through
// the mesh, relayed by the other nodes, instead of over a new connection.
func WithDiscovery(enabled bool) Option {
	return func(c *config) error {
		c.discovery = enabled
		return nil
	}
}
