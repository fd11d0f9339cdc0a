// Package mesh is meshsock's flooding mesh: every broadcast reaches every
// node of a connected network exactly once, without a broker.
//
// A node relays each new broadcast once to every neighbour except the one it
// came from and its origin ("waterfall"), before handling it locally. The
// origin signs each broadcast (WithSignedBroadcasts) and every node verifies
// it before it relays or delivers it, so no relay can alter or forge one. A
// seen-state keyed by each origin's sequence numbers drops duplicates
// before they are verified; an age window and a hop limit bound how long
// and how far a message can travel. Peers swap
// neighbour lists after the handshake (each entry a record its node
// signed, which relays cannot change) and re-dial when a neighbour leaves,
// so one node's exit does not partition the rest. Whisper reaches one node,
// found through the mesh if it is not a neighbour, and Message.Reply answers
// the sender of any message, however far away.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/discover"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/lifecycle"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// PeerInfo describes a connected peer: node ID, advertised address,
// direction (Outbound) and metadata.
type PeerInfo = base.PeerInfo

// Message is a message received from the mesh; see base.Message.
type Message = base.Message

// Handler handles messages; see base.Handler.
type Handler = base.Handler

// Socket is a node of a flooding mesh. All methods are safe for concurrent
// use.
type Socket struct {
	cfg  config
	base *base.Socket
	log  *slog.Logger
	seen *seenState

	nmu        sync.Mutex
	neighbours atomic.Pointer[[]*base.Conn] // snapshot for the relay path
	nchanged   chan struct{}                // closed and replaced on every neighbour change (under nmu)
	// rejoining holds neighbours whose link the peer closed as a
	// duplicate while the connection it kept was not registered here
	// yet: until when a message for one waits for it (under nmu).
	rejoining map[protocol.NodeID]time.Time

	known   *knownPeers
	members memberTable   // the mesh's members (members.go)
	topics  topicRegistry // this node's topic subscriptions (topic.go)

	announceNow chan struct{} // asks memberLoop for a member message now
	observeNow  chan struct{} // asks maintainLoop to look at the observed addresses (observed.go)
	addrMu      sync.Mutex    // guards ownAddrs and learnt, and re-signing with the current record's fields; taken before recMu
	ownAddrs    []string      // the addresses the user gave (Advertise), or the advertised one
	learnt      []string      // outside addresses the peers agree on (base.Socket.ObservedAddrs)

	recMu  sync.Mutex                      // serialises signing this node's record
	rec    atomic.Pointer[protocol.Record] // this node's current record (set before ready)
	rep    *repairer                       // broadcast trees and loss repair (repair.go)
	routes *router
	punch  puncher
	hops   *nextHops // the way to nodes that are not neighbours (nexthop.go)
	reqs   *requests // this node's pending requests and calls
	calls  *callTable
	slots  *dialSlots
	ctr    counters
	lan    *discover.Service // LAN discovery (nil: off)

	linkSeq atomic.Uint32 // numbers links (see link.no)

	ready   chan struct{} // closed once base is set
	wake    chan struct{}
	lastAsk time.Time            // when fillOutgoing last asked for peer lists (its goroutine only)
	lc      *lifecycle.Lifecycle // closing, and the goroutines of the mesh layer

	// lastBudgetLog is when a drop over a neighbour's record or peer list
	// budget was last logged (Unix ns).
	lastBudgetLog atomic.Int64
}

// NewSocket creates a mesh node listening on addr ("127.0.0.1:0" picks a
// free port; "" makes a node that only dials; with WithPortRange, addr
// gives the host only). Options are validated; a bad one returns an error
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
		cfg:    cfg,
		seen:   newSeenState(cfg.seenOrigins, cfg.seenWindow, cfg.seenAge+cfg.clockSkew, cfg.againBelow),
		known:  newKnownPeers(cfg.maxKnown, cfg.knownShare()),
		routes: newRouter(cfg.maxPending),
		hops:   newNextHops(cfg.routeTable),
		reqs:   newRequests(cfg.maxPendingCalls),
		calls:  newCallTable(cfg.maxCallsPerCaller, cfg.maxCalls),
		ready:  make(chan struct{}),
		wake:   make(chan struct{}, 1),
		lc:     lifecycle.New(),

		announceNow: make(chan struct{}, 1),
		observeNow:  make(chan struct{}, 1),
	}
	s.rep = newRepairer(s, cfg.repair)
	s.members.m = make(map[protocol.NodeID]*memberEntry)
	s.topics.subs = make(map[string][]*Subscription)
	empty := []*base.Conn{}
	s.neighbours.Store(&empty)
	s.nchanged = make(chan struct{})
	s.rejoining = make(map[protocol.NodeID]time.Time)
	s.slots = newDialSlots(cfg.maxOutgoing)
	layer := base.Layer{
		Prefilter: s.dropDuplicate,
		Handle:    s.handleLayer,
		Reply:     s.replyTo,
		ConnHook:  s.connChanged,
		Delivered: s.delivered,
		Dropped:   s.dropped,
	}
	// Punching needs dials from the listening port (a base option of the
	// user's may still turn that off); then the user's connection options;
	// the mesh's own bounds last, so that no base option can replace them.
	var baseOpts []base.Option
	if cfg.punch {
		baseOpts = append(baseOpts, base.WithReusePort(true))
	}
	baseOpts = append(append(baseOpts, cfg.baseOpts...), base.WithMaxConns(cfg.maxPeers))
	var onHost net.PacketConn // on-host discovery's UDP socket, from the port range
	if cfg.lan.portCount > 0 {
		ln, pc, err := cfg.listenRange(addr)
		if err != nil {
			return nil, err
		}
		onHost = pc
		addr, baseOpts = "", append(baseOpts, base.WithListener(ln))
		defer func() {
			if s.base == nil {
				_ = ln.Close()
			}
			if s.lan == nil && pc != nil {
				_ = pc.Close()
			}
		}()
	}
	b, err := base.NewLayered(addr, layer, baseOpts...)
	if err != nil {
		return nil, err
	}
	s.base = b
	s.log = b.Logger()
	// Calls by tag are served first, on the dispatcher.
	b.RegisterHandler(base.HandlerFunc(s.serveCall))
	var addrs []string
	if a := b.AdvertisedAddr(); a != "" {
		addrs = []string{a}
	}
	s.ownAddrs = addrs
	if _, err := s.signRecord(addrs, cfg.meta, 0); err != nil {
		close(s.ready)
		_ = b.Close(context.Background())
		return nil, optcheck.Invalid("this node's record: %v", err)
	}
	// The topic handler comes first, before any message can be handled
	// (connChanged waits for ready).
	s.base.RegisterHandler(base.HandlerFunc(s.handleTopic))
	close(s.ready)
	if cfg.lan.on {
		if err := s.startLAN(onHost); err != nil {
			_ = b.Close(context.Background())
			return nil, fmt.Errorf("%w: LAN discovery: %w", ErrListen, err)
		}
	}
	s.lc.Go(s.maintainLoop)
	s.lc.Go(s.memberLoop)
	s.lc.Go(func() { s.rep.loop(s.lc.Closing()) })
	return s, nil
}

// ID returns this node's ID.
func (s *Socket) ID() protocol.NodeID { return s.base.ID() }

// Addr returns the listen address (nil for a node that does not listen).
func (s *Socket) Addr() net.Addr { return s.base.Addr() }

// Base returns the underlying connection layer, for its lower-level API
// (per-connection stats, events, Status).
func (s *Socket) Base() *base.Socket { return s.base }

// Connect dials a node of the mesh and joins through it: after the
// handshake the two swap peer lists and, with discovery on, this node dials
// more peers until it has WithMaxOutgoing outgoing connections. Connect
// itself is not bound by WithMaxOutgoing, only by WithMaxPeers: a node
// without room (this one or the peer) yields ErrConnLimit. Links made with
// Connect count towards the outgoing cap, so automatic dials make
// correspondingly fewer. A node on another protocol yields
// ErrProtocolMismatch; this node's own address, ErrSelfConnect.
func (s *Socket) Connect(ctx context.Context, addr string) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	_, err := s.base.Connect(ctx, addr)
	return err
}

// Record returns this node's current peer record: what it tells the mesh
// about itself (its addresses and metadata), signed with its key. Peer
// exchange and route searches pass it on unchanged. It must not be
// modified.
func (s *Socket) Record() *protocol.Record { return s.rec.Load() }

// Advertise replaces the addresses (most preferred first; at most
// protocol.MaxRecordAddrs) and the metadata of this node's record: it signs
// a new record with a higher sequence number, which replaces the old one
// wherever it reaches, and sends it to every neighbour at once. By default
// a node's record holds its advertised address (WithAdvertiseAddr, else the
// listen address) and its metadata (WithMetadata). The outside addresses
// its peers agree on (base.Socket.ObservedAddrs, WithObservedQuorum) follow
// the addresses given here in the record, up to protocol.MaxRecordAddrs in
// all (they come first when an address given has an unspecified host, such
// as "0.0.0.0:4000"). What the handshake says does not change. Values over the record's limits fail with an error
// matching ErrInvalidOption and protocol.ErrBadRecord. Neighbours take at
// most their peer list budget of lists they did not ask for
// (WithPeerListBudget: 64 at once, 4 a second after, by default): a node
// that advertises faster has some of its lists dropped, and its newest
// record reaches them with the next list they take.
func (s *Socket) Advertise(addrs []string, meta map[string]string) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	s.addrMu.Lock()
	_, err := s.signRecord(recordAddrs(addrs, s.learnt), meta, 0)
	if err == nil {
		s.ownAddrs = slices.Clone(addrs)
	}
	s.addrMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	s.pushRecord()
	select {
	case s.announceNow <- struct{}{}:
	default:
	}
	return nil
}

// signRecord signs this node's record with addrs and meta (copied),
// numbered from the clock and above both the record before it and floor,
// and makes it current.
func (s *Socket) signRecord(addrs []string, meta map[string]string, floor uint64) (*protocol.Record, error) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	now := time.Now().UnixNano()
	seq := uint64(max(now, 0))
	if old := s.rec.Load(); old != nil && old.Seq < math.MaxUint64 {
		seq = max(seq, old.Seq+1)
	}
	if floor < math.MaxUint64 {
		seq = max(seq, floor+1)
	}
	r := &protocol.Record{Key: s.base.PublicKey(), Seq: seq, Time: now,
		Addrs: slices.Clone(addrs), Meta: maps.Clone(meta),
		Group: s.cfg.members.group, Hub: s.cfg.members.hub}
	if err := r.Sign(s.base.Sign); err != nil {
		return nil, err
	}
	s.rec.Store(r)
	return r, nil
}

// outdoOwnRecord signs this node's record again above seq: a record of
// this node with that sequence number circulates (from an earlier run
// whose clock was ahead), and would otherwise win over the current one.
func (s *Socket) outdoOwnRecord(seq uint64) {
	s.addrMu.Lock()
	old := s.rec.Load()
	_, err := s.signRecord(old.Addrs, old.Meta, seq)
	s.addrMu.Unlock()
	if err != nil {
		return // the same fields signed before
	}
	s.pushRecord()
}

// pushRecord sends this node's record to every neighbour, in a peer list.
func (s *Socket) pushRecord() {
	for _, n := range *s.neighbours.Load() {
		s.sendPeers(n, false)
	}
}

// Send broadcasts packets to every node of the mesh. A neighbour whose
// send queue is full is waited for at most the slow wait
// (WithSlowNeighbour, 200 ms); one still full then is marked slow and
// gets no copy (Stats.SlowDrops) until its queue has room again, and is
// closed if it stays slow for the slow bound. So Send returns once the
// healthy neighbours have the message. Only when no neighbour has room
// does it block, until one has or ctx ends (ErrTimeout): the producer is
// slowed down rather than messages lost. It fails with ErrNoRoute when the
// node has no neighbour, with ErrClosed after Close, and returns an error
// only if no neighbour took the message; then none hears of it either, so
// that sending it again does not deliver it twice. In tree mode
// (WithBroadcastMode) the lazy links get the payload too when no eager
// link takes it. A link that is closing (two nodes that dialled each
// other at once keep one connection and close the other) gets the message
// over the connection that replaces it, or by announcement once there is
// one (Stats.ClosedLinkDrops); when every link is closing, Send waits for
// the neighbours to change, until ctx ends.
func (s *Socket) Send(ctx context.Context, packets ...[]byte) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	if len(packets) == 0 {
		return ErrNoPackets
	}
	if err := s.originate(ctx, flags.Broadcast, packets); err != nil {
		return err
	}
	s.ctr.originated.Add(1)
	return nil
}

// Whisper sends packets to one node. A neighbour gets them directly; any
// other node gets them at once as a routed message, passed hop by hop
// towards it by the neighbours' next-hop tables (learnt from the paths
// its broadcasts, records and messages took). Only a node that this
// node's table does not know is first searched for (a route request it
// answers), and the call fails with ErrNoRoute if it does not answer
// within the route timeout; the answer teaches the table the way. No
// direct connection is needed or waited for: with discovery on, this node
// may dial the target in the background, within its outgoing quota, and
// later whispers use that link. Either way the target receives an
// ordinary whisper. After Close it fails with ErrClosed. A handler may
// call it: the route search's answer comes in on a connection's reader,
// which handlers never hold up. (Message.Reply needs no search.) A link
// to the target that is closing (two nodes that dialled each other at
// once keep one connection and close the other) is waited out for at most
// a second: the message goes over the connection kept or, if none comes,
// as if the target were not a neighbour. A nil
// error says the message left this node, over a direct link or towards
// the next hop, not that the target got it: a relay on the way may drop
// it (counted there as RoutedDrops). Request and Call are answered.
func (s *Socket) Whisper(ctx context.Context, to protocol.NodeID, packets ...[]byte) error {
	return s.whisper(ctx, to, flags.Whisper, packets, true)
}

// reply is Message.Reply: a whisper to the sender of a message that came
// through the mesh, which therefore needs no route search: the message
// taught the next-hop table the way back. Without an entry (the table
// forgot it) the reply is flooded at once. No dial is waited for.
func (s *Socket) reply(ctx context.Context, to protocol.NodeID, packets [][]byte) error {
	return s.whisper(ctx, to, flags.Whisper, packets, false)
}

// whisper sends packets to one node with sub-flag sub (flags.Whisper, or
// an application request or answer); search says whether a node that is
// neither a neighbour nor in the next-hop table must first be found by a
// route search (else the message is flooded).
func (s *Socket) whisper(ctx context.Context, to protocol.NodeID, sub flags.Flag, packets [][]byte, search bool) error {
	_, err := s.send(ctx, to, sub, packets, search)
	return err
}

// send is whisper; it returns the neighbour a routed message went through
// (nil when it went over a direct link or was flooded).
func (s *Socket) send(ctx context.Context, to protocol.NodeID, sub flags.Flag, packets [][]byte, search bool) (*base.Conn, error) {
	if s.lc.Closed() {
		return nil, ErrClosed
	}
	if len(packets) == 0 {
		return nil, ErrNoPackets
	}
	if to == s.ID() {
		return nil, fmt.Errorf("%w: whisper to this node itself", ErrNoRoute)
	}
	if sent, err := s.sendToNeighbour(ctx, to, sub, packets); sent || err != nil {
		return nil, err
	}
	var addrs []string
	if search && s.hops.lookup(to) == nil {
		var err error
		if addrs, err = s.route(ctx, to); err != nil {
			return nil, err
		}
		if c, ok := s.base.Conn(to); ok { // the target dialled back
			s.ctr.routedWhispers.Add(1)
			return nil, s.sendDirect(ctx, c, sub, packets)
		}
	}
	s.ctr.routedWhispers.Add(1)
	via, err := s.sendAway(ctx, to, sub, packets, addrs)
	if err != nil {
		return nil, err
	}
	s.ctr.whispers.Add(1)
	return via, nil
}

// sendToNeighbour sends a whisper to to over its direct link, if there is
// one (sent). Two nodes that dialled each other at once keep one
// connection and close the other, so a link to to that is closing, or
// that to closed as a duplicate before the connection it kept was
// registered here, is waited out for at most rejoinWait (and until ctx
// ends): the message goes over the connection kept. If none comes, sent is
// false and the caller routes the message. The bound keeps a peer that
// closes links so from holding the caller (a handler answering it, say)
// for longer.
func (s *Socket) sendToNeighbour(ctx context.Context, to protocol.NodeID, sub flags.Flag, packets [][]byte) (sent bool, err error) {
	var (
		deadline time.Time   // set at the first wait
		timer    *time.Timer // made at the first wait
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.nmu.Lock()
		changed := s.nchanged // taken before the lookup: no change is missed
		until, rejoining := s.rejoining[to]
		s.nmu.Unlock()
		c, ok := s.base.Conn(to)
		if ok {
			err := s.sendDirect(ctx, c, sub, packets)
			if !errors.Is(err, ErrClosed) || s.lc.Closed() {
				return true, err
			}
			continue // it began closing meanwhile
		}
		if c == nil && !rejoining {
			return false, nil // no link, none expected
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(rejoinWait)
		}
		if c == nil && until.Before(deadline) {
			deadline = until
		}
		wait := deadline.Sub(now)
		if wait <= 0 {
			return false, nil
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return true, fmt.Errorf("%w: the link to %s was being replaced: %w", ErrTimeout, to.Short(), context.Cause(ctx))
		case <-s.lc.Closing():
			return true, ErrClosed
		}
	}
}

// sendDirect sends a whisper over a direct link.
func (s *Socket) sendDirect(ctx context.Context, c *base.Conn, sub flags.Flag, packets [][]byte) error {
	if err := c.SendMessage(ctx, flags.Whisper, sub, packets...); err != nil {
		return err
	}
	s.ctr.whispers.Add(1)
	return nil
}

// Recv returns the oldest message no handler claimed, waiting until one
// arrives, ctx ends (ErrTimeout) or the socket closes (ErrClosed).
func (s *Socket) Recv(ctx context.Context) (*base.Message, error) { return s.base.Recv(ctx) }

// TryRecv returns the oldest unclaimed message, or false if there is none.
func (s *Socket) TryRecv() (*base.Message, bool) { return s.base.TryRecv() }

// RecvBatch waits for one message, then returns up to max, oldest first.
func (s *Socket) RecvBatch(ctx context.Context, max int) ([]*base.Message, error) {
	return s.base.RecvBatch(ctx, max)
}

// RegisterHandler adds a handler after the built-in ones (flood, peers,
// route requests) and after every handler registered before it. The first
// handler that claims a message stops the chain; unclaimed messages go to
// Recv. Broadcasts are relayed before any handler sees them.
func (s *Socket) RegisterHandler(h base.Handler) { s.base.RegisterHandler(h) }

// Peers lists the connected peers: exactly the neighbours broadcasts are
// relayed to.
func (s *Socket) Peers() []PeerInfo {
	ns := *s.neighbours.Load()
	out := make([]PeerInfo, 0, len(ns))
	for _, c := range ns {
		if c.Err() == nil {
			out = append(out, c.Peer())
		}
	}
	return out
}

// WaitPeers waits until the node has at least n live neighbours and
// returns nil. It fails with ErrTimeout (wrapping ctx's error) when ctx ends
// first, and with ErrClosed when the node is or becomes closed. It wakes on
// neighbour changes rather than polling. n <= 0 returns nil at once.
func (s *Socket) WaitPeers(ctx context.Context, n int) error {
	if n <= 0 {
		return nil
	}
	for {
		if s.lc.Closed() {
			return ErrClosed
		}
		// Take the channel before counting: a change after the count
		// closes this channel, so no change is missed.
		s.nmu.Lock()
		changed := s.nchanged
		s.nmu.Unlock()
		have := len(s.Peers())
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: %d of %d peers: %w", ErrTimeout, have, n, ctx.Err())
		case <-s.lc.Closing():
			return ErrClosed
		}
	}
}

// neighboursChangedLocked wakes every WaitPeers call. The caller holds nmu.
func (s *Socket) neighboursChangedLocked() {
	close(s.nchanged)
	s.nchanged = make(chan struct{})
}

// Subscribe registers fn for connection and message events; see
// base.Socket.Subscribe.
func (s *Socket) Subscribe(fn func(base.Event)) (cancel func()) { return s.base.Subscribe(fn) }

// Status says plainly what is wrong, if anything.
func (s *Socket) Status() base.Status { return s.base.Status() }

// Close leaves the mesh: it floods a leave (a member message, so that
// every node sees this node leave rather than fail; it waits for
// neighbours' queues at most the slow wait), stops peer maintenance, fails route searches in
// flight with ErrClosed, flushes and closes every connection (for at most
// the flush timeout, or until ctx ends) and waits for every goroutine the
// node started. It may be called from a handler, a subscriber or a tracer,
// and then waits for everything but the goroutine it runs on. It is
// idempotent. If ctx ends first it returns an error matching ErrTimeout.
func (s *Socket) Close(ctx context.Context) error {
	if !s.lc.Closed() {
		s.leave(ctx)
	}
	var baseErr error
	err := s.lc.Close(ctx, func(ctx context.Context) {
		s.closeLAN()
		s.routes.closeAll()
		baseErr = s.base.Close(ctx)
	})
	if err != nil {
		return fmt.Errorf("%w: close: %w", ErrTimeout, err)
	}
	return baseErr
}

// connChanged keeps the neighbour snapshot current and drives peer
// exchange: a new neighbour gets our peer list; a lost one makes us ask the
// others for theirs and look for a replacement.
func (s *Socket) connChanged(c *base.Conn, up bool) {
	// A peer may connect while NewSocket is still setting up. The hook
	// runs before the connection's reader starts, so waiting here also
	// keeps every handler and prefilter call after s.base is set.
	<-s.ready
	// Rebuild the relay snapshot from the registry, so that it holds
	// exactly the current connection to each node.
	s.nmu.Lock()
	snap := s.base.Conns()
	s.neighbours.Store(&snap)
	s.neighboursChangedLocked()
	s.noteRejoiningLocked(c, up, snap)
	s.nmu.Unlock()
	s.slots.linkChanged(c, up)
	s.known.linkChanged(c, up)
	if !up {
		s.hops.linkDown(c)
	}
	if up || !slicesContainsID(snap, c.ID()) {
		s.rep.linkChanged(c.ID(), up)
	}
	select {
	case s.observeNow <- struct{}{}:
	default:
	}

	if up {
		s.sendPeers(c, false)
		s.syncMembers(c)
		return
	}
	if s.lc.Closed() {
		return
	}
	for _, n := range snap {
		s.sendPeers(n, true)
	}
	s.kick()
}

// outgoing counts live connections this node dialled.
func (s *Socket) outgoing() int {
	n := 0
	for _, c := range *s.neighbours.Load() {
		if c.Peer().Outbound && c.Err() == nil {
			n++
		}
	}
	return n
}

// dropDuplicate is base's prefilter, on the connection's reader: it sheds
// a broadcast this node has seen (or sent), one below its origin's window,
// a stale one or one past its hop limit, while it still sits in the
// reader's buffer, before base copies it or verifies its signature. Most
// copies a flood delivers are such duplicates. A copy with more hops left
// than any before passes. What passes is charged to the neighbour's flood
// budget here, before any work is spent on its signature: a neighbour over
// budget is paced by this wait. Routed messages get the same treatment
// (routedPrefilter).
func (s *Socket) dropDuplicate(m *base.Message) bool {
	if m.Type != flags.Broadcast {
		if m.Type == flags.Whisper && m.Flag == flags.Routed {
			return s.routedPrefilter(m)
		}
		return false
	}
	from := m.Conn.ID()
	if m.Sender == s.ID() {
		s.ctr.duplicates.Add(1)
		s.trace(TraceDuplicate, m, from)
		return true
	}
	now := time.Now().UnixNano()
	if s.outOfBounds(m, from, now) {
		return true
	}
	switch s.seen.peek(m.Sender, m.Seq, m.HopLimit-m.Hops) {
	case seenDup:
		s.ctr.duplicates.Add(1)
		s.trace(TraceDuplicate, m, from)
		if s.rep.tree {
			s.rep.duplicate(m, from)
		}
		return true
	case seenBehind:
		s.seen.behind.Add(1)
		s.trace(TraceBehind, m, from)
		return true
	}
	l := s.linkOf(m.Conn)
	if wait := l.charge(now, m.Hops-1, len(m.Envelope()), &s.cfg); wait > 0 && !s.overBudget(l, m, now, wait) {
		return true
	}
	return false
}

// stale reports whether a broadcast's origin time is outside the age
// window (plus the clock-skew allowance) at now.
func (s *Socket) stale(m *base.Message, now int64) bool {
	age := now - m.Time.UnixNano()
	window := int64(s.cfg.seenAge + s.cfg.clockSkew)
	return age > window || -age > window
}

// handleLayer is the mesh's part of every message, on the reader that read
// it (base.Layer.Handle): the flood rules and relaying, then the mesh's
// control messages. What it does not consume goes on to the user handlers.
func (s *Socket) handleLayer(m *base.Message) bool {
	return s.handleFlood(m) || s.handleControl(m)
}

// handleFlood applies the flood rules (docs/protocol.md §11) to a
// broadcast whose signature is verified (when the protocol signs): it
// records it in the seen-state, relays new ones before anything else sees
// them, and relays again, without delivering, a copy that has more hops
// left than any before. Stale and duplicate copies were mostly shed by
// dropDuplicate, before verification; two copies that pass it at once on
// two connections are told apart by the seen-state's atomic check, and the
// age is checked again, since verification took some time. It never
// blocks.
func (s *Socket) handleFlood(m *base.Message) bool {
	if m.Type != flags.Broadcast {
		return false
	}
	if m.Flag == flags.Peers {
		// A peer list is a one-hop control message: a broadcast one is
		// neither taken nor relayed.
		s.refusePeerList(m, errNotOneHop)
		return true
	}
	if m.Flag == flags.IHave || m.Flag == flags.Tree {
		// So are announcements and tree control (§12.7).
		s.rep.refuse(m, errTreeNotOneHop)
		return true
	}
	from := m.Conn.ID()
	now := time.Now().UnixNano()
	if s.outOfBounds(m, from, now) {
		return true
	}
	l := s.linkOf(m.Conn)
	switch s.seen.check(m.Sender, m.Seq, m.HopLimit-m.Hops, m.Time.UnixNano(), now, l.no) {
	case seenDup:
		s.ctr.duplicates.Add(1)
		s.trace(TraceDuplicate, m, from)
		if s.rep.tree {
			s.rep.duplicate(m, from)
		}
		return true
	case seenBehind:
		s.trace(TraceBehind, m, from)
		return true
	case seenRefused:
		s.trace(TraceSeenFull, m, from)
		return true
	case seenBetter:
		s.ctr.rerelayed.Add(1)
		s.trace(TraceBetter, m, from)
		s.relay(m, from)
		return true
	}
	var ns []*base.Conn // none to relay to (nor announce to) without hops left
	if m.Hops < m.HopLimit {
		ns = *s.neighbours.Load()
	}
	var buf [32]bool
	lazy := s.rep.fresh(m, from, ns, time.Unix(0, now), buf[:])
	s.relayTo(m, from, ns, lazy)
	s.learnPath(m)
	return false
}

// overBudget holds a broadcast from a neighbour over its flood budget
// (WithFloodBudget, WithOriginBudget) on the connection's reader until
// its tokens are due, which slows the neighbour down, and reports false if
// the connection closed meanwhile (the broadcast is then dropped). A
// neighbour held to its smallest origin budget for the abuse bound is
// disconnected, and banned for WithAbuseBan.
func (s *Socket) overBudget(l *link, m *base.Message, now int64, wait time.Duration) bool {
	s.ctr.budgetWaits.Add(1)
	s.trace(TraceOverBudget, m, l.c.ID())
	if l.own.abusing(now, s.cfg.floodAbuse) {
		reason := fmt.Errorf("%w: neighbour held to its smallest flood budget for %v", ErrClosed, s.cfg.floodAbuse)
		s.closeAbusive(l, m, reason, "flooding")
		return false
	}
	return l.pause(wait)
}

// closeAbusive closes the link to a neighbour that stayed over one of its
// budgets for the abuse bound, once, for reason: counted, logged and
// traced (m is the message that found it over), and bans its identity for
// WithAbuseBan, saying what as the ban's reason. It counts before it
// closes, so whoever sees the link gone sees it counted; the link is cut
// at once (a ban alone would close it gracefully, reading on until the
// peer closes its end), and the ban follows on the same goroutine, long
// before the peer could complete a new handshake.
func (s *Socket) closeAbusive(l *link, m *base.Message, reason error, what string) {
	if !l.closing.CompareAndSwap(false, true) { // as abort does: once per link
		return
	}
	s.ctr.abusiveClosed.Add(1)
	s.log.Warn("closing an abusive neighbour", "peer", l.c.ID().Short(), "err", reason)
	if s.cfg.tracer != nil {
		s.cfg.tracer.Trace(TraceEvent{Kind: TraceAbuseClose, ID: m.ID, Sender: m.Sender, Peer: l.c.ID(), Hops: m.Hops, Reason: reason})
	}
	l.c.Abort(reason)
	if s.cfg.abuseBan > 0 {
		s.base.Ban(l.c.ID(), s.cfg.abuseBan, what)
	}
}

// relay forwards a broadcast to every neighbour but the one it came from
// and its origin, unless it has no hops left; in tree mode only over eager
// links, with an announcement for the lazy ones. Relays never wait: a full
// queue, or one where relays from m's neighbour already hold their fair
// share (base.WithFairShare), drops the copy, and the neighbour is sent an
// announcement of it instead, so that it can pull it. (A new broadcast
// is relayed by handleFlood through repairer.fresh and relayTo: in tree
// mode one this node pulled is only announced.)
func (s *Socket) relay(m *base.Message, from protocol.NodeID) {
	if m.Hops >= m.HopLimit {
		return
	}
	ns := *s.neighbours.Load()
	var buf [32]bool
	s.relayTo(m, from, ns, s.rep.lazyLinks(refOf(m), ns, from, m.Sender, buf[:]))
}

// relayTo is relay once the links that only get an announcement are
// marked in lazy (nil: none).
func (s *Socket) relayTo(m *base.Message, from protocol.NodeID, ns []*base.Conn, lazy []bool) {
	if m.Hops >= m.HopLimit {
		return
	}
	env := m.Envelope()
	for i, c := range ns {
		to := c.ID()
		if to == from || to == m.Sender || (lazy != nil && lazy[i]) {
			continue
		}
		if _, err := s.forward(c, m, env); err != nil {
			switch {
			case errors.Is(err, ErrQueueFull):
				s.ctr.relayDrops.Add(1)
				s.trace(TraceRelayDrop, m, to)
				s.rep.missed(refOf(m), to)
			case errors.Is(err, ErrClosed):
				s.closedLinkDrop(to, refOf(m))
			}
			continue
		}
		s.ctr.relayed.Add(1)
		if s.cfg.tracer != nil {
			s.trace(TraceRelay, m, to)
		}
	}
}

// delivered is base's word that a message reached the user (a handler
// claimed it, or it is queued for Recv).
func (s *Socket) delivered(m *base.Message) {
	if m.Type != flags.Broadcast {
		return
	}
	s.ctr.delivered.Add(1)
	s.trace(TraceDeliver, m, m.Conn.ID())
}

// dropped is base's word that a message was dropped before the user saw
// it: past its hop limit on arrival (before the flood rules), a bad
// signature (before the flood rules too), the dispatch or receive queue
// was full, or it had no packets.
func (s *Socket) dropped(m *base.Message, reason error) {
	if m.Type != flags.Broadcast {
		return
	}
	if errors.Is(reason, base.ErrHopLimit) {
		s.ctr.hopLimitDrops.Add(1)
		s.trace(TraceHopLimit, m, m.Conn.ID())
		return
	}
	if errors.Is(reason, ErrBadSignature) {
		// Counted by base (Stats.BadSignatures), as a strike against the
		// link it came on.
		if s.cfg.tracer != nil {
			s.cfg.tracer.Trace(TraceEvent{Kind: TraceBadSignature, ID: m.ID, Sender: m.Sender, Peer: m.Conn.ID(), Hops: m.Hops, Reason: reason})
		}
		return
	}
	s.ctr.deliverDrops.Add(1)
	if s.cfg.tracer != nil {
		s.cfg.tracer.Trace(TraceEvent{Kind: TraceDeliverDrop, ID: m.ID, Sender: m.Sender, Peer: m.Conn.ID(), Hops: m.Hops, Reason: reason})
	}
}

func (s *Socket) trace(k TraceKind, m *base.Message, peer protocol.NodeID) {
	if s.cfg.tracer == nil {
		return
	}
	s.cfg.tracer.Trace(TraceEvent{Kind: k, ID: m.ID, Sender: m.Sender, Peer: peer, Hops: m.Hops})
}

// handleControl consumes the mesh's control messages: peer lists, route
// requests and responses, and whispers forwarded through the mesh. Other
// library sub-flags are not for users and are dropped.
func (s *Socket) handleControl(m *base.Message) bool {
	switch m.Flag {
	case flags.Peers:
		s.handlePeers(m)
		return true
	case flags.Request:
		s.handleRequest(m)
		return true
	case flags.Response:
		s.handleResponse(m)
		return true
	case flags.Forward:
		if m.Type == flags.Broadcast {
			s.handleForward(m)
			return true
		}
	case flags.AppRequest, flags.AppResponse:
		return s.handleApp(m)
	case flags.Routed:
		s.handleRouted(m)
		return true
	case flags.Member:
		if m.Type == flags.Broadcast {
			s.handleMember(m)
		}
		return true
	case flags.MemberSync:
		s.handleMemberSync(m)
		return true
	case flags.Punch:
		s.handlePunch(m)
	case flags.IHave, flags.Tree:
		s.rep.handle(m)
		return true
	case flags.Publish:
		if m.Type == flags.Broadcast {
			return s.takePublish(m)
		}
		return true
	case flags.Broadcast, flags.Whisper:
		return false
	}
	if m.Flag.IsReserved() {
		s.log.Debug("dropping message with an unknown library flag", "flag", m.Flag, "sender", m.Sender.Short())
		return true
	}
	return false
}

// outOfBounds drops, counts and traces a broadcast from neighbour from that
// is older than the age window or past its hop limit.
func (s *Socket) outOfBounds(m *base.Message, from protocol.NodeID, now int64) bool {
	if s.stale(m, now) {
		s.ctr.tooOld.Add(1)
		s.trace(TraceTooOld, m, from)
		return true
	}
	if m.Hops > m.HopLimit {
		s.ctr.hopLimitDrops.Add(1)
		s.trace(TraceHopLimit, m, from)
		return true
	}
	return false
}

// slicesContainsID reports whether one of cs is a connection to id.
func slicesContainsID(cs []*base.Conn, id protocol.NodeID) bool {
	for _, c := range cs {
		if c.ID() == id {
			return true
		}
	}
	return false
}
