package mesh

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// maxPeersPerList bounds the records in one peer list (docs/protocol.md
// §12): the sender's own and those of up to 63 of its neighbours.
const maxPeersPerList = 64

// knownPeer is a member learnt by peer exchange or met over a link, with
// what this node knows of reaching it.
type knownPeer struct {
	rec       *protocol.Record // its newest valid record (nil: none yet)
	src       protocol.NodeID  // the neighbour that introduced it; zero if this node learnt it itself
	proven    string           // an address this node dialled and found it at ("": none)
	nearby    []string         // addresses its LAN discovery datagram gave (signed by its key)
	host      string           // the host its links came from, for a record address with an unspecified host
	failures  int              // automatic dials that failed in a row
	nextTry   time.Time        // no maintenance dial before then (back-off)
	heard     time.Time        // latest news of it: its record passed on, or a link
	linked    time.Time        // when a link to it was last up (zero: never)
	connected bool             // a link to it is up
	lost      bool             // its last link ended in an error, not a clean close
	dialing   bool             // a maintenance dial or a probe to it is in flight
}

// unreachable reports whether this node last failed to reach the member:
// a dial to it failed, or its link was lost, and no link has come up since.
func (p *knownPeer) unreachable() bool { return p.failures > 0 || p.lost }

// kept reports whether the table must not forget the member to make room
// for another: it is a neighbour, being dialled, or was reached at an
// address this node dialled itself.
func (p *knownPeer) kept() bool { return p.connected || p.dialing || p.proven != "" }

// addrs lists the addresses to dial the member at: the proven one first,
// then those LAN discovery heard from it, then those of its record (an
// unspecified host, as in "0.0.0.0:4444", replaced by the host its links
// came from, or skipped). Handshakes add nothing here: what a peer says in
// its Hello is its claim about one link.
func (p *knownPeer) addrs() []string {
	var out []string
	if p.proven != "" {
		out = append(out, p.proven)
	}
	for _, a := range p.nearby {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if p.rec == nil {
		return out
	}
	for _, a := range p.rec.Addrs {
		if a = resolveHost(a, p.host); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// dialAddr is the address of the next dial: each failure in a row moves
// on to the next of addrs.
func (p *knownPeer) dialAddr() string {
	as := p.addrs()
	if len(as) == 0 {
		return ""
	}
	return as[p.failures%len(as)]
}

// resolveHost returns addr with an unspecified host replaced by host, or
// "" if addr names no host and host is unknown; addr itself otherwise.
func resolveHost(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	if host == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// knownPeers is the bounded table of members to dial, and the dials in
// flight to them, ordered by news (least recently heard of first). It
// takes a member's record only if it is newer than the one it holds (the
// caller has verified it). Each neighbour may introduce at most perSource
// members; one that has introduced as many replaces the oldest of its own.
// When the table is full, a new member makes it forget, among the members
// it may forget (see kept), the one heard of least recently of those
// introduced by the neighbour that introduced most (members this node
// learnt itself count as one such source). So one neighbour, however many
// made-up members it names, holds at most its share of the table, and the
// members this node reached itself, such as those beyond a network cut,
// of whom no news comes, stay to be redialled when the network returns.
type knownPeers struct {
	mu        sync.Mutex
	lru       *simplelru.LRU[protocol.NodeID, *knownPeer]
	size      int
	perSource int
	shares    map[protocol.NodeID]int // members each neighbour introduced
	dials     int                     // maintenance dials in flight (probes not included)
	probing   bool                    // a probe is in flight
	askWanted bool                    // a dial failed since peer lists were last asked for
	evictions uint64
}

func newKnownPeers(n, perSource int) *knownPeers {
	k := &knownPeers{size: n, perSource: perSource, shares: make(map[protocol.NodeID]int)}
	k.lru, _ = simplelru.NewLRU(n, k.forgot) // n > 0 is validated
	return k
}

// forgot is the LRU's eviction callback (every removal): it keeps the
// shares.
func (k *knownPeers) forgot(_ protocol.NodeID, p *knownPeer) { k.setSource(p, protocol.NodeID{}) }

// setSource changes the neighbour a member counts against.
func (k *knownPeers) setSource(p *knownPeer, src protocol.NodeID) {
	if p.src == src {
		return
	}
	if !p.src.IsZero() {
		if k.shares[p.src]--; k.shares[p.src] <= 0 {
			delete(k.shares, p.src)
		}
	}
	if !src.IsZero() {
		k.shares[src]++
	}
	p.src = src
}

// recordNews says how a record compares with what the table holds.
type recordNews int

const (
	recordNew   recordNews = iota // no record, or an older one, is held: verify it, then store it
	recordSame                    // the very record held: news that the member is around
	recordStale                   // not newer than the record held
)

// check compares rec, not yet verified, with the record held for its
// node. A copy of the record held counts as news of the member.
func (k *knownPeers) check(rec *protocol.Record) recordNews {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Peek(rec.ID)
	switch {
	case !ok || p.rec == nil || rec.Seq > p.rec.Seq:
		return recordNew
	case rec.Seq == p.rec.Seq && bytes.Equal(rec.Bytes(), p.rec.Bytes()):
		p.heard = time.Now()
		k.lru.Get(rec.ID)
		return recordSame
	}
	return recordStale
}

// storeResult says what store did with a record.
type storeResult int

const (
	recordStored  storeResult = iota // the record is now the member's
	recordHeld                       // the very record held (another copy was taken meanwhile)
	recordOld                        // not newer than the one held
	recordRefused                    // a new member, but no room: its source's share and the table are taken by members that stay
)

// store takes a verified record of another node, passed on by src (zero:
// by the node itself, over its own link or in its own route message). A
// record of a member already known replaces the one held if it is newer,
// whoever passed it on; a new member is added within the table's bounds.
// A record with new addresses clears the member's failures.
func (k *knownPeers) store(rec *protocol.Record, src protocol.NodeID) storeResult {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(rec.ID); ok {
		if p.rec != nil && rec.Seq <= p.rec.Seq {
			if bytes.Equal(rec.Bytes(), p.rec.Bytes()) {
				return recordHeld
			}
			return recordOld
		}
		if p.rec == nil || !slices.Equal(p.rec.Addrs, rec.Addrs) {
			p.failures, p.nextTry, p.lost = 0, time.Time{}, false
		}
		p.rec, p.heard = rec, now
		k.lru.Get(rec.ID)
		return recordStored
	}
	if src == rec.ID {
		src = protocol.NodeID{}
	}
	p, ok := k.insertLocked(rec.ID, src, false, now)
	if !ok {
		return recordRefused
	}
	p.rec = rec
	return recordStored
}

// insertLocked adds a member introduced by src, making room by the
// table's rules; kept says the new member is one the table keeps (a
// neighbour, or reached at a proven address), which may then displace the
// kept member heard of least recently that is neither a neighbour nor
// being dialled. It fails if there is no room.
func (k *knownPeers) insertLocked(id, src protocol.NodeID, kept bool, now time.Time) (*knownPeer, bool) {
	if !src.IsZero() && k.shares[src] >= k.perSource && !k.evictLocked(&src, false) {
		return nil, false
	}
	if k.lru.Len() >= k.size && !k.evictLocked(nil, kept) {
		return nil, false
	}
	p := &knownPeer{heard: now}
	k.lru.Add(id, p)
	k.setSource(p, src)
	return p, true
}

// evictLocked forgets one member to make room, and reports whether it
// did: the member heard of least recently, among those not kept, that
// *only introduced, or else of the source (neighbour, or this node
// itself) that introduced most members. If every member is kept and
// orKept is set, it forgets the kept member heard of least recently that
// is neither a neighbour nor being dialled.
func (k *knownPeers) evictLocked(only *protocol.NodeID, orKept bool) bool {
	type group struct {
		n      int
		victim protocol.NodeID
		found  bool
	}
	groups := make(map[protocol.NodeID]*group)
	var keptVictim protocol.NodeID
	haveKept := false
	for _, id := range k.lru.Keys() { // least recently heard of first
		p, _ := k.lru.Peek(id)
		if only != nil && p.src != *only {
			continue
		}
		g := groups[p.src]
		if g == nil {
			g = &group{}
			groups[p.src] = g
		}
		g.n++
		switch {
		case !p.kept():
			if !g.found {
				g.victim, g.found = id, true
			}
		case !haveKept && !p.connected && !p.dialing:
			keptVictim, haveKept = id, true
		}
	}
	var best *group
	for _, g := range groups {
		if g.found && (best == nil || g.n > best.n) {
			best = g
		}
	}
	switch {
	case best != nil:
		k.lru.Remove(best.victim)
	case orKept && haveKept && only == nil:
		k.lru.Remove(keptVictim)
	default:
		return false
	}
	k.evictions++
	return true
}

// proved records that this node dialled addr and found the member there:
// the address is proven, and the member is one this node learnt itself.
func (k *knownPeers) proved(id protocol.NodeID, addr string) {
	if addr == "" || id.IsZero() {
		return
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Get(id)
	if !ok {
		if p, ok = k.insertLocked(id, protocol.NodeID{}, true, now); !ok {
			return
		}
	}
	k.setSource(p, protocol.NodeID{})
	p.proven, p.heard = addr, now
	p.failures, p.nextTry, p.lost = 0, time.Time{}, false
}

// lanSource is the source that members LAN discovery found count
// against in the table (as if one neighbour had introduced them all):
// however many keys a stranger on the LAN makes up, they hold at most one
// source's share of the table. It is no node's ID: node IDs are hashes,
// and this one is all ones but for its last byte.
var lanSource = protocol.NodeID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}

// heardNearby takes a member that LAN discovery found (its datagram,
// signed by its key, gave addrs): news of it, to be dialled at addrs. A
// new member counts against lanSource's share; one known already keeps
// its source. New addresses clear its failures.
func (k *knownPeers) heardNearby(id protocol.NodeID, addrs []string) {
	if id.IsZero() || len(addrs) == 0 {
		return
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Get(id)
	if !ok {
		if p, ok = k.insertLocked(id, lanSource, false, now); !ok {
			return
		}
	}
	if !slices.Equal(p.nearby, addrs) {
		p.nearby = slices.Clone(addrs)
		p.failures, p.nextTry, p.lost = 0, time.Time{}, false
	}
	p.heard = now
}

func (k *knownPeers) addrs(id protocol.NodeID) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		return p.addrs()
	}
	return nil
}

// sourceOf returns the neighbour that introduced the member, if any.
func (k *knownPeers) sourceOf(id protocol.NodeID) (protocol.NodeID, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok && !p.src.IsZero() {
		return p.src, true
	}
	return protocol.NodeID{}, false
}

// record returns the record held for the member, or nil.
func (k *knownPeers) record(id protocol.NodeID) *protocol.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		return p.rec
	}
	return nil
}

func (k *knownPeers) remove(id protocol.NodeID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lru.Remove(id)
}

// linkChanged follows this node's links (from the connection hook): a link
// that comes up is news, makes the member one this node learnt itself, and
// clears its failures; one this node dialled proves the address it reached.
// A link that ends is remembered as the member's latest link, and marks it
// unreachable if it ended in an error rather than a clean close. Nothing
// the peer said in its handshake becomes an address of the member.
func (k *knownPeers) linkChanged(c *base.Conn, up bool) {
	id, now := c.ID(), time.Now()
	if id.IsZero() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.lru.Peek(id)
	if up {
		if !ok {
			if p, ok = k.insertLocked(id, protocol.NodeID{}, true, now); !ok {
				return
			}
		}
		k.lru.Get(id)
		k.setSource(p, protocol.NodeID{})
		if c.Peer().Outbound {
			p.proven = c.RemoteAddr().String()
		}
		if ta, isTCP := c.RemoteAddr().(*net.TCPAddr); isTCP {
			p.host = ta.IP.String()
		}
		p.connected, p.heard, p.linked = true, now, now
		p.failures, p.nextTry, p.lost = 0, time.Time{}, false
		return
	}
	if ok {
		err := c.Err()
		p.connected = false
		p.linked, p.lost = now, err != nil && !errors.Is(err, ErrClosed)
	}
}

// failed pushes the next maintenance dial back with jittered exponential
// back-off, capped at hi, and moves on to the member's next address: the
// member is kept, however often it fails. A dial that found another node
// at the member's proven address (wrongNode) un-proves it.
func (k *knownPeers) failed(id protocol.NodeID, addr string, wrongNode bool, lo, hi time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.askWanted = true
	p, ok := k.lru.Peek(id)
	if !ok {
		return
	}
	if wrongNode && p.proven == addr {
		p.proven = ""
	}
	p.failures++
	d := lo << min(p.failures-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	jittered := d/2 + rand.N(d)
	p.nextTry = time.Now().Add(jittered)
}

// source returns how many members src introduced (that are still held and
// count against it).
func (k *knownPeers) source(src protocol.NodeID) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.shares[src]
}

type candidate struct {
	id   protocol.NodeID
	addr string
}

// ranked is a candidate with what orders it.
type ranked struct {
	candidate
	failures      int
	linked, heard time.Time
}

// takeDue picks up to n members to dial now, best first, and marks them
// as being dialled (dialDone ends that): members with an address whose
// back-off has passed, that skip does not rule out and that are not being
// dialled already. Best is fewest failures in a row, then the most recent
// link, then the most recent news, so that addresses that worked lately,
// and members that neighbours named lately, come before stale ones. It
// also returns how many were due in all.
func (k *knownPeers) takeDue(now time.Time, n int, skip func(protocol.NodeID) bool) (picked []candidate, due int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var all []ranked
	for _, id := range k.lru.Keys() {
		p, _ := k.lru.Peek(id)
		if p.dialing || p.nextTry.After(now) || skip(id) {
			continue
		}
		addr := p.dialAddr()
		if addr == "" {
			continue
		}
		all = append(all, ranked{candidate{id, addr}, p.failures, p.linked, p.heard})
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	slices.SortStableFunc(all, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.failures, b.failures), b.linked.Compare(a.linked), b.heard.Compare(a.heard))
	})
	for _, r := range all[:min(n, len(all))] {
		p, _ := k.lru.Peek(r.id)
		p.dialing = true
		k.dials++
		picked = append(picked, r.candidate)
	}
	return picked, len(all)
}

// takeProbe picks the target of a probe and marks it as being dialled:
// a member with an address that skip does not rule out and that this
// node last failed to reach (see unreachable), chosen at random among the
// members this node had links with most recently (up to members of them),
// or failing those among all. Back-off does not apply. It picks nothing
// while a probe is in flight.
func (k *knownPeers) takeProbe(skip func(protocol.NodeID) bool, members int) (candidate, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.probing {
		return candidate{}, false
	}
	var linked, others []ranked
	for _, id := range k.lru.Keys() {
		p, _ := k.lru.Peek(id)
		if p.dialing || !p.unreachable() || skip(id) {
			continue
		}
		addr := p.dialAddr()
		if addr == "" {
			continue
		}
		r := ranked{candidate{id, addr}, p.failures, p.linked, p.heard}
		if p.linked.IsZero() {
			others = append(others, r)
		} else {
			linked = append(linked, r)
		}
	}
	pool := others
	if len(linked) > 0 {
		slices.SortFunc(linked, func(a, b ranked) int { return b.linked.Compare(a.linked) })
		pool = linked[:min(members, len(linked))]
	}
	if len(pool) == 0 {
		return candidate{}, false
	}
	c := pool[rand.N(len(pool))].candidate
	p, _ := k.lru.Peek(c.id)
	p.dialing = true
	k.probing = true
	return c, true
}

// dialDone ends a dial started by takeDue (probe false) or takeProbe.
func (k *knownPeers) dialDone(id protocol.NodeID, probe bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.lru.Peek(id); ok {
		p.dialing = false
	}
	if probe {
		k.probing = false
	} else {
		k.dials--
	}
}

// takeAskWanted reports, and clears, whether a dial failed since the last
// call.
func (k *knownPeers) takeAskWanted() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.askWanted
	k.askWanted = false
	return w
}

// dialsInFlight returns the maintenance dials in flight.
func (k *knownPeers) dialsInFlight() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dials
}

func (k *knownPeers) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}

func (k *knownPeers) evicted() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.evictions
}

// sendPeers sends c a peer list: this node's own record, then the records
// it holds of its other neighbours, byte for byte as their nodes signed
// them. wantReply asks for c's list back.
func (s *Socket) sendPeers(c *base.Conn, wantReply bool) {
	own := s.rec.Load()
	if own == nil {
		return // NewSocket failed: the node is being closed
	}
	list := make([][]byte, 0, maxPeersPerList)
	list = append(list, own.Bytes())
	for _, n := range *s.neighbours.Load() {
		if len(list) == maxPeersPerList {
			break
		}
		if n == c {
			continue
		}
		if r := s.known.record(n.ID()); r != nil {
			list = append(list, r.Bytes())
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
	if wantReply {
		// c's answer is not charged to its peer list budget.
		s.linkOf(c).rb.asked.Store(true)
	}
	_ = c.SendControl(env)
}

// errNotOneHop says why a peer list was refused: it was not a whisper from
// the link's own peer.
var errNotOneHop = errors.New("mesh: a peer list must be a whisper from the link's own peer")

// handlePeers takes the records of a neighbour's peer list into the known
// table. A peer list is a one-hop control message: one that is not a
// whisper from the node at the other end of the link (a broadcast, one
// relayed, one naming another sender) is refused and counted, as is one
// that does not decode. A list over the neighbour's peer list budget is
// dropped before it is decoded.
func (s *Socket) handlePeers(m *base.Message) {
	from := m.Conn.ID()
	if m.Type != flags.Whisper || m.Sender != from {
		s.refusePeerList(m, errNotOneHop)
		return
	}
	if !s.linkOf(m.Conn).rb.takeList(time.Now().UnixNano(), &s.cfg) {
		s.peerListOverBudget(m)
		return
	}
	if len(m.Packets) != 2 || len(m.Packets[1]) != 1 {
		s.refusePeerList(m, fmt.Errorf("%w: peer list of %d packets", protocol.ErrMalformed, len(m.Packets)))
		return
	}
	var list [][]byte
	if err := protocol.UnmarshalCBOR(m.Packets[0], &list); err != nil {
		s.refusePeerList(m, err)
		return
	}
	if len(list) > maxPeersPerList {
		s.refusePeerList(m, fmt.Errorf("%w: peer list of %d records, limit %d", protocol.ErrMalformed, len(list), maxPeersPerList))
		return
	}
	s.takeRecords(list, protocol.NodeID{}, m)
	if m.Packets[1][0] == 1 {
		s.sendPeers(m.Conn, false)
	}
	s.kick()
}

// refusePeerList counts and traces a refused peer list.
func (s *Socket) refusePeerList(m *base.Message, why error) {
	s.ctr.peerListsRefused.Add(1)
	s.log.Debug("peer list refused", "sender", m.Sender.Short(), "peer", m.Conn.ID().Short(), "err", why)
	s.traceRecord(TracePeerListRefused, m, m.Sender, why)
}

// errOtherNode says why a record was refused: a route message carried the
// record of another node than its sender.
var errOtherNode = fmt.Errorf("%w: the record is not its sender's", protocol.ErrBadRecord)

// takeRecords decodes the records that message m carried and takes them
// into the known table (docs/protocol.md §12.2), a new member counted in
// the table share of the neighbour m came from unless the record is that
// neighbour's own. With
// want set, each record must be want's. It returns, for each, the record
// if it is valid, whether or not the table kept it (for a stale one, the
// newer record held), else nil. Records that do not decode, do not verify,
// or are not newer than the one held are dropped and counted; a record
// not newer than the one held costs no signature check. Those that need
// one are charged to the neighbour's record budget (those beyond it are
// dropped unchecked, see recordsOverBudget) and checked in one batch. A
// valid record of this node itself with a sequence number at or above its
// own makes it sign a new one above that.
func (s *Socket) takeRecords(bs [][]byte, want protocol.NodeID, m *base.Message) []*protocol.Record {
	out := make([]*protocol.Record, len(bs))
	var fresh []*protocol.Record // to verify
	var at []int                 // their indexes in bs
	for i, b := range bs {
		rec, err := protocol.UnmarshalRecord(b)
		if err == nil && !want.IsZero() && rec.ID != want {
			err = errOtherNode
		}
		if err != nil {
			s.rejectRecord(TraceRecordInvalid, m, protocol.NodeID{}, err)
			continue
		}
		if rec.ID == s.ID() {
			if own := s.rec.Load(); rec.Seq < own.Seq || bytes.Equal(rec.Bytes(), own.Bytes()) {
				continue // older than this node's record, or that very record
			}
		} else {
			switch s.known.check(rec) {
			case recordSame:
				out[i] = rec
				continue
			case recordStale:
				s.rejectRecord(TraceRecordStale, m, rec.ID, errStaleRecord)
				out[i] = s.known.record(rec.ID) // newer, and verified when it was taken
				continue
			}
		}
		if slices.ContainsFunc(fresh, func(r *protocol.Record) bool { return bytes.Equal(r.Bytes(), rec.Bytes()) }) {
			continue // the same record twice in one message: checked once
		}
		fresh, at = append(fresh, rec), append(at, i)
	}
	if len(fresh) == 0 {
		return out
	}
	l := s.linkOf(m.Conn)
	now := time.Now().UnixNano()
	if n := l.rb.takeRecords(now, len(fresh), &s.cfg); n < len(fresh) {
		s.recordsOverBudget(l, m, fresh[n:], now)
		fresh = fresh[:n]
	}
	src := m.Conn.ID()
	for j, err := range s.verifyRecords(l, fresh) {
		rec := fresh[j]
		switch {
		case err != nil:
			s.rejectRecord(TraceRecordInvalid, m, rec.ID, err)
			continue
		case rec.ID == s.ID():
			s.outdoOwnRecord(rec.Seq)
			continue
		}
		switch s.known.store(rec, src) {
		case recordStored:
			s.ctr.recordsAccepted.Add(1)
		case recordOld:
			s.rejectRecord(TraceRecordStale, m, rec.ID, errStaleRecord)
		case recordRefused:
			s.rejectRecord(TraceRecordRefused, m, rec.ID, errNoRoom)
		}
		out[at[j]] = rec
	}
	return out
}

// Reasons of record trace events.
var (
	errStaleRecord = errors.New("mesh: record not newer than the one held")
	errNoRoom      = errors.New("mesh: no room for the record: the source's share and the table hold members that stay")
)

// rejectRecord counts and traces a record that was not taken.
func (s *Socket) rejectRecord(k TraceKind, m *base.Message, node protocol.NodeID, why error) {
	switch k {
	case TraceRecordInvalid:
		s.ctr.recordsInvalid.Add(1)
		s.log.Debug("invalid peer record", "peer", m.Conn.ID().Short(), "node", node.Short(), "err", why)
	case TraceRecordStale:
		s.ctr.recordsStale.Add(1)
	case TraceRecordRefused:
		s.ctr.recordsRefused.Add(1)
	}
	s.traceRecord(k, m, node, why)
}

func (s *Socket) traceRecord(k TraceKind, m *base.Message, node protocol.NodeID, why error) {
	if s.cfg.tracer == nil {
		return
	}
	s.cfg.tracer.Trace(TraceEvent{Kind: k, ID: m.ID, Sender: node, Peer: m.Conn.ID(), Hops: m.Hops, Reason: why})
}

// kick wakes the maintenance loop.
func (s *Socket) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// maintainLoop keeps the outgoing quota filled, on every kick (new peer
// list, lost neighbour, a dial that ended) and on a timer, and probes a
// member it cannot reach on a timer of its own (WithProbe).
func (s *Socket) maintainLoop() {
	t := time.NewTicker(s.cfg.maintainEvery)
	defer t.Stop()
	var probeC <-chan time.Time
	var pt *time.Timer
	if s.cfg.probeEvery > 0 {
		pt = time.NewTimer(jitter(s.cfg.probeEvery))
		defer pt.Stop()
		probeC = pt.C
	}
	for {
		select {
		case <-s.lc.Closing():
			return
		case <-s.wake:
		case <-s.observeNow:
			s.refreshObserved()
			continue
		case <-t.C:
		case <-probeC:
			pt.Reset(jitter(s.cfg.probeEvery))
			if s.cfg.discovery {
				s.probe()
			}
		}
		short := len(*s.neighbours.Load()) == 0
		if s.cfg.discovery && s.fillOutgoing() {
			short = true
		}
		if short {
			s.base.Rejoin(s.rejoinVia) // at most once per JoinConfig.Refresh
		}
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

// skipDial rules out dialling this node itself and nodes it has a link to.
func (s *Socket) skipDial(id protocol.NodeID) bool {
	if id == s.ID() {
		return true
	}
	_, connected := s.base.Conn(id)
	return connected
}

// fillOutgoing starts dials to the best known members (see takeDue) while
// an outgoing slot is free (see dialSlots), at most WithMaxDials at once;
// each dial runs on its own goroutine and kicks the loop when it ends. A
// node still short of links asks its neighbours for fresh peer lists as
// soon as a dial fails or nothing is left to dial, at most once per
// maintenance interval (their answers kick this loop again). It reports
// whether the node is short of peers: an outgoing slot is free and no
// known member is due to be dialled.
func (s *Socket) fillOutgoing() (short bool) {
	if v := s.slots.swapVictim(nil); v != nil {
		// Over the quota: a dial landed after a probe that saw no excess.
		// Closed in the background: Close waits for the peer to read the
		// Bye, and this loop must not wait on a peer.
		s.ctr.probeSwaps.Add(1)
		s.log.Debug("an automatic link took the node past its outgoing quota; closing it", "peer", v.ID().Short())
		s.lc.Go(func() { _ = v.Close() }) // if not, the node is closing, and closes v
	}
	free := s.slots.free()
	room := s.cfg.maxDials - s.known.dialsInFlight()
	var picked []candidate
	due := 0
	if n := min(free, room); n > 0 {
		picked, due = s.known.takeDue(time.Now(), n, s.skipDial)
		for _, cand := range picked {
			s.startDial(cand)
		}
	}
	if room < free && due > len(picked) {
		s.ctr.dialsDeferred.Add(1)
	}
	short = free > 0 && due == 0
	if s.slots.outboundLinks() >= s.cfg.maxOutgoing || time.Since(s.lastAsk) < s.cfg.maintainEvery {
		return short
	}
	if s.known.takeAskWanted() || (free > 0 && due == 0) {
		s.lastAsk = time.Now()
		s.ctr.peerListRequests.Add(1)
		for _, n := range *s.neighbours.Load() {
			s.sendPeers(n, true)
		}
	}
	return short
}

// startDial dials cand on a goroutine of its own, inside a reserved
// outgoing slot.
func (s *Socket) startDial(cand candidate) {
	if !s.slots.reserve() {
		s.known.dialDone(cand.id, false)
		return
	}
	started := s.lc.Go(func() {
		defer s.kick()
		defer s.known.dialDone(cand.id, false)
		defer s.slots.release()
		c, err := s.dialCandidate(cand)
		s.ctr.dials.Add(1)
		if err != nil {
			s.ctr.dialFailures.Add(1)
			return
		}
		s.slots.markAuto(c)
	})
	if !started {
		s.slots.release()
		s.known.dialDone(cand.id, false)
	}
}

// dialCandidate dials a known member within the dial timeout and records
// the outcome in the table: a link to the member proves the address;
// another node at that address, or any other failure, backs the member
// off (and moves it on to its next address); this node itself or another
// protocol at that address removes it.
func (s *Socket) dialCandidate(cand candidate) (*base.Conn, error) {
	ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.dialTimeout)
	c, err := s.base.Connect(ctx, cand.addr)
	cancel()
	switch {
	case err == nil && c.ID() == cand.id:
		s.known.proved(cand.id, cand.addr)
	case err == nil:
		// Someone else answers at that address now (the connection hook
		// has noted that node).
		s.known.failed(cand.id, cand.addr, true, s.cfg.backoffMin, s.cfg.backoffMax)
	case errors.Is(err, ErrSelfConnect), errors.Is(err, ErrProtocolMismatch):
		s.known.remove(cand.id)
	default:
		s.known.failed(cand.id, cand.addr, false, s.cfg.backoffMin, s.cfg.backoffMax)
	}
	return c, err
}

// probe starts one dial, on a goroutine of its own, to a member this node
// cannot reach (see takeProbe), whether or not an outgoing slot is free:
// how two halves of a mesh whose nodes are all at their quota find each
// other again after a network cut. A probe link that takes the node past
// its quota replaces a random other outgoing link that an automatic dial
// made (a swap); so a node at its quota probes only if it has such a link.
func (s *Socket) probe() {
	if s.slots.free() <= 0 && !s.slots.hasAuto() {
		return
	}
	cand, ok := s.known.takeProbe(s.skipDial, s.cfg.probeMembers)
	if !ok {
		return
	}
	started := s.lc.Go(func() {
		defer s.kick()
		defer s.known.dialDone(cand.id, true)
		c, err := s.dialCandidate(cand)
		s.ctr.probes.Add(1)
		if err != nil {
			s.ctr.probeFailures.Add(1)
			return
		}
		s.slots.markAuto(c)
		if v := s.slots.swapVictim(c); v != nil {
			s.ctr.probeSwaps.Add(1)
			s.log.Debug("probe reached a member; swapping an outgoing link for it",
				"member", c.ID().Short(), "dropped", v.ID().Short())
			_ = v.Close()
		}
	})
	if !started {
		s.known.dialDone(cand.id, true)
	}
}
