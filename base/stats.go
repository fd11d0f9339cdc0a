package base

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a socket's counters since it was created.
type Stats struct {
	// Connections is the number of live connections.
	Connections int
	// Connects and Disconnects count connections established and lost.
	Connects, Disconnects uint64
	// FramesIn and FramesOut count frames; BytesIn and BytesOut count
	// bytes on the wire (headers included).
	FramesIn, FramesOut, BytesIn, BytesOut uint64
	// BodyBytesIn and BodyBytesOut count frame bodies before compression
	// (out) and after decompression (in).
	BodyBytesIn, BodyBytesOut uint64
	// Delivered counts messages that reached the receive queue.
	Delivered uint64
	// QueueDrops counts messages dropped because a send queue was full
	// (Drop policy, or a relay that must not block).
	QueueDrops uint64
	// ControlDrops counts control messages dropped because the control
	// lane was full.
	ControlDrops uint64
	// RecvDrops counts messages dropped because the receive queue was full.
	RecvDrops uint64
	// DispatchDrops counts messages dropped because the dispatch queue
	// (messages waiting for user handlers) was full.
	DispatchDrops uint64
	// Malformed counts messages dropped without closing their connection
	// because no user may see them (no packets, say).
	Malformed uint64
	// ShareDrops counts messages dropped because the traffic of the
	// connection they came on already held its fair share of a queue
	// (WithFairShare): of the dispatch queue (also in DispatchDrops) or,
	// relayed, of another connection's send queue (also in QueueDrops).
	ShareDrops uint64
	// HopDrops counts messages dropped on arrival because their hop byte
	// was not below their hop limit (relayed past it, or forged).
	HopDrops uint64
	// EventDrops counts events dropped because the event queue was full.
	EventDrops uint64
	// DecodeErrors counts malformed frames or envelopes (each closes its
	// connection).
	DecodeErrors uint64
	// DecompressErrors counts frames that failed to decompress (each is
	// asked for again, uncompressed).
	DecompressErrors uint64
	// ResendsSent counts frames this node sent again uncompressed;
	// ResendMisses counts resend requests for frames no longer retained.
	ResendsSent, ResendMisses uint64
	// HandlerPanics counts handlers that panicked.
	HandlerPanics uint64
	// HandshakeFailures counts failed handshakes, of which
	// ProtocolMismatches were with peers of another protocol,
	// IdentityFailures with peers that did not prove their node ID, or
	// that this node could not prove its own to (ErrIdentity), and
	// AuthFailures refusals by a network key, a ban or the authorisation
	// hook, on either side (ErrNotAuthorized).
	HandshakeFailures, ProtocolMismatches uint64
	IdentityFailures, AuthFailures        uint64
	// Bans is a gauge: the node IDs banned now (Socket.Ban; WithMaxBans
	// bounds it), some perhaps expired and not yet swept. BansEvicted
	// counts bans dropped before their end to make room.
	Bans        int
	BansEvicted uint64
	// SourcePendingRefusals counts connections refused at once because
	// their source already had WithMaxPendingPerSource handshakes pending
	// (counted in HandshakeFailures too).
	SourcePendingRefusals uint64
	// HandshakesDisplaced counts handshakes cut short, before the peer's
	// Hello, to make room for a newcomer from a less represented source
	// when every pending-handshake slot was taken (counted in
	// HandshakeFailures too).
	HandshakesDisplaced uint64
	// SourceConnRefusals counts handshakes refused because their source
	// already had WithMaxConnsPerSource connections (counted in
	// HandshakeFailures too).
	SourceConnRefusals uint64
	// ConnsDisplaced counts live connections closed to make room for a
	// newcomer from a less represented source when the node was full
	// (counted in Disconnects too).
	ConnsDisplaced uint64
	// AcceptErrors counts failed Accept calls.
	AcceptErrors uint64
	// Pings counts keepalive pings sent; Pongs counts pings answered.
	Pings, Pongs uint64
	// RetainedBytes is a gauge, not a count: the bytes of the frames the
	// live connections keep now for resends (WithResendBytes bounds each
	// connection's share).
	RetainedBytes uint64 `metric:"gauge"`
	// RecvQueueBytes is a gauge: the bytes the messages waiting for Recv
	// keep alive now (WithRecvQueueBytes bounds it).
	RecvQueueBytes uint64 `metric:"gauge"`
	// Verified counts signatures checked, in VerifyBatches batches (a
	// batch of one included).
	Verified, VerifyBatches uint64
	// VerifyParked counts copies of a message that waited for the verdict
	// on another copy instead of being verified themselves.
	VerifyParked uint64
	// BadSignatures counts messages dropped because they had to be signed
	// and were not, or their signature or key did not check out
	// (ErrBadSignature); SignatureCloses counts connections closed for
	// bringing WithSignatureStrikes of them.
	BadSignatures, SignatureCloses uint64
	// VerifyWaits counts the times a connection's reader waited for room
	// in the verify backlog (WithVerifyBacklog), pacing its peer.
	VerifyWaits uint64
	// VerifyBacklog and VerifyBacklogBytes are gauges: the messages
	// waiting for verification now, and their bytes.
	VerifyBacklog, VerifyBacklogBytes uint64 `metric:"gauge"`
}

// CompressionRatio is wire body bytes sent over body bytes before
// compression (1 when nothing was compressed, 0 when nothing was sent).
func (st Stats) CompressionRatio() float64 {
	if st.BodyBytesOut == 0 {
		return 0
	}
	wire := st.BytesOut - 5*st.FramesOut
	return float64(wire) / float64(st.BodyBytesOut)
}

// counters are the socket-wide counters; per-connection ones live in
// connCounters and are summed on demand, so the hot path touches no shared
// cache line.
type counters struct {
	connects, disconnects                 atomic.Uint64
	delivered, recvDrops, eventDrops      atomic.Uint64
	dispatchDrops, malformed, hopDrops    atomic.Uint64
	shareDrops                            atomic.Uint64
	handlerPanics                         atomic.Uint64
	handshakeFailures, protocolMismatches atomic.Uint64
	identityFailures, authFailures        atomic.Uint64
	acceptErrors                          atomic.Uint64
	sourcePendingRefusals                 atomic.Uint64
	handshakesDisplaced                   atomic.Uint64
	sourceConnRefusals                    atomic.Uint64
	connsDisplaced                        atomic.Uint64
	verified, verifyBatches, verifyParked atomic.Uint64
	badSignatures, signatureCloses        atomic.Uint64
	verifyWaits                           atomic.Uint64

	// totals of retired connections (guarded by Socket.mu)
	framesIn, framesOut, bytesIn, bytesOut, bodyIn, bodyOut  uint64
	queueDrops, controlDrops, decodeErrors, decompressErrors uint64
	resendsSent, resendMisses, pings, pongs                  uint64
}

func (r *counters) add(c *connCounters) {
	r.framesOut += c.framesOut.Load()
	r.bytesOut += c.bytesOut.Load()
	r.bodyOut += c.bodyBytesOut.Load()
	r.bytesIn += c.bytesIn.Load()
	r.bodyIn += c.bodyBytesIn.Load()
	r.queueDrops += c.queueDrops.Load()
	r.controlDrops += c.controlDrops.Load()
	r.decodeErrors += c.decodeErrors.Load()
	r.decompressErrors += c.decompressErrors.Load()
	r.resendsSent += c.resendsSent.Load()
	r.resendMisses += c.resendMisses.Load()
	r.pings += c.pings.Load()
	r.pongs += c.pongs.Load()
}

// Stats returns a snapshot of the socket's counters.
func (s *Socket) Stats() Stats {
	s.mu.Lock()
	sum := counters{}
	r := &s.retired
	sum.framesIn, sum.framesOut, sum.bytesIn, sum.bytesOut = r.framesIn, r.framesOut, r.bytesIn, r.bytesOut
	sum.bodyIn, sum.bodyOut = r.bodyIn, r.bodyOut
	sum.queueDrops, sum.controlDrops, sum.decodeErrors, sum.decompressErrors = r.queueDrops, r.controlDrops, r.decodeErrors, r.decompressErrors
	sum.resendsSent, sum.resendMisses, sum.pings, sum.pongs = r.resendsSent, r.resendMisses, r.pings, r.pongs
	var retained int64
	for c := range s.all {
		sum.add(&c.stats)
		sum.framesIn += c.framesIn.Load()
		retained += c.stats.retainedBytes.Load()
	}
	sum.framesIn += s.retiredFramesIn
	live := 0
	for _, c := range s.conns {
		if c.Err() == nil {
			live++
		}
	}
	s.mu.Unlock()
	st := Stats{
		Connections:        live,
		Connects:           s.ctr.connects.Load(),
		Disconnects:        s.ctr.disconnects.Load(),
		FramesIn:           sum.framesIn,
		FramesOut:          sum.framesOut,
		BytesIn:            sum.bytesIn,
		BytesOut:           sum.bytesOut,
		BodyBytesIn:        sum.bodyIn,
		BodyBytesOut:       sum.bodyOut,
		Delivered:          s.ctr.delivered.Load(),
		QueueDrops:         sum.queueDrops,
		ControlDrops:       sum.controlDrops,
		RecvDrops:          s.ctr.recvDrops.Load(),
		DispatchDrops:      s.ctr.dispatchDrops.Load(),
		Malformed:          s.ctr.malformed.Load(),
		HopDrops:           s.ctr.hopDrops.Load(),
		ShareDrops:         s.ctr.shareDrops.Load(),
		EventDrops:         s.ctr.eventDrops.Load(),
		DecodeErrors:       sum.decodeErrors,
		DecompressErrors:   sum.decompressErrors,
		ResendsSent:        sum.resendsSent,
		ResendMisses:       sum.resendMisses,
		HandlerPanics:      s.ctr.handlerPanics.Load(),
		HandshakeFailures:  s.ctr.handshakeFailures.Load(),
		ProtocolMismatches: s.ctr.protocolMismatches.Load(),
		AcceptErrors:       s.ctr.acceptErrors.Load(),
		Pings:              sum.pings,
		Pongs:              sum.pongs,
		RetainedBytes:      uint64(max(retained, 0)),
		RecvQueueBytes:     uint64(max(s.recvBuf.used.Load(), 0)),
	}
	st.SourcePendingRefusals = s.ctr.sourcePendingRefusals.Load()
	st.HandshakesDisplaced = s.ctr.handshakesDisplaced.Load()
	st.SourceConnRefusals = s.ctr.sourceConnRefusals.Load()
	st.ConnsDisplaced = s.ctr.connsDisplaced.Load()
	st.IdentityFailures = s.ctr.identityFailures.Load()
	st.AuthFailures = s.ctr.authFailures.Load()
	st.Bans, st.BansEvicted = s.bans.counts()
	st.Verified = s.ctr.verified.Load()
	st.VerifyBatches = s.ctr.verifyBatches.Load()
	st.VerifyParked = s.ctr.verifyParked.Load()
	st.BadSignatures = s.ctr.badSignatures.Load()
	st.SignatureCloses = s.ctr.signatureCloses.Load()
	st.VerifyWaits = s.ctr.verifyWaits.Load()
	if s.ver != nil {
		n, b := s.ver.backlog()
		st.VerifyBacklog, st.VerifyBacklogBytes = uint64(max(n, 0)), uint64(max(b, 0))
	}
	return st
}

// Stats returns this connection's counters and gauges. Connections,
// Connects and the socket-wide counters are zero.
func (c *Conn) Stats() Stats {
	var sum counters
	sum.add(&c.stats)
	return Stats{
		FramesIn: c.framesIn.Load(), FramesOut: sum.framesOut,
		BytesIn: sum.bytesIn, BytesOut: sum.bytesOut,
		BodyBytesIn: sum.bodyIn, BodyBytesOut: sum.bodyOut,
		QueueDrops: sum.queueDrops, ControlDrops: sum.controlDrops,
		DecodeErrors: sum.decodeErrors, DecompressErrors: sum.decompressErrors,
		ResendsSent: sum.resendsSent, ResendMisses: sum.resendMisses,
		Pings: sum.pings, Pongs: sum.pongs,
		RetainedBytes: uint64(max(c.stats.retainedBytes.Load(), 0)),
	}
}

// Status says plainly whether anything is wrong.
type Status struct {
	// Healthy is false when recent problems were recorded.
	Healthy bool
	// Connections is the number of live connections.
	Connections int
	// Problems are the recent problems, newest last (bounded in number and
	// age, unlike py2p's ever-growing list of tracebacks).
	Problems []Problem
}

// Problem is one thing that went wrong.
type Problem struct {
	At    time.Time
	What  string
	Err   error
	Count int // how many times it happened in a row
}

// String renders the status in a line or a few.
func (st Status) String() string {
	if st.Healthy {
		return fmt.Sprintf("ok: %d connections", st.Connections)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d connections, %d recent problems:", st.Connections, len(st.Problems))
	for _, p := range st.Problems {
		fmt.Fprintf(&b, "\n  %s %s", p.At.Format(time.TimeOnly), p.What)
		if p.Err != nil {
			fmt.Fprintf(&b, ": %v", p.Err)
		}
		if p.Count > 1 {
			fmt.Fprintf(&b, " (x%d)", p.Count)
		}
	}
	return b.String()
}

// Status reports the socket's recent problems.
func (s *Socket) Status() Status {
	problems := s.status.recent()
	return Status{Healthy: len(problems) == 0, Connections: s.Stats().Connections, Problems: problems}
}

// statusLog keeps the last few problems younger than maxAge.
type statusLog struct {
	mu     sync.Mutex
	items  []Problem
	max    int
	maxAge time.Duration
}

func newStatusLog(n int, maxAge time.Duration) *statusLog {
	return &statusLog{max: n, maxAge: maxAge}
}

func (l *statusLog) add(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if n := len(l.items); n > 0 && l.items[n-1].What == what {
		l.items[n-1].At = now
		l.items[n-1].Err = err
		l.items[n-1].Count++
		return
	}
	if len(l.items) == l.max {
		copy(l.items, l.items[1:])
		l.items = l.items[:l.max-1]
	}
	l.items = append(l.items, Problem{At: now, What: what, Err: err, Count: 1})
}

func (l *statusLog) recent() []Problem {
	l.mu.Lock()
	defer l.mu.Unlock()
	cutoff := time.Now().Add(-l.maxAge)
	var out []Problem
	for _, p := range l.items {
		if p.At.After(cutoff) {
			out = append(out, p)
		}
	}
	return out
}

func (s *Socket) problem(what string, err error) { s.status.add(what, err) }

// noteDrop records a drop in the status log and logs it, at most once a
// second per socket so a flood cannot flood the log too; the counters hold
// the exact figures.
func (s *Socket) noteDrop(what string, c *Conn) { s.noteDropErr(what, c, nil) }

// noteDropErr is noteDrop with the error that says what was dropped or
// refused (nil if none), kept in the status and logged.
func (s *Socket) noteDropErr(what string, c *Conn, err error) {
	s.status.add(what, err)
	now := time.Now().UnixNano()
	last := s.lastDropLog.Load()
	if now-last < int64(time.Second) || !s.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	log := s.log
	if c != nil {
		log = c.log
	}
	if err != nil {
		log.Warn(what+" (further drops this second are only counted)", "err", err)
	} else {
		log.Warn(what + " (further drops this second are only counted)")
	}
}
