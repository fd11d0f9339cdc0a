package mesh

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// recordBudget is what one neighbour may make this node spend on the peer
// records it sends (WithPeerListBudget, WithRecordBudget): a token bucket
// of peer lists, one of record verifications, and the run of records it
// sent over budget, by which an abuser is told. It lives in the link;
// only the goroutine that runs the mesh layer's Handle for the link's
// messages touches it (its reader, or a verify worker in the link's turn:
// base runs one at a time), but for asked, which sendPeers sets from any
// goroutine.
type recordBudget struct {
	lists, recs tokens
	// asked: this node asked the neighbour for its peer list and has not
	// had one since; the next list answers it, and is not charged.
	asked atomic.Bool
	// overSince and lastOver are the start and the latest drop of the
	// current run of records over budget (Unix ns; 0: none yet). A second
	// without a drop ends the run.
	overSince, lastOver int64
	// oneByOne: the neighbour sent a record whose signature failed, so its
	// records are checked one at a time from now on: a batch with a bad
	// signature costs more than checking each on its own.
	oneByOne bool
}

// abuseQuiet is how long a neighbour must send no record over its budget
// for its run of abuse to end.
const abuseQuiet = int64(time.Second)

// tokens is a token bucket, full when first used.
type tokens struct {
	rate, depth float64 // tokens per second, and at most (0: not set up)
	n           float64
	last        int64 // when n was last topped up, Unix ns
}

// take tops the bucket up to now and takes up to want whole tokens, and
// returns how many it took.
func (t *tokens) take(now int64, want int, rate, depth float64) int {
	if t.depth == 0 {
		t.rate, t.depth, t.n, t.last = rate, depth, depth, now
	}
	if dt := now - t.last; dt > 0 {
		t.n = min(t.depth, t.n+float64(dt)/1e9*t.rate)
		t.last = now
	}
	got := min(want, int(t.n))
	t.n -= float64(got)
	return got
}

// takeList charges a peer list and reports whether the neighbour may send
// it: it answers this node's request, or the list budget has a token.
func (b *recordBudget) takeList(now int64, cfg *config) bool {
	if b.asked.CompareAndSwap(true, false) {
		return true
	}
	n := float64(cfg.listBudget)
	return b.lists.take(now, 1, n/cfg.listEvery.Seconds(), n) == 1
}

// takeRecords charges up to n records to verify, and returns how many the
// record budget allows.
func (b *recordBudget) takeRecords(now int64, n int, cfg *config) int {
	return b.recs.take(now, n, float64(cfg.recordRate), float64(cfg.recordBurst))
}

// over notes records over budget at now, and reports whether the
// neighbour has been sending them, without a quiet second, for at least
// abuseFor (0: never).
func (b *recordBudget) over(now int64, abuseFor time.Duration) bool {
	if b.overSince == 0 || now-b.lastOver > abuseQuiet {
		b.overSince = now
	}
	b.lastOver = now
	return abuseFor > 0 && now-b.overSince >= int64(abuseFor)
}

// Reasons of the budget trace events.
var (
	errListBudget   = errors.New("mesh: the neighbour is over its peer list budget")
	errRecordBudget = errors.New("mesh: the neighbour is over its record budget")
)

// verifyRecords checks the signatures of recs, newer than those held, that
// l's neighbour sent: in one batch, unless it sent a bad one before (then
// one by one). It returns each record's verdict.
func (s *Socket) verifyRecords(l *link, recs []*protocol.Record) []error {
	s.ctr.recordsVerified.Add(uint64(len(recs)))
	var errs []error
	if l.rb.oneByOne || len(recs) == 1 {
		errs = make([]error, len(recs))
		for i, r := range recs {
			errs[i] = r.Verify()
		}
	} else {
		errs = protocol.VerifyRecords(recs)
	}
	for _, err := range errs {
		if err != nil {
			l.rb.oneByOne = true
			break
		}
	}
	return errs
}

// recordsOverBudget drops records that l's neighbour sent over its record
// budget, before their signatures are checked: counted, traced and logged
// (at most once a second). If they came in the neighbour's own message
// (not one it relays for another node) and it has been over its budget
// for the abuse bound, its link is closed and its identity banned.
func (s *Socket) recordsOverBudget(l *link, m *base.Message, dropped []*protocol.Record, now int64) {
	s.ctr.recordsOver.Add(uint64(len(dropped)))
	for _, r := range dropped {
		s.traceRecord(TraceRecordOverBudget, m, r.ID, errRecordBudget)
	}
	s.noteBudgetDrop("peer records over the neighbour's record budget dropped", m.Conn.ID())
	if m.Sender != m.Conn.ID() || !l.rb.over(now, s.cfg.recordAbuse) {
		return
	}
	reason := fmt.Errorf("%w: neighbour over its record budget for %v", ErrClosed, s.cfg.recordAbuse)
	s.closeAbusive(l, m, reason, "peer records over budget")
}

// peerListOverBudget drops a peer list that l's neighbour sent over its
// peer list budget, before it is decoded: counted, traced and logged (at
// most once a second).
func (s *Socket) peerListOverBudget(m *base.Message) {
	s.ctr.peerListsOver.Add(1)
	s.traceRecord(TracePeerListOverBudget, m, m.Sender, errListBudget)
	s.noteBudgetDrop("peer list over the neighbour's peer list budget dropped", m.Conn.ID())
}

// noteBudgetDrop logs a drop over a neighbour's budget, at most once a
// second for the whole node (the counters stay exact).
func (s *Socket) noteBudgetDrop(what string, peer protocol.NodeID) {
	now := time.Now().UnixNano()
	last := s.lastBudgetLog.Load()
	if now-last < int64(time.Second) || !s.lastBudgetLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(what+" (further drops this second are only counted)", "peer", peer.Short())
}
