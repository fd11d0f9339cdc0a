package chord

import (
	"errors"
	"fmt"

	"github.com/meshsock/meshsock/base"
)

// Errors returned by chord. The connection-level ones are base's sentinels,
// re-exported so that a chord user needs only this package; match them with
// errors.Is.
var (
	// ErrClosed: the socket is closed (or closed while the call waited).
	ErrClosed = base.ErrClosed
	// ErrProtocolMismatch: Join reached a node of another protocol (a mesh
	// node, another chord subnet, another wire version).
	ErrProtocolMismatch = base.ErrProtocolMismatch
	// ErrSelfConnect: Join was given this node's own address.
	ErrSelfConnect = base.ErrSelfConnect
	// ErrConnLimit: the peer had no room for another connection.
	ErrConnLimit = base.ErrConnLimit
	// ErrIdentity: Join reached a node that did not prove the node ID it
	// claims, or that refused this node's proof (verdict 9).
	ErrIdentity = base.ErrIdentity
	// ErrNotAuthorized: a network key (WithNetworkKey) that the other side
	// does not accept, a ban, or an authorisation hook (WithAuthorize)
	// refused the connection, on either side (verdict 10).
	ErrNotAuthorized = base.ErrNotAuthorized
	// ErrClockSkew: Join reached a node whose clock is further from this
	// node's than the handshake allows (base.WithClockSkew).
	ErrClockSkew = base.ErrClockSkew
	// ErrNotMeshsock: Join reached something that does not speak meshsock
	// (its first frame was not a Hello, or it sent none in time).
	ErrNotMeshsock = base.ErrNotMeshsock
	// ErrUnreachable: Join could not open a TCP connection to the address
	// (the OS error is wrapped too).
	ErrUnreachable = base.ErrUnreachable
	// ErrListen: NewSocket could not listen on the address (in use, bad
	// address; the OS error is wrapped too).
	ErrListen = base.ErrListen
	// ErrTimeout: no answer within the request timeout or before the
	// context ended.
	ErrTimeout = base.ErrTimeout
	// ErrNoRoute: the ring offered no way towards the key (no live link, or
	// the hop limit was reached on the way).
	ErrNoRoute = base.ErrNoRoute
	// ErrQueueFull: a send queue was full under the Drop policy.
	ErrQueueFull = base.ErrQueueFull
	// ErrInvalidOption: an option had an invalid value.
	ErrInvalidOption = base.ErrInvalidOption
	// ErrNoPackets: SendTo, Request or Reply was given no packets.
	ErrNoPackets = base.ErrNoPackets

	// ErrTooManyRequests: the bound on pending requests and lookups
	// (WithMaxPendingRequests) was reached; the call was not sent.
	ErrTooManyRequests = errors.New("meshsock: chord: too many pending requests")
	// ErrNotRouted: Bounce was given a message that chord did not route to
	// this node (it has no Route, so no requester to keep).
	ErrNotRouted = errors.New("meshsock: chord: message was not routed by chord")
	// ErrTooManyBounces: a request was bounced more than MaxBounces times.
	ErrTooManyBounces = errors.New("meshsock: chord: too many bounces")
)

// errLinkClosed fails a maintenance call whose link went down before the
// answer came. It matches ErrNoRoute.
var errLinkClosed = fmt.Errorf("%w: link closed while waiting for an answer", ErrNoRoute)
