package mesh

import (
	"errors"
	"fmt"

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

	// ErrPunchFailed: Punch could not open a direct link (no neighbour
	// could introduce the two nodes, one refused, or the dials through the
	// NATs did not meet).
	ErrPunchFailed = errors.New("meshsock: hole punch failed")
	// ErrTooManyRequests: the bound on pending route requests
	// (WithMaxPendingRequests) or on pending requests and calls
	// (WithMaxPendingCalls) was reached.
	ErrTooManyRequests = errors.New("meshsock: too many pending requests")
	// ErrUnknownTag: Call named a tag the node called has no handler for
	// (it answers at once), or Handle was asked to replace a built-in one.
	ErrUnknownTag = errors.New("meshsock: unknown call tag")
	// ErrBusy: the node called had WithMaxCallsPerCaller calls of this
	// node's (or WithMaxCalls calls in all) in flight; it answered at once.
	ErrBusy = errors.New("meshsock: too many calls in flight at the node called")
	// ErrInvalidTag: a call tag that is empty, longer than
	// protocol.MaxTagLen bytes, not UTF-8 or holds control characters.
	ErrInvalidTag = errors.New("meshsock: invalid call tag")
	// ErrAnswered: Reply on a request that was answered already.
	ErrAnswered = errors.New("meshsock: request answered already")
	// ErrBadValue: a value that does not encode as CBOR, or data that does
	// not decode into the target (see *DecodeError).
	ErrBadValue = errors.New("meshsock: value does not encode or decode")
	// ErrNoLAN: Discover on a node without LAN discovery (WithLAN).
	ErrNoLAN = errors.New("meshsock: LAN discovery is off")
	// ErrNoFreePort: NewSocket found every port of the range
	// (WithPortRange) taken. It matches ErrListen too.
	ErrNoFreePort = fmt.Errorf("%w: no free port in the range", ErrListen)
)
