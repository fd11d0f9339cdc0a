package mesh

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// maxPeersPerList bounds the peer list one node sends.
const maxPeersPerList = 64

// peerEntry is one entry of a peer list on the wire: CBOR [id bstr(16), addr tstr].
type peerEntry struct {
	_    struct{} `cbor:",toarray"`
	ID   []byte
	Addr string
}

// knownPeer is an address learnt by peer exchange, with its dial back-off.
type knownPeer struct {
	addr     string
	failures int
	nextTry  time.Time
}

// knownPeers is the bounded table of addresses to dial (LRU by last news).
type knownPeers struct {
	mu  sync.Mutex
	lru *simplelru.LRU[protocol.NodeID, *knownPeer]
}

func newKnownPeers(n int) *knownPeers {
	l, _ := simplelru.NewLRU[protocol.NodeID, *knownPeer](n, nil) // n > 0 is validated
	return &knownPeers{lru: l}
}

func (k *knownPeers) add(id protocol.NodeID, addr string) {
	if addr == "" || id.IsZero() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Get(id); ok {
		if p.addr != addr {
			p.addr, p.failures, p.nextTry = addr, 0, time.Time{}
		}
		return
	}
	k.lru.Add(id, &knownPeer{addr: addr})
}

func (k *knownPeers) addr(id protocol.NodeID) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		return p.addr, true
	}
	return "", false
}

func (k *knownPeers) remove(id protocol.NodeID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lru.Remove(id)
}

func (k *knownPeers) succeeded(id protocol.NodeID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		p.failures, p.nextTry = 0, time.Time{}
	}
}

// failed pushes the next attempt back with jittered exponential back-off.
func (k *knownPeers) failed(id protocol.NodeID, lo, hi time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Peek(id)
	if !ok {
		return
	}
	p.failures++
	d := lo << min(p.failures-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	jittered := d/2 + rand.N(d)
	p.nextTry = time.Now().Add(jittered)
}

type candidate struct {
	id   protocol.NodeID
	addr string
}

// due returns the peers whose back-off has passed, in random order.
func (k *knownPeers) due(now time.Time, skip func(protocol.NodeID) bool) []candidate {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []candidate
	for _, id := range k.lru.Keys() {
		p, _ := k.lru.Peek(id)
		if p.nextTry.After(now) || skip(id) {
			continue
		}
		out = append(out, candidate{id, p.addr})
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (k *knownPeers) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}

// sendPeers sends our neighbour list to c; wantReply asks for c's list back.
func (s *Socket) sendPeers(c *base.Conn, wantReply bool) {
	list := make([]peerEntry, 0, maxPeersPerList)
	for _, n := range *s.neighbours.Load() {
		if len(list) == maxPeersPerList {
			break
		}
		if p := n.Peer(); p.Addr != "" && n != c {
			id := p.ID
			list = append(list, peerEntry{ID: id[:], Addr: p.Addr})
		}
	}
	b, err := protocol.MarshalCBOR(list)
	if err != nil {
		s.log.Error("encoding peer list", "err", err)
		return
	}
	want := []byte{0}
	if wantReply {
		want[0] = 1
	}
	env, _, err := s.base.NewEnvelope(flags.Whisper, flags.Peers, 1, [][]byte{b, want})
	if err != nil {
		return
	}
	_ = c.SendControl(env)
}

// handlePeers merges a neighbour's peer list into the known table.
func (s *Socket) handlePeers(m *base.Message) {
	if len(m.Packets) != 2 || len(m.Packets[1]) != 1 {
		s.log.Debug("malformed peer list", "sender", m.Sender.Short())
		return
	}
	var list []peerEntry
	if err := protocol.UnmarshalCBOR(m.Packets[0], &list); err != nil {
		s.log.Debug("malformed peer list", "sender", m.Sender.Short(), "err", err)
		return
	}
	self := s.ID()
	for i, e := range list {
		if i == maxPeersPerList {
			break
		}
		var id protocol.NodeID
		if len(e.ID) != len(id) {
			continue
		}
		copy(id[:], e.ID)
		if id != self {
			s.known.add(id, e.Addr)
		}
	}
	if m.Packets[1][0] == 1 {
		s.sendPeers(m.Conn, false)
	}
	s.kick()
}

// kick wakes the maintenance loop.
func (s *Socket) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// maintainLoop keeps the outgoing quota filled: on every kick (new peer
// list, lost neighbour) and on a timer.
func (s *Socket) maintainLoop() {
	t := time.NewTicker(s.cfg.maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-s.wake:
		case <-t.C:
		}
		if s.cfg.discovery {
			s.fillOutgoing()
		}
	}
}

// fillOutgoing dials known peers, back-off permitting, while an outgoing
// slot is free (see dialSlots).
func (s *Socket) fillOutgoing() {
	if s.slots.free() <= 0 {
		return
	}
	self := s.ID()
	cands := s.known.due(time.Now(), func(id protocol.NodeID) bool {
		if id == self {
			return true
		}
		_, connected := s.base.Conn(id)
		return connected
	})
	for _, cand := range cands {
		if s.lc.Closed() {
			return
		}
		ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.dialTimeout)
		c, reserved, err := s.dialAuto(ctx, cand.addr)
		cancel()
		if !reserved {
			break // the quota is full
		}
		s.ctr.dials.Add(1)
		switch {
		case err == nil && c.ID() == cand.id:
			s.known.succeeded(cand.id)
		case err == nil:
			// Someone else answers at that address now.
			s.known.remove(cand.id)
			s.known.add(c.ID(), c.Peer().Addr)
		case errors.Is(err, ErrSelfConnect), errors.Is(err, ErrProtocolMismatch):
			s.ctr.dialFailures.Add(1)
			s.known.remove(cand.id)
		default:
			s.ctr.dialFailures.Add(1)
			s.known.failed(cand.id, s.cfg.backoffMin, s.cfg.backoffMax)
		}
	}
	// Still short: ask the neighbours for fresh lists, at most once per
	// maintenance interval (their answers kick this loop again).
	if s.slots.free() > 0 && time.Since(s.lastAsk) >= s.cfg.maintainEvery {
		s.lastAsk = time.Now()
		for _, n := range *s.neighbours.Load() {
			s.sendPeers(n, true)
		}
	}
}
