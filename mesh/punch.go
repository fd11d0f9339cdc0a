package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// NAT hole punching (docs/protocol.md §12.6, docs/mesh.md). A node A that
// cannot dial B asks a neighbour R that both share to introduce them: A
// signs a request naming itself, B and R; R, linked to both, sends B an
// introduction (A's key, the address R sees A's link come from, A's
// signed request) and A the go (the address R sees B's link come from);
// after the delay R gave, both dial each other from their listening ports
// for the punch window (base.ConnectPunch). Each NAT lets the other's
// packets in as the answer to its own, and the link that forms is an
// ordinary authenticated one, to the node wanted.
//
// Nobody can make a node dial an address at will: an introducer passes on
// only addresses it sees its own links come from; a target dials only for
// a member it knows that signed a fresh request naming it and the
// introducer, once per request; every neighbour's punch messages are
// rate-limited; and the punches in flight are capped.

type punchCounters struct {
	requested, succeeded, failed      atomic.Uint64
	introduced, refused, introRefused atomic.Uint64
	rateLimited, malformed            atomic.Uint64
}

// maxPunchMemory bounds the requests this node remembers having acted on
// (replays) and the nodes it punched towards by itself (back-off).
const maxPunchMemory = 1024

// puncher is a node's punch state.
type puncher struct {
	ctr punchCounters

	mu      sync.Mutex
	pending map[uint64]*pendingPunch      // this node's requests awaiting an answer, by nonce
	active  int                           // punches dialling
	used    map[punchKey]int64            // introductions acted on, until when (Unix ns)
	tried   map[protocol.NodeID]time.Time // automatic punches, when last
	towards map[protocol.NodeID]struct{}  // punches in flight, by peer
}

type punchKey struct {
	requester protocol.NodeID
	nonce     uint64
}

type pendingPunch struct {
	target, introducer protocol.NodeID
	answer             chan *protocol.Punch // buffered 1
}

func (p *puncher) init() {
	if p.pending == nil {
		p.pending = make(map[uint64]*pendingPunch)
		p.used = make(map[punchKey]int64)
		p.tried = make(map[protocol.NodeID]time.Time)
		p.towards = make(map[protocol.NodeID]struct{})
	}
}

// start takes one of max active punches towards peer, or reports false.
func (p *puncher) start(peer protocol.NodeID, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	if _, ok := p.towards[peer]; ok || p.active >= max {
		return false
	}
	p.active++
	p.towards[peer] = struct{}{}
	return true
}

func (p *puncher) done(peer protocol.NodeID) {
	p.mu.Lock()
	p.active--
	delete(p.towards, peer)
	p.mu.Unlock()
}

// use records that the introduction (requester, nonce) is acted on, valid
// until until, and reports false for a replay or a full memory.
func (p *puncher) use(k punchKey, until, now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	if _, ok := p.used[k]; ok {
		return false
	}
	if len(p.used) >= maxPunchMemory {
		for key, t := range p.used {
			if t < now {
				delete(p.used, key)
			}
		}
		if len(p.used) >= maxPunchMemory {
			return false
		}
	}
	p.used[k] = until
	return true
}

// punchBudget is a token bucket over one neighbour's punch messages.
type punchBudget struct {
	tokens float64
	last   int64 // Unix ns; 0: full
}

func (b *punchBudget) take(now int64, l *PunchLimits) bool {
	if b.last == 0 {
		b.tokens, b.last = float64(l.Burst), now
	}
	b.tokens = min(float64(l.Burst), b.tokens+float64(now-b.last)*float64(l.PerMinute)/float64(time.Minute))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// punchFresh is how far a punch request's time may be from this node's
// clock: the clock-skew allowance plus the time an answer and the punch
// take.
func (s *Socket) punchFresh() time.Duration {
	l := &s.cfg.punchLimits
	return s.cfg.clockSkew + l.Answer + l.Delay + l.Window
}

// sendPunch sends a punch message to a neighbour on its control queue.
func (s *Socket) sendPunch(c *base.Conn, p *protocol.Punch) error {
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Punch, 1, p.Packets())
	if err != nil {
		return err
	}
	return c.SendControl(env)
}

// handlePunch takes a punch message, on the reader of its link: a
// one-hop whisper from the link's peer, within the peer's punch budget.
func (s *Socket) handlePunch(m *base.Message) {
	ctr := &s.punch.ctr
	if m.Type != flags.Whisper || m.Sender != m.Conn.ID() {
		ctr.malformed.Add(1)
		s.log.Debug("punch message refused: not a one-hop whisper from the link's peer", "sender", m.Sender.Short())
		return
	}
	if !s.linkOf(m.Conn).pb.take(time.Now().UnixNano(), &s.cfg.punchLimits) {
		ctr.rateLimited.Add(1)
		s.log.Debug("punch message over the neighbour's budget; dropped", "peer", m.Sender.Short())
		return
	}
	p, err := protocol.ParsePunch(m.Packets)
	if err != nil {
		ctr.malformed.Add(1)
		s.log.Debug("punch message refused", "peer", m.Sender.Short(), "err", err)
		return
	}
	switch p.Kind {
	case protocol.PunchRequest:
		s.introduce(m.Conn, p)
	case protocol.PunchIntroduce:
		s.introduced(m.Conn, p)
	case protocol.PunchGo, protocol.PunchRefused:
		s.punch.mu.Lock()
		pp, ok := s.punch.pending[p.Nonce]
		s.punch.mu.Unlock()
		if !ok || pp.target != p.Peer || pp.introducer != m.Conn.ID() {
			ctr.malformed.Add(1) // an answer to nothing this node asked this neighbour
			return
		}
		select {
		case pp.answer <- p:
		default:
		}
	}
}

// introduce answers a neighbour's request to be introduced to another.
func (s *Socket) introduce(from *base.Conn, p *protocol.Punch) {
	refuse := func(reason uint8, why string) {
		s.punch.ctr.refused.Add(1)
		s.log.Debug("punch request refused", "requester", from.ID().Short(), "target", p.Peer.Short(), "why", why)
		_ = s.sendPunch(from, &protocol.Punch{Kind: protocol.PunchRefused, Peer: p.Peer, Nonce: p.Nonce, Reason: reason})
	}
	now := time.Now()
	switch {
	case !s.cfg.punch:
		refuse(protocol.PunchDisabled, "punching is off")
		return
	case p.Peer == from.ID() || p.Peer == s.ID():
		refuse(protocol.PunchBadRequest, "names the requester or the introducer as target")
		return
	case !protocol.VerifyPunch(from.Peer().Key, p.Peer, s.ID(), p.Nonce, p.Time, p.Signature):
		refuse(protocol.PunchBadRequest, "bad signature")
		return
	case now.Sub(time.Unix(0, p.Time)).Abs() > s.punchFresh():
		refuse(protocol.PunchBadRequest, "stale")
		return
	}
	to, ok := s.base.Conn(p.Peer)
	if !ok {
		refuse(protocol.PunchNotLinked, "no link to the target")
		return
	}
	fromAddr, ok1 := observed(from)
	toAddr, ok2 := observed(to)
	if !ok1 || !ok2 {
		refuse(protocol.PunchNoAddress, "a link without an IP remote address")
		return
	}
	delay := s.cfg.punchLimits.Delay
	intro := &protocol.Punch{Kind: protocol.PunchIntroduce, Key: from.Peer().Key, Addr: fromAddr,
		Nonce: p.Nonce, Time: p.Time, Signature: p.Signature, Delay: delay}
	if err := s.sendPunch(to, intro); err != nil {
		refuse(protocol.PunchNotLinked, "the target's link failed")
		return
	}
	_ = s.sendPunch(from, &protocol.Punch{Kind: protocol.PunchGo, Peer: p.Peer, Addr: toAddr, Nonce: p.Nonce, Delay: delay})
	s.punch.ctr.introduced.Add(1)
}

// observed returns where a link's peer can be punched to: the IP address
// its link comes from (its NAT's public address) with the port it listens
// on, which its punch dials leave from and a NAT that keeps ports maps to
// itself. The link's own port is of no use: ordinary dials leave from
// ports the system picks. False if the peer does not listen or the link's
// address is not an IP address and port.
func observed(c *base.Conn) (string, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return "", false
	}
	listen, err := netip.ParseAddrPort(c.Peer().Addr)
	if err != nil || listen.Port() == 0 {
		return "", false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), listen.Port()).String(), true
}

// introduced acts on an introducer's word that a member wants a link:
// after the delay it dials the address given, for the punch window.
func (s *Socket) introduced(via *base.Conn, p *protocol.Punch) {
	now := time.Now()
	refuse := func(why string) {
		s.punch.ctr.introRefused.Add(1)
		s.log.Debug("introduction refused", "introducer", via.ID().Short(), "requester", p.Peer.Short(), "why", why)
	}
	switch {
	case !s.cfg.punch:
		refuse("punching is off")
		return
	case p.Peer == s.ID() || p.Peer == via.ID():
		refuse("names this node or the introducer as requester")
		return
	case !protocol.VerifyPunch(p.Key, s.ID(), via.ID(), p.Nonce, p.Time, p.Signature):
		refuse("the requester's signature does not verify")
		return
	case now.Sub(time.Unix(0, p.Time)).Abs() > s.punchFresh():
		refuse("stale request")
		return
	case !s.knowsMember(p.Peer):
		refuse("not a member this node knows")
		return
	}
	if _, linked := s.base.Conn(p.Peer); linked {
		return // nothing to do
	}
	if !s.punch.use(punchKey{p.Peer, p.Nonce}, now.Add(s.punchFresh()).UnixNano(), now.UnixNano()) {
		refuse("replayed, or too many remembered")
		return
	}
	lim := &s.cfg.punchLimits
	if !s.punch.start(p.Peer, lim.MaxActive) {
		refuse("too many punches in flight")
		return
	}
	delay := min(p.Delay, lim.Window)
	if !s.lc.Go(func() {
		defer s.punch.done(p.Peer)
		_ = s.dialPunch(s.lc.Context(), p.Addr, p.Peer, delay)
	}) {
		s.punch.done(p.Peer)
	}
}

// knowsMember reports whether id is a node this node has heard of: a
// member, or in its table of known peers.
func (s *Socket) knowsMember(id protocol.NodeID) bool {
	if _, ok := s.Member(id); ok {
		return true
	}
	return s.known.record(id) != nil
}

// dialPunch waits delay, then runs this node's half of a punch to id at
// addr for the punch window, and counts the outcome.
func (s *Socket) dialPunch(ctx context.Context, addr string, id protocol.NodeID, delay time.Duration) error {
	// The peer's dial may reach this node's listener before its own
	// starts: expect it from now on.
	defer s.base.ExpectPunch(addr, id)()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.punchLimits.Window)
	defer cancel()
	c, err := s.base.ConnectPunch(ctx, addr, id)
	if err != nil {
		s.punch.ctr.failed.Add(1)
		s.log.Debug("hole punch failed", "peer", id.Short(), "addr", addr, "err", err)
		return err
	}
	s.punch.ctr.succeeded.Add(1)
	s.log.Debug("hole punch made a direct link", "peer", id.Short(), "remote", c.RemoteAddr())
	return nil
}

// Punch opens a direct link to node id through the NATs in between, with
// the help of a neighbour linked to both (docs/mesh.md, "NAT hole
// punching"): it asks up to PunchLimits.Introducers neighbours in turn to
// introduce the two, and when one does, both dial each other for the
// punch window. It returns nil once a link to id exists (at once if one
// does). It fails with ErrPunchFailed (wrapping each introducer's refusal
// or the last dial's error) when no introducer could help or the dials did
// not meet, ErrTimeout when ctx ends first, ErrTooManyRequests when
// PunchLimits.MaxActive punches are in flight or one to id is, ErrClosed
// after Close, and ErrInvalidOption when punching is off (WithPunch).
// Whatever the outcome, messages to id still reach it through the mesh.
func (s *Socket) Punch(ctx context.Context, id protocol.NodeID) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	if !s.cfg.punch {
		return fmt.Errorf("%w: punching is off (WithPunch)", ErrInvalidOption)
	}
	if id == s.ID() {
		return fmt.Errorf("%w: punch to this node itself", ErrSelfConnect)
	}
	if _, ok := s.base.Conn(id); ok {
		return nil
	}
	lim := &s.cfg.punchLimits
	if !s.punch.start(id, lim.MaxActive) {
		return fmt.Errorf("%w: %d punches in flight, or one to %s", ErrTooManyRequests, lim.MaxActive, id.Short())
	}
	defer s.punch.done(id)
	var errs []error
	for _, r := range s.introducers(id, lim.Introducers) {
		err := s.punchVia(ctx, r, id)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !errors.Is(err, errNotLinked) {
			break // only "not my neighbour" is worth asking another
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: punch to %s: %w", ErrTimeout, id.Short(), ctx.Err())
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: %s: no neighbour to introduce this node", ErrPunchFailed, id.Short())
	}
	return fmt.Errorf("%w: %s: %w", ErrPunchFailed, id.Short(), errors.Join(errs...))
}

// errNotLinked is an introducer's refusal for want of a link to the
// target.
var errNotLinked = errors.New("the introducer has no link to the target")

// introducers returns up to n neighbours to ask for an introduction to
// id: first the one that told this node of id (it holds a link to id, or
// did), then the others, in a random order.
func (s *Socket) introducers(id protocol.NodeID, n int) []*base.Conn {
	ns := append([]*base.Conn(nil), *s.neighbours.Load()...)
	rand.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	if src, ok := s.known.sourceOf(id); ok {
		for i, c := range ns {
			if c.ID() == src {
				ns[0], ns[i] = ns[i], ns[0]
				break
			}
		}
	}
	out := ns[:0]
	for _, c := range ns {
		if c.Err() == nil && c.ID() != id {
			out = append(out, c)
		}
	}
	return out[:min(n, len(out))]
}

// punchVia asks neighbour r to introduce this node to id and, if it does,
// runs this node's half of the punch.
func (s *Socket) punchVia(ctx context.Context, r *base.Conn, id protocol.NodeID) error {
	nonce := rand.Uint64()
	now := time.Now().UnixNano()
	sig := s.base.Sign(protocol.PunchSigningInput(s.ID(), id, r.ID(), nonce, now))
	pp := &pendingPunch{target: id, introducer: r.ID(), answer: make(chan *protocol.Punch, 1)}
	s.punch.mu.Lock()
	s.punch.init()
	s.punch.pending[nonce] = pp
	s.punch.mu.Unlock()
	defer func() {
		s.punch.mu.Lock()
		delete(s.punch.pending, nonce)
		s.punch.mu.Unlock()
	}()
	req := &protocol.Punch{Kind: protocol.PunchRequest, Peer: id, Nonce: nonce, Time: now, Signature: sig}
	if err := s.sendPunch(r, req); err != nil {
		return fmt.Errorf("via %s: %w", r.ID().Short(), err)
	}
	s.punch.ctr.requested.Add(1)
	t := time.NewTimer(s.cfg.punchLimits.Answer)
	defer t.Stop()
	var ans *protocol.Punch
	select {
	case ans = <-pp.answer:
	case <-t.C:
		return fmt.Errorf("via %s: no answer within %v", r.ID().Short(), s.cfg.punchLimits.Answer)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	case <-s.lc.Closing():
		return ErrClosed
	}
	if ans.Kind == protocol.PunchRefused {
		err := fmt.Errorf("via %s: refused (reason %d)", r.ID().Short(), ans.Reason)
		if ans.Reason == protocol.PunchNotLinked {
			err = fmt.Errorf("via %s: %w", r.ID().Short(), errNotLinked)
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.lc.Context(), cancel)
	defer stop()
	if err := s.dialPunch(ctx, ans.Addr, id, min(ans.Delay, s.cfg.punchLimits.Window)); err != nil {
		return fmt.Errorf("via %s, dialling %s: %w", r.ID().Short(), ans.Addr, err)
	}
	return nil
}

// punchLater punches towards id in the background, at most once per
// PunchLimits.Backoff: a whisper's direct dial to id failed, or id has no
// address this node could dial. Messages meanwhile go through the mesh.
// With discovery off (WithDiscovery) it does nothing.
func (s *Socket) punchLater(id protocol.NodeID) {
	if !s.cfg.punch || !s.cfg.discovery || s.lc.Closed() {
		return // with discovery off, only Connect (and Punch) make links
	}
	now := time.Now()
	s.punch.mu.Lock()
	s.punch.init()
	if last, ok := s.punch.tried[id]; ok && now.Sub(last) < s.cfg.punchLimits.Backoff {
		s.punch.mu.Unlock()
		return
	}
	if len(s.punch.tried) >= maxPunchMemory {
		for k, t := range s.punch.tried {
			if now.Sub(t) >= s.cfg.punchLimits.Backoff {
				delete(s.punch.tried, k)
			}
		}
		if len(s.punch.tried) >= maxPunchMemory {
			s.punch.mu.Unlock()
			return
		}
	}
	s.punch.tried[id] = now
	s.punch.mu.Unlock()
	s.lc.Go(func() {
		ctx := s.lc.Context()
		if err := s.Punch(ctx, id); err != nil {
			s.log.Debug("automatic hole punch failed; messages keep going through the mesh", "peer", id.Short(), "err", err)
		}
	})
}
