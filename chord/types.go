package chord

import (
	"crypto/ed25519"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// The types and helpers a chord program needs from the layers below,
// re-exported so that it imports only this package; each is the very same
// type or function as the original.

// NodeID is a node ID and a key on the ring; see protocol.NodeID.
type NodeID = protocol.NodeID

// Message is a message received from the ring; see base.Message.
type Message = base.Message

// Handler handles messages; see base.Handler.
type Handler = base.Handler

// HandlerFunc adapts a function to a Handler; see base.HandlerFunc.
type HandlerFunc = base.HandlerFunc

// Keyring holds the network keys a node proves and accepts; see
// base.Keyring.
type Keyring = base.Keyring

// Protocol is the subnet, encryption and signing a node speaks; see
// protocol.Protocol.
type Protocol = protocol.Protocol

// Encryption settings for Protocol.Encryption.
const (
	EncryptionTLS       = protocol.EncryptionTLS
	EncryptionPlaintext = protocol.EncryptionPlaintext
)

// NewKey returns a random key on the ring, to look up or send to; see
// protocol.NewNodeID.
func NewKey() NodeID { return protocol.NewNodeID() }

// ParseNodeID parses a node ID or key from its 32 hexadecimal digits.
func ParseNodeID(s string) (NodeID, error) { return protocol.ParseNodeID(s) }

// GenerateKey returns a new random node key; see base.GenerateKey.
func GenerateKey() ed25519.PrivateKey { return base.GenerateKey() }

// LoadOrCreateKey loads the node key at path, creating it if absent; see
// base.LoadOrCreateKey.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) { return base.LoadOrCreateKey(path) }
