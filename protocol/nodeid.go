package protocol

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// NodeID identifies a node. It is 128 bits derived from the node's Ed25519
// public key ([NodeIDFromKey]), written in the UUID text form (8-4-4-4-12
// hex digits); chord keys are NodeIDs too. Mesh and chord share the same ID space; chord
// reads an ID as a big-endian unsigned integer on a ring of size 2^128.
type NodeID [16]byte

// NewNodeID returns 128 random bits from crypto/rand: a random chord key,
// or an ID for tests. A node's own ID comes from its key.
func NewNodeID() NodeID {
	var id NodeID
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(id[:])
	return id
}

// ParseNodeID parses the UUID text form, with or without hyphens, in either
// case. Errors match [ErrInvalidNodeID].
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	var digits []byte
	switch len(s) {
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return id, fmt.Errorf("%w: %q", ErrInvalidNodeID, s)
		}
		digits = make([]byte, 0, 32)
		digits = append(digits, s[0:8]...)
		digits = append(digits, s[9:13]...)
		digits = append(digits, s[14:18]...)
		digits = append(digits, s[19:23]...)
		digits = append(digits, s[24:36]...)
	case 32:
		digits = []byte(s)
	default:
		return id, fmt.Errorf("%w: %q has length %d", ErrInvalidNodeID, s, len(s))
	}
	if _, err := hex.Decode(id[:], digits); err != nil {
		return NodeID{}, fmt.Errorf("%w: %q: %v", ErrInvalidNodeID, s, err)
	}
	return id, nil
}

// MustParseNodeID is [ParseNodeID] for constants in tests and examples; it
// panics on a malformed string.
func MustParseNodeID(s string) NodeID {
	id, err := ParseNodeID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// String returns the UUID text form, e.g. "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".
func (id NodeID) String() string {
	var buf [36]byte
	hex.Encode(buf[0:8], id[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], id[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], id[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], id[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], id[10:16])
	return string(buf[:])
}

// Short returns the first 8 hex digits, for logs.
func (id NodeID) Short() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is the all-zero ID, which never names a node.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// Compare orders IDs as big-endian 128-bit unsigned integers: -1, 0 or +1.
func (id NodeID) Compare(other NodeID) int { return bytes.Compare(id[:], other[:]) }

// MarshalText implements encoding.TextMarshaler.
func (id NodeID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *NodeID) UnmarshalText(b []byte) error {
	parsed, err := ParseNodeID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}
