package mesh

import (
	"crypto/ed25519"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// The types and helpers a mesh program needs from the layers below,
// re-exported so that it imports only this package. Each is the very same
// type or function as the original, so values pass freely between the
// two names.

// NodeID identifies a node: the first 16 bytes of the SHA-256 of its
// Ed25519 public key; see protocol.NodeID.
type NodeID = protocol.NodeID

// Record is a node's signed record (addresses, group, hub, metadata); see
// protocol.Record.
type Record = protocol.Record

// HandlerFunc adapts a function to a Handler; see base.HandlerFunc.
type HandlerFunc = base.HandlerFunc

// Event is a connection event (Subscribe); see base.Event.
type Event = base.Event

// EventKind says what an Event reports; see base.EventKind.
type EventKind = base.EventKind

// The kinds of Event.
const (
	EventConnect    = base.EventConnect
	EventDisconnect = base.EventDisconnect
	EventMessage    = base.EventMessage
)

// Status is a node's health (Socket.Status); see base.Status.
type Status = base.Status

// Keyring holds the network keys a node proves and accepts
// (WithNetworkKey); see base.Keyring.
type Keyring = base.Keyring

// What a received Message is, as its Type and Flag fields say.
const (
	// TypeBroadcast is the Type of a broadcast (Send, Publish).
	TypeBroadcast = flags.Broadcast
	// TypeWhisper is the Type of a message to one node (Whisper, Reply,
	// Request).
	TypeWhisper = flags.Whisper
	// FlagRequest is the Flag of a request (Socket.Request) that expects a
	// Reply.
	FlagRequest = flags.AppRequest
)

// ErrDuplicate: Connect reached a node this node already has a link to.
var ErrDuplicate = base.ErrDuplicate

// Protocol is the subnet, encryption and signing a node speaks
// (WithProtocol); see protocol.Protocol.
type Protocol = protocol.Protocol

// Encryption settings for WithProtocol's Protocol.Encryption.
const (
	EncryptionTLS       = protocol.EncryptionTLS
	EncryptionPlaintext = protocol.EncryptionPlaintext
)

// ParseNodeID parses a node ID from its 32 hexadecimal digits; see
// protocol.ParseNodeID.
func ParseNodeID(s string) (NodeID, error) { return protocol.ParseNodeID(s) }

// NewKeyring returns a keyring that proves primary and accepts it and the
// others; see base.NewKeyring.
func NewKeyring(primary []byte, accepted ...[]byte) (*Keyring, error) {
	return base.NewKeyring(primary, accepted...)
}

// LoadOrCreateKey loads the node key at path, creating it if absent; see
// base.LoadOrCreateKey.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) { return base.LoadOrCreateKey(path) }

// GenerateKey returns a new random node key; see base.GenerateKey.
func GenerateKey() ed25519.PrivateKey { return base.GenerateKey() }

// NodeIDOf returns the node ID a key gives; see base.NodeIDOf.
func NodeIDOf(key ed25519.PrivateKey) NodeID { return base.NodeIDOf(key) }
