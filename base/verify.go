package base

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Signature verification (docs/architecture.md, "Verification pipeline").
//
// When the protocol signs (protocol.Protocol.Signing), a message that must
// carry a valid signature (mustVerify) leaves its connection's reader after
// the layer's prefilter and goes to that connection's verify lane. A pool
// of workers (WithVerifyWorkers: one per core by default) takes lanes with
// work, verifies the signatures of what they took in one batch
// (curve25519-voi's batch verification: about half the cost per signature
// of one-by-one checks), and then runs the rest of the pipeline for each
// message in its lane's order: the layer's Handle (which relays) and
// dispatch to the user. A lane is served by one goroutine at a time (its
// reader, for a message that needs no verification while the lane is idle,
// or one worker), so each connection's messages keep their order and Handle
// never runs twice at once for one connection.
//
// Copies of one message (same sender and sequence number) arriving while
// a first copy is being verified wait on that copy's in-flight entry
// instead of being verified again: if it is valid, those whose envelope
// bytes are the same are proven without more work; if it is not, they are
// verified in turn, so a forged first copy does not cost the genuine one.
//
// The lanes and the waiting copies hold the verify backlog, bounded in
// messages and bytes (WithVerifyBacklog), of which one connection may hold
// its fair share (WithFairShare) while others have some too. A reader
// whose message does not fit waits (Stats.VerifyWaits) until the workers
// free room: the peer that sends faster than this node verifies is slowed
// down by TCP back-pressure, nothing is dropped.

// ErrBadSignature: a message that must be signed was not, or its
// signature or key did not check out (docs/protocol.md §5.3). Such a
// message is dropped before any layer relays or delivers it
// (Stats.BadSignatures), and counts as a strike against the connection it
// came on (WithSignatureStrikes). It is protocol.ErrBadSignature.
var ErrBadSignature = protocol.ErrBadSignature

// Reasons for Layer.Dropped (they match ErrBadSignature).
var (
	errUnsigned    = fmt.Errorf("%w: message is not signed", ErrBadSignature)
	errKeyMismatch = fmt.Errorf("%w: key does not belong to the sender", ErrBadSignature)
	errBadSig      = fmt.Errorf("%w: signature does not verify", ErrBadSignature)
)

const (
	// verifyBatchMax is the most signatures one worker checks at once:
	// past 64 a batch costs no less per signature, and a longer batch
	// only delays the first of its messages.
	verifyBatchMax = 64
	// maxParked is the most copies that wait on one in-flight message;
	// more are verified on their own (the backlog bounds their memory).
	maxParked = 32
	// flightShards splits the in-flight table's lock.
	flightShards = 16
)

// mustVerify says whether a signing node verifies a message before it goes
// further: a broadcast, anything that may be relayed (hop limit above 1),
// anything from another node than the link's peer, anything signed.
func mustVerify(e *protocol.Envelope, peer protocol.NodeID) bool {
	return e.Type == flags.Broadcast || e.HopLimit > 1 || e.Sender != peer || len(e.Auth) > 0
}

// laneKind says what a lane does with an item.
type laneKind uint8

const (
	itemVerify laneKind = iota // verify, then deliver
	itemPlain                  // needs no verification; queued only to keep the lane's order
	itemProven                 // a copy proven by another copy's signature
)

type laneItem struct {
	m    *Message
	size int64 // backlog bytes it holds
	kind laneKind
	lead bool  // it leads an in-flight entry (others may wait on it)
	bad  error // after verification: why it failed (nil: valid)
}

// lane is a connection's queue of messages on their way through the
// verification pool.
type lane struct {
	mu sync.Mutex
	q  []laneItem
	// busy: a worker has the lane (queued or running it), or its reader
	// is delivering a message itself; whoever has it serves it alone.
	busy bool
	// What the connection's messages hold of the backlog (queued or
	// parked), for its fair share.
	msgs, bytes atomic.Int64
}

// flightKey names a message by its origin's (sender, seq).
type flightKey struct {
	sender protocol.NodeID
	seq    uint64
}

// parkedCopy is a copy waiting for another copy's verdict.
type parkedCopy struct {
	m    *Message
	size int64
}

type flightShard struct {
	mu sync.Mutex
	// m holds an entry for each message whose first copy is being
	// verified, with the copies waiting for it (nil: none yet).
	m map[flightKey][]parkedCopy
	_ [40]byte
}

// verifier is a socket's verification pool.
type verifier struct {
	s       *Socket
	workers int

	mu   sync.Mutex // guards runq
	runq []*lane
	wake chan struct{}

	msgs, bytes           atomic.Int64 // the backlog
	maxMsgs, maxBytes     int64
	shareMsgs, shareBytes int64 // one connection's share (0: no bound)

	roomMu  sync.Mutex
	room    chan struct{} // closed (and replaced) when room is freed for waiting readers
	waiters atomic.Int32

	flights [flightShards]flightShard
	keys    keyCache
}

func newVerifier(s *Socket) *verifier {
	cfg := &s.cfg
	v := &verifier{
		s:        s,
		workers:  cfg.verifyWorkers,
		wake:     make(chan struct{}, cfg.verifyWorkers),
		maxMsgs:  int64(cfg.verifyMsgs),
		maxBytes: int64(cfg.verifyBytes),
		room:     make(chan struct{}),
	}
	if cfg.fairShare < 100 {
		v.shareMsgs = max(v.maxMsgs*int64(cfg.fairShare)/100, 1)
		v.shareBytes = max(v.maxBytes*int64(cfg.fairShare)/100, 1)
	}
	for i := range v.flights {
		v.flights[i].m = make(map[flightKey][]parkedCopy)
	}
	v.keys.init(cfg.keyCache)
	return v
}

func (v *verifier) start() {
	for range v.workers {
		v.s.lc.Go(v.run)
	}
}

// backlogSize is what a message counts in the verify backlog: its envelope
// and its Message (the reader's slab holds the frames around it only as
// long as one of them is kept).
func backlogSize(m *Message) int64 { return int64(len(m.envelope)) + messageOverhead }

// reserve takes room in the backlog for a message of size bytes from c,
// waiting while there is none (this paces c's peer; the workers free room
// whatever else happens). A connection that holds nothing of the backlog
// always gets room, so any one message can go through. It reports false if
// the connection or the socket closed meanwhile.
func (v *verifier) reserve(c *Conn, size int64) bool {
	l := &c.lane
	waited := false
	for {
		n, b := v.msgs.Add(1), v.bytes.Add(size)
		cn, cb := l.msgs.Add(1), l.bytes.Add(size)
		if cn == 1 || (n <= v.maxMsgs && b <= v.maxBytes &&
			(v.shareMsgs == 0 || v.s.nconns.Load() <= 1 || (cn <= v.shareMsgs && cb <= v.shareBytes))) {
			return true
		}
		v.msgs.Add(-1)
		v.bytes.Add(-size)
		l.msgs.Add(-1)
		l.bytes.Add(-size)
		if !waited {
			waited = true
			v.s.ctr.verifyWaits.Add(1)
		}
		v.roomMu.Lock()
		room := v.room
		v.roomMu.Unlock()
		v.waiters.Add(1)
		// Look again after registering as a waiter: room freed before
		// that would not close this channel.
		if v.fits(l, size) {
			v.waiters.Add(-1)
			continue
		}
		select {
		case <-room:
		case <-c.closing:
		case <-v.s.lc.Closing():
		}
		v.waiters.Add(-1)
		if c.Err() != nil || v.s.isClosed() {
			return false
		}
	}
}

// fits reports whether a message of size bytes from lane l would fit now.
func (v *verifier) fits(l *lane, size int64) bool {
	cn, cb := l.msgs.Load(), l.bytes.Load()
	return cn == 0 || (v.msgs.Load()+1 <= v.maxMsgs && v.bytes.Load()+size <= v.maxBytes &&
		(v.shareMsgs == 0 || v.s.nconns.Load() <= 1 || (cn+1 <= v.shareMsgs && cb+size <= v.shareBytes)))
}

// release gives back what n messages of size bytes in all held of the
// backlog for lane l, and wakes waiting readers.
func (v *verifier) release(l *lane, n, size int64) {
	if n == 0 {
		return
	}
	v.msgs.Add(-n)
	v.bytes.Add(-size)
	l.msgs.Add(-n)
	l.bytes.Add(-size)
	if v.waiters.Load() > 0 {
		v.roomMu.Lock()
		close(v.room)
		v.room = make(chan struct{})
		v.roomMu.Unlock()
	}
}

// submit takes a message from c's reader into the pipeline: to be
// verified (verify), or, when c's lane is busy, to be delivered in its
// turn. It may wait for room in the backlog.
func (v *verifier) submit(c *Conn, m *Message, verify bool) {
	size := backlogSize(m)
	if !v.reserve(c, size) {
		return // closing: the message goes with the connection
	}
	it := laneItem{m: m, size: size, kind: itemPlain}
	if verify {
		parked, lead := v.join(m, size)
		if parked {
			return
		}
		it.kind, it.lead = itemVerify, lead
	}
	v.push(&c.lane, it)
}

// join looks for a copy of m being verified: if there is one (with room
// for another waiter), m waits for its verdict (parked). Otherwise m leads
// a new entry (lead) unless one exists already.
func (v *verifier) join(m *Message, size int64) (parked, lead bool) {
	key := flightKey{m.Sender, m.Seq}
	sh := &v.flights[shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	waiting, ok := sh.m[key]
	if !ok {
		sh.m[key] = nil
		return false, true
	}
	if len(waiting) >= maxParked {
		return false, false
	}
	sh.m[key] = append(waiting, parkedCopy{m, size})
	v.s.ctr.verifyParked.Add(1)
	return true, false
}

func shardOf(k flightKey) int { return int(k.sender[0]^byte(k.seq)) % flightShards }

// finish ends the in-flight entry of key and returns the copies that
// waited.
func (v *verifier) finish(key flightKey) []parkedCopy {
	sh := &v.flights[shardOf(key)]
	sh.mu.Lock()
	waiting := sh.m[key]
	delete(sh.m, key)
	sh.mu.Unlock()
	return waiting
}

// push appends an item to lane l and has a worker take the lane if none
// has it.
func (v *verifier) push(l *lane, it laneItem) {
	l.mu.Lock()
	l.q = append(l.q, it)
	schedule := !l.busy
	l.busy = true
	l.mu.Unlock()
	if schedule {
		v.schedule(l)
	}
}

// schedule queues a lane for the workers.
func (v *verifier) schedule(l *lane) {
	v.mu.Lock()
	v.runq = append(v.runq, l)
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// tryInline takes c's lane for its reader, to deliver a message that needs
// no verification on the spot, if nothing of c's is ahead of it in the
// lane. The reader then calls endInline.
func (v *verifier) tryInline(c *Conn) bool {
	l := &c.lane
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy {
		return false
	}
	l.busy = true
	return true
}

// endInline gives the lane back after tryInline.
func (v *verifier) endInline(c *Conn) {
	v.handBack(&c.lane)
}

// handBack releases a lane its holder has served: to the workers again if
// items arrived meanwhile.
func (v *verifier) handBack(l *lane) {
	l.mu.Lock()
	more := len(l.q) > 0
	l.busy = more
	l.mu.Unlock()
	if more {
		v.schedule(l)
	}
}

// taken is what a worker took of one lane.
type taken struct {
	l     *lane
	items []laneItem
}

// worker is one pool goroutine's reusable state.
type worker struct {
	bv     *voi.BatchVerifier
	lanes  []taken
	items  []laneItem // backing store of lanes[i].items
	checks []*laneItem
	keys   []*voi.ExpandedPublicKey
	inputs []protocol.SigningInput
}

func (v *verifier) run() {
	w := &worker{} // its batch verifier (27 KiB) is made at the first wake: a node that verifies nothing holds none
	closing := v.s.lc.Closing()
	for {
		select {
		case <-v.wake:
		case <-closing:
			return
		}
		if w.bv == nil {
			w.bv = newBatchVerifier()
		}
		for v.collect(w) {
			if v.s.isClosed() {
				return
			}
			v.verifyBatch(w)
			v.process(w)
		}
	}
}

// collect takes lanes from the run queue, and their items, until the batch
// holds verifyBatchMax signatures or the queue is empty.
func (v *verifier) collect(w *worker) bool {
	w.lanes, w.items = w.lanes[:0], w.items[:0]
	sigs := 0
	v.mu.Lock()
	for len(v.runq) > 0 && sigs < verifyBatchMax {
		l := v.runq[0]
		v.runq[0] = nil
		v.runq = v.runq[1:]
		start := len(w.items)
		l.mu.Lock()
		k := 0
		for ; k < len(l.q) && sigs < verifyBatchMax; k++ {
			if l.q[k].kind == itemVerify {
				sigs++
			}
		}
		w.items = append(w.items, l.q[:k]...)
		n := copy(l.q, l.q[k:])
		clear(l.q[n:])
		l.q = l.q[:n]
		l.mu.Unlock()
		w.lanes = append(w.lanes, taken{l: l, items: w.items[start:len(w.items):len(w.items)]})
	}
	if len(v.runq) == 0 {
		v.runq = v.runq[:0:0] // let the drained array go
	}
	v.mu.Unlock()
	// Slices of w.items were taken while it grew: point them at the final
	// array.
	off := 0
	for i := range w.lanes {
		n := len(w.lanes[i].items)
		w.lanes[i].items = w.items[off : off+n : off+n]
		off += n
	}
	return len(w.lanes) > 0
}

// verifyBatch checks the signature of every itemVerify the worker took,
// in one batch, and records the failures in their items' bad.
func (v *verifier) verifyBatch(w *worker) {
	w.checks, w.keys, w.inputs = w.checks[:0], w.keys[:0], w.inputs[:0]
	for i := range w.items {
		it := &w.items[i]
		if it.kind != itemVerify {
			continue
		}
		m := it.m
		if !m.signed {
			it.bad = errUnsigned
			continue
		}
		auth := m.envelope[len(m.envelope)-protocol.AuthSize:]
		key, err := v.keys.get(m.Sender, auth[:32])
		if err != nil {
			it.bad = err
			continue
		}
		// The signed items: after the array head, before the auth item's
		// two-byte head and its 96 bytes.
		items := m.envelope[1 : len(m.envelope)-protocol.AuthSize-2]
		w.inputs = append(w.inputs, protocol.EnvelopeSigningInput(items))
		w.keys = append(w.keys, key)
		w.checks = append(w.checks, it)
	}
	if len(w.checks) == 0 {
		return
	}
	v.s.ctr.verified.Add(uint64(len(w.checks)))
	v.s.ctr.verifyBatches.Add(1)
	sig := func(it *laneItem) []byte { return it.m.envelope[len(it.m.envelope)-64:] }
	if len(w.checks) == 1 {
		if !voi.VerifyExpanded(w.keys[0], w.inputs[0][:], sig(w.checks[0])) {
			w.checks[0].bad = errBadSig
		}
		return
	}
	w.bv.Reset()
	for i, it := range w.checks {
		w.bv.AddExpanded(w.keys[i], w.inputs[i][:], sig(it))
	}
	all, valid := w.bv.Verify(nil)
	if all {
		return
	}
	for i, it := range w.checks {
		if !valid[i] {
			it.bad = errBadSig
		}
	}
}

// process runs the rest of the pipeline for what the worker took, lane by
// lane in order, then hands the lanes back.
func (v *verifier) process(w *worker) {
	for _, t := range w.lanes {
		var n, size int64
		for i := range t.items {
			it := &t.items[i]
			n++
			size += it.size
			v.handle(it)
			*it = laneItem{}
		}
		v.release(t.l, n, size)
		v.handBack(t.l)
	}
	clear(w.items)
}

// handle finishes one item: delivers it, or drops a bad one; and releases
// the copies that waited for it.
func (v *verifier) handle(it *laneItem) {
	m := it.m
	switch it.kind {
	case itemPlain, itemProven:
		v.s.deliver(m)
		return
	}
	bad := it.bad
	// The layer may change the message (chord rewrites its Sender), and
	// the user has it once it is delivered: take what the waiting copies
	// are judged by first.
	key, env := flightKey{m.Sender, m.Seq}, m.envelope
	if bad == nil {
		m.Proven = true
		// Deliver first: the layer records the message as seen, so copies
		// arriving from now on are shed by its prefilter.
		v.s.deliver(m)
	} else {
		v.s.badSignature(m, bad)
	}
	if !it.lead {
		return
	}
	for _, p := range v.finish(key) {
		c := p.m.Conn
		if bad == nil && bytes.Equal(p.m.envelope, env) {
			// The same bytes: proven by this copy's signature. Back to its
			// own lane, so that its connection's Handle calls stay serial.
			p.m.Proven = true
			v.push(&c.lane, laneItem{m: p.m, size: p.size, kind: itemProven})
			continue
		}
		// Its own verdict: it leads a new entry (the first of them does;
		// the same bytes after it wait on it again).
		parked, lead := v.join(p.m, p.size)
		if !parked {
			v.push(&c.lane, laneItem{m: p.m, size: p.size, kind: itemVerify, lead: lead})
		}
	}
}

// badSignature drops a message whose signature failed, counts a strike
// against its connection, and closes the connection at the strike limit.
func (s *Socket) badSignature(m *Message, reason error) {
	s.ctr.badSignatures.Add(1)
	c := m.Conn
	s.noteDropErr("bad signature; message dropped", c, reason)
	if f := s.layer.Dropped; f != nil {
		f(m, reason)
	}
	if c == nil {
		return
	}
	if n := c.strikes.Add(1); n == int32(s.cfg.strikes) {
		s.ctr.signatureCloses.Add(1)
		why := fmt.Sprintf("%d messages with bad signatures", n)
		c.log.Warn("closing connection: "+why, "err", reason)
		c.Abort(fmt.Errorf("%w: %w: %s", ErrClosed, ErrBadSignature, why))
		if s.cfg.banFor > 0 {
			s.Ban(c.peer.ID, s.cfg.banFor, why)
		}
	}
}

// keyCache keeps the expanded public keys of recent senders (each about
// 1.5 KiB), so that verifying their next messages skips both the key's
// hash check and its decompression. Safe for concurrent use.
type keyCache struct {
	mu  sync.Mutex
	max int
	m   map[protocol.NodeID]*cachedKey
}

type cachedKey struct {
	pub [32]byte
	exp *voi.ExpandedPublicKey
}

func (k *keyCache) init(n int) {
	k.max = n
	k.m = make(map[protocol.NodeID]*cachedKey) // grown as senders come: a node that hears few keeps it small
}

// get returns sender's expanded key if pub is its key (it hashes to the
// sender's ID), or an error matching ErrBadSignature.
func (k *keyCache) get(sender protocol.NodeID, pub []byte) (*voi.ExpandedPublicKey, error) {
	k.mu.Lock()
	e, ok := k.m[sender]
	k.mu.Unlock()
	if ok && bytes.Equal(e.pub[:], pub) {
		return e.exp, nil
	}
	if !protocol.KeyMatchesID(pub, sender) {
		return nil, errKeyMismatch
	}
	exp, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil, errBadSig
	}
	e = &cachedKey{exp: exp}
	copy(e.pub[:], pub)
	k.mu.Lock()
	if len(k.m) >= k.max {
		for id := range k.m { // any one: map order is random
			delete(k.m, id)
			break
		}
	}
	k.m[sender] = e
	k.mu.Unlock()
	return exp, nil
}

// verifyBacklog reports the backlog now: messages and bytes.
func (v *verifier) backlog() (int64, int64) { return v.msgs.Load(), v.bytes.Load() }

func newBatchVerifier() *voi.BatchVerifier { return voi.NewBatchVerifierWithCapacity(verifyBatchMax) }
