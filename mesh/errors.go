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
	ErrClockSkew        = base.ErrClockSkew
	ErrNotMeshsock      = base.ErrNotMeshsock
	ErrUnreachable      = base.ErrUnreachable
	ErrListen           = base.ErrListen
	ErrNoRoute          = base.ErrNoRoute
	ErrTimeout          = base.ErrTimeout
	ErrQueueFull        = base.ErrQueueFull
	ErrInvalidOption    = base.ErrInvalidOption

	// ErrTooManyRequests: the bound on pending route requests was reached.
	ErrTooManyRequests = errors.New("meshsock: too many pending route requests")
)
