package mesh

import (
	"sync/atomic"

	"github.com/meshsock/meshsock/base"
)

type counters struct {
	originated, relayed, delivered    atomic.Uint64
	duplicates, tooOld, hopLimitDrops atomic.Uint64
	relayDrops, deliverDrops          atomic.Uint64
	closedLinkDrops                   atomic.Uint64
	rerelayed                         atomic.Uint64
	slowDrops, slowClosed             atomic.Uint64
	budgetWaits, abusiveClosed        atomic.Uint64
	whispers, routedWhispers          atomic.Uint64
	meshRoutedWhispers                atomic.Uint64
	routeRequests, routeFailures      atomic.Uint64
	dials, dialFailures               atomic.Uint64
	dialsDeferred, peerListRequests   atomic.Uint64
	probes, probeFailures, probeSwaps atomic.Uint64
	recordsAccepted, recordsStale     atomic.Uint64
	recordsInvalid, recordsRefused    atomic.Uint64
	peerListsRefused                  atomic.Uint64
	recordsVerified, recordsOver      atomic.Uint64
	peerListsOver                     atomic.Uint64
	lateAnswers, refusedAnswers       atomic.Uint64
	requestsSent, answersSent         atomic.Uint64
	requestTimeouts, badRequests      atomic.Uint64
	callsServed, callErrors           atomic.Uint64
	callPanics, callsBusy             atomic.Uint64
	unknownTags                       atomic.Uint64
	routedSent, routedRelayed         atomic.Uint64
	routedDelivered, routedNoRoute    atomic.Uint64
	routedFallbacks, routedDuplicates atomic.Uint64
	routedDrops, routedMalformed      atomic.Uint64
	routedDials, routesForgotten      atomic.Uint64
}

// Stats is a snapshot of a mesh node's counters; the connection-level
// counters are in the embedded base.Stats.
type Stats struct {
	base.Stats
	// RepairStats counts broadcast trees and loss repair.
	RepairStats
	// Originated counts broadcasts this node sent.
	Originated uint64
	// Relayed counts copies of broadcasts forwarded to neighbours.
	Relayed uint64
	// BroadcastsDelivered counts new broadcasts that reached the user: a
	// handler claimed them or they were queued for Recv
	// (base.Stats.Delivered counts every message queued for Recv).
	BroadcastsDelivered uint64
	// Duplicates counts broadcasts dropped because they were seen before.
	Duplicates uint64
	// TooOld counts broadcasts dropped as older than the age window (or
	// from too far in the future).
	TooOld uint64
	// HopLimitDrops counts broadcasts dropped past their hop limit.
	HopLimitDrops uint64
	// RelayDrops counts relayed copies dropped because a neighbour's send
	// queue was full.
	RelayDrops uint64
	// ClosedLinkDrops counts copies of broadcasts (relayed or this node's)
	// not queued for a neighbour because its link was closing and no newer
	// link to it had replaced it yet: two nodes that dialled each other at
	// once keep one of the two connections, and the other closes. Like
	// relay drops, they are announced to the neighbour, over its next link.
	ClosedLinkDrops uint64
	// DeliverDrops counts new broadcasts dropped before the user saw them
	// because the dispatch or receive queue was full.
	DeliverDrops uint64
	// BudgetWaits counts new broadcasts held back because the neighbour
	// they came from was over its flood budget (WithFloodBudget): that
	// neighbour was slowed down. AbusiveClosed counts links closed for
	// staying over it, or over the record budget (WithRecordBudget).
	BudgetWaits, AbusiveClosed uint64
	// SlowDrops counts copies of this node's own broadcasts not queued for
	// a neighbour marked slow (WithSlowNeighbour); SlowClosed counts links
	// closed because their neighbour stayed slow.
	SlowDrops, SlowClosed uint64
	// Rerelayed counts broadcasts relayed again because a copy arrived
	// with more hops left than the one relayed first.
	Rerelayed uint64
	// SeenCacheSize is the number of origins the seen-state remembers
	// (expired ones included until they are swept).
	SeenCacheSize int
	// SeenRefused counts broadcasts from origins not yet remembered that
	// were dropped because the seen-state had no room for them (see
	// WithSeenCache): a sign of a flood of made-up origins, or of a bound
	// too small for the mesh.
	SeenRefused uint64
	// SeenBehind counts broadcasts dropped because their sequence number
	// was below their origin's window (WithSeenWindow): replays, or an
	// origin faster than the window allows for.
	SeenBehind uint64
	// Whispers counts whispers sent (replies, requests and answers
	// included), of which RoutedWhispers were to a node that was not a
	// neighbour, of which MeshRoutedWhispers were flooded through the mesh
	// (a forward or app broadcast), since no next hop was known; the
	// others went as routed messages (RoutedSent) or over a link the
	// target dialled back.
	Whispers, RoutedWhispers, MeshRoutedWhispers uint64
	// RouteRequests counts route requests sent; RouteFailures those that
	// found no route.
	RouteRequests, RouteFailures uint64
	// PendingRequests is the number of route requests in flight.
	PendingRequests int
	// Dials and DialFailures count connections attempted by peer
	// maintenance (probes not included).
	Dials, DialFailures uint64
	// DialsInFlight is the number of maintenance dials in progress
	// (WithMaxDials); DialsDeferred counts the times known members were
	// due but waited because that many were in flight already.
	DialsInFlight int
	DialsDeferred uint64
	// PeerListRequests counts the times this node, short of outgoing
	// links, asked its neighbours for fresh peer lists because a dial
	// failed or nothing was left to dial (a lost neighbour asks too,
	// uncounted).
	PeerListRequests uint64
	// Probes counts dials to members this node could not reach
	// (WithProbe), ProbeFailures those that failed, and ProbeSwaps the
	// outgoing links closed to keep the quota: replaced by a probe link,
	// or an automatic link that landed past the quota after a probe.
	Probes, ProbeFailures, ProbeSwaps uint64
	// Neighbours is the number of live connections, of which Outgoing were
	// dialled by this node.
	Neighbours, Outgoing int
	// KnownPeers is the size of the table of addresses learnt;
	// KnownEvictions counts the members it forgot to make room
	// (WithMaxKnownPeers).
	KnownPeers     int
	KnownEvictions uint64
	// RecordsAccepted counts peer records taken into the table of known
	// peers: a new member's, or a newer record of a member. A copy of the
	// record held is not counted.
	RecordsAccepted uint64
	// RecordsStale counts records dropped because they were not newer
	// (by sequence number) than the record held for their node.
	RecordsStale uint64
	// RecordsInvalid counts records dropped because they did not decode,
	// their key did not hash to their node ID, their signature did not
	// verify, or a route message carried another node's record than its
	// sender's.
	RecordsInvalid uint64
	// RecordsRefused counts valid records of new members that found no
	// room: the neighbour that passed them on had its share
	// (WithMaxKnownPerSource), or the table (WithMaxKnownPeers), taken by
	// members that stay.
	RecordsRefused uint64
	// PeerListsRefused counts peer lists dropped whole: one that came as
	// a broadcast (not relayed either) or named another sender than the
	// link's peer (peer lists are one-hop control messages), or one that
	// did not decode or held more than 64 records.
	PeerListsRefused uint64
	// RecordsVerified counts the signatures of peer records checked: those
	// of records newer than the one held (valid or not).
	RecordsVerified uint64
	// RecordsOverBudget counts records dropped before their signature was
	// checked because the neighbour they came from was over its record
	// budget (WithRecordBudget); PeerListsOverBudget counts peer lists
	// dropped whole, before they were decoded, because it was over its
	// peer list budget (WithPeerListBudget).
	RecordsOverBudget, PeerListsOverBudget uint64

	// Requests and calls (Request, Call). PendingCalls is how many of this
	// node's are waiting for an answer (at most WithMaxPendingCalls);
	// RequestsSent and AnswersSent count the requests and calls this node
	// sent and the answers it sent to others' (one each per round trip).
	// RequestTimeouts counts those whose context ended first. LateAnswers
	// counts answers dropped because no request of theirs was pending
	// (late, duplicate, or never asked); RefusedAnswers, answers dropped
	// because they did not come, proven, from the node asked (a relay's
	// forgery, or an unsigned broadcast). BadRequests counts requests and
	// answers whose header did not decode.
	PendingCalls                                 int
	RequestsSent, AnswersSent                    uint64
	RequestTimeouts, LateAnswers, RefusedAnswers uint64
	BadRequests                                  uint64
	// Served calls: CallsServed counts calls this node's handlers ran,
	// of which CallErrors returned an error and CallPanics panicked (the
	// panic recovered, the caller answered with a *RemoteError);
	// CallsBusy counts calls answered busy (WithMaxCallsPerCaller,
	// WithMaxCalls) and UnknownTags calls for a tag without a handler.
	CallsServed, CallErrors, CallPanics, CallsBusy uint64
	UnknownTags                                    uint64
	// NAT hole punching (Punch, WithPunch). PunchRequests counts requests
	// this node sent to introducers; PunchesSucceeded and PunchesFailed,
	// the punches it dialled (either role) that ended with or without a
	// link. PunchIntroductions counts pairs of neighbours it introduced;
	// PunchRefused, requests to introduce it refused (the target is not a
	// neighbour, a bad signature, stale, punching off);
	// PunchIntroductionsRefused, introductions it did not act on (not for
	// a member it knows, a bad or stale signature, a replay, too many
	// punches in flight, punching off). PunchRateLimited counts punch
	// messages dropped over a neighbour's budget (WithPunchLimits);
	// PunchMalformed, those that did not decode, were not a one-hop
	// whisper from the link's peer, or answered nothing this node asked.
	PunchRequests, PunchesSucceeded, PunchesFailed              uint64
	PunchIntroductions, PunchRefused                            uint64
	PunchIntroductionsRefused, PunchRateLimited, PunchMalformed uint64
	// LAN counts LAN discovery's datagrams (WithLAN): sent, answered,
	// heard, and dropped by cause (zero without it).
	LAN LANStats

	// Routed unicast (docs/mesh.md, "Routed unicast"). RoutedSent counts
	// routed messages this node originated, sent to the next hop its
	// table gave; RoutedNoRoute, messages for a node that was neither a
	// neighbour nor in the table, flooded instead (counted in
	// MeshRoutedWhispers too). RoutedRelayed counts copies of others'
	// routed messages this node sent on; RoutedFallbacks, those it knew
	// no next hop for and sent on to all its other neighbours.
	// RoutedDelivered counts routed messages for this node. RoutedDrops
	// counts copies not sent on (past their hop limit, or a full send
	// queue); RoutedDuplicates, copies seen before; RoutedMalformed, those
	// whose packets did not parse. RoutedDials counts links made by a
	// background dial to a node reached without one (discovery on).
	// RoutesForgotten counts table entries dropped because a request or
	// call sent along them got no answer in time.
	RoutedSent, RoutedNoRoute, RoutedRelayed, RoutedFallbacks uint64
	RoutedDelivered, RoutedDrops, RoutedDuplicates            uint64
	RoutedMalformed, RoutedDials, RoutesForgotten             uint64
	// RouteTableSize is the number of entries of the next-hop table (at
	// most WithRouteTable); RouteTableEvictions counts entries forgotten
	// to make room; RouteTableRefused, new origins not taken because the
	// neighbour they came through held half the table already and it was
	// three quarters full.
	RouteTableSize                         int
	RouteTableEvictions, RouteTableRefused uint64
}

// Stats returns a snapshot of the node's counters.
func (s *Socket) Stats() Stats {
	return Stats{
		Stats:               s.base.Stats(),
		RepairStats:         s.rep.stats(),
		Originated:          s.ctr.originated.Load(),
		Relayed:             s.ctr.relayed.Load(),
		BroadcastsDelivered: s.ctr.delivered.Load(),
		Duplicates:          s.ctr.duplicates.Load(),
		TooOld:              s.ctr.tooOld.Load(),
		HopLimitDrops:       s.ctr.hopLimitDrops.Load(),
		RelayDrops:          s.ctr.relayDrops.Load(),
		ClosedLinkDrops:     s.ctr.closedLinkDrops.Load(),
		DeliverDrops:        s.ctr.deliverDrops.Load(),
		SeenCacheSize:       s.seen.len(),
		Rerelayed:           s.ctr.rerelayed.Load(),
		SlowDrops:           s.ctr.slowDrops.Load(),
		BudgetWaits:         s.ctr.budgetWaits.Load(),
		AbusiveClosed:       s.ctr.abusiveClosed.Load(),
		SlowClosed:          s.ctr.slowClosed.Load(),
		SeenRefused:         s.seen.refused.Load(),
		SeenBehind:          s.seen.behind.Load(),
		Whispers:            s.ctr.whispers.Load(),
		RoutedWhispers:      s.ctr.routedWhispers.Load(),
		MeshRoutedWhispers:  s.ctr.meshRoutedWhispers.Load(),
		RouteRequests:       s.ctr.routeRequests.Load(),
		RouteFailures:       s.ctr.routeFailures.Load(),
		PendingRequests:     s.routes.len(),
		Dials:               s.ctr.dials.Load(),
		DialFailures:        s.ctr.dialFailures.Load(),
		Neighbours:          len(*s.neighbours.Load()),
		Outgoing:            s.outgoing(),
		KnownPeers:          s.known.len(),
		KnownEvictions:      s.known.evicted(),
		DialsInFlight:       s.known.dialsInFlight(),
		DialsDeferred:       s.ctr.dialsDeferred.Load(),
		PeerListRequests:    s.ctr.peerListRequests.Load(),
		Probes:              s.ctr.probes.Load(),
		ProbeFailures:       s.ctr.probeFailures.Load(),
		ProbeSwaps:          s.ctr.probeSwaps.Load(),
		RecordsAccepted:     s.ctr.recordsAccepted.Load(),
		RecordsStale:        s.ctr.recordsStale.Load(),
		RecordsInvalid:      s.ctr.recordsInvalid.Load(),
		RecordsRefused:      s.ctr.recordsRefused.Load(),
		PeerListsRefused:    s.ctr.peerListsRefused.Load(),
		RecordsVerified:     s.ctr.recordsVerified.Load(),
		RecordsOverBudget:   s.ctr.recordsOver.Load(),
		PeerListsOverBudget: s.ctr.peerListsOver.Load(),
		PendingCalls:        s.reqs.len(),
		RequestTimeouts:     s.ctr.requestTimeouts.Load(),
		LateAnswers:         s.ctr.lateAnswers.Load(),
		RequestsSent:        s.ctr.requestsSent.Load(),
		AnswersSent:         s.ctr.answersSent.Load(),
		RefusedAnswers:      s.ctr.refusedAnswers.Load(),
		BadRequests:         s.ctr.badRequests.Load(),
		CallsServed:         s.ctr.callsServed.Load(),
		CallErrors:          s.ctr.callErrors.Load(),
		CallPanics:          s.ctr.callPanics.Load(),
		CallsBusy:           s.ctr.callsBusy.Load(),
		UnknownTags:         s.ctr.unknownTags.Load(),

		// NAT hole punching (punch.go).
		PunchRequests:             s.punch.ctr.requested.Load(),
		PunchesSucceeded:          s.punch.ctr.succeeded.Load(),
		PunchesFailed:             s.punch.ctr.failed.Load(),
		PunchIntroductions:        s.punch.ctr.introduced.Load(),
		PunchRefused:              s.punch.ctr.refused.Load(),
		PunchIntroductionsRefused: s.punch.ctr.introRefused.Load(),
		PunchRateLimited:          s.punch.ctr.rateLimited.Load(),
		PunchMalformed:            s.punch.ctr.malformed.Load(),
		LAN:                       s.lanStats(),
		RoutedSent:                s.ctr.routedSent.Load(),
		RoutedNoRoute:             s.ctr.routedNoRoute.Load(),
		RoutedRelayed:             s.ctr.routedRelayed.Load(),
		RoutedFallbacks:           s.ctr.routedFallbacks.Load(),
		RoutedDelivered:           s.ctr.routedDelivered.Load(),
		RoutedDrops:               s.ctr.routedDrops.Load(),
		RoutedDuplicates:          s.ctr.routedDuplicates.Load(),
		RoutedMalformed:           s.ctr.routedMalformed.Load(),
		RoutedDials:               s.ctr.routedDials.Load(),
		RoutesForgotten:           s.ctr.routesForgotten.Load(),
		RouteTableSize:            s.hops.len(),
		RouteTableEvictions:       s.hops.evicted.Load(),
		RouteTableRefused:         s.hops.refused.Load(),
	}
}
