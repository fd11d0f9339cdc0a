package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Membership: every node floods its own signed record (a member message,
// sub-flag 0x25, docs/protocol.md §12.3) when it changes and, as a
// heartbeat, every heartbeat interval; every node keeps the records it
// hears in a bounded member table and follows each member's liveness:
// alive → suspect (not heard from for the suspect timeout) → failed (the
// failure timeout), or left (a graceful leave, which Close announces).
//
// The heartbeat interval grows with the mesh, so that what a node
// receives stays bounded: a node with n members in its table heartbeats
// every max(heartbeat, n / rate) (WithMemberHeartbeat; n counts the node), so the mesh's n
// nodes together send at most about rate heartbeats a second, and each
// node takes about rate member messages a second (each a signed broadcast
// whose envelope it verifies once; the record inside is the one held, so
// it costs no second check), plus one record check per record change.
// The timeouts grow with it (at least 3 and 6 intervals).

// Defaults of the member layer.
const (
	DefaultHeartbeat     = 2 * time.Second // shortest heartbeat interval
	DefaultMemberRate    = 4               // member heartbeats per second a node takes, mesh-wide
	DefaultSuspectAfter  = 10 * time.Second
	DefaultFailAfter     = 30 * time.Second
	DefaultMaxMembers    = 4096
	suspectIntervals     = 3                // the suspect timeout is at least this many heartbeat intervals
	failIntervals        = 6                // the failure timeout, at least this many
	memberStateAlive     = 0                // member message: the node is up
	memberStateLeaving   = 1                // member message: the node is leaving the mesh
	memberForgetAfterMul = 2                // failed and left members are forgotten after this many failure timeouts…
	memberForgetMin      = 10 * time.Minute // …and at least this long (or sooner, to make room)
	maxMemberInterval    = time.Hour
)

// memberConfig holds the member and topic options.
type memberConfig struct {
	off          bool // WithMembership(false): send no member messages
	group        string
	hub          bool
	heartbeat    time.Duration
	rate         int
	suspectAfter time.Duration
	failAfter    time.Duration
	maxMembers   int
	topicQueue   int
}

func defaultMemberConfig() memberConfig {
	return memberConfig{
		heartbeat:    DefaultHeartbeat,
		rate:         DefaultMemberRate,
		suspectAfter: DefaultSuspectAfter,
		failAfter:    DefaultFailAfter,
		maxMembers:   DefaultMaxMembers,
		topicQueue:   DefaultTopicQueue,
	}
}

// WithGroup puts this node in a mesh group: its record says so (key 7),
// and InGroups selects it. At most protocol.MaxRecordGroupLen bytes.
// Default: none.
func WithGroup(name string) Option {
	return func(c *config) error {
		if len(name) > protocol.MaxRecordGroupLen {
			return optcheck.Invalid("group of %d bytes, limit %d", len(name), protocol.MaxRecordGroupLen)
		}
		c.members.group = name
		return nil
	}
}

// WithHub marks this node as a hub in its record (key 8); HubsOnly
// selects hubs. Default: false.
func WithHub(on bool) Option {
	return func(c *config) error {
		c.members.hub = on
		return nil
	}
}

// WithMemberHeartbeat sets the shortest interval between this node's
// heartbeats (its member record flooded again) and the mesh-wide rate of
// heartbeats a node should take per second: with n members known, a node
// heartbeats every max(every, n/perSec), so each node receives about
// perSec member messages a second however large the mesh. Defaults: 2 s
// and 4 a second (at 1 000 nodes, a heartbeat every 250 s per node).
func WithMemberHeartbeat(every time.Duration, perSec int) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("heartbeat interval", every); err != nil {
			return err
		}
		if err := optcheck.CheckPositive("member rate", perSec); err != nil {
			return err
		}
		c.members.heartbeat, c.members.rate = every, perSec
		return nil
	}
}

// WithMemberTimeouts sets how long a member may stay unheard of before it
// is suspect, and before it is failed. Each is at least 3 (suspect) and 6
// (failed) of the heartbeat intervals the mesh's size gives (see
// WithMemberHeartbeat). Defaults: 10 s and 30 s.
func WithMemberTimeouts(suspect, fail time.Duration) Option {
	return func(c *config) error {
		if err := optcheck.CheckPositive("suspect timeout", suspect); err != nil {
			return err
		}
		if fail < suspect {
			return optcheck.Invalid("failure timeout %v below suspect timeout %v", fail, suspect)
		}
		c.members.suspectAfter, c.members.failAfter = suspect, fail
		return nil
	}
}

// WithMembership says whether this node floods member messages (its
// record at start and on changes, heartbeats, and a leave on Close).
// Off, other nodes do not list it among their members (or list it as
// failed after the failure timeout); it still takes theirs and lists
// them, and relays everything. Default: on.
func WithMembership(on bool) Option {
	return func(c *config) error {
		c.members.off = !on
		return nil
	}
}

// WithMaxMembers bounds the member table. A new member beyond it is not
// taken (MemberStats.Refused). Default: 4096.
func WithMaxMembers(n int) Option {
	return optcheck.Positive("max members", n, func(c *config) { c.members.maxMembers = n })
}

// MemberState is a member's liveness.
type MemberState uint8

// Member states.
const (
	// MemberAlive: heard from within the suspect timeout.
	MemberAlive MemberState = iota + 1
	// MemberSuspect: not heard from within the suspect timeout.
	MemberSuspect
	// MemberFailed: not heard from within the failure timeout.
	MemberFailed
	// MemberLeft: announced that it left the mesh.
	MemberLeft
)

func (st MemberState) String() string {
	switch st {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberFailed:
		return "failed"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", uint8(st))
}

// Member is a node of the mesh as its signed record describes it, with
// what this node knows of its liveness.
type Member struct {
	ID    protocol.NodeID
	Addrs []string
	Group string
	Hub   bool
	Meta  map[string]string
	// Host is the host of its first address ("" without one).
	Host string
	// State is its liveness; LastHeard when it was last heard from.
	State     MemberState
	LastHeard time.Time
	// Record is its signed record (must not be modified).
	Record *protocol.Record
}

// Live reports whether the member is alive or suspect.
func (m *Member) Live() bool { return m.State == MemberAlive || m.State == MemberSuspect }

// MemberEventKind says what happened to a member.
type MemberEventKind uint8

// Member events.
const (
	MemberJoined    MemberEventKind = iota + 1 // first heard of, or heard again after it failed
	MemberUpdated                              // a newer record (metadata, addresses)
	MemberSuspected                            // alive → suspect
	MemberRecovered                            // suspect → alive
	MemberFailedEv                             // suspect → failed
	MemberLeftEv                               // a graceful leave
)

func (k MemberEventKind) String() string {
	switch k {
	case MemberJoined:
		return "joined"
	case MemberUpdated:
		return "updated"
	case MemberSuspected:
		return "suspected"
	case MemberRecovered:
		return "recovered"
	case MemberFailedEv:
		return "failed"
	case MemberLeftEv:
		return "left"
	}
	return fmt.Sprintf("MemberEventKind(%d)", uint8(k))
}

// MemberEvent is a change of a member, as WatchMembers reports it.
type MemberEvent struct {
	Kind   MemberEventKind
	Member Member
}

// MemberWatch receives member events on C, a bounded channel: events that
// find it full are dropped and counted (Dropped), never waited for.
type MemberWatch struct {
	C       <-chan MemberEvent
	c       chan MemberEvent
	dropped atomic.Uint64
	s       *Socket
}

// Dropped returns how many events found C full.
func (w *MemberWatch) Dropped() uint64 { return w.dropped.Load() }

// Close stops the watch. C is not closed.
func (w *MemberWatch) Close() {
	t := &w.s.members
	t.mu.Lock()
	defer t.mu.Unlock()
	t.watches = slices.DeleteFunc(t.watches, func(x *MemberWatch) bool { return x == w })
}

// WatchMembers returns a watch on member events with a channel of buffer
// events (at least 1). Close it when done.
func (s *Socket) WatchMembers(buffer int) *MemberWatch {
	c := make(chan MemberEvent, max(buffer, 1))
	w := &MemberWatch{C: c, c: c, s: s}
	t := &s.members
	t.mu.Lock()
	t.watches = append(t.watches, w)
	t.mu.Unlock()
	return w
}

// MemberStats counts the member and topic layers' work.
type MemberStats struct {
	// Members is the size of the member table (this node apart), of whom
	// Live are alive or suspect.
	Members, Live int
	// Sent counts member messages this node flooded (heartbeats, changes,
	// its leave); Received counts new member messages taken, of which
	// Verified needed their record checked; Invalid and Refused count
	// those dropped (bad record, no room); Stale those older than held.
	Sent, Received, Verified, Invalid, Refused, Stale uint64
	// EventDrops counts member events that found a watch full.
	EventDrops uint64
	// Published counts topic messages this node published; TopicDelivered
	// those queued for a subscription; TopicDrops those that found a
	// subscription's queue full; TopicRelayed those taken only to relay.
	Published, TopicDelivered, TopicDrops, TopicRelayed uint64
	// Interval is the current heartbeat interval; SuspectAfter and
	// FailAfter the timeouts in force.
	Interval, SuspectAfter, FailAfter time.Duration
}

// memberEntry is one member in the table.
type memberEntry struct {
	rec   *protocol.Record
	every time.Duration // the member's heartbeat interval, as it says
	state MemberState
	heard time.Time
	since time.Time // when the state last changed
}

// memberTable is the bounded table of members, with the watches.
type memberTable struct {
	mu      sync.Mutex
	m       map[protocol.NodeID]*memberEntry
	watches []*MemberWatch
	changed chan struct{} // closed and replaced at every event (WaitMembers)
	ctr     struct {
		sent, received, verified, invalid, refused, stale, eventDrops atomic.Uint64
		published, topicDelivered, topicDrops, topicRelayed           atomic.Uint64
		wakeups                                                       atomic.Uint64 // memberLoop rounds (tests: it must not poll)
	}
}

func memberOf(rec *protocol.Record, st MemberState, heard time.Time) Member {
	m := Member{ID: rec.ID, Addrs: slices.Clone(rec.Addrs), Group: rec.Group, Hub: rec.Hub,
		Meta: maps.Clone(rec.Meta), State: st, LastHeard: heard, Record: rec}
	if len(rec.Addrs) > 0 {
		if h, _, err := net.SplitHostPort(rec.Addrs[0]); err == nil {
			m.Host = h
		}
	}
	return m
}

// emitLocked sends ev to every watch, never waiting. The caller holds mu.
func (t *memberTable) emitLocked(kind MemberEventKind, e *memberEntry) {
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
	if len(t.watches) == 0 {
		return
	}
	ev := MemberEvent{Kind: kind, Member: memberOf(e.rec, e.state, e.heard)}
	for _, w := range t.watches {
		select {
		case w.c <- ev:
		default:
			w.dropped.Add(1)
			t.ctr.eventDrops.Add(1)
		}
	}
}

// interval is this node's heartbeat interval for n members.
func (c *memberConfig) interval(n int) time.Duration {
	return max(c.heartbeat, time.Duration(n)*time.Second/time.Duration(c.rate))
}

// timeouts are the suspect and failure timeouts for n members.
func (c *memberConfig) timeouts(n int) (suspect, fail time.Duration) {
	iv := c.interval(n)
	return max(c.suspectAfter, suspectIntervals*iv), max(c.failAfter, failIntervals*iv)
}

func (t *memberTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// Members returns every live member of the mesh (alive or suspect), this
// node included, that passes every filter, in node ID order.
func (s *Socket) Members(filter ...MemberFilter) []Member {
	var out []Member
	if me := memberOf(s.rec.Load(), MemberAlive, time.Now()); matchAll(&me, filter) {
		out = append(out, me)
	}
	t := &s.members
	t.mu.Lock()
	for _, e := range t.m {
		if e.state != MemberAlive && e.state != MemberSuspect {
			continue
		}
		if m := memberOf(e.rec, e.state, e.heard); matchAll(&m, filter) {
			out = append(out, m)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return out
}

// WaitMembers waits until at least n live members (this node included)
// pass every filter, and returns them, as Members would. It is woken by
// each member event, so it never misses one (unlike a full MemberWatch).
// It fails with ErrTimeout when ctx ends and ErrClosed when the node
// closes.
func (s *Socket) WaitMembers(ctx context.Context, n int, filter ...MemberFilter) ([]Member, error) {
	t := &s.members
	for {
		// Take the channel before counting: an event after the count
		// closes it, so none is missed.
		t.mu.Lock()
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		changed := t.changed
		t.mu.Unlock()
		ms := s.Members(filter...)
		if len(ms) >= n {
			return ms, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %d of %d members: %w", ErrTimeout, len(ms), n, ctx.Err())
		case <-s.lc.Closing():
			return nil, ErrClosed
		}
	}
}

// Others is a filter that leaves this node itself out of Members and
// WaitMembers.
func (s *Socket) Others() MemberFilter {
	me := s.ID()
	return func(m *Member) bool { return m.ID != me }
}

// Member returns what this node knows of one member, live or not.
func (s *Socket) Member(id protocol.NodeID) (Member, bool) {
	if id == s.ID() {
		return memberOf(s.rec.Load(), MemberAlive, time.Now()), true
	}
	t := &s.members
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	if !ok {
		return Member{}, false
	}
	return memberOf(e.rec, e.state, e.heard), true
}

// MemberStats returns the member and topic counters.
func (s *Socket) MemberStats() MemberStats {
	t := &s.members
	var st MemberStats
	t.mu.Lock()
	st.Members = len(t.m)
	for _, e := range t.m {
		if e.state == MemberAlive || e.state == MemberSuspect {
			st.Live++
		}
	}
	t.mu.Unlock()
	st.Sent, st.Received, st.Verified = t.ctr.sent.Load(), t.ctr.received.Load(), t.ctr.verified.Load()
	st.Invalid, st.Refused, st.Stale = t.ctr.invalid.Load(), t.ctr.refused.Load(), t.ctr.stale.Load()
	st.EventDrops = t.ctr.eventDrops.Load()
	st.Published, st.TopicDelivered = t.ctr.published.Load(), t.ctr.topicDelivered.Load()
	st.TopicDrops, st.TopicRelayed = t.ctr.topicDrops.Load(), t.ctr.topicRelayed.Load()
	st.Interval = s.cfg.members.interval(st.Members + 1)
	st.SuspectAfter, st.FailAfter = s.cfg.members.timeouts(st.Members + 1)
	return st
}

// UpdateMetadata replaces this node's metadata: it signs a new record
// (addresses, group and hub unchanged) and floods it to the whole mesh at
// once, as well as in peer lists to its neighbours. Values over the
// record's limits fail with ErrInvalidOption. A node without neighbours
// keeps the new record and spreads it once it has some.
func (s *Socket) UpdateMetadata(ctx context.Context, meta map[string]string) error {
	if s.lc.Closed() {
		return ErrClosed
	}
	s.addrMu.Lock() // the addresses stay as they are, learnt ones included
	old := s.rec.Load()
	_, err := s.signRecord(old.Addrs, meta, 0)
	s.addrMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	s.pushRecord()
	if s.cfg.members.off {
		return nil
	}
	if err := s.announce(ctx, memberStateAlive); err != nil && !errors.Is(err, ErrNoRoute) {
		return err
	}
	return nil
}

// announce floods this node's current record in a member message.
func (s *Socket) announce(ctx context.Context, state byte) error {
	rec := s.rec.Load()
	if rec == nil {
		return ErrClosed
	}
	iv := s.cfg.members.interval(s.members.size() + 1)
	ms := binary.BigEndian.AppendUint32(nil, uint32(min(iv.Milliseconds(), math.MaxUint32)))
	if err := s.originate(ctx, flags.Member, [][]byte{rec.Bytes(), {state}, ms}); err != nil {
		return err
	}
	s.members.ctr.sent.Add(1)
	return nil
}

// memberLoop sends this node's heartbeats and ages the member table. The
// first heartbeat goes out as soon as the node has a neighbour; later ones
// every heartbeat interval (jittered), and at once when announceNow is
// signalled (Advertise).
func (s *Socket) memberLoop() {
	t := &s.members
	announced := false
	next := time.Now()
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		s.nmu.Lock()
		changed := s.nchanged
		s.nmu.Unlock()
		select {
		case <-s.lc.Closing():
			return
		case <-tick.C:
		case <-changed:
		case <-s.announceNow:
			next = time.Now()
		}
		t.ctr.wakeups.Add(1)
		now := time.Now()
		n := t.size() + 1 // the mesh's size: the members known and this node
		lonely := len(*s.neighbours.Load()) == 0
		if !announced || !now.Before(next) {
			if !s.cfg.members.off && !lonely {
				ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.slowWait)
				err := s.announce(ctx, memberStateAlive)
				cancel()
				if err == nil {
					announced = true
					next = now.Add(jitter(s.cfg.members.interval(n)))
				}
			}
		}
		suspect, fail := s.cfg.members.timeouts(n)
		s.ageMembers(now, suspect, fail)
		// Wake for the next heartbeat and to age the table. A heartbeat
		// that is due but was not sent leaves next in the past: retry a
		// failed one soon, but a node with membership off or without a
		// neighbour has nothing to send (a new neighbour wakes it through
		// changed). It must not poll: that cost a wake-up a millisecond
		// per node.
		wait := suspect / 4
		switch {
		case next.After(now):
			wait = min(wait, next.Sub(now))
		case !s.cfg.members.off && !lonely:
			wait = min(wait, 50*time.Millisecond)
		}
		tick.Reset(max(wait, time.Millisecond))
	}
}

// ageMembers moves members not heard from to suspect and failed, and
// forgets failed and left ones after a while.
func (s *Socket) ageMembers(now time.Time, suspect, fail time.Duration) {
	t := &s.members
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, e := range t.m {
		quiet := now.Sub(e.heard)
		// A member's own interval may be longer than this node's (it
		// knows more members): its timeouts grow with it.
		suspect, fail := max(suspect, suspectIntervals*e.every), max(fail, failIntervals*e.every)
		switch e.state {
		case MemberAlive:
			if quiet > suspect {
				e.state, e.since = MemberSuspect, now
				t.emitLocked(MemberSuspected, e)
			}
		case MemberSuspect:
			if quiet > fail {
				e.state, e.since = MemberFailed, now
				t.emitLocked(MemberFailedEv, e)
			}
		case MemberFailed, MemberLeft:
			if now.Sub(e.since) > max(memberForgetAfterMul*fail, memberForgetMin) {
				delete(t.m, id)
			}
		}
	}
}

// errMemberMessage says why a member message was dropped.
var errMemberMessage = fmt.Errorf("%w: member message", protocol.ErrMalformed)

// handleMember takes a member message (on the reader, after the flood
// rules relayed it): the record must be its origin's own; a copy of the
// record held is a heartbeat; a newer one is checked (charged to the
// neighbour's record budget) and replaces it.
func (s *Socket) handleMember(m *base.Message) {
	t := &s.members
	if len(m.Packets) != 3 || len(m.Packets[1]) != 1 || m.Packets[1][0] > memberStateLeaving || len(m.Packets[2]) != 4 {
		t.ctr.invalid.Add(1)
		s.rejectRecord(TraceRecordInvalid, m, m.Sender, errMemberMessage)
		return
	}
	if m.Sender == s.ID() {
		return
	}
	rec, err := protocol.UnmarshalRecord(m.Packets[0])
	if err == nil && rec.ID != m.Sender {
		err = errOtherNode
	}
	if err != nil {
		t.ctr.invalid.Add(1)
		s.rejectRecord(TraceRecordInvalid, m, m.Sender, err)
		return
	}
	leaving := m.Packets[1][0] == memberStateLeaving
	every := min(time.Duration(binary.BigEndian.Uint32(m.Packets[2]))*time.Millisecond, maxMemberInterval)
	now := time.Now()
	t.ctr.received.Add(1)

	t.mu.Lock()
	e, ok := t.m[rec.ID]
	same := ok && rec.Seq == e.rec.Seq && bytes.Equal(rec.Bytes(), e.rec.Bytes())
	switch {
	case ok && rec.Seq < e.rec.Seq, ok && rec.Seq == e.rec.Seq && !same:
		t.mu.Unlock()
		t.ctr.stale.Add(1)
		return
	case ok && e.state == MemberLeft && same:
		t.mu.Unlock() // a heartbeat that was overtaken by the leave
		return
	case !ok && len(t.m) >= s.cfg.members.maxMembers && !t.forgetOneLocked():
		t.mu.Unlock()
		t.ctr.refused.Add(1)
		s.rejectRecord(TraceRecordRefused, m, rec.ID, errNoRoom)
		return
	}
	if same {
		e.every = every
		s.heardLocked(e, rec, leaving, now, false)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()

	// A new record: check it, within the neighbour's record budget.
	l := s.linkOf(m.Conn)
	if l.rb.takeRecords(now.UnixNano(), 1, &s.cfg) < 1 {
		s.recordsOverBudget(l, m, []*protocol.Record{rec}, now.UnixNano())
		return
	}
	t.ctr.verified.Add(1)
	if errs := s.verifyRecords(l, []*protocol.Record{rec}); errs[0] != nil {
		t.ctr.invalid.Add(1)
		s.rejectRecord(TraceRecordInvalid, m, rec.ID, errs[0])
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok = t.m[rec.ID]
	switch {
	case ok && rec.Seq <= e.rec.Seq:
		return // another copy was taken meanwhile
	case !ok && len(t.m) >= s.cfg.members.maxMembers && !t.forgetOneLocked():
		t.ctr.refused.Add(1)
		return
	case !ok:
		e = &memberEntry{}
		t.m[rec.ID] = e
	}
	e.every = every
	s.heardLocked(e, rec, leaving, now, true)
}

// forgetOneLocked makes room in a full table: it forgets the failed or
// left member whose state changed longest ago, and reports whether there
// was one.
func (t *memberTable) forgetOneLocked() bool {
	var victim protocol.NodeID
	var since time.Time
	found := false
	for id, e := range t.m {
		if (e.state == MemberFailed || e.state == MemberLeft) && (!found || e.since.Before(since)) {
			victim, since, found = id, e.since, true
		}
	}
	if found {
		delete(t.m, victim)
	}
	return found
}

// heardLocked updates e for news of its member: rec (newer when fresh),
// heard at now, leaving or not. The caller holds the table's lock.
func (s *Socket) heardLocked(e *memberEntry, rec *protocol.Record, leaving bool, now time.Time, fresh bool) {
	t := &s.members
	was := e.state
	e.rec, e.heard = rec, now
	var kind MemberEventKind
	switch {
	case leaving:
		if was == MemberLeft {
			return
		}
		e.state, kind = MemberLeft, MemberLeftEv
	case was == 0 || was == MemberFailed || was == MemberLeft:
		e.state, kind = MemberAlive, MemberJoined
	case was == MemberSuspect:
		e.state, kind = MemberAlive, MemberRecovered
		if fresh {
			t.emitLocked(kind, e)
			kind = MemberUpdated
		}
	case fresh:
		kind = MemberUpdated
	default:
		return
	}
	if e.state != was {
		e.since = now
	}
	t.emitLocked(kind, e)
}

// leave announces, before Close, that this node leaves the mesh.
func (s *Socket) leave(ctx context.Context) {
	if s.cfg.members.off || len(*s.neighbours.Load()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.slowWait)
	defer cancel()
	_ = s.announce(ctx, memberStateLeaving)
}

// Member sync: a node sends a new neighbour the records of its live
// members (sub-flag 0x26, a one-hop whisper; docs/protocol.md §12), so
// that a node that joins lists the mesh at once rather than after a
// heartbeat interval. The first batches fill the neighbour's record burst;
// the rest go out paced at its record rate (WithRecordBudget), so that
// none is dropped over budget.
const maxSyncRecords = 32 // records per member sync message

// syncMembers sends c this node's own record (unless membership is off)
// and those of its live members, but c's.
func (s *Socket) syncMembers(c *base.Conn) {
	var recs [][]byte
	if !s.cfg.members.off {
		recs = append(recs, s.rec.Load().Bytes()) // this node's own, first
	}
	snapped := time.Now()
	recs = append(recs, s.liveRecords(c.ID(), time.Time{})...)
	s.lc.Go(func() {
		if !s.sendSync(c, recs) {
			return
		}
		// A record this node took while the snapshot was made may have
		// been relayed before the link was a neighbour, and so reached
		// neither: after a settling delay, send what was heard since.
		select {
		case <-time.After(syncSettle):
		case <-s.lc.Closing():
			return
		}
		if again := s.liveRecords(c.ID(), snapped); len(again) > 0 {
			s.sendSync(c, again)
		}
	})
}

// syncSettle is how long after a member sync the records heard meanwhile
// are sent again (see syncMembers).
const syncSettle = time.Second

// liveRecords returns the records of the live members other than skip,
// heard at or after since.
func (s *Socket) liveRecords(skip protocol.NodeID, since time.Time) [][]byte {
	t := &s.members
	var recs [][]byte
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, e := range t.m {
		if id != skip && (e.state == MemberAlive || e.state == MemberSuspect) && !e.heard.Before(since) {
			recs = append(recs, e.rec.Bytes())
		}
	}
	return recs
}

// sendSync sends recs to c as member-sync whispers, paced within c's
// record budget, and reports whether all were sent.
func (s *Socket) sendSync(c *base.Conn, recs [][]byte) bool {
	burst := max(s.cfg.recordBurst-maxSyncRecords, maxSyncRecords)
	pace := time.Duration(maxSyncRecords) * time.Second / time.Duration(max(s.cfg.recordRate, 1))
	sent := 0
	for len(recs) > 0 {
		if sent >= burst {
			select {
			case <-time.After(pace):
			case <-s.lc.Closing():
				return false
			}
		}
		if c.Err() != nil {
			return false
		}
		n := min(len(recs), maxSyncRecords)
		b, err := protocol.MarshalCBOR(recs[:n])
		if err != nil {
			return false
		}
		env, _, err := s.base.NewEnvelope(flags.Whisper, flags.MemberSync, 1, [][]byte{b})
		if err != nil {
			return false
		}
		if c.SendControl(env) != nil {
			return false
		}
		recs, sent = recs[n:], sent+n
	}
	return true
}

// handleMemberSync takes the records of a neighbour's member sync (on the
// reader): a one-hop whisper from the link's own peer, at most 32
// records. A record newer than the one held (or of a member not known)
// is checked, within the neighbour's record budget, and taken as if its
// member had sent it; a copy of the one held is not news of the member
// (only the member's own messages keep it alive).
func (s *Socket) handleMemberSync(m *base.Message) {
	t := &s.members
	if m.Type != flags.Whisper || m.Sender != m.Conn.ID() || len(m.Packets) != 1 {
		t.ctr.invalid.Add(1)
		s.rejectRecord(TraceRecordInvalid, m, m.Sender, errMemberMessage)
		return
	}
	var list [][]byte
	if err := protocol.UnmarshalCBOR(m.Packets[0], &list); err != nil || len(list) > maxSyncRecords {
		t.ctr.invalid.Add(1)
		s.rejectRecord(TraceRecordInvalid, m, m.Sender, errMemberMessage)
		return
	}
	var fresh []*protocol.Record
	t.mu.Lock()
	for _, b := range list {
		rec, err := protocol.UnmarshalRecord(b)
		if err != nil {
			t.ctr.invalid.Add(1)
			continue
		}
		if rec.ID == s.ID() {
			continue
		}
		if e, ok := t.m[rec.ID]; ok && rec.Seq <= e.rec.Seq {
			continue
		}
		fresh = append(fresh, rec)
	}
	t.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	l := s.linkOf(m.Conn)
	now := time.Now()
	if n := l.rb.takeRecords(now.UnixNano(), len(fresh), &s.cfg); n < len(fresh) {
		s.recordsOverBudget(l, m, fresh[n:], now.UnixNano())
		fresh = fresh[:n]
	}
	errs := s.verifyRecords(l, fresh)
	t.ctr.verified.Add(uint64(len(fresh)))
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, rec := range fresh {
		if errs[i] != nil {
			t.ctr.invalid.Add(1)
			continue
		}
		e, ok := t.m[rec.ID]
		switch {
		case ok && rec.Seq <= e.rec.Seq:
			continue
		case !ok && len(t.m) >= s.cfg.members.maxMembers && !t.forgetOneLocked():
			t.ctr.refused.Add(1)
			continue
		case !ok:
			e = &memberEntry{}
			t.m[rec.ID] = e
		}
		s.heardLocked(e, rec, false, now, true)
	}
}
