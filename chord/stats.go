package chord

import (
	"sync/atomic"

	"github.com/meshsock/meshsock/base"
)

// HopBuckets is the size of Stats.Hops: buckets 0..HopBuckets-2 count that
// many hops exactly, the last bucket counts HopBuckets-1 hops or more.
const HopBuckets = 33

type counters struct {
	lookups, requests, sendTos       atomic.Uint64
	delivered, forwarded, responses  atomic.Uint64
	bounces                          atomic.Uint64
	timeouts, late, noRoute          atomic.Uint64
	hopLimit, malformed, badAnswers  atomic.Uint64
	pendingLimit                     atomic.Uint64
	stabilizations                   atomic.Uint64
	fingerLookups, fingerFailures    atomic.Uint64
	joins, evictions, leaves         atomic.Uint64
	replyDials, replyFallbacks       atomic.Uint64
	replyFailures, signedAnswers     atomic.Uint64
	hops                             [HopBuckets]atomic.Uint64
	hopsSum, hopsCount, hopsMaxValue atomic.Uint64
}

func (c *counters) recordHops(h int) {
	c.hops[min(max(h, 0), HopBuckets-1)].Add(1)
	c.hopsSum.Add(uint64(max(h, 0)))
	c.hopsCount.Add(1)
	for {
		old := c.hopsMaxValue.Load()
		if uint64(h) <= old || c.hopsMaxValue.CompareAndSwap(old, uint64(h)) {
			return
		}
	}
}

// Stats is a snapshot of a chord node's counters; the connection-level
// ones are in the embedded base.Stats.
type Stats struct {
	base.Stats
	// Lookups, Requests and SendTos count the API calls made on this node.
	Lookups, Requests, SendTos uint64
	// Delivered counts routed messages (SendTo, Request, Bounce) handed to
	// this node's handlers as their key's owner.
	Delivered uint64
	// Forwarded counts routed messages (and responses travelling the ring)
	// this node relayed one hop further.
	Forwarded uint64
	// Responses counts answers this node sent (lookups and requests);
	// SignedAnswers counts those it signed because they went along the
	// ring, not over its own link to the requester (docs/chord.md §4).
	Responses, SignedAnswers uint64
	// Bounces counts requests this node bounced.
	Bounces uint64
	// Timeouts counts requests and lookups that got no answer in time.
	Timeouts uint64
	// LateAnswers counts answers dropped because their call had ended
	// (timed out, answered already) or never existed.
	LateAnswers uint64
	// NoRoute counts messages dropped and calls failed for want of a live
	// link towards their key; HopLimitDrops those that ran out of hops.
	NoRoute, HopLimitDrops uint64
	// Malformed counts chord messages dropped because they did not decode.
	Malformed uint64
	// BadAnswers counts answers to this node's pending lookups and
	// requests that were dropped, the call still waiting: not authenticated
	// by the node they name as owner (unsigned and not from its own link,
	// signed with another key, a bad signature — a signature made for
	// another request ID, requester, key or payload is bad too), or not
	// the kind of answer, or not for the key, the call waits for.
	BadAnswers uint64
	// Pending is the number of requests and lookups in flight;
	// PendingLimitHits counts calls refused with ErrTooManyRequests.
	Pending          int
	PendingLimitHits uint64
	// Hops is the histogram of hop counts of this node's completed lookups
	// and requests (HopBuckets); HopsMean and HopsMax summarise it.
	Hops     [HopBuckets]uint64
	HopsMean float64
	HopsMax  int
	// Stabilizations counts stabilize rounds; FingerLookups counts
	// fix-fingers lookups, of which FingerFailures failed.
	Stabilizations, FingerLookups, FingerFailures uint64
	// Joins counts successful Join calls; Leaves counts hand-overs
	// (Leave messages) received from neighbours closing gracefully.
	Joins, Leaves uint64
	// Links is the number of open links; Evictions counts links closed
	// because there were more than WithMaxLinks.
	Links     int
	Evictions uint64
	// ReplyDials counts answers for which this node dialled the requester;
	// ReplyFallbacks those sent along the ring instead; ReplyFailures those
	// that could not be delivered at all.
	ReplyDials, ReplyFallbacks, ReplyFailures uint64
	// Successors is the length of the successor list; Fingers the number
	// of distinct nodes in the finger table; HasPredecessor whether the
	// node knows its predecessor.
	Successors, Fingers int
	HasPredecessor      bool
}

// Stats returns a snapshot of the node's counters.
func (s *Socket) Stats() Stats {
	v := s.view.Load()
	st := Stats{
		Stats:            s.base.Stats(),
		Lookups:          s.ctr.lookups.Load(),
		Requests:         s.ctr.requests.Load(),
		SendTos:          s.ctr.sendTos.Load(),
		Delivered:        s.ctr.delivered.Load(),
		Forwarded:        s.ctr.forwarded.Load(),
		Responses:        s.ctr.responses.Load(),
		SignedAnswers:    s.ctr.signedAnswers.Load(),
		Bounces:          s.ctr.bounces.Load(),
		Timeouts:         s.ctr.timeouts.Load(),
		LateAnswers:      s.ctr.late.Load(),
		NoRoute:          s.ctr.noRoute.Load(),
		HopLimitDrops:    s.ctr.hopLimit.Load(),
		Malformed:        s.ctr.malformed.Load(),
		BadAnswers:       s.ctr.badAnswers.Load(),
		Pending:          s.calls.pending(),
		PendingLimitHits: s.ctr.pendingLimit.Load(),
		HopsMax:          int(s.ctr.hopsMaxValue.Load()),
		Stabilizations:   s.ctr.stabilizations.Load(),
		FingerLookups:    s.ctr.fingerLookups.Load(),
		FingerFailures:   s.ctr.fingerFailures.Load(),
		Joins:            s.ctr.joins.Load(),
		Leaves:           s.ctr.leaves.Load(),
		Links:            s.links.len(),
		Evictions:        s.ctr.evictions.Load(),
		ReplyDials:       s.ctr.replyDials.Load(),
		ReplyFallbacks:   s.ctr.replyFallbacks.Load(),
		ReplyFailures:    s.ctr.replyFailures.Load(),
		Successors:       len(v.succs),
		Fingers:          v.fingers,
		HasPredecessor:   !v.pred.ID.IsZero(),
	}
	for i := range st.Hops {
		st.Hops[i] = s.ctr.hops[i].Load()
	}
	if n := s.ctr.hopsCount.Load(); n > 0 {
		st.HopsMean = float64(s.ctr.hopsSum.Load()) / float64(n)
	}
	return st
}
