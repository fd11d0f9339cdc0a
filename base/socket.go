// Package base is meshsock's connection layer: a Socket that listens, dials,
// runs the handshake, moves framed messages over TCP with one reader and one
// writer goroutine per connection, negotiates compression per link, keeps
// links alive, and hands messages to a chain of handlers or a receive queue.
//
// Packages mesh and chord build their routing on top of it; a bare Socket
// only talks to its direct neighbours.
package base

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/lifecycle"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Socket is a node: a listener, the connections it accepted or dialled, a
// handler chain and a receive queue. All methods are safe for concurrent use.
type Socket struct {
	cfg        config
	id         protocol.NodeID // derived from pub
	pub        ed25519.PublicKey
	protoID    protocol.ProtocolID
	hasher     protocol.Hasher
	ln         net.Listener
	advertised string
	log        *slog.Logger
	preamble   []byte      // this node's Preamble frame body
	tlsClient  *tls.Config // nil on plaintext links
	tlsServer  *tls.Config
	bans       banTable
	seeds      seedList      // seeds Join was given (join.go)
	observed   observedState // outside addresses learnt (observed.go)

	hookMu          sync.Mutex // taken before mu by register and unregister
	mu              sync.Mutex
	conns           map[protocol.NodeID]*Conn
	byAddr          map[string]*Conn     // addresses dialled, by the connection the node that answered there keeps
	dialing         map[string]*dialCall // Connect calls in flight, by address
	all             map[*Conn]struct{}
	closed          bool
	pend            pendingSet // accepted connections in handshake
	admitted        uint64     // connections registered so far (orders Conn.admitted); guarded by mu
	retired         counters   // counters of connections that have closed
	retiredFramesIn uint64
	lastDropLog     atomic.Int64
	compList        atomic.Pointer[[]flags.Method]

	// punches holds the ConnectPunch calls in flight: the node expected
	// from each remote address. Guarded by mu.
	punches map[netip.AddrPort]protocol.NodeID

	handlers atomic.Pointer[[]Handler] // user handlers, copy on write
	hmu      sync.Mutex

	layer   Layer
	ver     *verifier // nil when the protocol does not sign
	disp    *dispatcher
	nconns  atomic.Int64  // len(conns): how many connections may compete for a shared queue
	connSeq atomic.Uint64 // assigns connections to dispatcher workers
	recvq   chan queuedMessage
	recvBuf budget // what the messages in recvq keep alive
	events  *eventBus
	seq     atomic.Uint64
	ctr     counters
	status  *statusLog

	lc *lifecycle.Lifecycle // closing, and every goroutine the socket owns
}

// NewSocket creates a socket. If addr is not empty it listens there
// ("127.0.0.1:0" picks a free port); with "" the socket only dials.
// Options are validated; a bad one returns an error matching
// ErrInvalidOption.
func NewSocket(addr string, opts ...Option) (*Socket, error) {
	return newSocket(addr, Layer{}, opts)
}

func newSocket(addr string, layer Layer, opts []Option) (*Socket, error) {
	cfg := defaultConfig()
	if err := optcheck.Apply(&cfg, opts); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.key == nil {
		cfg.key = GenerateKey()
	}
	preamble, err := protocol.MarshalPreamble(protocol.Preamble{Version: protocol.Version, Encryption: cfg.protocol.Encryption})
	if err != nil {
		return nil, err
	}
	var tlsClient, tlsServer *tls.Config
	if cfg.protocol.Encryption == protocol.EncryptionTLS {
		cert, err := protocol.NewCertificate(cfg.key)
		if err != nil {
			return nil, err
		}
		tlsClient, tlsServer = protocol.TLSConfig(cert, true), protocol.TLSConfig(cert, false)
	}
	s := &Socket{
		cfg:       cfg,
		id:        nodeIDOf(cfg.key),
		pub:       cfg.key.Public().(ed25519.PublicKey),
		protoID:   cfg.protocol.ID(),
		preamble:  preamble,
		tlsClient: tlsClient,
		tlsServer: tlsServer,
		hasher:    protocol.NewHasher(),
		conns:     make(map[protocol.NodeID]*Conn),
		byAddr:    make(map[string]*Conn),
		dialing:   make(map[string]*dialCall),
		punches:   make(map[netip.AddrPort]protocol.NodeID),
		all:       make(map[*Conn]struct{}),
		layer:     layer,
		disp:      newDispatcher(cfg.dispatchers, cfg.dispatchQueueLen, cfg.dispatchQueueBytes, cfg.fairShare),
		recvq:     make(chan queuedMessage, cfg.recvQueueLen),
		status:    newStatusLog(16, 5*time.Minute),
		lc:        lifecycle.New(),
	}
	// Sequence numbers start at the clock (Unix ns), so that a node that
	// restarts under the same ID continues above the numbers it used
	// before: receivers that remember an origin's numbers (mesh) would
	// take lower ones for replays.
	s.seq.Store(uint64(time.Now().UnixNano()))
	s.log = cfg.logger.With("node", s.id.Short())
	list := slices.Clone(cfg.compression)
	s.compList.Store(&list)
	s.handlers.Store(&[]Handler{})
	s.recvBuf.max = int64(cfg.recvQueueBytes)
	s.events = newEventBus(cfg.eventQueueLen, cfg.eventQueueBytes, &s.ctr.eventDrops,
		func() { s.noteDrop("event queue full; event dropped", nil) })
	if cfg.protocol.Signs() {
		s.ver = newVerifier(s)
	}
	if cfg.listener != nil && addr != "" {
		return nil, optcheck.Invalid("both a listen address (%q) and a listener given", addr)
	}
	if addr != "" || cfg.listener != nil {
		ln := cfg.listener
		if ln == nil {
			var err error
			if ln, err = listenTCP(&cfg, addr); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrListen, addr, err)
			}
		}
		if cfg.listener != nil && cfg.reusePort {
			if err := shareListener(ln); err != nil {
				return nil, fmt.Errorf("%w: sharing the listener's port with dials: %w", ErrListen, err)
			}
		}
		s.ln = ln
		s.advertised = ln.Addr().String()
		if cfg.advertiseAddr != "" {
			s.advertised = cfg.advertiseAddr
		}
		s.lc.Go(s.acceptLoop)
	} else {
		s.advertised = cfg.advertiseAddr
	}
	s.lc.Go(func() { s.events.run(s.lc.Closing()) })
	if s.ver != nil {
		s.ver.start()
	}
	for _, wk := range s.disp.workers {
		s.lc.Go(func() { s.disp.run(wk, s) })
	}
	return s, nil
}

// ID returns this node's ID.
func (s *Socket) ID() protocol.NodeID { return s.id }

// Addr returns the listener's address, or nil for a socket that does not
// listen.
func (s *Socket) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// AdvertisedAddr returns the address this node tells peers to dial.
func (s *Socket) AdvertisedAddr() string { return s.advertised }

// Protocol returns the socket's protocol.
func (s *Socket) Protocol() protocol.Protocol { return s.cfg.protocol }

// Logger returns the socket's logger (with the node ID attached).
func (s *Socket) Logger() *slog.Logger { return s.log }

// Done is closed when the socket starts closing.
func (s *Socket) Done() <-chan struct{} { return s.lc.Closing() }

func (s *Socket) isClosed() bool { return s.lc.Closed() }

func (s *Socket) acceptLoop() {
	backoff := time.Duration(0)
	refusing := make(chan struct{}, maxRefusing) // refuseBusy calls in flight
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, as memberlist does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.ctr.acceptErrors.Add(1)
			s.problem("accept failed", err)
			select {
			case <-time.After(backoff):
			case <-s.lc.Closing():
				return
			}
			continue
		}
		backoff = 0
		accepted := s.cfg.now()
		pc, why, bySource := s.enterPending(nc)
		if pc == nil {
			s.ctr.handshakeFailures.Add(1)
			what := "too many pending handshakes; connection refused"
			if bySource {
				s.ctr.sourcePendingRefusals.Add(1)
				what = "too many pending handshakes from one source; connection refused"
			}
			s.noteDropErr(what, nil, fmt.Errorf("%w: %s: %s", ErrConnLimit, nc.RemoteAddr(), why))
			select {
			case refusing <- struct{}{}: // on its own goroutine: the loop never waits
				if !s.lc.Go(func() {
					defer func() { <-refusing }()
					s.refuseBusy(nc, why)
				}) {
					<-refusing
					_ = nc.Close()
				}
			default: // too many refusals in flight too: close without a word
				_ = nc.Close()
			}
			continue
		}
		started := s.lc.Go(func() {
			defer s.pend.leave(pc)
			if want, ok := s.punchExpected(nc.RemoteAddr()); ok {
				// The peer's half of a punch reached the listener: the
				// roles are the punch's, not the accept's.
				_, _ = s.punchHandshake(s.lc.Context(), nc, accepted, pc, want)
				return
			}
			var kept *Conn
			c, err := s.handshake(s.lc.Context(), nc, accepted, pc, func(c *Conn) (err error) {
				kept, err = s.register(c, "")
				return err
			})
			if err != nil {
				_ = nc.Close()
				s.handshakeFailed(nc.RemoteAddr().String(), err)
				return
			}
			s.startConn(c, kept)
		})
		if !started { // closing
			s.pend.leave(pc)
			_ = nc.Close()
			return
		}
	}
}

func (s *Socket) handshakeFailed(remote string, err error) {
	s.ctr.handshakeFailures.Add(1)
	switch {
	case errors.Is(err, ErrProtocolMismatch):
		s.ctr.protocolMismatches.Add(1)
	case errors.Is(err, ErrIdentity):
		s.ctr.identityFailures.Add(1)
	case errors.Is(err, ErrNotAuthorized):
		s.ctr.authFailures.Add(1)
	}
	switch {
	case errors.Is(err, ErrConnLimit):
		// A bound was hit, here or at the peer: many may follow, so the
		// log is rate-limited (the counters are exact).
		s.noteDropErr("handshake refused: connection limit", nil, fmt.Errorf("handshake with %s: %w", remote, err))
		return
	case errors.Is(err, ErrIdentity), errors.Is(err, ErrNotAuthorized):
		// Impostors and outsiders may come in floods too.
		s.noteDropErr("handshake refused: identity or authorisation", nil, fmt.Errorf("handshake with %s: %w", remote, err))
		return
	}
	s.log.Info("handshake failed", "remote", remote, "err", err)
	if !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrSelfConnect) {
		s.problem("handshake with "+remote+" failed", err)
	}
}

// Connect dials addr, runs the handshake and returns the connection to the
// node that answers at addr, which the handshake has proven to hold the key
// of its node ID. If a Connect to addr succeeded before and that node's
// connection is still up, Connect returns it without dialling; otherwise it
// dials, and if the node behind addr turns out to be connected already, it
// returns the connection both ends keep. What a peer says its own address
// is never counts as a dial: a peer cannot make Connect(addr) return its
// connection by claiming addr. A peer on another protocol yields an error
// matching ErrProtocolMismatch; dialling this node itself, ErrSelfConnect;
// a peer that fails to prove its identity, ErrIdentity; one refused by, or
// refusing, the network key, a ban or an authorisation hook,
// ErrNotAuthorized.
func (s *Socket) Connect(ctx context.Context, addr string) (c *Conn, err error) {
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if c, ok := s.byAddr[addr]; ok && c.Err() == nil {
			s.mu.Unlock()
			return c, nil
		}
		// Join a dial to the same address already in flight: two
		// connections dialled by the same node are each kept by the end
		// that registers it last, so the two ends could keep different
		// ones and close both.
		call, ok := s.dialing[addr]
		if !ok {
			break
		}
		s.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: connect %s: %w", ErrTimeout, addr, ctx.Err())
		}
		// Retry only if that dial ran out of time (perhaps its caller's
		// context ended); share any other outcome.
		if call.err == nil || !errors.Is(call.err, ErrTimeout) {
			return call.c, call.err
		}
		s.mu.Lock()
	}
	// Count the dial as one of the socket's goroutines, so Close waits
	// for it and the connection's goroutines start while Close is waiting.
	if !s.lc.Hold() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	call := &dialCall{done: make(chan struct{})}
	s.dialing[addr] = call
	s.mu.Unlock()
	defer s.lc.Release()
	defer func() {
		s.mu.Lock()
		delete(s.dialing, addr)
		s.mu.Unlock()
		call.c, call.err = c, err
		close(call.done)
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.lc.Context(), cancel)
	defer stop()
	if addr == s.advertised || (s.ln != nil && addr == s.ln.Addr().String()) {
		return nil, fmt.Errorf("%w: %s", ErrSelfConnect, addr)
	}
	start := s.cfg.now() // before the listener can build its Hello
	nc, err := s.dialConn(ctx, addr, nil)
	if err != nil {
		if errors.Is(err, ErrSelfConnect) {
			return nil, err
		}
		var ne net.Error
		if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("%w: %w: dial %s: %w", ErrTimeout, ErrUnreachable, addr, err)
		}
		return nil, fmt.Errorf("%w: dial %s: %w", ErrUnreachable, addr, err)
	}
	c, err = s.handshake(ctx, nc, start, nil, nil)
	if err != nil {
		_ = nc.Close()
		s.handshakeFailed(addr, err)
		return nil, fmt.Errorf("meshsock: connect %s: %w", addr, err)
	}
	kept, err := s.register(c, addr)
	if err != nil {
		_ = nc.Close()
		if errors.Is(err, ErrConnLimit) { // an accepted connection counts its own (acceptLoop)
			s.ctr.handshakeFailures.Add(1)
		}
		return nil, fmt.Errorf("meshsock: connect %s: %w", addr, err)
	}
	s.startConn(c, kept)
	return kept, nil
}

// startConn launches a registered connection; one that lost to an existing
// connection to the same node (kept) is closed with a Bye, so that the
// peer drops its end too.
func (s *Socket) startConn(c, kept *Conn) {
	c.start()
	if kept != c {
		c.closeDuplicate()
	}
}

// dialCall is a Connect in flight; concurrent Connects to the same address
// wait for its result instead of dialling again.
type dialCall struct {
	done chan struct{} // closed when c and err are set
	c    *Conn
	err  error
}

// roomFor returns why a connection to id, from remote (inbound: the peer
// dialled it), may not be added, or "" if it may (perhaps by displacing
// another; see roomLocked).
func (s *Socket) roomFor(id protocol.NodeID, remote net.Addr, inbound bool) string {
	var src netip.Prefix
	counted := false
	if inbound {
		src, counted = s.sourceOf(remote)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.conns[id]; ok && old.Err() == nil {
		return "" // it will replace or lose to the existing one
	}
	_, why, bySource := s.roomLocked(src, counted, inbound)
	if bySource {
		s.ctr.sourceConnRefusals.Add(1)
	}
	return why
}

// register adds an established connection, which the caller then starts
// (startConn), and returns the connection both ends keep. When the node is
// already connected, both ends keep the same connection: the one dialled by
// the smaller node ID, or the one with the smaller dialer's nonce if the
// same node dialled both. The connection hook runs before the connection's
// goroutines start, so an "up" always precedes its "down".
func (s *Socket) register(c *Conn, dialled string) (*Conn, error) {
	// hookMu orders registry changes and hook calls alike: hooks see the
	// registry's history in the order it happened.
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	if why, ok := s.banned(c.peer.ID); ok { // banned since its handshake judged it
		return nil, fmt.Errorf("%w: %s", ErrNotAuthorized, banText(why))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	var loser, displaced *Conn
	replaced, hadOld := s.conns[c.peer.ID] // announced; its own unregister will not announce its end
	if old, ok := s.conns[c.peer.ID]; ok && old.Err() == nil {
		if s.prefer(old, c) == old {
			if dialled != "" {
				s.byAddr[dialled] = old
			}
			s.all[c] = struct{}{} // the caller starts and closes it
			s.mu.Unlock()
			return old, nil
		}
		loser = old
	} else {
		victim, why, bySource := s.roomLocked(c.src, c.srcCounted, !c.peer.Outbound)
		if why != "" {
			s.mu.Unlock()
			if bySource {
				s.ctr.sourceConnRefusals.Add(1)
			}
			return nil, fmt.Errorf("%w: %s", ErrConnLimit, why)
		}
		if victim != nil {
			victim.displace() // its slot is free at once: it no longer counts as live
			displaced = victim
		}
	}
	s.admitted++
	c.admitted = s.admitted
	s.conns[c.peer.ID] = c
	s.nconns.Store(int64(len(s.conns)))
	s.all[c] = struct{}{}
	// Only an address this node dialled maps to the node that answered
	// there. The peer's advertised address (c.peer.Addr) is its own claim:
	// mapping it would let any peer take over Connect(victim's address).
	if dialled != "" {
		s.byAddr[dialled] = c
	}
	s.mu.Unlock()
	if hadOld {
		// Its "down" comes before c's "up", so that hooks and subscribers
		// see every up matched by one down, in order.
		err := replaced.Err()
		if err == nil { // the loser, closed below
			err = fmt.Errorf("%w: %w", ErrClosed, ErrDuplicate)
		}
		s.announceDown(replaced, err, true)
	}
	if hook := s.layer.ConnHook; hook != nil {
		hook(c, true)
	}
	s.ctr.connects.Add(1)
	c.log.Debug("connected", "outbound", c.peer.Outbound, "addr", c.peer.Addr)
	s.events.publish(Event{Kind: EventConnect, Peer: c.peer, Conn: c})
	if loser != nil {
		loser.closeDuplicate()
	}
	if displaced != nil {
		s.ctr.connsDisplaced.Add(1)
		s.noteDropErr("node full; the newest connection of the most represented source displaced", displaced, displaced.Err())
	}
	return c, nil
}

// duplicateReason is the Bye's reason when a node closes one of two
// connections to the same peer.
const duplicateReason = "duplicate connection"

// prefer picks which of two connections to the same node both ends keep:
// the one dialled by the smaller node ID, or, when one node dialled both,
// the one with the smaller dialer's nonce. Both ends see the same IDs and
// nonces, so they agree whatever order the connections arrived in.
func (s *Socket) prefer(old, c *Conn) *Conn {
	dialer := func(x *Conn) protocol.NodeID {
		if x.peer.Outbound {
			return s.id
		}
		return x.peer.ID
	}
	do, dc := dialer(old), dialer(c)
	if do == dc {
		if old.dialNonce < c.dialNonce {
			return old
		}
		return c
	}
	if do.Compare(dc) < 0 {
		return old
	}
	return c
}

// unregister removes a closed connection; called once by its reader.
func (s *Socket) unregister(c *Conn) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	s.mu.Lock()
	_, known := s.all[c]
	delete(s.all, c)
	s.retired.add(&c.stats)
	s.retiredFramesIn += c.framesIn.Load()
	current := s.conns[c.peer.ID] == c
	if current {
		delete(s.conns, c.peer.ID)
		s.nconns.Store(int64(len(s.conns)))
	}
	for addr, x := range s.byAddr {
		if x == c {
			delete(s.byAddr, addr)
		}
	}
	s.mu.Unlock()
	if !current || !known {
		return
	}
	s.announceDown(c, c.closeErr, false)
}

// announceDown reports the end of c, the registered connection to its
// peer: hook, counter, log, status and event (replaced: a newer connection
// to the peer takes its place). The caller holds hookMu.
func (s *Socket) announceDown(c *Conn, err error, replaced bool) {
	if hook := s.layer.ConnHook; hook != nil {
		hook(c, false)
	}
	s.ctr.disconnects.Add(1)
	c.log.Debug("disconnected", "reason", err)
	if err != nil && !errors.Is(err, ErrClosed) {
		s.problem("connection to "+c.peer.ID.Short()+" lost", err)
	}
	s.events.publish(Event{Kind: EventDisconnect, Peer: c.peer, Conn: c, Err: err, Replaced: replaced})
}

// Conn returns the live connection to the node, if any.
func (s *Socket) Conn(id protocol.NodeID) (*Conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[id]
	return c, ok && c.Err() == nil
}

// Conns returns the live connections, one per peer node.
func (s *Socket) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		if c.Err() == nil {
			out = append(out, c)
		}
	}
	return out
}

// Peers returns what is known about every connected peer.
func (s *Socket) Peers() []PeerInfo {
	conns := s.Conns()
	out := make([]PeerInfo, len(conns))
	for i, c := range conns {
		out[i] = c.peer
	}
	return out
}

// RegisterHandler adds a handler after every handler registered before it
// (and after the built-in ones). The first handler that claims a message
// stops the chain; unclaimed messages go to Recv.
func (s *Socket) RegisterHandler(h Handler) {
	if h == nil {
		return
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	next := append(slices.Clone(*s.handlers.Load()), h)
	s.handlers.Store(&next)
}

// Deliver puts a message on the receive queue, bypassing the handlers. When
// the queue is full, in messages (WithRecvQueue) or in bytes
// (WithRecvQueueBytes), the message is dropped and counted.
func (s *Socket) Deliver(m *Message) {
	// A message that the receive queue or the event queue would keep
	// waiting behind many others leaves the reader's buffers (admit).
	backlog := len(s.recvq)
	events := s.events.active()
	if events {
		backlog = max(backlog, s.events.backlog())
	}
	qm, size, ok := admit(m, backlog, &s.recvBuf)
	if ok {
		select {
		case s.recvq <- queuedMessage{qm, size}:
		default:
			s.recvBuf.give(size)
			ok = false
		}
	}
	if !ok {
		s.ctr.recvDrops.Add(1)
		s.noteDrop("receive queue full; message dropped", m.Conn)
		if s.layer.Dropped != nil {
			s.layer.Dropped(m, ErrRecvFull)
		}
		return
	}
	m = qm
	s.ctr.delivered.Add(1)
	if s.layer.Delivered != nil {
		s.layer.Delivered(m)
	}
	if events {
		var peer PeerInfo
		if m.Conn != nil { // nil for a message made locally (Inject)
			peer = m.Conn.peer
		}
		s.events.publish(Event{Kind: EventMessage, Peer: peer, Conn: m.Conn, Message: m})
	}
}

// Inject hands a message that an upper layer made locally (chord: a request
// a node routes to itself) to the user handlers, on a dispatcher worker,
// then to the receive queue if none claims it, as if it had arrived. The
// layer's Handle is skipped. Reply on it goes through the layer's Reply;
// its Conn may be nil.
func (s *Socket) Inject(m *Message) {
	m.sock = s
	s.dispatch(m, int(m.Sender[0]))
}

// Recv returns the oldest message that no handler claimed, waiting until
// one arrives, ctx ends or the socket closes.
func (s *Socket) Recv(ctx context.Context) (*Message, error) {
	select {
	case qm := <-s.recvq:
		return s.received(qm), nil
	default:
	}
	select {
	case qm := <-s.recvq:
		return s.received(qm), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: recv: %w", ErrTimeout, ctx.Err())
	case <-s.lc.Closing():
		return nil, ErrClosed
	}
}

// TryRecv returns the oldest unclaimed message, or false if there is none.
func (s *Socket) TryRecv() (*Message, bool) {
	select {
	case qm := <-s.recvq:
		return s.received(qm), true
	default:
		return nil, false
	}
}

// received gives back the room a message took in the receive queue.
func (s *Socket) received(qm queuedMessage) *Message {
	s.recvBuf.give(qm.size)
	return qm.m
}

// RecvBatch waits for at least one message, then returns up to max of
// them, oldest first (py2p's recv(quantity)).
func (s *Socket) RecvBatch(ctx context.Context, max int) ([]*Message, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: batch size %d", ErrInvalidOption, max)
	}
	m, err := s.Recv(ctx)
	if err != nil {
		return nil, err
	}
	out := []*Message{m}
	for len(out) < max {
		m, ok := s.TryRecv()
		if !ok {
			break
		}
		out = append(out, m)
	}
	return out, nil
}

// NewEnvelope encodes a new message from this node: it assigns the next
// sequence number and the current time, and, when the protocol signs,
// signs it if it may travel beyond the link it is sent on: a broadcast,
// or any message whose hop limit is above 1 (docs/protocol.md §5.3). The
// signature costs the caller's goroutine about 20 µs. The returned bytes
// are what Conn.SendEnvelope and Conn.Forward take; id is this node's ID
// for it. Routing layers originate everything through it (mesh's
// broadcasts, chord's routed requests and answers), so every relay accepts
// what they send.
// Oversized messages fail here, before anything is queued, with errors
// matching protocol.ErrFrameTooLarge or protocol.ErrTooManyPackets.
func (s *Socket) NewEnvelope(typ, sub flags.Flag, hopLimit uint8, packets [][]byte) ([]byte, protocol.MessageID, error) {
	env, err := s.encode(typ, sub, hopLimit, packets)
	if err != nil {
		return nil, 0, err
	}
	return env, s.hasher.Sum(env), nil
}

// encode is NewEnvelope without the ID, for messages nobody deduplicates.
func (s *Socket) encode(typ, sub flags.Flag, hopLimit uint8, packets [][]byte) ([]byte, error) {
	if len(packets) > s.cfg.limits.MaxPackets {
		return nil, fmt.Errorf("%w: %d packets, limit %d", protocol.ErrTooManyPackets, len(packets), s.cfg.limits.MaxPackets)
	}
	e := protocol.Envelope{
		Type:     typ,
		Sub:      sub,
		Sender:   s.id,
		Time:     time.Now().UnixNano(),
		HopLimit: hopLimit,
		Packets:  packets,
	}
	if typ == flags.Broadcast || typ == flags.Whisper {
		e.Seq = s.seq.Add(1)
	}
	sign := s.ver != nil && (typ == flags.Broadcast || hopLimit > 1)
	n := e.EncodedLen()
	if sign {
		n = e.SignedLen()
	}
	if n+1 > s.cfg.maxFrameSize {
		return nil, fmt.Errorf("%w: message of %d bytes, limit %d", protocol.ErrFrameTooLarge, n+1, s.cfg.maxFrameSize)
	}
	if sign {
		return e.AppendSigned(make([]byte, 0, n), s.cfg.key), nil
	}
	return e.AppendTo(make([]byte, 0, n)), nil
}

// Hasher returns the socket's message-ID hasher.
func (s *Socket) Hasher() protocol.Hasher { return s.hasher }

// Broadcast sends packets to every directly connected peer (a bare Socket
// does not relay; mesh does). It returns the first error, after trying all.
func (s *Socket) Broadcast(ctx context.Context, packets ...[]byte) error {
	if len(packets) == 0 {
		return ErrNoPackets
	}
	env, _, err := s.NewEnvelope(flags.Broadcast, flags.Broadcast, 1, packets)
	if err != nil {
		return err
	}
	var first error
	for _, c := range s.Conns() {
		if err := c.SendEnvelope(ctx, 0, env); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Whisper sends packets to a directly connected node; ErrNoRoute if there is
// no connection to it.
func (s *Socket) Whisper(ctx context.Context, to protocol.NodeID, packets ...[]byte) error {
	c, ok := s.Conn(to)
	if !ok {
		return fmt.Errorf("%w: %s is not connected", ErrNoRoute, to)
	}
	return c.Send(ctx, packets...)
}

// compressionList returns this node's accepted methods, most preferred first.
func (s *Socket) compressionList() []flags.Method { return *s.compList.Load() }

// SetCompression changes the methods this node accepts and prefers, and
// renegotiates every live connection.
func (s *Socket) SetCompression(methods ...flags.Method) error {
	if len(methods) > protocol.MaxAcceptMethods {
		return fmt.Errorf("%w: %d compression methods", ErrInvalidOption, len(methods))
	}
	for _, m := range methods {
		if _, ok := s.cfg.codecs.Get(m); !ok {
			return fmt.Errorf("%w: compression method %s has no codec", ErrInvalidOption, m)
		}
	}
	list := slices.Clone(methods)
	s.compList.Store(&list)
	for _, c := range s.Conns() {
		c.setLocalAccept(list)
	}
	return nil
}

// Close stops accepting, closes every connection (flushing what is queued
// until ctx ends or the flush timeout passes) and waits for every goroutine
// the socket started, except the one it is called on: Close may be called
// from a handler or a subscriber, and returns. It is idempotent. If ctx
// ends first, the connections are cut without further flushing and Close
// returns an error matching ErrTimeout; a handler that is still running
// then finishes on its own.
func (s *Socket) Close(ctx context.Context) error {
	var conns []*Conn
	err := s.lc.Close(ctx, func(context.Context) {
		s.mu.Lock()
		s.closed = true
		conns = make([]*Conn, 0, len(s.all))
		for c := range s.all {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		if s.ln != nil {
			_ = s.ln.Close()
		}
		for _, c := range conns {
			c.closeWithBye("node closing")
		}
	})
	if err == nil {
		return nil
	}
	// Out of patience: drop what is left unflushed, so that the readers and
	// writers end now.
	s.mu.Lock()
	for c := range s.all {
		_ = c.raw.Close()
	}
	s.mu.Unlock()
	return fmt.Errorf("%w: close: %w", ErrTimeout, err)
}
