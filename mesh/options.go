package mesh

import (
	"crypto/ed25519"
	"log/slog"
	"maps"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/logattr"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Defaults of the mesh's own bounds and timers. The connection-level ones
// are base's (base.Default…).
const (
	DefaultMaxOutgoing        = 4 // py2p's max_outgoing
	DefaultMaxPeers           = 32
	DefaultSeenOrigins        = 8192 // origins whose broadcasts are remembered
	DefaultSeenWindow         = 1024 // sequence numbers remembered per origin
	DefaultSeenCacheAge       = 60 * time.Second
	DefaultClockSkew          = 5 * time.Second
	DefaultHopLimit           = 128
	DefaultRelayAgainBelow    = 32 // hops left
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
	DefaultSlowWait           = 200 * time.Millisecond
	DefaultFloodRate          = 50_000   // new broadcasts per second from one neighbour
	DefaultOriginRate         = 20_000   // broadcasts per second a neighbour originates itself
	DefaultFloodBytes         = 64 << 20 // bytes of new broadcasts per second from one neighbour
	DefaultFloodAbuse         = 0        // never disconnect: a neighbour that sends a lot cannot be told from a flooder
	DefaultSlowClose          = 5 * time.Second
	DefaultAbuseBan           = 10 * time.Minute // how long a neighbour closed for flooding is refused
	DefaultPeerListBudget     = 64               // peer lists one neighbour may send unasked at once…
	DefaultPeerListInterval   = 16 * time.Second // …and again within each such interval (4 a second)
	DefaultRecordRate         = 64               // records from one neighbour verified per second
	DefaultRecordBurst        = 256              // records from one neighbour verified at once
	DefaultRecordAbuse        = 5 * time.Second  // over the record budget for this long: closed and banned
	DefaultMaxPendingCalls    = 4096             // this node's requests and calls waiting for an answer
	DefaultMaxCallsPerCaller  = 64               // calls of one caller this node's handlers run at once
	DefaultMaxCalls           = 1024             // calls this node's handlers run at once, all callers
)

// Option configures a mesh Socket; NewSocket validates them and returns an
// error matching ErrInvalidOption for a bad value.
type Option func(*config) error

type config struct {
	punch             bool
	punchLimits       PunchLimits
	maxOutgoing       int
	maxPeers          int
	seenOrigins       int
	seenWindow        int
	seenAge           time.Duration
	clockSkew         time.Duration
	hopLimit          uint8
	againBelow        uint8
	maxKnown          int
	knownPerSrc       int // 0: an eighth of maxKnown
	maxPending        int
	maxPendingCalls   int
	maxCallsPerCaller int
	maxCalls          int
	routeTimeout      time.Duration
	routeTable        int // next-hop table entries
	dialTimeout       time.Duration
	maintainEvery     time.Duration
	backoffMin        time.Duration
	backoffMax        time.Duration
	maxDials          int
	probeEvery        time.Duration
	probeMembers      int
	slowWait          time.Duration
	floodRate         int
	originRate        int
	floodBytes        int
	floodAbuse        time.Duration
	abuseBan          time.Duration
	listBudget        int           // peer lists a neighbour may send unasked at once
	listEvery         time.Duration // … and again within each such interval
	recordRate        int           // records of a neighbour's verified per second
	recordBurst       int           // … and at once
	recordAbuse       time.Duration // over the record budget for this long: the link is closed (0: never)
	slowClose         time.Duration
	meta              map[string]string
	logger            *slog.Logger
	tracer            Tracer
	discovery         bool
	baseOpts          []base.Option
	members           memberConfig // members and topics (members.go)
	lan               lanConfig    // LAN discovery and port range (lan.go)
	repair            repairConfig // broadcast mode and loss repair (broadcastmode.go)
}

func defaultConfig() config {
	return config{
		maxOutgoing:       DefaultMaxOutgoing,
		maxPeers:          DefaultMaxPeers,
		seenOrigins:       DefaultSeenOrigins,
		seenWindow:        DefaultSeenWindow,
		seenAge:           DefaultSeenCacheAge,
		clockSkew:         DefaultClockSkew,
		hopLimit:          DefaultHopLimit,
		againBelow:        DefaultRelayAgainBelow,
		maxKnown:          DefaultMaxKnownPeers,
		maxPending:        DefaultMaxPendingRequests,
		maxPendingCalls:   DefaultMaxPendingCalls,
		maxCallsPerCaller: DefaultMaxCallsPerCaller,
		maxCalls:          DefaultMaxCalls,
		routeTimeout:      DefaultRouteTimeout,
		routeTable:        DefaultRouteTable,
		dialTimeout:       DefaultDialTimeout,
		maintainEvery:     DefaultMaintainInterval,
		backoffMin:        DefaultBackoffMin,
		backoffMax:        DefaultBackoffMax,
		maxDials:          DefaultMaxDials,
		probeEvery:        DefaultProbeInterval,
		probeMembers:      DefaultProbeMembers,
		slowWait:          DefaultSlowWait,
		floodRate:         DefaultFloodRate,
		originRate:        DefaultOriginRate,
		floodBytes:        DefaultFloodBytes,
		floodAbuse:        DefaultFloodAbuse,
		abuseBan:          DefaultAbuseBan,
		listBudget:        DefaultPeerListBudget,
		listEvery:         DefaultPeerListInterval,
		recordRate:        DefaultRecordRate,
		recordBurst:       DefaultRecordBurst,
		recordAbuse:       DefaultRecordAbuse,
		slowClose:         DefaultSlowClose,
		logger:            logattr.Discard,
		discovery:         true,
		punch:             true,
		punchLimits:       defaultPunchLimits(),
		members:           defaultMemberConfig(),
		repair:            defaultRepairConfig(),
	}
}

// knownShare is the members one neighbour may introduce into the table of
// known peers (WithMaxKnownPerSource).
func (c *config) knownShare() int {
	if c.knownPerSrc > 0 {
		return c.knownPerSrc
	}
	return max(1, c.maxKnown/8)
}

func (c *config) validate() error {
	if c.maxOutgoing > c.maxPeers {
		return optcheck.Invalid("max outgoing (%d) exceeds max peers (%d)", c.maxOutgoing, c.maxPeers)
	}
	if c.backoffMin > c.backoffMax {
		return optcheck.Invalid("back-off minimum %v exceeds maximum %v", c.backoffMin, c.backoffMax)
	}
	return c.validateLAN()
}

// WithSignedBroadcasts says whether origins sign their broadcasts (and
// every node verifies each broadcast before it relays or delivers it) or
// nothing is signed: it sets the protocol's signing setting
// (base.WithSigning), so nodes that differ refuse each other
// (ErrProtocolMismatch). Signed, a relay can neither alter a broadcast nor
// forge one from another origin, and duplicates are told apart by (origin,
// sequence number) that only the origin can claim. Unsigned costs no
// signing (about 20 µs per broadcast on its origin's goroutine) and no
// verification (about 27 µs per broadcast per node, on a pool that uses
// every core): only for a network whose every node is trusted, or to
// measure. Default: true.
func WithSignedBroadcasts(on bool) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithSigning(on))
		return nil
	}
}

// WithProtocol sets the subnet, encryption and signing; nodes of different
// protocols refuse each other (Connect returns ErrProtocolMismatch).
// p.Encryption is protocol.EncryptionTLS (the default) or
// protocol.EncryptionPlaintext (base.WithProtocol).
func WithProtocol(p protocol.Protocol) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithProtocol(p))
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

// WithSeenCache bounds the seen-state by origins (the nodes whose
// broadcasts it remembers) and sets the age window: broadcasts older than
// age (plus the clock-skew allowance) are dropped. An origin is remembered
// until age plus the allowance after its newest broadcast, and never
// forgotten earlier: when the bound is reached, broadcasts from new
// origins are refused (Stats.SeenRefused) until old ones expire, and from
// three quarters of it on, new origins are refused from a neighbour that
// introduced half of those remembered. Each origin costs the window size
// (WithSeenWindow) plus about 64 bytes. Defaults: DefaultSeenOrigins
// (8192), 60 s.
func WithSeenCache(origins int, age time.Duration) Option {
	return func(c *config) error {
		if origins < seenShards {
			return optcheck.Invalid("seen-cache must hold at least %d origins, got %d", seenShards, origins)
		}
		if err := optcheck.CheckPositive("seen-cache age", age); err != nil {
			return err
		}
		c.seenOrigins, c.seenAge = origins, age
		return nil
	}
}

// WithSeenWindow sets how many sequence numbers the seen-state remembers
// per origin, a power of two from 64 to 65536: a copy of a broadcast whose
// number is that far below the newest one accepted from its origin is
// refused as a possible replay (Stats.SeenBehind). Size it above what one
// origin sends (broadcasts and whispers, which share the numbering) while
// a broadcast crosses the mesh by its slowest path. Default:
// DefaultSeenWindow (1024).
func WithSeenWindow(n int) Option {
	return func(c *config) error {
		if n < 64 || n > 1<<16 || n&(n-1) != 0 {
			return optcheck.Invalid("seen window must be a power of two from 64 to 65536, got %d", n)
		}
		c.seenWindow = n
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

// WithRelayAgainBelow sets when a later copy of a broadcast is relayed
// again. With a hop limit, the first copy to arrive may have come the long
// way round, with fewer hops left than a copy arriving later by a shorter
// path; relaying only the first would leave nodes within the limit
// without the broadcast. A node therefore relays again (without
// delivering again) a copy that has more hops left than any before, as
// long as the best before had fewer than n hops left: past that, the
// first relay reaches every node within n hops anyway, and relaying again
// would only add copies to a flood whose hop limit is nowhere near
// binding (the default limit of 128 never is in a mesh of diameter below
// 96). 0 never relays again; 255 always does. Default:
// DefaultRelayAgainBelow (32).
func WithRelayAgainBelow(n int) Option {
	return func(c *config) error {
		if n < 0 || n > 255 {
			return optcheck.Invalid("relay-again threshold must be between 0 and 255, got %d", n)
		}
		c.againBelow = uint8(n)
		return nil
	}
}

// WithFloodBudget bounds what one neighbour may flood through this node:
// the new broadcasts it sends (not duplicates, which cost little) are
// charged to a token bucket of perSec messages and bytesPerSec bytes per
// second, a sixteenth of a second deep, before they are relayed or
// delivered. One the bucket cannot pay for is held on the connection's
// reader until it can (Stats.BudgetWaits, TraceOverBudget): the neighbour
// is slowed down by TCP's own back-pressure, and nothing it sends is lost
// here (its Send blocks; what it relays and cannot queue, it drops and
// counts). What a neighbour originates itself is also charged to the
// origin budget (WithOriginBudget), which is cut when it floods. A
// neighbour held at the origin budget's floor for abuseFor is
// disconnected (Stats.AbusiveClosed, TraceAbuseClose) and its identity
// banned (WithAbuseBan); 0, the default,
// never disconnects (a neighbour that originates much cannot be told from
// a flooder). Set the budget above what the whole mesh originates: a node
// whose only link leads to the rest of the mesh gets every broadcast
// through it. Defaults: DefaultFloodRate (50 000/s), DefaultFloodBytes
// (64 MiB/s), DefaultFloodAbuse (0: off).
func WithFloodBudget(perSec, bytesPerSec int, abuseFor time.Duration) Option {
	return func(c *config) error {
		if perSec <= 0 || bytesPerSec <= 0 {
			return optcheck.Invalid("flood budget must be positive, got %d messages and %d bytes per second", perSec, bytesPerSec)
		}
		if abuseFor < 0 {
			return optcheck.Invalid("flood abuse bound must not be negative, got %v", abuseFor)
		}
		c.floodRate, c.floodBytes, c.floodAbuse = perSec, bytesPerSec, abuseFor
		return nil
	}
}

// WithAbuseBan sets how long a neighbour disconnected for flooding
// (WithFloodBudget's abuse bound) or for sending records over its budget
// (WithRecordBudget's) is refused at the handshake
// (base.Socket.Ban: its node ID, whatever address it comes back from; the
// reconnect fails with ErrNotAuthorized on both sides), so that it cannot
// collect a fresh budget by reconnecting. 0 disconnects without a ban.
// Default: DefaultAbuseBan (10 min).
func WithAbuseBan(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return optcheck.Invalid("abuse ban must not be negative, got %v", d)
		}
		c.abuseBan = d
		return nil
	}
}

// WithPeerListBudget bounds the peer lists one neighbour may send this
// node unasked: n at once, and n more within every interval after (a token
// bucket n deep, refilled at n per interval). A list beyond it is dropped
// before it is decoded (Stats.PeerListsOverBudget,
// TracePeerListOverBudget, a log line at most once a second); it costs
// this node next to nothing, so a neighbour is never disconnected for
// sending too many. A list that answers this node's own request (it asks
// its neighbours when it loses one or runs short of members to dial, at
// most once per maintenance interval, WithMaintenance) is not charged.
// An honest neighbour sends one unasked list when the link comes up, one
// whenever it loses a link (asking for one back) and one whenever its
// record changes (Socket.Advertise): a few an hour on a settled mesh, at
// most about one per link it has when it loses them all at once; but a
// neighbour whose maintenance interval is short asks that often while it
// is short of members to dial. Defaults: DefaultPeerListBudget (64) per
// DefaultPeerListInterval (16 s), that is bursts of 64 lists and 4 a
// second after: an attacker's lists of 64 records cost at most about
// 2 ms of decoding a second.
func WithPeerListBudget(n int, interval time.Duration) Option {
	return func(c *config) error {
		if n <= 0 {
			return optcheck.Invalid("peer list budget must be positive, got %d", n)
		}
		if err := optcheck.CheckPositive("peer list interval", interval); err != nil {
			return err
		}
		c.listBudget, c.listEvery = n, interval
		return nil
	}
}

// WithRecordBudget bounds the peer records one neighbour may make this node
// verify (an Ed25519 check each, about 27 µs in a batch, 42 µs alone): a
// token bucket of perSec a second, burst deep. Only records that need a
// check are charged: those of nodes this node holds no record of, or
// newer than the one it holds, in the neighbour's peer lists and in the
// route requests and answers that came over its link. A copy of the
// record held, or an older one, costs a lookup and is never charged.
// Records beyond the budget are dropped before they are verified
// (Stats.RecordsOverBudget, TraceRecordOverBudget, a log line at most once
// a second); a route request or answer whose record is dropped is not
// acted on. A neighbour that sends records over its budget, with no
// second without, for abuseFor is disconnected (Stats.AbusiveClosed,
// TraceAbuseClose) and its identity banned (WithAbuseBan); only records of
// the neighbour's own messages (its peer lists and the route messages it
// originated) count towards that, not those of route messages it relays
// for others. 0 never disconnects.
//
// An honest neighbour's first peer list holds at most 64 records, each
// new to this node at worst; later lists hold mostly records this node
// has; a route request is verified only by its target and an answer only
// by the node that asked. So burst is at least 64, and the defaults,
// DefaultRecordRate (64/s), DefaultRecordBurst (256) and
// DefaultRecordAbuse (5 s), take four whole new lists at once and a new
// list a second after, which no honest neighbour comes near; an attacker
// holds a core for under 3 ms a second per link, and is
// disconnected after 5 s of trying for more.
func WithRecordBudget(perSec, burst int, abuseFor time.Duration) Option {
	return func(c *config) error {
		if perSec <= 0 {
			return optcheck.Invalid("record budget must be positive, got %d a second", perSec)
		}
		if burst < maxPeersPerList {
			return optcheck.Invalid("record burst must take a whole peer list (%d records), got %d", maxPeersPerList, burst)
		}
		if abuseFor < 0 {
			return optcheck.Invalid("record abuse bound must not be negative, got %v", abuseFor)
		}
		c.recordRate, c.recordBurst, c.recordAbuse = perSec, burst, abuseFor
		return nil
	}
}

// WithOriginBudget bounds the broadcasts a neighbour originates itself
// (those it sends with hop byte 0), on top of WithFloodBudget, to perSec
// per second: beyond it they wait, as over the flood budget. A neighbour
// that uses nine tenths of it or more over 25 ms, and still has to wait,
// sends without a pause, as a flooder does: its origin budget halves every
// 25 ms it goes on, down to a sixteenth, and doubles back every second in
// which none of its broadcasts had to wait. A flood is thus cut to a
// trickle within about 100 ms, before the honest nodes downstream
// are overrun by what got through. What a neighbour relays is never cut,
// only paced by the flood budget: a node downstream of a flooder relays
// the flood too, and must not be taken for it. (A flooder that sends its
// broadcasts as relays, with a forged hop byte, is therefore held to the
// flood budget only.) A node that keeps originating faster than this is
// taken for a flooder too: size it above what one node may originate.
// Default: DefaultOriginRate (20 000/s), about what the whole 16-node
// bench cluster carries on two cores, and far above what any one of its
// nodes originates.
func WithOriginBudget(perSec int) Option {
	return optcheck.Positive("origin budget", perSec, func(c *config) { c.originRate = perSec })
}

// WithSlowNeighbour sets how long a broadcast this node originates (Send,
// and the mesh's own control floods) waits for a neighbour whose send
// queue is full, and how long a neighbour may stay slow before its link is
// closed. A neighbour still full after wait is marked slow: this node's
// copies that find its queue full are dropped (Stats.SlowDrops,
// TraceSlowDrop) without waiting, until its queue takes one again; one
// that stays slow for closeAfter is disconnected (Stats.SlowClosed,
// TraceSlowClose). Relayed copies never wait in any case. Defaults:
// DefaultSlowWait (200 ms), DefaultSlowClose (5 s).
func WithSlowNeighbour(wait, closeAfter time.Duration) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("slow wait", wait); err != nil {
			return err
		}
		if closeAfter < wait {
			return optcheck.Invalid("slow close (%v) must not be shorter than the slow wait (%v)", closeAfter, wait)
		}
		c.slowWait, c.slowClose = wait, closeAfter
		return nil
	}
}

// WithMaxKnownPeers bounds the table of members learnt by peer exchange
// and met over links. Each member holds at most one record
// (protocol.MaxRecordSize, 2 KiB on the wire): at most about 5 KiB of
// memory with its decoded fields, about 1 KiB for a record with one
// address and a little metadata; so the default table takes at most
// about 5 MiB. When it is full, a new member makes it forget one of the
// members introduced by the neighbour that introduced most (members this
// node learnt itself, over its own links or from route messages, count as
// one more such source): the one of them heard of least recently. It
// never forgets a neighbour, a member being dialled, or one this node
// reached at an address it dialled itself (so that members beyond a
// network cut, of whom no news comes, are still known when it ends),
// unless the new member is such a one too; if no other member can go, the
// new member's record is refused (Stats.RecordsRefused). Members that
// fail are kept, with back-off capped at the maintenance maximum.
// Stats.KnownEvictions counts the members forgotten. Default: 1024.
func WithMaxKnownPeers(n int) Option {
	return optcheck.Positive("max known peers", n, func(c *config) { c.maxKnown = n })
}

// WithMaxKnownPerSource bounds how many members of the table of known
// peers one neighbour may introduce: members whose records it was the
// first to pass on, in peer lists or in the route messages it relayed.
// One that has introduced n replaces the oldest of its own with each new
// one (or, if all of those stay, see WithMaxKnownPeers, its new ones are
// refused), so a neighbour that names made-up members, however many,
// holds at most n entries, and cannot flush the members others named. A
// member stops counting against the neighbour once this node has a link
// to it. Its own record does not count. Default: an eighth of
// WithMaxKnownPeers (128 of the default 1024).
func WithMaxKnownPerSource(n int) Option {
	return optcheck.Positive("max known peers per source", n, func(c *config) { c.knownPerSrc = n })
}

// WithMaxPendingRequests bounds route requests in flight; beyond it
// Whisper fails with ErrTooManyRequests. Default: 1024.
func WithMaxPendingRequests(n int) Option {
	return optcheck.Positive("max pending requests", n, func(c *config) { c.maxPending = n })
}

// WithMaxPendingCalls bounds this node's requests and calls waiting for
// their answers (Request, Call); beyond it they fail at once with
// ErrTooManyRequests. Default: 4096.
func WithMaxPendingCalls(n int) Option {
	return optcheck.Positive("max pending calls", n, func(c *config) { c.maxPendingCalls = n })
}

// WithMaxCallsPerCaller bounds the calls from one node that this node's
// call handlers (Handle) run at once; a call beyond it is answered at once
// with a busy status, which the caller's Call returns as ErrBusy.
// Default: 64.
func WithMaxCallsPerCaller(n int) Option {
	return optcheck.Positive("max calls per caller", n, func(c *config) { c.maxCallsPerCaller = n })
}

// WithMaxCalls bounds the calls, from all callers, that this node's call
// handlers run at once; beyond it calls are answered busy. Default: 1024.
func WithMaxCalls(n int) Option {
	return optcheck.Positive("max calls", n, func(c *config) { c.maxCalls = n })
}

// WithRouteTimeout bounds the search for a node that is neither connected
// nor in the next-hop table (WithRouteTable); after it Whisper, Request
// and Call fail with ErrNoRoute. A node the table knows is not searched
// for, and nothing waits for this timeout. Default: 5 s.
func WithRouteTimeout(d time.Duration) Option {
	return optcheck.Positive("route timeout", d, func(c *config) { c.routeTimeout = d })
}

// WithRouteTable bounds the next-hop table (docs/mesh.md, "Routed
// unicast"): for how many nodes that are not neighbours this node
// remembers the neighbour their messages came through, which is the way
// routed messages to them take. Each entry takes about 100 bytes. When it
// is full the least recently heard of a few entries is forgotten; a
// message to a node without an entry is flooded (or, for Whisper,
// Request and Call, the node searched for) instead. Default:
// DefaultRouteTable (4096 entries, some 400 KiB).
func WithRouteTable(entries int) Option {
	return optcheck.Positive("route table", entries, func(c *config) { c.routeTable = entries })
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

// WithKey sets the node's Ed25519 private key, from which its node ID is
// derived (base.WithKey; base.LoadOrCreateKey keeps one in a file).
// Default: a fresh key.
func WithKey(key ed25519.PrivateKey) Option {
	return func(c *config) error {
		c.baseOpts = append(c.baseOpts, base.WithKey(key))
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

// WithMetadata sets the metadata sent to peers in the handshake, and put
// in this node's record (see Socket.Record and Socket.Advertise, which
// changes it later). A record holds at most protocol.MaxMetaEntries
// entries and protocol.MaxRecordSize bytes in all; NewSocket refuses more
// with ErrInvalidOption.
func WithMetadata(meta map[string]string) Option {
	return func(c *config) error {
		c.meta = maps.Clone(meta)
		c.baseOpts = append(c.baseOpts, base.WithMetadata(meta))
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
