package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// NodeIDFromKey derives a node's ID from its Ed25519 public key: the first
// 16 bytes of SHA-256(key). A node cannot claim an ID without holding the
// private key of a public key that hashes to it, and every party can check
// the claim from the key alone.
//
// It panics if key is not ed25519.PublicKeySize bytes, as the key's own
// methods do.
func NodeIDFromKey(key ed25519.PublicKey) NodeID {
	if len(key) != ed25519.PublicKeySize {
		panic("protocol: NodeIDFromKey: bad public key length")
	}
	sum := sha256.Sum256(key)
	var id NodeID
	copy(id[:], sum[:len(id)])
	return id
}

// KeyMatchesID reports whether key is a well-sized Ed25519 public key whose
// derived ID is id.
func KeyMatchesID(key []byte, id NodeID) bool {
	return len(key) == ed25519.PublicKeySize && NodeIDFromKey(key) == id
}
