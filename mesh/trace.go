package mesh

import "github.com/meshsock/meshsock/protocol"

// TraceKind says what happened to a broadcast (or a routed message).
type TraceKind int

const (
	// TraceDeliver: a new broadcast reached the user: a handler claimed
	// it, or it was queued for Recv.
	TraceDeliver TraceKind = iota + 1
	// TraceRelay: a broadcast was forwarded to a neighbour.
	TraceRelay
	// TraceDuplicate: a broadcast seen before was dropped.
	TraceDuplicate
	// TraceTooOld: a broadcast older than the age window (or from too far
	// in the future) was dropped.
	TraceTooOld
	// TraceHopLimit: a broadcast past its hop limit was dropped.
	TraceHopLimit
	// TraceRelayDrop: a neighbour's send queue was full, so it did not get
	// the relayed copy.
	TraceRelayDrop
	// TraceDeliverDrop: a new broadcast was dropped before the user saw
	// it: the dispatch or the receive queue was full, or it had no packets
	// (TraceEvent.Reason says which).
	TraceDeliverDrop
	// TraceBehind: a broadcast whose sequence number is below its
	// origin's window (WithSeenWindow) was dropped: it may be a replay.
	TraceBehind
	// TraceSeenFull: a broadcast from an origin not yet remembered was
	// dropped because the seen-state had no room for the neighbour it
	// came from (WithSeenCache).
	TraceSeenFull
	// TraceBetter: a copy of a broadcast already handled arrived with
	// more hops left than any before; it is relayed again (TraceRelay
	// follows) and not delivered.
	TraceBetter
	// TraceSlowDrop: this node's own broadcast was not queued for a slow
	// neighbour (Peer) whose send queue was full (WithSlowNeighbour).
	TraceSlowDrop
	// TraceSlowClose: the link to a neighbour (Peer) that stayed slow for
	// the slow bound was closed.
	TraceSlowClose
	// TraceOverBudget: a new broadcast from a neighbour over its flood
	// budget (WithFloodBudget) was held back until its budget allowed it.
	TraceOverBudget
	// TraceAbuseClose: the link to a neighbour over its flood budget
	// (WithFloodBudget) or its record budget (WithRecordBudget) for the
	// abuse bound was closed (Reason says which).
	TraceAbuseClose
	// TraceRecordInvalid: a peer record was dropped: it did not decode,
	// its key did not hash to its node ID, its signature did not verify,
	// or a route message carried another node's record (Reason says
	// which; Sender is the node the record names, if it decoded).
	TraceRecordInvalid
	// TraceRecordStale: a peer record of node Sender was dropped as not
	// newer than the one held.
	TraceRecordStale
	// TraceRecordRefused: a valid record of a new member, Sender, found no
	// room in the table of known peers (WithMaxKnownPerSource,
	// WithMaxKnownPeers).
	TraceRecordRefused
	// TracePeerListRefused: a peer list from Sender was dropped whole: not
	// a whisper from the link's own peer, or malformed (Reason says which).
	TracePeerListRefused
	// TraceBadSignature: a broadcast whose signature did not verify (or
	// that was not signed, or whose key is not its sender's) was dropped
	// before it was relayed or delivered, a strike against the neighbour
	// (Peer) it came from; Reason says what was wrong
	// (errors.Is(Reason, ErrBadSignature)).
	TraceBadSignature
	// TraceRecordOverBudget: a peer record of node Sender, newer than the
	// one held, was dropped before its signature was checked: the
	// neighbour Peer was over its record budget (WithRecordBudget).
	TraceRecordOverBudget
	// TracePeerListOverBudget: a peer list from Peer was dropped whole,
	// before it was decoded: Peer was over its peer list budget
	// (WithPeerListBudget).
	TracePeerListOverBudget
	// TraceRoutedRelay: a routed message (docs/mesh.md, "Routed unicast")
	// was sent to neighbour Peer, the next hop for its target: by its
	// origin (this node), or passed on by this node.
	TraceRoutedRelay
	// TraceRoutedFallback: this node knew no next hop for a routed
	// message's target and sent it on to all its other neighbours.
	TraceRoutedFallback
	// TraceRoutedDeliver: a routed message for this node arrived (from
	// neighbour Peer) and was handed to its handlers.
	TraceRoutedDeliver
	// TracePull: this node asked Peer for a broadcast of Sender's it heard
	// of only by announcement (IWANT, or GRAFT in tree mode). ID is 0: the
	// pull names the broadcast by origin and sequence number.
	TracePull
	// TraceRepair: a broadcast this node had pulled arrived (from Peer).
	TraceRepair
	// TracePullServed: this node sent Peer a broadcast of Sender's from its
	// message cache, as Peer asked (ID 0).
	TracePullServed
	// TracePullRefused: Peer asked for a broadcast of Sender's that is not
	// (or no longer) in the message cache (ID 0).
	TracePullRefused
	// TracePrune: a duplicate from Peer pruned its link to lazy (tree
	// mode); a PRUNE went to Peer.
	TracePrune
)

var traceNames = [...]string{"", "deliver", "relay", "duplicate", "too-old", "hop-limit", "relay-drop", "deliver-drop",
	"behind", "seen-full", "better", "slow-drop", "slow-close",
	"over-budget", "abuse-close", "record-invalid", "record-stale", "record-refused", "peer-list-refused",
	"bad-signature", "record-over-budget", "peer-list-over-budget",
	"routed-relay", "routed-fallback", "routed-deliver",
	"pull", "repair", "pull-served", "pull-refused", "prune"}

// String names the kind.
func (k TraceKind) String() string {
	if k > 0 && int(k) < len(traceNames) {
		return traceNames[k]
	}
	return "unknown"
}

// TraceEvent describes one step of a broadcast through this node.
type TraceEvent struct {
	Kind TraceKind
	// ID is this node's ID for the message (for the record kinds, the
	// message that carried the record).
	ID protocol.MessageID
	// Sender is the node that created the message (for the record kinds,
	// the node the record names).
	Sender protocol.NodeID
	// Peer is the neighbour it came from (or, for TraceRelay,
	// TraceRelayDrop, TraceSlowDrop and TraceSlowClose, the neighbour it
	// went to).
	Peer protocol.NodeID
	// Hops is how many links the message had crossed on arrival.
	Hops uint8
	// Reason says why, for TraceDeliverDrop (base.ErrDispatchFull,
	// base.ErrRecvFull or base.ErrNoPackets), for the record and peer
	// list kinds, for TraceAbuseClose, and for TraceBadSignature (an
	// error matching ErrBadSignature).
	Reason error
}

// Tracer is told of every broadcast step, and of every peer record or
// peer list this node did not take. It runs on the goroutine where
// the step happens (a connection's reader, a dispatcher) and must return
// quickly and never block: it holds up what that goroutine does.
type Tracer interface {
	Trace(TraceEvent)
}

// TracerFunc adapts a function to the Tracer interface.
type TracerFunc func(TraceEvent)

// Trace calls f(e).
func (f TracerFunc) Trace(e TraceEvent) { f(e) }
