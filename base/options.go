package base

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/logattr"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// QueuePolicy says what a send does when a connection's queue is full.
type QueuePolicy int

const (
	// Block waits until there is room, the context ends or the connection
	// closes. It is the default: nothing is lost without the caller knowing.
	Block QueuePolicy = iota
	// Drop discards the message, counts it in Stats and returns ErrQueueFull.
	Drop
)

// String names the policy.
func (p QueuePolicy) String() string {
	if p == Drop {
		return "drop"
	}
	return "block"
}

// Defaults for every bound and timer. Each can be changed with an Option.
const (
	DefaultMaxFrameSize         = protocol.DefaultMaxFrameSize // 4 MiB
	DefaultSendQueueLen         = 4096                         // messages per connection
	DefaultSendQueueBytes       = 32 << 20                     // bytes per connection
	DefaultControlQueueLen      = 64                           // control messages per connection
	DefaultRecvQueueLen         = 8192                         // unclaimed messages per socket
	DefaultRecvQueueBytes       = 64 << 20                     // bytes of those messages, per socket
	DefaultEventQueueLen        = 1024                         // undelivered events per socket
	DefaultEventQueueBytes      = 16 << 20                     // bytes of the messages those events carry
	DefaultMaxConns             = 128                          // live connections per socket
	DefaultMaxPendingHandshakes = 64                           // accepted connections still in handshake
	DefaultMaxPendingPerSource  = 8                            // of those, from one source (WithSourcePrefix)
	DefaultConnsPerSourceShare  = 4                            // one source may hold 1/4 of WithMaxConns (WithMaxConnsPerSource)
	DefaultSourcePrefixV4       = 32                           // bits of an IPv4 address that name its source
	DefaultSourcePrefixV6       = 64                           // bits of an IPv6 address that name its source
	DefaultHandshakeTimeout     = 5 * time.Second
	DefaultClockSkew            = 5 * time.Second // peer clock offset accepted at the handshake
	DefaultWriteTimeout         = 10 * time.Second
	DefaultKeepaliveInterval    = 10 * time.Second
	DefaultSilenceTimeout       = 30 * time.Second
	DefaultFlushTimeout         = 2 * time.Second
	DefaultCompressThreshold    = 1024             // bytes; smaller bodies go uncompressed
	DefaultResendWindow         = 1024             // compressed frames kept for resends, per connection
	DefaultResendBytes          = 4 << 20          // bytes of those frames (uncompressed), per connection
	DefaultResendAge            = 10 * time.Second // how long a frame is kept for a resend
	DefaultReadBufferSize       = 64 << 10
	DefaultWriteBufferSize      = 64 << 10
	DefaultDispatchers          = 4        // goroutines that run user handlers
	DefaultDispatchQueueLen     = 8192     // messages waiting for user handlers, per socket
	DefaultDispatchQueueBytes   = 64 << 20 // bytes of those messages, per socket
	DefaultFairShare            = 50       // percent of a shared queue one connection's traffic may hold
	DefaultMaxBans              = 4096     // banned node IDs remembered (Socket.Ban), about 100 B each
	DefaultVerifyBacklog        = 4096     // messages waiting for signature verification, per socket
	DefaultVerifyBacklogBytes   = 16 << 20 // bytes of those messages, per socket
	DefaultKeyCache             = 1024     // senders' expanded public keys kept, about 1.5 KiB each
	DefaultSignatureStrikes     = 3        // bad signatures after which a link is closed
	DefaultSignatureBan         = 10 * time.Minute
)

// Option configures a Socket. Options are validated by NewSocket, which
// returns an error matching ErrInvalidOption for a bad value.
type Option func(*config) error

// ReplyFunc sends packets back to the sender of msg. Routing layers (mesh,
// chord) install one (Layer.Reply) to route replies beyond direct
// neighbours.
type ReplyFunc func(ctx context.Context, msg *Message, packets [][]byte) error

type config struct {
	protocol           protocol.Protocol
	key                ed25519.PrivateKey // nil: a fresh one at NewSocket
	advertiseAddr      string
	meta               map[string]string
	logger             *slog.Logger
	codecs             *compress.Set
	compression        []flags.Method
	compressThreshold  int
	limits             protocol.Limits
	maxFrameSize       int
	sendQueueLen       int
	sendQueueBytes     int
	controlQueueLen    int
	queuePolicy        QueuePolicy
	recvQueueLen       int
	recvQueueBytes     int
	eventQueueLen      int
	eventQueueBytes    int
	maxConns           int
	maxPending         int
	maxPendingPerSrc   int
	maxConnsPerSrc     int // 0: a DefaultConnsPerSourceShare of maxConns
	sourceBits4        int
	sourceBits6        int
	loopbackExempt     bool
	handshakeTimeout   time.Duration
	clockSkew          time.Duration
	writeTimeout       time.Duration
	keepalive          time.Duration
	silence            time.Duration
	flushTimeout       time.Duration
	resendWindow       int
	resendBytes        int
	resendAge          time.Duration
	readBuffer         int
	writeBuffer        int
	dispatchers        int
	dispatchQueueLen   int
	dispatchQueueBytes int
	fairShare          int
	signing            string // "" (the protocol's), or a protocol.Signing… value (WithSigning)
	verifyWorkers      int    // 0: GOMAXPROCS at NewSocket
	verifyMsgs         int
	verifyBytes        int
	keyCache           int
	strikes            int
	banFor             time.Duration
	listener           net.Listener
	dial               DialFunc
	netDial            NetDialFunc
	reusePort          bool
	networkKey         *Keyring // nil: no network key
	authorize          AuthorizeFunc
	maxBans            int
	join               JoinConfig // Join and Rejoin (join.go)
	resolver           Resolver
	observedQuorum     int // 0: learn no outside address (observed.go)
	// now is this node's clock for the handshake (the Hello's time and the
	// clock check); tests in this package replace it to fake a skewed clock.
	now func() time.Time
}

// DialFunc opens a connection; tests use it to inject faults.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NetDialFunc opens a connection with d, which carries what the socket
// wants of the connection's own end: with WithReusePort, the listening port
// as local address and the socket options that let it be shared (see
// WithNetDialer).
type NetDialFunc func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error)

func defaultConfig() config {
	return config{
		protocol:           protocol.DefaultProtocol,
		logger:             logattr.Discard,
		codecs:             compress.DefaultSet(),
		compression:        compress.DefaultMethods(),
		compressThreshold:  DefaultCompressThreshold,
		limits:             protocol.DefaultLimits,
		maxFrameSize:       DefaultMaxFrameSize,
		sendQueueLen:       DefaultSendQueueLen,
		sendQueueBytes:     DefaultSendQueueBytes,
		controlQueueLen:    DefaultControlQueueLen,
		queuePolicy:        Block,
		recvQueueLen:       DefaultRecvQueueLen,
		recvQueueBytes:     DefaultRecvQueueBytes,
		eventQueueLen:      DefaultEventQueueLen,
		eventQueueBytes:    DefaultEventQueueBytes,
		maxConns:           DefaultMaxConns,
		maxPending:         DefaultMaxPendingHandshakes,
		maxPendingPerSrc:   DefaultMaxPendingPerSource,
		sourceBits4:        DefaultSourcePrefixV4,
		join:               JoinConfig{}.withDefaults(),
		resolver:           net.DefaultResolver,
		observedQuorum:     DefaultObservedQuorum,
		sourceBits6:        DefaultSourcePrefixV6,
		loopbackExempt:     true,
		handshakeTimeout:   DefaultHandshakeTimeout,
		clockSkew:          DefaultClockSkew,
		writeTimeout:       DefaultWriteTimeout,
		keepalive:          DefaultKeepaliveInterval,
		silence:            DefaultSilenceTimeout,
		flushTimeout:       DefaultFlushTimeout,
		resendWindow:       DefaultResendWindow,
		resendBytes:        DefaultResendBytes,
		resendAge:          DefaultResendAge,
		readBuffer:         DefaultReadBufferSize,
		writeBuffer:        DefaultWriteBufferSize,
		dispatchers:        DefaultDispatchers,
		dispatchQueueLen:   DefaultDispatchQueueLen,
		dispatchQueueBytes: DefaultDispatchQueueBytes,
		fairShare:          DefaultFairShare,
		maxBans:            DefaultMaxBans,
		verifyMsgs:         DefaultVerifyBacklog,
		verifyBytes:        DefaultVerifyBacklogBytes,
		keyCache:           DefaultKeyCache,
		strikes:            DefaultSignatureStrikes,
		banFor:             DefaultSignatureBan,
		now:                time.Now,
	}
}

// validate checks the relations between options; single values are checked
// by their Option.
func (c *config) validate() error {
	if c.silence <= c.keepalive {
		return optcheck.Invalid("silence timeout (%v) must be longer than the keepalive interval (%v)", c.silence, c.keepalive)
	}
	if c.limits.MaxPacketSize > c.maxFrameSize {
		c.limits.MaxPacketSize = c.maxFrameSize
	}
	for _, m := range c.compression {
		if _, ok := c.codecs.Get(m); !ok {
			return optcheck.Invalid("compression method %s has no codec", m)
		}
	}
	// What runs is what the options say: the protocol names the signing
	// setting explicitly (and so its ID), WithSigning overriding it.
	if c.signing != "" {
		c.protocol.Signing = c.signing
	}
	if c.protocol.Signing == "" {
		c.protocol.Signing = protocol.SigningEd25519
	}
	if c.verifyWorkers == 0 {
		c.verifyWorkers = runtime.GOMAXPROCS(0)
	}
	return nil
}

func checkSigning(v string) error {
	switch v {
	case "", protocol.SigningEd25519, protocol.SigningNone:
		return nil
	}
	return optcheck.Invalid("protocol signing %q: want %q or %q", v, protocol.SigningEd25519, protocol.SigningNone)
}

// WithProtocol sets the protocol (subnet, encryption and signing); nodes
// with different protocols refuse each other. p.Encryption says what runs on
// every link: protocol.EncryptionTLS (TLS 1.3, the default) or
// protocol.EncryptionPlaintext (no encryption, for trusted networks and
// measurement; node IDs are still proven at the handshake); any other value
// is refused. An empty Signing means protocol.SigningEd25519; WithSigning
// overrides it. Default: protocol.DefaultProtocol (subnet "meshsock", TLS,
// signed).
func WithProtocol(p protocol.Protocol) Option {
	return func(c *config) error {
		if p.Subnet == "" {
			return optcheck.Invalid("protocol subnet must not be empty")
		}
		if !protocol.ValidEncryption(p.Encryption) {
			return optcheck.Invalid("protocol encryption %q: want %q or %q",
				p.Encryption, protocol.EncryptionTLS, protocol.EncryptionPlaintext)
		}
		if err := checkSigning(p.Signing); err != nil {
			return err
		}
		c.protocol = p
		return nil
	}
}

// AuthorizeFunc decides whether a peer that passed every other check of
// the handshake may connect: it returns nil to admit it, or an error whose
// text is sent to the peer as the reason of a "not authorised" verdict
// (both sides' errors then match ErrNotAuthorized). p is what the
// handshake proved (ID and Key) and what the peer claims (Addr, Meta,
// Accept); RemoteAddr and Outbound are this connection's; Since is zero.
// ctx ends at the handshake's deadline.
type AuthorizeFunc func(ctx context.Context, p PeerInfo) error

// WithAuthorize installs an authorisation hook (an allow-list of keys, a
// rate limiter, ...) that sees every peer before its connection is
// admitted, on both the dialling and the accepting side. It runs on the
// handshake's goroutine after the other checks (identity, network key,
// bans, clock, limits), so it may block, until the handshake deadline
// (WithHandshakeTimeout) at most; it must be safe for concurrent use. A
// hook that panics refuses the peer (the panic is logged and counted in
// Stats.HandlerPanics). Default: none.
func WithAuthorize(f AuthorizeFunc) Option {
	return func(c *config) error {
		if f == nil {
			return optcheck.Invalid("authorisation hook must not be nil")
		}
		c.authorize = f
		return nil
	}
}

// WithNetworkKey makes the node a member of a closed network: in every
// handshake it proves that it holds the keyring's primary key, and it
// admits only peers that prove a key of the keyring. A node without a
// network key and one with one refuse each other, as do nodes whose rings
// share no key; both sides' errors match ErrNotAuthorized. The keyring may
// be changed while the socket runs (Keyring.Use, Add, Remove); changes
// apply to the next handshake. Default: no network key (any node that
// proves its own key may connect).
func WithNetworkKey(r *Keyring) Option {
	return func(c *config) error {
		if r == nil || len(r.Keys()) == 0 {
			return optcheck.Invalid("network keyring must not be nil or empty (use NewKeyring)")
		}
		c.networkKey = r
		return nil
	}
}

// WithMaxBans bounds the banned node IDs the socket remembers (Socket.Ban),
// about 100 bytes each. When the table is full, expired bans go first, then
// the ban that would end soonest (Stats.BansEvicted). Default:
// DefaultMaxBans (4096).
func WithMaxBans(n int) Option {
	return optcheck.Positive("max bans", n, func(c *config) { c.maxBans = n })
}

// WithAdvertiseAddr sets the address peers are told to dial ("host:port"),
// for a node behind NAT or listening on a wildcard address (py2p's
// out_addr). Default: the listener's address.
func WithAdvertiseAddr(addr string) Option {
	return func(c *config) error {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return optcheck.Invalid("advertised address %q is not host:port", addr)
		}
		c.advertiseAddr = addr
		return nil
	}
}

// WithMetadata sets the metadata sent in the handshake (at most
// protocol.MaxMetaEntries entries).
func WithMetadata(meta map[string]string) Option {
	return func(c *config) error {
		if len(meta) > protocol.MaxMetaEntries {
			return optcheck.Invalid("%d metadata entries, limit %d", len(meta), protocol.MaxMetaEntries)
		}
		c.meta = make(map[string]string, len(meta))
		for k, v := range meta {
			c.meta[k] = v
		}
		return nil
	}
}

// WithLogger sets the structured logger. Default: none, the library
// logs nothing; pass slog.Default() to log where the program does.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return optcheck.Invalid("logger must not be nil")
		}
		c.logger = l
		return nil
	}
}

// WithCodecs replaces the set of codecs (for example to add a custom one).
// Default: compress.DefaultSet().
func WithCodecs(set *compress.Set) Option {
	return func(c *config) error {
		if set == nil {
			return optcheck.Invalid("codec set must not be nil")
		}
		c.codecs = set
		return nil
	}
}

// WithCompression sets the compression methods this node accepts, most
// preferred first; it also orders what the node uses to send. An empty list
// disables compression. Default: compress.DefaultMethods().
func WithCompression(methods ...flags.Method) Option {
	return func(c *config) error {
		if len(methods) > protocol.MaxAcceptMethods {
			return optcheck.Invalid("%d compression methods, limit %d", len(methods), protocol.MaxAcceptMethods)
		}
		c.compression = append([]flags.Method(nil), methods...)
		return nil
	}
}

// WithCompressThreshold sets the smallest body that is compressed.
// Default: DefaultCompressThreshold (1 KiB).
func WithCompressThreshold(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return optcheck.Invalid("compression threshold must not be negative, got %d", n)
		}
		c.compressThreshold = n
		return nil
	}
}

// WithMaxFrameSize bounds a frame body, compressed or not, in bytes.
// Default: DefaultMaxFrameSize (4 MiB).
func WithMaxFrameSize(n int) Option {
	return func(c *config) error {
		if n < 64 || n > 1<<30 {
			return optcheck.Invalid("max frame size must be between 64 B and 1 GiB, got %d", n)
		}
		c.maxFrameSize = n
		c.limits.MaxPacketSize = n
		return nil
	}
}

// WithMaxPackets bounds the packets of one message. Default: 256.
func WithMaxPackets(n int) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("max packets", n); err != nil {
			return err
		}
		c.limits.MaxPackets = n
		return nil
	}
}

// WithSendQueue bounds each connection's outbound queue by messages and by
// bytes. Defaults: DefaultSendQueueLen messages, DefaultSendQueueBytes.
func WithSendQueue(messages, bytes int) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("send queue length", messages); err != nil {
			return err
		}
		if err := optcheck.CheckPositive("send queue bytes", bytes); err != nil {
			return err
		}
		c.sendQueueLen, c.sendQueueBytes = messages, bytes
		return nil
	}
}

// WithControlQueue bounds each connection's control lane (pings,
// renegotiation, upper-layer control). Default: DefaultControlQueueLen.
func WithControlQueue(n int) Option {
	return optcheck.Positive("control queue length", n, func(c *config) { c.controlQueueLen = n })
}

// WithQueuePolicy sets what Send does when a connection's queue is full.
// Default: Block.
func WithQueuePolicy(p QueuePolicy) Option {
	return func(c *config) error {
		if p != Block && p != Drop {
			return optcheck.Invalid("unknown queue policy %d", p)
		}
		c.queuePolicy = p
		return nil
	}
}

// WithRecvQueue bounds the queue of messages no handler claimed, in
// messages (WithRecvQueueBytes bounds it in bytes). When it is full, new
// messages are dropped and counted (Stats.RecvDrops): the reader never
// waits for a slow consumer. Default: DefaultRecvQueueLen.
func WithRecvQueue(n int) Option {
	return optcheck.Positive("receive queue length", n, func(c *config) { c.recvQueueLen = n })
}

// WithRecvQueueBytes bounds the queue of messages no handler claimed in
// bytes: each message counts the memory it keeps alive (its buffer and
// the Message; small messages queued behind the first few are copied out
// of the reader's buffers, so that they count no more than their size).
// When it is full, new messages are dropped and counted (Stats.RecvDrops);
// one message larger than the bound still goes into an empty queue.
// Stats.RecvQueueBytes shows what is queued now. Default:
// DefaultRecvQueueBytes (64 MiB).
func WithRecvQueueBytes(n int) Option {
	return optcheck.Positive("receive queue bytes", n, func(c *config) { c.recvQueueBytes = n })
}

// WithEventQueue bounds the events waiting for subscribers; when full, new
// events are dropped and counted (Stats.EventDrops). Default: 1024.
func WithEventQueue(n int) Option {
	return optcheck.Positive("event queue length", n, func(c *config) { c.eventQueueLen = n })
}

// WithEventQueueBytes bounds, in bytes, the messages that the events
// waiting for subscribers carry (EventMessage), counted as for
// WithRecvQueueBytes: a stuck subscriber must not keep messages alive that
// Recv has long returned. When it is full, new message events are dropped
// and counted (Stats.EventDrops). Default: DefaultEventQueueBytes (16 MiB).
func WithEventQueueBytes(n int) Option {
	return optcheck.Positive("event queue bytes", n, func(c *config) { c.eventQueueBytes = n })
}

// WithMaxConns bounds live connections; further handshakes are refused
// with a "connection limit" verdict, unless the newcomer may displace a
// peer of a more represented source (WithMaxConnsPerSource). Default:
// DefaultMaxConns.
func WithMaxConns(n int) Option {
	return optcheck.Positive("max connections", n, func(c *config) { c.maxConns = n })
}

// WithMaxPendingHandshakes bounds accepted connections that have not
// finished their handshake; beyond it new connections are refused at once
// with a connection-limit verdict and no Hello, so that a dialer's Connect
// fails with ErrConnLimit, unless the newcomer may displace a handshake of
// a more represented source (WithMaxPendingPerSource). Default:
// DefaultMaxPendingHandshakes.
func WithMaxPendingHandshakes(n int) Option {
	return optcheck.Positive("max pending handshakes", n, func(c *config) { c.maxPending = n })
}

// WithMaxPendingPerSource bounds the accepted connections from one source
// (one IP address or prefix, see WithSourcePrefix) that have not finished
// their handshake. Beyond it a new connection from that source is refused
// at once with a connection-limit verdict and no Hello (the dialer's
// Connect fails with ErrConnLimit), counted in Stats.SourcePendingRefusals,
// so that one host cannot take every slot of WithMaxPendingHandshakes.
// When those slots are all taken, a connection from a source with fewer
// pending handshakes displaces the oldest handshake still waiting for its
// Hello of the source with the most (Stats.HandshakesDisplaced); see
// docs/architecture.md. Loopback sources are exempt by default
// (WithLoopbackExempt). Default: DefaultMaxPendingPerSource (8).
func WithMaxPendingPerSource(n int) Option {
	return optcheck.Positive("max pending handshakes per source", n, func(c *config) { c.maxPendingPerSrc = n })
}

// WithMaxConnsPerSource bounds the live connections that peers from one
// source (see WithSourcePrefix) dialled to this node; beyond it further
// handshakes from that source are refused with a connection-limit verdict
// (ErrConnLimit on both sides), counted in Stats.SourceConnRefusals. When
// the node is full (WithMaxConns), a peer from a source with fewer
// connections displaces the newest connection of the source with the most,
// if that source has at least two more (Stats.ConnsDisplaced; the
// displaced connection's Err matches ErrClosed and ErrConnLimit). So idle
// or slow peers from a few hosts cannot keep every slot from newcomers.
// Connections this node dialled count towards WithMaxConns only. Loopback
// sources are exempt by default (WithLoopbackExempt). Default: a quarter of
// WithMaxConns, rounded up (32 of 128; 8 of the mesh's 32).
func WithMaxConnsPerSource(n int) Option {
	return optcheck.Positive("max connections per source", n, func(c *config) { c.maxConnsPerSrc = n })
}

// connsPerSource is the per-source bound on inbound live connections.
func (c *config) connsPerSource() int {
	if c.maxConnsPerSrc > 0 {
		return c.maxConnsPerSrc
	}
	return (c.maxConns + DefaultConnsPerSourceShare - 1) / DefaultConnsPerSourceShare
}

// WithSourcePrefix sets what the per-source limits count as one source:
// the first v4 bits of an IPv4 address (1 to 32) and the first v6 bits of
// an IPv6 address (1 to 128). An IPv4-mapped IPv6 address is an IPv4
// address. Defaults: DefaultSourcePrefixV4 (32: each address) and
// DefaultSourcePrefixV6 (64: a /64, what one host or site is usually given).
func WithSourcePrefix(v4, v6 int) Option {
	return func(c *config) error {
		if v4 < 1 || v4 > 32 || v6 < 1 || v6 > 128 {
			return optcheck.Invalid("source prefix must be 1 to 32 bits for IPv4 and 1 to 128 for IPv6, got %d and %d", v4, v6)
		}
		c.sourceBits4, c.sourceBits6 = v4, v6
		return nil
	}
}

// WithLoopbackExempt says whether connections from loopback addresses
// (127.0.0.0/8, ::1) are exempt from the per-source limits
// (WithMaxPendingPerSource, WithMaxConnsPerSource) and never displaced;
// the totals still bind them. They come from processes on this host, which
// can exhaust it in many other ways, and a cluster on one host (tests,
// benchmarks, examples: every peer on 127.0.0.1) would otherwise be capped
// at a quarter of WithMaxConns per node. Default: true.
func WithLoopbackExempt(exempt bool) Option {
	return func(c *config) error {
		c.loopbackExempt = exempt
		return nil
	}
}

// WithHandshakeTimeout bounds the handshake. Default: 5 s.
func WithHandshakeTimeout(d time.Duration) Option {
	return optcheck.Positive("handshake timeout", d, func(c *config) { c.handshakeTimeout = d })
}

// WithClockSkew sets how far a peer's clock may be from this node's: the
// handshake compares the time in the peer's Hello with this node's clock
// and refuses the peer (verdict "clock skew"; both sides' errors match
// ErrClockSkew) only when the measured offset is certainly beyond d, so
// that network delay never causes a refusal. d must not be negative; 0
// still accepts any peer whose clock agrees up to that delay. Default:
// DefaultClockSkew (5 s).
func WithClockSkew(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return optcheck.Invalid("clock skew must not be negative, got %v", d)
		}
		c.clockSkew = d
		return nil
	}
}

// WithWriteTimeout bounds one batch write; a peer that stops reading for
// longer is disconnected. Default: 10 s.
func WithWriteTimeout(d time.Duration) Option {
	return optcheck.Positive("write timeout", d, func(c *config) { c.writeTimeout = d })
}

// WithKeepalive sets the idle interval after which a ping is sent and the
// silence after which a connection is closed. Defaults: 10 s and 30 s.
func WithKeepalive(interval, silence time.Duration) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("keepalive interval", interval); err != nil {
			return err
		}
		if err := optcheck.CheckPositive("silence timeout", silence); err != nil {
			return err
		}
		c.keepalive, c.silence = interval, silence
		return nil
	}
}

// WithFlushTimeout bounds how long Close spends flushing queued messages.
// Default: 2 s.
func WithFlushTimeout(d time.Duration) Option {
	return optcheck.Positive("flush timeout", d, func(c *config) { c.flushTimeout = d })
}

// WithResendWindow sets how many recent compressed frames each connection
// keeps so it can resend them uncompressed when the peer fails to
// decompress one. The oldest are forgotten first; a resend asked for a
// forgotten frame is counted in Stats.ResendMisses. WithResendBytes and
// WithResendAge bound the same frames in bytes and in time. Default:
// DefaultResendWindow.
func WithResendWindow(n int) Option {
	return optcheck.Positive("resend window", n, func(c *config) { c.resendWindow = n })
}

// WithResendBytes bounds, in bytes, the frames each connection keeps for
// resends. A frame is kept uncompressed, so a few bytes on the wire can
// stand for megabytes here; each counts the whole buffer it keeps alive.
// The oldest frames are forgotten first to make room, and a frame larger
// than the bound is not kept at all. Stats.RetainedBytes shows what is
// kept now. Default: DefaultResendBytes (4 MiB, one frame of the default
// maximum size).
func WithResendBytes(n int) Option {
	return optcheck.Positive("resend bytes", n, func(c *config) { c.resendBytes = n })
}

// WithResendAge sets how long a connection keeps a frame for resends: a
// peer that fails to decompress a frame asks for it as soon as it has read
// it, so older frames are forgotten, and a link that has gone idle holds
// none. Default: DefaultResendAge (10 s).
func WithResendAge(d time.Duration) Option {
	return optcheck.Positive("resend age", d, func(c *config) { c.resendAge = d })
}

// WithBufferSizes sets the per-connection read and write buffer sizes.
// Defaults: 64 KiB each.
func WithBufferSizes(read, write int) Option {
	return func(c *config) error {
		if read < 4096 || write < 4096 {
			return optcheck.Invalid("buffer sizes must be at least 4 KiB, got %d and %d", read, write)
		}
		c.readBuffer, c.writeBuffer = read, write
		return nil
	}
}

// WithListener makes the socket accept on ln (which it closes on Close)
// instead of listening itself; NewSocket's addr must then be "". Tests use
// it to wrap the listener with fault injection.
func WithListener(ln net.Listener) Option {
	return func(c *config) error {
		if ln == nil {
			return optcheck.Invalid("listener must not be nil")
		}
		c.listener = ln
		return nil
	}
}

// WithDialer replaces how the socket opens connections. Default: a
// net.Dialer.
func WithDialer(dial DialFunc) Option {
	return func(c *config) error {
		if dial == nil {
			return optcheck.Invalid("dialer must not be nil")
		}
		c.dial = dial
		return nil
	}
}

// WithNetDialer replaces how the socket opens connections, like WithDialer,
// but keeps the local address and socket options the socket asks for (its
// listening port under WithReusePort): dial must use d. Tests use it to dial
// from inside a network namespace. It takes precedence over WithDialer.
func WithNetDialer(dial NetDialFunc) Option {
	return func(c *config) error {
		if dial == nil {
			return optcheck.Invalid("dialer must not be nil")
		}
		c.netDial = dial
		return nil
	}
}

// WithReusePort makes the socket listen with SO_REUSEADDR and SO_REUSEPORT
// and dial its connections from its listening port, where the system
// allows it (Linux and the BSDs, macOS included; elsewhere it is accepted
// and does nothing). A NAT in front of the node then maps its outgoing
// connections to the mapping its listening port has, which is what NAT
// hole punching (ConnectPunch, package mesh) needs: the address a
// neighbour sees this node at is the one a punch reaches. A dial whose
// four-tuple is taken (a link to the same peer address, or one still in
// TIME-WAIT) falls back to an ephemeral port. The options are set on the
// listener after it is bound (one given with WithListener too, if it is a
// TCP socket), so no other listener can share its port: a second socket on
// a port in use still fails with ErrListen. Default: off.
func WithReusePort(on bool) Option {
	return func(c *config) error {
		c.reusePort = on
		return nil
	}
}

// WithDispatchers sets how many goroutines run user handlers. Each
// connection's messages are handled by one of them, in order; handlers of
// different connections may run at once. Default: DefaultDispatchers.
func WithDispatchers(n int) Option {
	return optcheck.Positive("dispatchers", n, func(c *config) { c.dispatchers = n })
}

// WithFairShare bounds, in percent, what the traffic of one connection may
// hold of a queue it shares with others: of the dispatch queue (messages
// waiting for user handlers, WithDispatchQueue), and, for messages a
// routing layer relays from it (Conn.ForwardFrom), of each other
// connection's send queue (WithSendQueue). So one neighbour flooding the
// node leaves the rest of every queue to the others. What is over the
// share is dropped and counted (Stats.ShareDrops, and DispatchDrops or
// QueueDrops). 100 turns the bound off. Default: DefaultFairShare (50).
func WithFairShare(percent int) Option {
	return func(c *config) error {
		if percent < 1 || percent > 100 {
			return optcheck.Invalid("fair share must be between 1 and 100 percent, got %d", percent)
		}
		c.fairShare = percent
		return nil
	}
}

// WithDispatchQueue bounds the messages waiting for user handlers, for the
// whole socket, by count and by bytes (each message counts the memory it
// keeps alive, as for WithRecvQueueBytes). When it is full, a new message
// is dropped and
// counted (Stats.DispatchDrops): a connection's reader never waits for a
// handler. Defaults: DefaultDispatchQueueLen messages, DefaultDispatchQueueBytes.
func WithDispatchQueue(messages, bytes int) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("dispatch queue length", messages); err != nil {
			return err
		}
		if err := optcheck.CheckPositive("dispatch queue bytes", bytes); err != nil {
			return err
		}
		c.dispatchQueueLen, c.dispatchQueueBytes = messages, bytes
		return nil
	}
}

// WithSigning says whether this node signs what it originates and verifies
// what it receives (docs/protocol.md §5.3): it sets the protocol's Signing
// to protocol.SigningEd25519 (true) or protocol.SigningNone (false),
// whatever WithProtocol says, in any order. Nodes that differ refuse each
// other at the handshake (ErrProtocolMismatch). Turn it off only on a
// network whose every node is trusted, or to measure. Default: true.
func WithSigning(on bool) Option {
	return func(c *config) error {
		c.signing = protocol.SigningNone
		if on {
			c.signing = protocol.SigningEd25519
		}
		return nil
	}
}

// WithVerifyWorkers sets how many goroutines verify signatures; each takes
// the messages of the connections it serves in batches. Default: one per
// core (runtime.GOMAXPROCS when the socket is made).
func WithVerifyWorkers(n int) Option {
	return optcheck.Positive("verify workers", n, func(c *config) { c.verifyWorkers = n })
}

// WithVerifyBacklog bounds the messages waiting for signature verification
// (or for a copy of theirs being verified), for the whole socket, by count
// and by bytes (each counts its envelope and its Message). One
// connection's messages may hold at most their fair share of it
// (WithFairShare) while other connections have some; a connection that
// holds nothing may always add one message. A reader whose message does
// not fit waits until the workers make room (Stats.VerifyWaits): its peer
// is slowed down by TCP back-pressure, and nothing is dropped. Defaults:
// DefaultVerifyBacklog messages, DefaultVerifyBacklogBytes (16 MiB).
func WithVerifyBacklog(messages, bytes int) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("verify backlog", messages); err != nil {
			return err
		}
		if err := optcheck.CheckPositive("verify backlog bytes", bytes); err != nil {
			return err
		}
		c.verifyMsgs, c.verifyBytes = messages, bytes
		return nil
	}
}

// WithKeyCache bounds how many senders' public keys are kept expanded for
// verification (about 1.5 KiB each): a cached sender's next signatures
// skip the key's hash check and decompression. Default: DefaultKeyCache
// (about 1.5 MiB).
func WithKeyCache(n int) Option {
	return optcheck.Positive("key cache", n, func(c *config) { c.keyCache = n })
}

// WithSignatureStrikes sets how many messages with a bad signature
// (ErrBadSignature) a connection may bring before it is closed (with an
// error matching ErrBadSignature; Stats.SignatureCloses), and for how long
// the peer's identity is then banned (0: not banned). An honest neighbour
// never forwards a bad signature, since it verifies before it relays.
// Defaults: DefaultSignatureStrikes (3), DefaultSignatureBan (10 min).
func WithSignatureStrikes(strikes int, ban time.Duration) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("signature strikes", strikes); err != nil {
			return err
		}
		if ban < 0 {
			return optcheck.Invalid("signature ban must not be negative, got %v", ban)
		}
		c.strikes, c.banFor = strikes, ban
		return nil
	}
}
