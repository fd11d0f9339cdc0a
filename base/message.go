package base

import (
	"context"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Message is a message received from a peer.
//
// Packets alias a buffer that belongs to the message alone, so a handler or
// Recv caller may keep them; they must not be modified if the message is
// also being relayed (upper layers forward the original bytes).
type Message struct {
	// Type is the main type (flags.Broadcast, flags.Whisper, ...).
	Type flags.Flag
	// Flag is the sub-flag: the main type for plain user messages, a user
	// flag (>= 0x30), or a library sub-flag.
	Flag flags.Flag
	// Sender is the node that created the message (not the last relay).
	Sender protocol.NodeID
	// Seq is the sender's sequence number for this message.
	Seq uint64
	// Time is when the sender created the message (its clock).
	Time time.Time
	// Hops is how many links the message crossed to get here (1 for a
	// direct neighbour).
	Hops uint8
	// HopLimit is how many links the message may cross in all.
	HopLimit uint8
	// Packets are the payloads, as the sender passed them.
	Packets [][]byte
	// ID is this node's ID for the message (seeded hash of its envelope).
	ID protocol.MessageID
	// Conn is the connection the message arrived on.
	Conn *Conn
	// Route is for the socket layer that delivered the message: chord keeps
	// a request's return path here, for Reply. Nil on a bare base.Socket.
	Route any
	// Proven says that Sender really made the message: its signature was
	// verified (docs/protocol.md §5.3), or Sender is the node at the other
	// end of Conn, whose identity the handshake proved. On a network that
	// does not sign (protocol.SigningNone) only the latter holds. A layer
	// that makes a message of its own from a received one (Inject) carries
	// it over. Layer.Prefilter sees every message before it is verified,
	// with Proven false.
	Proven bool

	envelope []byte
	sock     *Socket
	inline   [2][]byte // backing store for Packets of small messages
	slab     bool      // lives in a reader's slab and block (see detach)
	signed   bool      // the envelope's auth item is not empty (its last AuthSize bytes)
}

// Envelope returns the message's original envelope bytes, for relaying
// unchanged. The slice must not be modified.
func (m *Message) Envelope() []byte { return m.envelope }

// Reply sends packets back to the message's sender as a whisper. On a bare
// base.Socket that needs a direct connection to the sender (ErrNoRoute
// otherwise); mesh and chord sockets route it further. On a request
// (mesh.Socket.Request: Flag flags.AppRequest) it sends the answer,
// correlated with the request by its ID, once.
func (m *Message) Reply(ctx context.Context, packets ...[]byte) error {
	if m.sock == nil {
		return ErrClosed
	}
	return m.sock.reply(ctx, m, packets)
}

// Handler handles messages. Handle reports whether it claimed the message;
// a claimed message goes to no further handler and not to Recv.
//
// Handlers run on the socket's dispatcher goroutines (WithDispatchers),
// never on a connection's reader: each connection's messages are handled in
// the order they arrived, and a slow handler delays only the messages queued
// behind it on its worker. A handler may block (on Reply, say) and may call
// Close.
type Handler interface {
	Handle(msg *Message) bool
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(msg *Message) bool

// Handle calls f(msg).
func (f HandlerFunc) Handle(msg *Message) bool { return f(msg) }
