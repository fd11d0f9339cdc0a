// Package discover finds meshsock nodes on the local network, or on the
// local host, with signed UDP datagrams (docs/protocol.md §17), as
// peerpy's LAN discovery and app-net's on-host scan do.
//
// A Service sends a probe to a broadcast address, a multicast group or a
// list of addresses (the ports of a range on 127.0.0.1) every interval;
// every node that hears it answers the prober directly, and lists the
// prober unless its probe is hidden (an invisible node). Each datagram
// carries the sender's protocol ID, node ID, public key, listen addresses
// and time, signed with its node key; with a network keyring, a proof of
// the network key too. A datagram of another protocol (subnet) or network,
// a stale one, one whose key does not hash to its node ID or whose
// signature fails is dropped and counted. Everything a stranger can make
// a Service do is bounded: datagrams handled per second in all and per
// source address, signatures checked per second, answers per second, and
// the peers listed.
//
// Package mesh uses it for WithLAN; it depends on package protocol only.
package discover

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/internal/sockopt"
	"github.com/meshsock/meshsock/protocol"
)

// ErrClosed is returned by a Service's methods after Close.
var ErrClosed = errors.New("discover: service closed")

// minProbeGap is the least time between two probes of one Service, however
// often Probe or Discover is called.
const minProbeGap = 100 * time.Millisecond

// Peer is a node heard from: what its latest verified datagram said.
type Peer struct {
	// ID is the node's ID; its Key hashes to it.
	ID protocol.NodeID
	// Key is the node's Ed25519 public key.
	Key []byte
	// Addrs are its listen addresses, most preferred first, an
	// unspecified host ("0.0.0.0:4444", "[::]:4444") replaced by the
	// address its datagram came from.
	Addrs []string
	// From is the address its datagram came from.
	From netip.AddrPort
	// Seen is when it was last heard from.
	Seen time.Time
	// sent is the time its datagram carried (replays are older).
	sent int64
}

// Service sends and answers discovery datagrams. Its methods are safe for
// concurrent use.
type Service struct {
	cfg *settings
	id  Identity
	me  protocol.NodeID

	listen net.PacketConn // probes arrive here (shared port, or the node's own)
	send   net.PacketConn // probes and answers leave from here; answers arrive here

	mu        sync.Mutex
	peers     map[protocol.NodeID]*Peer
	overall   bucket
	verifies  bucket
	answers   bucket
	srcs      sources
	lastProbe time.Time
	lastLog   time.Time
	lastWarn  time.Time

	ctr      counters
	probeNow chan struct{}
	closing  chan struct{}
	closed   atomic.Bool
	wg       sync.WaitGroup
}

// New opens the Service's UDP sockets and starts probing (at once, then
// every interval). Close stops it. A bad Config returns an error matching
// base.ErrInvalidOption; a socket that cannot be opened, the net error.
func New(cfg Config, id Identity) (*Service, error) {
	st, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if len(id.Key) != 32 || id.Sign == nil {
		return nil, optcheck.Invalid("discovery identity needs a key and a signer")
	}
	if id.Addrs == nil {
		id.Addrs = func() []string { return nil }
	}
	s := &Service{
		cfg: st, id: id, me: protocol.NodeIDFromKey(id.Key),
		peers:    make(map[protocol.NodeID]*Peer),
		srcs:     sources{m: make(map[netip.Addr]*bucket), max: st.Limits.MaxSources},
		probeNow: make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	open := st.ListenPacket
	if open == nil {
		open = func(lc *net.ListenConfig, network, address string) (net.PacketConn, error) {
			return lc.ListenPacket(context.Background(), network, address)
		}
	}
	network := "udp4"
	if t := st.targets[0].Addr(); t.Is6() {
		network = "udp6"
	}
	s.listen, err = open(&net.ListenConfig{Control: listenControl(st.multicast)}, network, st.Listen)
	if err != nil {
		return nil, fmt.Errorf("discover: listening on %s: %w", st.Listen, err)
	}
	host, _, err := net.SplitHostPort(st.Listen)
	if err != nil {
		_ = s.listen.Close()
		return nil, optcheck.Invalid("discovery listen address %q: %v", st.Listen, err)
	}
	s.send, err = open(&net.ListenConfig{Control: sockopt.Broadcast}, network, net.JoinHostPort(host, "0"))
	if err != nil {
		_ = s.listen.Close()
		return nil, fmt.Errorf("discover: opening the sending socket: %w", err)
	}
	s.wg.Add(3)
	go s.readLoop(s.listen)
	go s.readLoop(s.send)
	go s.probeLoop()
	return s, nil
}

// LocalAddr returns the address probes are received on.
func (s *Service) LocalAddr() net.Addr { return s.listen.LocalAddr() }

// Close stops probing and answering, closes the sockets and waits for the
// Service's goroutines. It is idempotent.
func (s *Service) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.closing)
	err := errors.Join(s.listen.Close(), s.send.Close())
	s.wg.Wait()
	return err
}

// Peers returns the peers heard from within the last 3 intervals, most
// recently heard first.
func (s *Service) Peers() []Peer {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	out := make([]Peer, 0, len(s.peers))
	for _, p := range s.peers {
		c := *p
		c.Addrs = slices.Clone(p.Addrs)
		c.Key = slices.Clone(p.Key)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Peer) int { return b.Seen.Compare(a.Seen) })
	return out
}

// Probe asks for a probe now (at most one each 100 ms is sent; the
// probe loop sends it).
func (s *Service) Probe() {
	select {
	case s.probeNow <- struct{}{}:
	default:
	}
}

// Discover returns the peers heard from. Unless one was heard from within
// the last interval, it probes first and waits AnswerWait for answers. If
// ctx ends first it returns the peers listed then and ctx's error.
func (s *Service) Discover(ctx context.Context) ([]Peer, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	now := time.Now()
	s.mu.Lock()
	fresh := false
	for _, p := range s.peers {
		if now.Sub(p.Seen) < s.cfg.Interval {
			fresh = true
			break
		}
	}
	s.mu.Unlock()
	if fresh {
		return s.Peers(), nil
	}
	s.Probe()
	t := time.NewTimer(s.cfg.AnswerWait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return s.Peers(), ctx.Err()
	case <-s.closing:
		return nil, ErrClosed
	}
	return s.Peers(), nil
}

func (s *Service) expireLocked(now time.Time) {
	ttl := 3 * s.cfg.Interval
	for id, p := range s.peers {
		if now.Sub(p.Seen) > ttl {
			delete(s.peers, id)
		}
	}
}

// probeLoop sends a probe at once, then every interval (jittered), and
// whenever Probe asks, at most one per minProbeGap.
func (s *Service) probeLoop() {
	defer s.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			t.Reset(jitter(s.cfg.Interval))
		case <-s.probeNow:
		}
		s.mu.Lock()
		wait := minProbeGap - time.Since(s.lastProbe)
		s.mu.Unlock()
		if wait > 0 {
			select {
			case <-s.closing:
				return
			case <-time.After(wait):
			}
		}
		s.sendProbe()
	}
}

// jitter spreads d over [3d/4, 5d/4), so that nodes started together do
// not probe in step.
func jitter(d time.Duration) time.Duration {
	if d < 4 {
		return d
	}
	return d*3/4 + rand.N(d/2)
}

// packet encodes and signs this node's datagram of kind k.
func (s *Service) packet(k Kind) ([]byte, error) {
	var nk []byte
	if s.id.Keyring != nil {
		if keys := s.id.Keyring.Keys(); len(keys) > 0 {
			nk = keys[0]
		}
	}
	p := &Packet{Kind: k, Hidden: s.cfg.Invisible, Protocol: s.id.Protocol, Key: s.id.Key,
		Time: time.Now().UnixNano(), Addrs: s.id.Addrs()}
	if len(p.Addrs) > MaxAddrs {
		p.Addrs = p.Addrs[:MaxAddrs]
	}
	return p.Encode(s.id.Sign, nk)
}

func (s *Service) sendProbe() {
	s.mu.Lock()
	s.lastProbe = time.Now()
	s.mu.Unlock()
	b, err := s.packet(KindProbe)
	if err != nil {
		s.ctr.sendErrors.Add(1)
		s.logDrop("encoding a probe", err)
		return
	}
	var self netip.AddrPort
	if ua, ok := s.listen.LocalAddr().(*net.UDPAddr); ok {
		self = ua.AddrPort()
	}
	for _, t := range s.cfg.targets {
		if t == self {
			continue // the on-host scan skips this node's own port
		}
		if _, err := s.send.WriteTo(b, net.UDPAddrFromAddrPort(t)); err != nil {
			s.ctr.sendErrors.Add(1)
			s.warnSend(t, err)
			continue
		}
		s.ctr.probesSent.Add(1)
	}
}

func (s *Service) readLoop(pc net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, MaxPacketSize+1)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if s.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.logDrop("reading", err)
			select {
			case <-s.closing:
				return
			case <-time.After(10 * time.Millisecond): // a socket error that repeats must not spin
			}
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		s.handle(buf[:n], ua.AddrPort())
	}
}

// handle takes one datagram from src: the cheap checks and the rate
// limits first, the signature last.
func (s *Service) handle(b []byte, src netip.AddrPort) {
	s.ctr.received.Add(1)
	if len(b) > MaxPacketSize {
		s.ctr.oversize.Add(1)
		return
	}
	now := time.Now()
	lim := &s.cfg.Limits
	s.mu.Lock()
	ok := s.overall.take(now, lim.Rate, lim.Rate)
	var srcOK, srcFull bool
	if ok {
		srcOK, srcFull = s.srcs.take(src.Addr().Unmap(), now, lim.SourceRate, 2*lim.SourceRate)
	}
	s.mu.Unlock()
	switch {
	case !ok:
		s.ctr.rateLimited.Add(1)
		return
	case srcFull:
		s.ctr.sourcesFull.Add(1)
		return
	case !srcOK:
		s.ctr.sourceLimited.Add(1)
		return
	}
	p, err := Decode(b)
	if err != nil {
		s.ctr.malformed.Add(1)
		s.logDrop("malformed datagram from "+src.String(), err)
		return
	}
	if p.Protocol != s.id.Protocol {
		s.ctr.otherProtocol.Add(1)
		return
	}
	if p.ID == s.me {
		s.ctr.self.Add(1)
		return
	}
	if age := now.UnixNano() - p.Time; age > int64(s.cfg.MaxAge) || -age > int64(s.cfg.MaxAge) {
		s.ctr.stale.Add(1)
		return
	}
	s.mu.Lock()
	old := s.peers[p.ID]
	replay := old != nil && p.Time <= old.sent
	s.mu.Unlock()
	if replay {
		s.ctr.stale.Add(1) // a replay, or datagrams out of order
		return
	}
	if !s.networkOK(p) {
		s.ctr.otherNetwork.Add(1)
		return
	}
	s.mu.Lock()
	ok = s.verifies.take(now, lim.VerifyRate, lim.VerifyRate)
	s.mu.Unlock()
	if !ok {
		s.ctr.verifyBudget.Add(1)
		return
	}
	if err := p.Verify(); err != nil {
		s.ctr.badSignature.Add(1)
		s.logDrop("datagram from "+src.String(), err)
		return
	}
	s.ctr.verified.Add(1)
	if p.Kind == KindProbe && !s.cfg.Invisible {
		s.answer(src, now)
	}
	if !p.Hidden {
		s.list(p, src, now)
	}
}

// networkOK reports whether p belongs to this node's network: with a
// keyring, it proves one of its keys; without one, it proves none (a node
// of a closed network is not listed by open ones, whose dials it would
// refuse anyway).
func (s *Service) networkOK(p *Packet) bool {
	var keys [][]byte
	if s.id.Keyring != nil {
		keys = s.id.Keyring.Keys()
	}
	if len(keys) == 0 {
		return p.Proof == nil
	}
	return p.VerifyProof(keys)
}

func (s *Service) answer(to netip.AddrPort, now time.Time) {
	s.mu.Lock()
	ok := s.answers.take(now, s.cfg.Limits.AnswerRate, s.cfg.Limits.AnswerRate)
	s.mu.Unlock()
	if !ok {
		s.ctr.answersCapped.Add(1)
		return
	}
	b, err := s.packet(KindAnswer)
	if err == nil {
		_, err = s.send.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	if err != nil {
		s.ctr.sendErrors.Add(1)
		s.logDrop("answering "+to.String(), err)
		return
	}
	s.ctr.answersSent.Add(1)
}

// list records a verified peer and tells OnPeer.
func (s *Service) list(p *Packet, src netip.AddrPort, now time.Time) {
	peer := Peer{ID: p.ID, Key: slices.Clone(p.Key), From: src, Seen: now, sent: p.Time}
	for _, a := range p.Addrs {
		if a = resolveHost(a, src.Addr().Unmap()); a != "" {
			peer.Addrs = append(peer.Addrs, a)
		}
	}
	s.mu.Lock()
	if _, ok := s.peers[p.ID]; !ok && len(s.peers) >= s.cfg.MaxPeers {
		s.expireLocked(now)
		if len(s.peers) >= s.cfg.MaxPeers {
			s.mu.Unlock()
			s.ctr.tableFull.Add(1)
			return
		}
	}
	stored := peer
	s.peers[p.ID] = &stored
	s.mu.Unlock()
	s.ctr.heard.Add(1)
	if s.cfg.OnPeer != nil {
		s.cfg.OnPeer(peer)
	}
}

// resolveHost returns addr with an unspecified host replaced by src; ""
// if addr is not host:port.
func resolveHost(addr string, src netip.Addr) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return ""
	}
	if ip, err := netip.ParseAddr(h); h == "" || (err == nil && ip.IsUnspecified()) {
		return net.JoinHostPort(src.String(), port)
	}
	return addr
}

// warnSend logs a probe that could not be sent (discovery cannot work
// while they fail: no route to a broadcast address, say) as a warning, at
// most once a minute.
func (s *Service) warnSend(to netip.AddrPort, err error) {
	now := time.Now()
	s.mu.Lock()
	if !s.lastWarn.IsZero() && now.Sub(s.lastWarn) < time.Minute {
		s.mu.Unlock()
		return
	}
	s.lastWarn = now
	s.mu.Unlock()
	s.cfg.Logger.Warn("discovery: cannot send probes", "to", to.String(), "err", err)
}

// logDrop logs at debug level, at most once a second.
func (s *Service) logDrop(what string, err error) {
	now := time.Now()
	s.mu.Lock()
	if now.Sub(s.lastLog) < time.Second {
		s.mu.Unlock()
		return
	}
	s.lastLog = now
	s.mu.Unlock()
	s.cfg.Logger.Debug("discovery: "+what, "err", err)
}
