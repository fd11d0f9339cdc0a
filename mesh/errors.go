package mesh

import (
	"errors"

	"github.com/meshsock/meshsock/base"
)

// Errors returned by the mesh. Connection-level errors are base's sentinels,
// re-exported here so a mesh user needs only this package.
var (
	ErrClosed           = base.ErrClosed
	ErrProtocolMismatch = base.ErrProtocolMismatch
	ErrSelfConnect      = base.ErrSelfConnect
	ErrConnLimit        = base.ErrConnLimit
	ErrNoRoute          = base.ErrNoRoute
	ErrTimeout          = base.ErrTimeout
	ErrQueueFull        = base.ErrQueueFull
	ErrInvalidOption    = base.ErrInvalidOption

	// ErrIdentity: Connect reached a node that did not prove the node ID
	// it claims, or that refused this node's proof (verdict 9).
	ErrIdentity = base.ErrIdentity
	// ErrNotAuthorized: a network key (WithNetworkKey) that the other side
	// does not accept, a ban, or an authorisation hook (WithAuthorize)
	// refused the connection, on either side (verdict 10).
	ErrNotAuthorized = base.ErrNotAuthorized
	// ErrClockSkew: Connect reached a node whose clock is further off than
	// the handshake allows (WithClockSkew).
	ErrClockSkew = base.ErrClockSkew
	// ErrNotMeshsock: Connect reached something that does not speak
	// meshsock.
	ErrNotMeshsock = base.ErrNotMeshsock
	// ErrUnreachable: Connect could not open a TCP connection (the
	// *net.OpError is wrapped too).
	ErrUnreachable = base.ErrUnreachable
	// ErrListen: NewSocket could not listen on the address.
	ErrListen = base.ErrListen
	// ErrNoPackets: Send, Whisper or Reply was given no packets.
	ErrNoPackets = base.ErrNoPackets
	// ErrBadSignature: a broadcast's signature did not check out; it was
	// dropped (TraceBadSignature, Stats.BadSignatures).
	ErrBadSignature = base.ErrBadSignature

	// ErrTooManyRequests: the bound on pending route requests was reached.
	ErrTooManyRequests = errors.New("meshsock: too many pending route requests")
)
