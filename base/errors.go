package base

import (
	"errors"
	"fmt"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Sentinel errors. Every error the package returns matches one of these (or
// one of package protocol's) with errors.Is; some match two (a handshake
// that timed out before the peer's Hello: ErrTimeout and ErrNotMeshsock).
// A handshake refusal matches the sentinel of its verdict code on both
// sides, whichever side refused; the error's text names the code and the
// refuser's reason.
var (
	// ErrClosed: the socket or connection is closed; also a peer that
	// closed the connection during the handshake, and a peer's verdict 5
	// (shutting down).
	ErrClosed = errors.New("meshsock: closed")
	// ErrProtocolMismatch: the peer runs a different protocol (subnet,
	// encryption or wire version); verdict 1. A peer that runs TLS and one
	// that runs plaintext refuse each other with it before either starts
	// TLS, and so does a node of another wire version.
	ErrProtocolMismatch = errors.New("meshsock: protocol mismatch")
	// ErrIdentity: the peer did not prove the node ID it claims: its ID is
	// not derived from the key in its Hello, its TLS certificate carries
	// another key or is not a node certificate, or its handshake signature
	// does not verify (docs/protocol.md §9.5); verdict 9. Both sides see
	// it, whichever side refused.
	ErrIdentity = errors.New("meshsock: peer identity not proven")
	// ErrNotAuthorized: the peer may not join, or this node may not join
	// the peer: a network key that the other side does not accept, or none
	// where one is required (WithNetworkKey); a ban (Socket.Ban); or a
	// refusal by the authorisation hook (WithAuthorize); verdict 10. Both
	// sides see it, and the error's text gives the refuser's reason. A
	// connection closed by Ban matches it too (and ErrClosed).
	ErrNotAuthorized = errors.New("meshsock: not authorised")
	// ErrSelfConnect: the address dialled is this node (verdict 2 when it
	// is recognised only by its node ID).
	ErrSelfConnect = errors.New("meshsock: connection to self")
	// ErrDuplicate: the peer refused the connection because one already
	// exists (verdict 3; this implementation does not send it). A link
	// closed because the two nodes had two connections and kept the other
	// (docs/protocol.md §9.7), by this node or by the peer (its Bye said
	// so), ends with an error that matches it too, and ErrClosed.
	ErrDuplicate = errors.New("meshsock: duplicate connection")
	// ErrConnLimit: this node or the peer has no room for another
	// connection (WithMaxConns), or the peer had too many handshakes
	// pending (WithMaxPendingHandshakes), in total or from this node's
	// source address (WithMaxConnsPerSource, WithMaxPendingPerSource), or
	// the peer gave this node's pending handshake to a newcomer from a less
	// represented source; verdict 4. The verdict's reason text says which.
	// A live connection displaced to make room (WithMaxConnsPerSource)
	// closes with an error matching ErrClosed and ErrConnLimit on the
	// displacing side; its peer sees ErrClosed and the reason.
	ErrConnLimit = errors.New("meshsock: connection limit reached")
	// ErrRejected: the peer refused the handshake for another reason:
	// verdict 6 (bad hello or auth frame), 7 (unspecified) or an
	// unassigned code.
	ErrRejected = errors.New("meshsock: handshake rejected")
	// ErrClockSkew: this node or the peer refused the handshake because
	// the peer's clock is further off than the allowance (WithClockSkew);
	// verdict 8. The error's text gives the measured offset. Both sides
	// see it.
	ErrClockSkew = errors.New("meshsock: clock skew")
	// ErrTimeout: an operation did not finish in time or its context
	// ended: a handshake (WithHandshakeTimeout), a dial (with
	// ErrUnreachable), Send under the Block policy, Recv, a request; also
	// a link closed because a write stalled (WithWriteTimeout) or the peer
	// fell silent (WithKeepalive).
	ErrTimeout = errors.New("meshsock: timeout")
	// ErrNotMeshsock: the peer does not speak meshsock. Its first frame
	// was not a Hello (too long for the handshake, a codec byte other
	// than none, a body that does not decode as a Hello), or it closed the
	// connection (the error also matches ErrClosed) or sent nothing within
	// the handshake timeout (also ErrTimeout) before sending one. It is
	// protocol.ErrNotMeshsock, so either name matches.
	ErrNotMeshsock = protocol.ErrNotMeshsock
	// ErrQueueFull: a send queue was full and the policy is to drop.
	ErrQueueFull = errors.New("meshsock: send queue full")
	// ErrRelayShare: relays from one source connection already held their
	// fair share of a send queue (WithFairShare); it matches ErrQueueFull.
	ErrRelayShare = fmt.Errorf("%w: the source's fair share is used up", ErrQueueFull)
	// ErrUnreachable: Connect could not open a TCP connection to the
	// address (refused, no route, DNS failure, dial timeout). The OS error
	// is wrapped too (errors.As finds the *net.OpError); a dial that timed
	// out, or was cut short by the context, also matches ErrTimeout.
	ErrUnreachable = errors.New("meshsock: unreachable")
	// ErrListen: NewSocket could not listen on the address (in use, bad
	// address, no permission). The OS error is wrapped too.
	ErrListen = errors.New("meshsock: cannot listen")
	// ErrResolve: Join could not resolve a seed's host name (or the seed
	// is not "host:port"). The resolver's error is wrapped too (errors.As
	// finds a *net.DNSError).
	ErrResolve = errors.New("meshsock: cannot resolve")
	// ErrNoRoute: there is no connection (or route) to the node.
	ErrNoRoute = errors.New("meshsock: no route to node")
	// ErrNoPackets: a message to send has no packets (receivers read
	// Packets[0]; an empty message is dropped on arrival).
	ErrNoPackets = errors.New("meshsock: message without packets")
	// ErrInvalidOption: an option was given an invalid value (NewSocket,
	// SetCompression, RecvBatch).
	ErrInvalidOption = optcheck.ErrInvalid
)

// rejectError maps a handshake verdict code to its sentinel.
func rejectError(code protocol.RejectCode, reason string) error {
	var base error
	switch code {
	case protocol.RejectProtocol:
		base = ErrProtocolMismatch
	case protocol.RejectSelf:
		base = ErrSelfConnect
	case protocol.RejectDuplicate:
		base = ErrDuplicate
	case protocol.RejectLimit:
		base = ErrConnLimit
	case protocol.RejectShutdown:
		base = ErrClosed
	case protocol.RejectClockSkew:
		base = ErrClockSkew
	case protocol.RejectIdentity:
		base = ErrIdentity
	case protocol.RejectNotAuthz:
		base = ErrNotAuthorized
	default:
		base = ErrRejected
	}
	if reason == "" {
		return fmt.Errorf("%w (%s)", base, code)
	}
	return fmt.Errorf("%w (%s): %s", base, code, reason)
}
