package protocol

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// MessageID identifies a message inside one node: the seeded xxhash64 of its
// envelope bytes. The seed is random per node, so IDs never travel on the
// wire and no peer can craft a message that collides with another's.
type MessageID uint64

// String returns the ID as 16 hex digits.
func (id MessageID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// Hasher computes message IDs with one seed.
type Hasher struct{ seed uint64 }

// NewHasher returns a Hasher with a random seed from crypto/rand.
func NewHasher() Hasher {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return Hasher{seed: binary.LittleEndian.Uint64(b[:])}
}

// NewHasherWithSeed returns a Hasher with a fixed seed (tests, golden vectors).
func NewHasherWithSeed(seed uint64) Hasher { return Hasher{seed: seed} }

// Sum returns the ID of the given envelope bytes. It does not allocate.
func (h Hasher) Sum(envelope []byte) MessageID {
	var d xxhash.Digest
	d.ResetWithSeed(h.seed)
	_, _ = d.Write(envelope)
	return MessageID(d.Sum64())
}
