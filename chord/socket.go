// Package chord is meshsock's ring router: nodes sit on a 128-bit ring by
// node ID (protocol.NodeID read as a big-endian unsigned integer), and a
// message for any key reaches the key's owner — the first node whose ID
// follows the key on the ring, successor(key) — in O(log N) hops, without
// flooding.
//
// It is Chord (Stoica et al., 2001) on top of package base: a successor
// list, a predecessor and a 128-entry finger table, kept by periodic
// stabilize, notify, fix-fingers and check-predecessor; a graceful Close
// hands over to the neighbours. Routing is recursive over the links nodes
// already hold; the owner answers a request straight to the requester.
// A handler that receives a request can answer it (msg.Reply) or pass it on
// to the owner of another key (Socket.Bounce); the answer still goes
// straight to the original requester. docs/chord.md describes the
// protocol, its message formats and its guarantees.
package chord

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/lifecycle"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// PeerInfo names a node of the ring: its ID (its place on the ring) and
// the address it accepts connections on.
type PeerInfo struct {
	ID   protocol.NodeID
	Addr string
}

// String returns "id@addr" with the ID's first 8 hex digits.
func (p PeerInfo) String() string { return p.ID.Short() + "@" + p.Addr }

// Route tells how a routed message reached this node. Messages that chord
// delivers (SendTo, Request, Bounce) carry a *Route in base.Message.Route;
// Reply and Bounce use it to find the requester. Responses returned by
// Request carry one too, with RequestID and Hops set.
type Route struct {
	// Key is the key the message was sent to (after a bounce, the new key).
	Key protocol.NodeID
	// Origin is the node that sent it, the original requester even after
	// bounces; answers go there. It is also the message's Sender.
	Origin PeerInfo
	// RequestID is non-zero for a request, which expects an answer.
	RequestID uint64
	// Hops is how many links the message crossed from its origin, all
	// bounce legs included (0 when the origin owns the key).
	Hops int
	// Bounces is how many times the request was bounced.
	Bounces int

	direct bool // the origin accepts a new link for the answer
}

// RouteOf returns the route of a message chord delivered, if it has one.
func RouteOf(m *base.Message) (*Route, bool) {
	if m == nil {
		return nil, false
	}
	r, ok := m.Route.(*Route)
	return r, ok && r != nil
}

// IsRequest reports whether m is a request routed by chord (one that
// expects msg.Reply or a Bounce).
func IsRequest(m *base.Message) bool {
	r, ok := RouteOf(m)
	return ok && r.RequestID != 0 && m.Flag == flags.Request
}

// LookupResult is the answer to a lookup.
type LookupResult struct {
	// Owner is the node that owns the key.
	Owner PeerInfo
	// Hops is how many links the lookup crossed to reach the owner (0 if
	// this node owns the key).
	Hops int
	// Elapsed is the round-trip time of the lookup.
	Elapsed time.Duration
}

// Socket is a node of a chord ring. All methods are safe for concurrent
// use.
type Socket struct {
	cfg  config
	base *base.Socket
	id   protocol.NodeID
	addr string // advertised address, carried in requests for answers
	log  *slog.Logger

	rmu    sync.Mutex
	st     ringState
	view   atomic.Pointer[ringView]
	joinMu sync.Mutex

	links   *linkTable
	dead    *deadSet
	calls   *calls
	ctr     counters
	courier chan courierJob

	lastWarn  atomic.Int64
	stabWake  chan struct{}
	evictWake chan struct{}
	ready     chan struct{}        // closed once base is set
	leaveOnce sync.Once            // a graceful Close says Leave once
	lc        *lifecycle.Lifecycle // closing, and the goroutines of the chord layer
}

// NewSocket creates a chord node listening on addr ("127.0.0.1:0" picks a
// free port). A chord node must listen: it is a place on the ring that
// others dial. Until it joins a ring (Join) it is a ring of its own and
// owns every key. Options are validated; a bad one returns an error
// matching ErrInvalidOption.
func NewSocket(addr string, opts ...Option) (*Socket, error) {
	cfg := defaultConfig()
	if err := optcheck.Apply(&cfg, opts); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Socket{
		cfg:       cfg,
		links:     newLinkTable(),
		dead:      &deadSet{m: make(map[PeerInfo]time.Time), ttl: 30 * time.Second},
		calls:     newCalls(cfg.maxPending),
		courier:   make(chan courierJob, cfg.courierQueue),
		stabWake:  make(chan struct{}, 1),
		evictWake: make(chan struct{}, 1),
		ready:     make(chan struct{}),
		lc:        lifecycle.New(),
	}
	if cfg.key == nil {
		cfg.key = base.GenerateKey()
	}
	s.cfg.key, s.id = cfg.key, protocol.NodeIDFromKey(cfg.key.Public().(ed25519.PublicKey))
	s.view.Store(&ringView{}) // the connection hook may run before NewSocket returns
	baseOpts := []base.Option{
		base.WithProtocol(cfg.protocol),
		base.WithLogger(cfg.logger),
		base.WithBufferSizes(DefaultBufferSize, DefaultBufferSize),
		base.WithMaxConns(hardLinkLimit(cfg.maxLinks)),
	}
	baseOpts = append(baseOpts, cfg.baseOpts...)
	baseOpts = append(baseOpts, base.WithKey(cfg.key)) // chord's, whatever the base options say
	b, err := base.NewLayered(addr, base.Layer{Handle: s.handle, Reply: s.reply, ConnHook: s.connChanged}, baseOpts...)
	if err != nil {
		return nil, err
	}
	s.base = b
	s.addr = b.AdvertisedAddr()
	s.log = b.Logger().With("layer", "chord")
	s.rmu.Lock()
	s.publishLocked()
	s.rmu.Unlock()
	close(s.ready)
	if b.Addr() == nil || s.addr == "" || len(s.addr) > maxAddrLen {
		_ = s.lc.Close(context.Background(), func(ctx context.Context) { _ = b.Close(ctx) })
		return nil, optcheck.Invalid("a chord node must listen on an address of at most %d bytes (got %q)", maxAddrLen, s.addr)
	}
	s.lc.Go(s.maintainLoop, s.fingerLoop, s.evictLoop)
	for range cfg.couriers {
		s.lc.Go(s.courierLoop)
	}
	return s, nil
}

// ID returns this node's ID, its place on the ring.
func (s *Socket) ID() protocol.NodeID { return s.id }

// Addr returns the listener's address.
func (s *Socket) Addr() net.Addr { return s.base.Addr() }

// Self returns this node's ID and advertised address.
func (s *Socket) Self() PeerInfo { return s.self() }

func (s *Socket) self() PeerInfo { return PeerInfo{ID: s.id, Addr: s.addr} }

// Base returns the underlying connection layer, for its lower-level API
// (per-connection stats, events, Status).
func (s *Socket) Base() *base.Socket { return s.base }

// Successor returns this node's successor (itself when it is alone).
func (s *Socket) Successor() PeerInfo {
	v := s.view.Load()
	if len(v.succs) == 0 {
		return s.self()
	}
	return v.succs[0]
}

// Successors returns the successor list, nearest first (empty when alone).
func (s *Socket) Successors() []PeerInfo {
	return append([]PeerInfo(nil), s.view.Load().succs...)
}

// Predecessor returns this node's predecessor, if it knows one.
func (s *Socket) Predecessor() (PeerInfo, bool) {
	p := s.view.Load().pred
	return p, !p.ID.IsZero()
}

// Fingers returns the finger table: entry i is the owner of ID + 2^i as
// last looked up (the zero PeerInfo where unknown or this node itself).
func (s *Socket) Fingers() [IDBits]PeerInfo {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.st.fingers
}

// RegisterHandler adds a handler after chord's built-in one and after every
// handler registered before it. Messages routed to this node (SendTo,
// Request, Bounce) reach it with their Route set, their chord header
// removed and Sender set to the original sender; a request is answered
// with msg.Reply or passed on with Bounce. Handlers run on base's
// dispatcher goroutines, never on a link's reader (see base.Handler). The
// first handler that claims a message stops the chain; unclaimed messages
// go to Recv.
func (s *Socket) RegisterHandler(h base.Handler) { s.base.RegisterHandler(h) }

// Recv returns the oldest message no handler claimed, waiting until one
// arrives, ctx ends (ErrTimeout) or the socket closes (ErrClosed).
func (s *Socket) Recv(ctx context.Context) (*base.Message, error) { return s.base.Recv(ctx) }

// Join joins the ring that the nodes at seeds belong to ("host:port" each;
// any member will do). Every host name is resolved (WithResolver) to all
// its addresses, IPv4 and IPv6, and each address is dialled, with retries
// and back-off (WithJoin), all within ctx; through the first link that
// answers, this node asks for the owner of its own ID, which becomes its
// successor, then stabilizes once. The rest of the ring learns about the
// node over the next stabilization rounds. Join returns how many links it
// formed.
//
// Partial failure is success: the error is nil when at least one link
// formed and the node found its place (the failed addresses are logged at
// level Info). Otherwise the error is a *JoinError that lists every seed
// that did not resolve and every address that failed, with its error;
// errors.Is looks through all of them: a node of another protocol (a mesh
// node, another subnet) matches ErrProtocolMismatch, no answer within the
// request timeout ErrTimeout, a name that does not resolve ErrResolve,
// this node's own address ErrSelfConnect.
//
// The node remembers its seeds: while it is alone on its ring it joins
// through them again, resolving every name anew, at most once per
// JoinConfig.Refresh (30 s by default).
func (s *Socket) Join(ctx context.Context, seeds ...string) (joined int, err error) {
	if s.lc.Closed() {
		return 0, ErrClosed
	}
	return s.base.JoinVia(ctx, s.joinFunc(), seeds...)
}

// joinFunc returns the base.JoinFunc of one Join: it links to an address
// and, until the ring has been joined through one of them, finds this
// node's place through that link; later addresses only add links.
func (s *Socket) joinFunc() base.JoinFunc {
	var placed atomic.Bool
	return func(ctx context.Context, addr string) error {
		c, err := s.base.Connect(ctx, addr)
		if err != nil {
			return fmt.Errorf("chord: join via %s: %w", addr, err)
		}
		if placed.Load() {
			return nil
		}
		s.joinMu.Lock()
		defer s.joinMu.Unlock()
		if placed.Load() {
			return nil
		}
		if err := s.joinVia(ctx, c, addr); err != nil {
			return err
		}
		placed.Store(true)
		return nil
	}
}

// joinVia joins the ring through c, a link to addr: it looks up the owner
// of this node's ID and makes it the successor. The caller holds joinMu.
func (s *Socket) joinVia(ctx context.Context, c *base.Conn, addr string) error {
	res, err := s.lookup(ctx, s.id, true, c)
	if err != nil {
		return fmt.Errorf("chord: join via %s: %w", addr, err)
	}
	s.ctr.joins.Add(1)
	if res.Owner.ID == s.id {
		// The ring already routes our ID to us: we are a member.
		return nil
	}
	if _, err := s.connectTo(ctx, res.Owner); err != nil {
		return fmt.Errorf("chord: join via %s: successor %s: %w", addr, res.Owner, err)
	}
	s.rmu.Lock()
	s.forgetDead(res.Owner.ID)
	s.setSuccessorsLocked(res.Owner, nil)
	s.publishLocked()
	s.rmu.Unlock()
	s.log.Info("joined the ring", "via", addr, "successor", res.Owner.ID.Short(), "hops", res.Hops)
	s.stabilize()
	return nil
}

// Lookup returns the owner of key: the first node whose ID follows the key
// on the ring (a node owns the keys in (predecessor, itself]).
func (s *Socket) Lookup(ctx context.Context, key protocol.NodeID) (PeerInfo, error) {
	res, err := s.LookupDetail(ctx, key)
	return res.Owner, err
}

// LookupDetail is Lookup with the hop count and round-trip time.
func (s *Socket) LookupDetail(ctx context.Context, key protocol.NodeID) (LookupResult, error) {
	s.ctr.lookups.Add(1)
	return s.lookup(ctx, key, true, nil)
}

// lookup sends a find-successor for key, routed from this node, or straight
// over via (Join, which has no ring yet).
func (s *Socket) lookup(ctx context.Context, key protocol.NodeID, user bool, via *base.Conn) (LookupResult, error) {
	start := time.Now()
	cl, err := s.call(ctx, flags.FindSuccessor, key, nil, user, via)
	if err != nil {
		return LookupResult{}, err
	}
	res := LookupResult{Owner: cl.owner, Hops: cl.hops, Elapsed: time.Since(start)}
	if user && via == nil {
		s.ctr.recordHops(cl.hops)
	}
	return res, nil
}

// Request sends packets to the owner of key and returns its answer. The
// owner's handler answers with msg.Reply, or passes the request on with
// Bounce; either way the answer comes straight from the node that answers.
// The returned message has Flag flags.Response, Sender the answering node,
// and a *Route with the request's hop count. Without an answer within the
// request timeout (or before ctx ends) it fails with ErrTimeout; answers
// that come later are dropped and counted (Stats.LateAnswers).
func (s *Socket) Request(ctx context.Context, key protocol.NodeID, packets ...[]byte) (*base.Message, error) {
	if len(packets) == 0 && !s.lc.Closed() {
		return nil, ErrNoPackets
	}
	s.ctr.requests.Add(1)
	cl, err := s.call(ctx, flags.Request, key, packets, true, nil)
	if err != nil {
		return nil, err
	}
	s.ctr.recordHops(cl.hops)
	if r, ok := RouteOf(cl.msg); ok {
		r.Key = key
	}
	return cl.msg, nil
}

// call sends a request or lookup and waits for its answer.
func (s *Socket) call(ctx context.Context, sub flags.Flag, key protocol.NodeID, packets [][]byte, user bool, via *base.Conn) (*call, error) {
	if s.lc.Closed() {
		return nil, ErrClosed
	}
	kind := kindRequest
	if sub == flags.FindSuccessor {
		kind = kindLookup
	}
	cl, err := s.calls.open(kind, user, protocol.NodeID{}, key)
	if err != nil {
		if user && errors.Is(err, ErrTooManyRequests) {
			s.ctr.pendingLimit.Add(1)
			s.warn("pending request limit reached; call refused", "limit", s.cfg.maxPending)
		}
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.reqTimeout)
	defer cancel()
	h := routeHeader{key: key, id: cl.id, origin: s.id, addr: s.addr, direct: via != nil || s.hasRoom()}
	if err := s.originate(ctx, sub, h, s.cfg.hopLimit, packets, via); err != nil {
		s.calls.drop(cl)
		return nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		if s.calls.drop(cl) {
			if user {
				s.ctr.timeouts.Add(1)
			}
			return nil, fmt.Errorf("%w: no answer for key %s: %w", ErrTimeout, key, ctx.Err())
		}
		<-cl.done
	case <-s.lc.Closing():
		if s.calls.drop(cl) {
			return nil, ErrClosed
		}
		<-cl.done
	}
	if cl.err != nil {
		return nil, cl.err
	}
	if cl.status == statusNoRoute {
		if user {
			s.ctr.noRoute.Add(1)
		}
		return nil, fmt.Errorf("%w: key %s: %s", ErrNoRoute, key, cl.reason)
	}
	return cl, nil
}

// originate routes a new message from this node: delivered here if this
// node owns the key, otherwise sent to the next hop (or over via).
func (s *Socket) originate(ctx context.Context, sub flags.Flag, h routeHeader, hopLimit uint8, packets [][]byte, via *base.Conn) error {
	c := via
	var alt PeerInfo
	if via == nil {
		var local bool
		local, c, alt = s.next(h.key, protocol.NodeID{})
		if local {
			s.deliverLocal(sub, h, packets)
			return nil
		}
		if c == nil && alt.ID.IsZero() {
			s.ctr.noRoute.Add(1)
			return fmt.Errorf("%w: no link towards key %s", ErrNoRoute, h.key)
		}
	}
	env, err := s.routedEnvelope(sub, h, hopLimit, packets)
	if err != nil {
		return err
	}
	if c == nil {
		// No live link: a courier dials the next hop (this may be a
		// handler's goroutine, which must not wait for a dial).
		if !s.hire(courierJob{kind: jobForward, to: alt, env: env, hdr: &h}) {
			s.ctr.noRoute.Add(1)
			return fmt.Errorf("%w: no live link towards key %s and the couriers are busy", ErrNoRoute, h.key)
		}
		return nil
	}
	s.links.touch(c)
	return c.SendEnvelope(ctx, 0, env)
}

// deliverLocal handles a message this node routed to itself.
func (s *Socket) deliverLocal(sub flags.Flag, h routeHeader, packets [][]byte) {
	if sub == flags.FindSuccessor {
		s.resolveLocal(h.id, statusOK, int(h.prior), nil)
		return
	}
	s.ctr.delivered.Add(1)
	s.base.Inject(&base.Message{
		Type:     flags.Whisper,
		Flag:     sub,
		Proven:   h.origin == s.id,
		Sender:   h.origin,
		Time:     time.Now(),
		HopLimit: s.cfg.hopLimit,
		Packets:  packets,
		Route: &Route{
			Key:       h.key,
			Origin:    PeerInfo{ID: h.origin, Addr: h.addr},
			RequestID: h.id,
			Hops:      int(h.prior),
			Bounces:   int(h.bounces),
			direct:    h.direct,
		},
	})
}

// SendTo sends packets to the owner of key, one way. It returns once the
// first hop has the message (or this node, if it owns the key, has run its
// handlers); delivery further on is not confirmed — use Request for that.
// The owner receives it with Flag flags.Forward and a *Route. It fails with
// ErrNoRoute if this node has no live link towards the key.
func (s *Socket) SendTo(ctx context.Context, key protocol.NodeID, packets ...[]byte) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	if len(packets) == 0 {
		return ErrNoPackets
	}
	s.ctr.sendTos.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.reqTimeout)
	defer cancel()
	return s.originate(ctx, flags.Forward, routeHeader{key: key, origin: s.id, addr: s.addr, direct: s.hasRoom()}, s.cfg.hopLimit, packets, nil)
}

// Bounce passes a message that chord routed to this node on to the owner
// of another key (p2py's Request.bounce). A bounced request keeps its
// request ID and original requester, so the node that finally answers it
// with msg.Reply answers the original requester directly; the bouncer
// should not answer it too. A one-way message bounced arrives at the new
// owner with its original Sender. The packets are msg.Packets as they are
// now. Hops add up over bounces against the hop limit, and a request may be
// bounced at most MaxBounces times (ErrTooManyBounces). A message that
// chord did not route (no Route) fails with ErrNotRouted.
func (s *Socket) Bounce(ctx context.Context, msg *base.Message, key protocol.NodeID) error {
	r, ok := RouteOf(msg)
	if !ok || r.Origin.ID.IsZero() {
		return ErrNotRouted
	}
	if s.lc.Closed() {
		return ErrClosed
	}
	if r.Bounces >= MaxBounces {
		return fmt.Errorf("%w: bounced %d times", ErrTooManyBounces, r.Bounces)
	}
	if r.Hops >= int(s.cfg.hopLimit) {
		return fmt.Errorf("%w: hop limit %d used up after %d hops", ErrNoRoute, s.cfg.hopLimit, r.Hops)
	}
	sub := flags.Forward
	if r.RequestID != 0 {
		sub = flags.Request
	}
	h := routeHeader{
		key:     key,
		id:      r.RequestID,
		origin:  r.Origin.ID,
		addr:    r.Origin.Addr,
		prior:   uint8(r.Hops),
		bounces: uint8(r.Bounces + 1),
		direct:  r.direct,
	}
	s.ctr.bounces.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.reqTimeout)
	defer cancel()
	return s.originate(ctx, sub, h, s.cfg.hopLimit-uint8(r.Hops), msg.Packets, nil)
}

// Close leaves the ring gracefully: it tells the predecessor and the
// successor about each other (Leave), stops the maintenance, fails pending
// calls with ErrClosed, flushes and closes every link (for at most the
// flush timeout, or until ctx ends) and waits for every goroutine the node
// started. It may be called from a handler, and then waits for everything
// but the goroutine it runs on. It is idempotent. If ctx ends first it
// returns an error matching ErrTimeout.
func (s *Socket) Close(ctx context.Context) error { return s.close(ctx, true) }

// close shuts the node down; graceful sends Leave and flushes links,
// otherwise the node vanishes as if it crashed (tests).
func (s *Socket) close(ctx context.Context, graceful bool) error {
	if graceful {
		s.leaveOnce.Do(func() {
			if !s.lc.Closed() {
				s.sendLeave()
			}
		})
	}
	var baseErr error
	err := s.lc.Close(ctx, func(ctx context.Context) {
		s.calls.closeAll()
		if !graceful {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_ = s.base.Close(cctx)
			return
		}
		baseErr = s.base.Close(ctx)
	})
	if err != nil {
		return fmt.Errorf("%w: close: %w", ErrTimeout, err)
	}
	return baseErr
}
