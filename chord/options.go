package chord

import (
	"crypto/ed25519"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/logattr"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// DefaultProtocol is chord's own subnet: chord nodes and mesh nodes (or
// bare base sockets, whose default is protocol.DefaultProtocol) refuse
// each other in the handshake, and Join reports ErrProtocolMismatch.
var DefaultProtocol = protocol.Protocol{Subnet: "meshsock-chord", Encryption: protocol.EncryptionTLS}

// Defaults of chord's bounds and timers. The connection-level ones are
// base's (base.Default…), except the buffer sizes, which chord lowers to
// DefaultBufferSize because a node keeps many mostly idle links.
const (
	DefaultSuccessors         = 8                      // successor-list length r
	DefaultStabilizeInterval  = 500 * time.Millisecond // stabilize + notify
	DefaultFixFingersInterval = 500 * time.Millisecond // one finger lookup per tick
	DefaultCheckPredInterval  = time.Second            // check-predecessor
	DefaultRequestTimeout     = 5 * time.Second        // Request, Lookup, SendTo's first hop
	DefaultRPCTimeout         = 2 * time.Second        // maintenance calls and dials
	DefaultHopLimit           = 64                     // links a routed message may cross
	DefaultMaxPendingRequests = 1024                   // requests and lookups in flight
	DefaultMaxLinks           = 64                     // open links before LRU eviction
	DefaultBufferSize         = 16 << 10               // per-link read and write buffers
	MaxSuccessors             = 32                     // largest successor list (option and wire)
	MaxBounces                = 16                     // bounces of one request
)

// Option configures a chord Socket. NewSocket validates the options and
// returns an error matching ErrInvalidOption for a bad value.
type Option func(*config) error

type config struct {
	successors   int
	stabilize    time.Duration
	fixFingers   time.Duration
	checkPred    time.Duration
	reqTimeout   time.Duration
	rpcTimeout   time.Duration
	hopLimit     uint8
	maxPending   int
	maxLinks     int
	protocol     protocol.Protocol
	key          ed25519.PrivateKey // nil: a fresh one
	logger       *slog.Logger
	baseOpts     []base.Option
	courierQueue int
	couriers     int
}

func defaultConfig() config {
	return config{
		successors:   DefaultSuccessors,
		stabilize:    DefaultStabilizeInterval,
		fixFingers:   DefaultFixFingersInterval,
		checkPred:    DefaultCheckPredInterval,
		reqTimeout:   DefaultRequestTimeout,
		rpcTimeout:   DefaultRPCTimeout,
		hopLimit:     DefaultHopLimit,
		maxPending:   DefaultMaxPendingRequests,
		maxLinks:     DefaultMaxLinks,
		protocol:     DefaultProtocol,
		logger:       logattr.Discard,
		courierQueue: 256,
		couriers:     2,
	}
}

// validate checks the relations between options.
func (c *config) validate() error {
	if c.maxLinks < 2*c.successors+2 {
		return optcheck.Invalid("max links (%d) must be at least twice the successor-list length + 2 (%d): links to the successors and the nodes just behind are never evicted",
			c.maxLinks, 2*c.successors+2)
	}
	return nil
}

// WithSuccessors sets the length r of the successor list: a node survives
// the simultaneous failure of r-1 consecutive successors, and routes its
// last hops straight to the owner when it is among them. 1..MaxSuccessors;
// default DefaultSuccessors (8).
func WithSuccessors(r int) Option {
	return func(c *config) error {
		if r < 1 || r > MaxSuccessors {
			return optcheck.Invalid("successor-list length must be between 1 and %d, got %d", MaxSuccessors, r)
		}
		c.successors = r
		return nil
	}
}

// WithStabilizeInterval sets how often a node asks its successor for its
// predecessor and successor list and notifies it (Chord's stabilize).
// Default: DefaultStabilizeInterval (500 ms).
func WithStabilizeInterval(d time.Duration) Option {
	return optcheck.Positive("stabilize interval", d, func(c *config) { c.stabilize = d })
}

// WithFixFingersInterval sets how often a node refreshes one entry of its
// finger table with a lookup (Chord's fix-fingers; entries that equal the
// successor cost nothing). Default: DefaultFixFingersInterval (500 ms).
func WithFixFingersInterval(d time.Duration) Option {
	return optcheck.Positive("fix-fingers interval", d, func(c *config) { c.fixFingers = d })
}

// WithCheckPredecessorInterval sets how often a node probes its
// predecessor and forgets it if it does not answer. Default:
// DefaultCheckPredInterval (1 s).
func WithCheckPredecessorInterval(d time.Duration) Option {
	return optcheck.Positive("check-predecessor interval", d, func(c *config) { c.checkPred = d })
}

// WithRequestTimeout bounds Request, Lookup and Join: without an answer by
// then they fail with ErrTimeout (a shorter context deadline wins).
// Default: DefaultRequestTimeout (5 s).
func WithRequestTimeout(d time.Duration) Option {
	return optcheck.Positive("request timeout", d, func(c *config) { c.reqTimeout = d })
}

// WithRPCTimeout bounds each maintenance call to a neighbour and each dial
// (stabilize, check-predecessor, dialling a requester to answer it).
// Default: DefaultRPCTimeout (2 s).
func WithRPCTimeout(d time.Duration) Option {
	return optcheck.Positive("RPC timeout", d, func(c *config) { c.rpcTimeout = d })
}

// WithHopLimit sets how many links a routed message may cross (bounces
// included) before it is dropped and its requester told ErrNoRoute.
// 1..255; default DefaultHopLimit (64).
func WithHopLimit(n int) Option {
	return func(c *config) error {
		if n < 1 || n > 255 {
			return optcheck.Invalid("hop limit must be between 1 and 255, got %d", n)
		}
		c.hopLimit = uint8(n)
		return nil
	}
}

// WithMaxPendingRequests bounds the requests and lookups this node waits
// for at once; beyond it calls fail at once with ErrTooManyRequests.
// Maintenance calls do not count. Default: DefaultMaxPendingRequests.
func WithMaxPendingRequests(n int) Option {
	return optcheck.Positive("max pending requests", n, func(c *config) { c.maxPending = n })
}

// WithMaxLinks caps the open links (connections) a node keeps: above it,
// the least recently used link that is not to a current successor, the
// predecessor, or one of the r nodes nearest behind (which likely keep this
// node in their successor lists) is closed; links younger than min(RPC
// timeout, 1 s) are spared, so the count may exceed the cap for that long.
// Only at 2*cap + 16 does the connection layer refuse new handshakes. A
// node opens optional links (to answer a requester directly) only while
// both ends are under their caps; answers go along the ring otherwise. The
// cap must be at least twice the successor-list length r, plus 2; a node
// uses a finger only over a live link, and a ring needs about
// 2r + 2*log2(N) links per node to use all of them. Default:
// DefaultMaxLinks.
func WithMaxLinks(n int) Option {
	return optcheck.Positive("max links", n, func(c *config) { c.maxLinks = n })
}

// WithProtocol sets the subnet and encryption; nodes of different protocols
// refuse each other (Join returns ErrProtocolMismatch). p.Encryption is
// protocol.EncryptionTLS or protocol.EncryptionPlaintext (base.WithProtocol).
// Default: DefaultProtocol (TLS).
func WithProtocol(p protocol.Protocol) Option {
	return func(c *config) error {
		if p.Subnet == "" {
			return optcheck.Invalid("protocol subnet must not be empty")
		}
		if !protocol.ValidEncryption(p.Encryption) {
			return optcheck.Invalid("protocol encryption %q: want %q or %q",
				p.Encryption, protocol.EncryptionTLS, protocol.EncryptionPlaintext)
		}
		c.protocol = p
		return nil
	}
}

// WithNetworkKey makes the node a member of a closed network: only nodes
// that prove a key of the keyring in the handshake are admitted, and the
// node proves the keyring's primary key (base.WithNetworkKey). Default:
// no network key.
func WithNetworkKey(r *base.Keyring) Option {
	return func(c *config) error { c.baseOpts = append(c.baseOpts, base.WithNetworkKey(r)); return nil }
}

// WithAuthorize installs a hook that may refuse any peer at the handshake,
// after its identity and network key are proven (base.WithAuthorize).
// Default: none.
func WithAuthorize(f base.AuthorizeFunc) Option {
	return func(c *config) error { c.baseOpts = append(c.baseOpts, base.WithAuthorize(f)); return nil }
}

// WithKey sets the node's Ed25519 private key. The node ID, and so the
// node's place on the ring, is derived from its public key
// (protocol.NodeIDFromKey): the same key keeps the same place across
// restarts. It takes precedence over a base.WithKey given in
// WithBaseOptions. Default: a fresh key.
func WithKey(key ed25519.PrivateKey) Option {
	return func(c *config) error {
		if len(key) != ed25519.PrivateKeySize {
			return optcheck.Invalid("Ed25519 private key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
		}
		c.key = key
		return nil
	}
}

// WithAdvertiseAddr sets the address other nodes are told to dial (for a
// node behind NAT or listening on a wildcard address). Default: the
// listener's address.
func WithAdvertiseAddr(addr string) Option {
	return func(c *config) error {
		if len(addr) > maxAddrLen {
			return optcheck.Invalid("advertised address of %d bytes, limit %d", len(addr), maxAddrLen)
		}
		c.baseOpts = append(c.baseOpts, base.WithAdvertiseAddr(addr))
		return nil
	}
}

// WithLogger sets the structured logger (for chord and its connection
// layer). Default: none, the library logs nothing; pass slog.Default() to
// log where the program does.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return optcheck.Invalid("logger must not be nil")
		}
		c.logger = l
		return nil
	}
}

// WithBaseOptions passes connection-level options (queues, timeouts,
// keepalive, compression, frame size, listener, dialer, ...) to the
// underlying base.Socket. chord's own built-in handler, replier,
// connection hook and node ID are applied after them and win.
func WithBaseOptions(opts ...base.Option) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, opts...)
		return nil
	}
}
