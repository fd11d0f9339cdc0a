// Package protocol defines meshsock's wire format: node and protocol
// identifiers, frames, the message envelope, message IDs and the handshake.
//
// The byte-level specification lives in docs/protocol.md; this package is its
// reference implementation. Every decoder here treats its input as hostile:
// lengths are checked against explicit limits before anything is allocated,
// and malformed input returns an error matching one of the sentinels below,
// never a panic.
package protocol

import "errors"

// Sentinel errors. Decoders wrap them with detail; match with errors.Is.
var (
	// ErrFrameTooLarge: a frame's length prefix exceeds the configured maximum.
	ErrFrameTooLarge = errors.New("protocol: frame exceeds maximum size")
	// ErrTruncated: the input ended before a complete frame or value.
	ErrTruncated = errors.New("protocol: truncated input")
	// ErrMalformed: the bytes are not a valid encoding of the expected value.
	ErrMalformed = errors.New("protocol: malformed input")
	// ErrTooManyPackets: an envelope carries more packets than allowed.
	ErrTooManyPackets = errors.New("protocol: too many packets")
	// ErrPacketTooLarge: one packet exceeds the per-packet limit.
	ErrPacketTooLarge = errors.New("protocol: packet too large")
	// ErrNotMeshsock: the peer does not speak meshsock (bad handshake magic).
	ErrNotMeshsock = errors.New("protocol: peer does not speak meshsock")
	// ErrVersion: the peer speaks a wire version this implementation does not.
	ErrVersion = errors.New("protocol: unsupported wire version")
	// ErrInvalidNodeID: a node ID's text form could not be parsed.
	ErrInvalidNodeID = errors.New("protocol: invalid node ID")
	// ErrBadSignature: an envelope that must be signed is not, or its
	// signature or key does not check out (VerifyEnvelope).
	ErrBadSignature = errors.New("protocol: bad envelope signature")
)
