package base

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Network keys: who may join. A node with a network key (WithNetworkKey)
// proves in every handshake that it holds one, with an HMAC over the
// handshake transcript (docs/protocol.md §9.6), and admits only a peer that
// proves a key of its keyring. The key never travels; a proof is bound to
// one handshake (and, on TLS, to one session), so it cannot be replayed.

// Network key sizes, in bytes.
const (
	MinNetworkKeySize = 16  // a shorter key is refused
	MaxNetworkKeySize = 256 // so is a longer one (HMAC hashes long keys anyway)
)

// Keyring holds a node's network keys: one primary key, with which the node
// proves membership, and any number of other keys it still accepts from
// peers. Rotation needs no restart: add the new key everywhere (Add), make
// it primary everywhere (Use), then remove the old one (Remove); at every
// step each pair of nodes shares a key that one proves and the other
// accepts. A Keyring is safe for concurrent use, and changes apply to the
// next handshake (links already up stay up). One Keyring may serve several
// sockets.
type Keyring struct {
	mu   sync.RWMutex
	keys [][]byte // keys[0] is the primary; no duplicates
}

// NewKeyring returns a keyring whose primary key is primary and which also
// accepts the keys in accepted. Every key must be MinNetworkKeySize to
// MaxNetworkKeySize bytes (errors match ErrInvalidOption). The keyring
// keeps copies: later changes to the slices do not affect it.
func NewKeyring(primary []byte, accepted ...[]byte) (*Keyring, error) {
	r := &Keyring{}
	if err := r.Use(primary); err != nil {
		return nil, err
	}
	for _, k := range accepted {
		if err := r.Add(k); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func checkNetworkKey(key []byte) error {
	if len(key) < MinNetworkKeySize || len(key) > MaxNetworkKeySize {
		return optcheck.Invalid("network key of %d bytes, want %d to %d", len(key), MinNetworkKeySize, MaxNetworkKeySize)
	}
	return nil
}

// Use makes key the primary key, adding it if the keyring does not hold it;
// the previous primary key stays accepted.
func (r *Keyring) Use(key []byte) error {
	if err := checkNetworkKey(key); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := slices.DeleteFunc(slices.Clone(r.keys), func(k []byte) bool { return bytes.Equal(k, key) })
	r.keys = append([][]byte{bytes.Clone(key)}, keys...)
	return nil
}

// Add makes the keyring accept key from peers, without proving with it.
// Adding a key it holds already changes nothing.
func (r *Keyring) Add(key []byte) error {
	if err := checkNetworkKey(key); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.ContainsFunc(r.keys, func(k []byte) bool { return bytes.Equal(k, key) }) {
		r.keys = append(slices.Clone(r.keys), bytes.Clone(key))
	}
	return nil
}

// Remove stops accepting key. The primary key cannot be removed (Use
// another first); removing a key the keyring does not hold changes
// nothing. Errors match ErrInvalidOption.
func (r *Keyring) Remove(key []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.keys) > 0 && bytes.Equal(r.keys[0], key) {
		return fmt.Errorf("%w: the primary network key cannot be removed; Use another first", ErrInvalidOption)
	}
	r.keys = slices.DeleteFunc(slices.Clone(r.keys), func(k []byte) bool { return bytes.Equal(k, key) })
	return nil
}

// Keys returns copies of the keys, the primary first.
func (r *Keyring) Keys() [][]byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([][]byte, len(r.keys))
	for i, k := range r.keys {
		out[i] = bytes.Clone(k)
	}
	return out
}

// NetworkKey returns the socket's network keyring (WithNetworkKey), or nil
// if it has none.
func (s *Socket) NetworkKey() *Keyring { return s.cfg.networkKey }

// proof returns the node's network-key proof for transcript th in its role.
func (r *Keyring) proof(dialer bool, th [sha256.Size]byte) []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return protocol.NetworkProof(r.keys[0], dialer, th)
}

// verify reports whether proof is a peer's proof, in its role, under one of
// the keyring's keys. Every key is tried, so the time taken depends on the
// number of keys only.
func (r *Keyring) verify(dialer bool, th [sha256.Size]byte, proof []byte) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ok := false
	for _, k := range r.keys {
		if protocol.VerifyNetworkProof(k, dialer, th, proof) {
			ok = true
		}
	}
	return ok
}
