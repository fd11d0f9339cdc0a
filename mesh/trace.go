package mesh

import "github.com/meshsock/meshsock/protocol"

// TraceKind says what happened to a broadcast.
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
)

var traceNames = [...]string{"", "deliver", "relay", "duplicate", "too-old", "hop-limit", "relay-drop", "deliver-drop"}

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
	// ID is this node's ID for the message.
	ID protocol.MessageID
	// Sender is the node that created the message.
	Sender protocol.NodeID
	// Peer is the neighbour it came from (or, for TraceRelay and
	// TraceRelayDrop, the neighbour it went to).
	Peer protocol.NodeID
	// Hops is how many links the message had crossed on arrival.
	Hops uint8
	// Reason says why, for TraceDeliverDrop: base.ErrDispatchFull,
	// base.ErrRecvFull or base.ErrNoPackets.
	Reason error
}

// Tracer is told of every broadcast step. It runs on the goroutine where
// the step happens (a connection's reader, a dispatcher) and must return
// quickly and never block: it holds up what that goroutine does.
type Tracer interface {
	Trace(TraceEvent)
}

// TracerFunc adapts a function to the Tracer interface.
type TracerFunc func(TraceEvent)

// Trace calls f(e).
func (f TracerFunc) Trace(e TraceEvent) { f(e) }
