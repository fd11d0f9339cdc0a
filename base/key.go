package base

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// ErrBadKeyFile: LoadOrCreateKey found a key file it will not use: not a
// PEM-encoded PKCS #8 Ed25519 private key, or readable by others than its
// owner.
var ErrBadKeyFile = errors.New("meshsock: bad key file")

// WithKey sets the node's Ed25519 private key. The node ID is derived from
// its public key (protocol.NodeIDFromKey), so the same key gives the same
// ID across restarts. Default: a fresh key per socket.
func WithKey(key ed25519.PrivateKey) Option {
	return func(c *config) error {
		if len(key) != ed25519.PrivateKeySize {
			return optcheck.Invalid("Ed25519 private key of %d bytes, want %d", len(key), ed25519.PrivateKeySize)
		}
		c.key = key
		return nil
	}
}

// GenerateKey returns a fresh Ed25519 private key from crypto/rand.
func GenerateKey() ed25519.PrivateKey {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil { // crypto/rand does not fail on supported platforms
		panic(err)
	}
	return key
}

// keyFileMode is the mode of a key file LoadOrCreateKey writes; it refuses
// to read one that grants anything to group or others.
const keyFileMode = 0o600

// LoadOrCreateKey reads the node key stored at path (PEM, PKCS #8), or, if
// there is no file there, creates one with a fresh key (mode 0600, the
// directory made if missing) and returns that key. A file that is not such
// a key, or that its group or others may read or write, is refused with an
// error matching ErrBadKeyFile; file-system failures are returned as they
// are (errors.Is(err, fs.ErrPermission), ...).
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		info, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if info.Mode().Perm()&^keyFileMode != 0 {
			return nil, fmt.Errorf("%w: %s has mode %v; it must be readable by its owner only (0600)",
				ErrBadKeyFile, path, info.Mode().Perm())
		}
		return parseKeyFile(path, data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	key := GenerateKey()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// Write a temporary file, then link it into place: the key appears
	// whole or not at all, and of two processes racing to create it the
	// loser (the link fails) reads the winner's.
	f, err := os.CreateTemp(filepath.Dir(path), ".meshsock-key-*")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(keyFileMode)
	if err == nil {
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		return LoadOrCreateKey(path)
	} else if err != nil {
		return nil, err
	}
	return key, nil
}

func parseKeyFile(path string, data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM \"PRIVATE KEY\" block", ErrBadKeyFile, path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadKeyFile, path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, not an Ed25519 key", ErrBadKeyFile, path, parsed)
	}
	return key, nil
}

// PublicKey returns the node's Ed25519 public key; ID() is derived from it.
func (s *Socket) PublicKey() ed25519.PublicKey { return s.pub }

// Sign signs msg with the node's private key. The layers above base sign
// what they originate (broadcast envelopes, peer records) with it; callers
// choose a message that cannot be mistaken for another use of the key
// (docs/protocol.md gives each signature a distinct prefix).
func (s *Socket) Sign(msg []byte) []byte { return ed25519.Sign(s.cfg.key, msg) }

// nodeIDOf is the ID of the node holding key.
func nodeIDOf(key ed25519.PrivateKey) protocol.NodeID {
	return protocol.NodeIDFromKey(key.Public().(ed25519.PublicKey))
}

// NodeIDOf returns the node ID a node with this private key has
// (protocol.NodeIDFromKey of its public key).
func NodeIDOf(key ed25519.PrivateKey) protocol.NodeID { return nodeIDOf(key) }
