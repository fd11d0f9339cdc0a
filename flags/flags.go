// Package flags holds every constant that meshsock puts on the wire: message
// types, sub-flags, compression method identifiers and the reserved range.
//
// The byte values follow py2p where the meaning is the same, so a reader of
// either library's traces sees the same numbers. Values 0x00–0x2F belong to
// the library; applications may use flags from [FirstUser] (0x30) upwards.
package flags

import (
	"errors"
	"fmt"
)

// Flag is a message type or sub-flag byte of the envelope.
//
// The main types ([Broadcast], [Renegotiate], [Whisper], [Ping], [Pong]) say
// how a message travels; sub-flags say what it is for. A user message carries
// its main type as its sub-flag (py2p's convention), or a user flag >= 0x30.
type Flag uint8

// Main message types.
const (
	// Broadcast messages are flooded to every node of the mesh.
	Broadcast Flag = 0x00
	// Renegotiate messages manage a single link (compression lists, resends);
	// they are never relayed.
	Renegotiate Flag = 0x01
	// Whisper messages go to one node and are never relayed.
	Whisper Flag = 0x02
	// Ping asks the peer to answer with [Pong]; it keeps idle links alive.
	Ping Flag = 0x03
	// Pong answers [Ping].
	Pong Flag = 0x04
)

// Sub-flags used by the library's built-in handlers.
const (
	Handshake Flag = 0x05 // connection handshake
	Notify    Flag = 0x06 // notification of a change (e.g. a peer leaving)
	Peers     Flag = 0x07 // peer-list exchange
	Request   Flag = 0x08 // a request for a route or a value
	Resend    Flag = 0x09 // ask the peer to send a link frame again
	Response  Flag = 0x0A // the answer to a Request
	Store     Flag = 0x0B // store a value (reserved for the DHT layers)
	Retrieve  Flag = 0x0C // ask for a stored value
	Retrieved Flag = 0x0D // the answer to Retrieve
	Forward   Flag = 0x0E // a message forwarded towards a key (chord)
)

// Sub-flags that py2p does not have. They sit at the top of the reserved
// range, away from py2p's compression values (0x10–0x20), which shared one
// namespace with the flags there.
const (
	AppRequest    Flag = 0x22 // mesh: an application request or call (Socket.Request, Socket.Call)
	AppResponse   Flag = 0x23 // mesh: the answer to an AppRequest
	Publish       Flag = 0x24 // mesh: a message published on a topic (signed broadcast)
	Member        Flag = 0x25 // mesh: a member record, a heartbeat or a graceful leave (signed broadcast)
	MemberSync    Flag = 0x26 // mesh: the records of live members, to a new neighbour (one hop)
	Bye           Flag = 0x27 // link: the sender is closing this link, with a reason
	FindSuccessor Flag = 0x28 // chord: who owns this key?
	GetNeighbours Flag = 0x29 // chord: predecessor and successor list
	ChordNotify   Flag = 0x2A // chord: "I might be your predecessor"
	Leave         Flag = 0x2B // chord: graceful hand-over before close
	Routed        Flag = 0x2C // mesh: a unicast carried hop by hop towards a target (signed whisper)
	Punch         Flag = 0x2D // mesh: NAT hole-punch coordination through a shared neighbour (one hop)
	IHave         Flag = 0x2E // mesh: batched announcement of broadcasts the sender holds (one hop)
	Tree          Flag = 0x2F // mesh: broadcast link control: GRAFT / PRUNE / IWANT, a kind byte first (one hop)
)

// Reserved range.
const (
	// LastReserved is the highest flag value that belongs to the library.
	LastReserved Flag = 0x2F
	// FirstUser is the lowest flag value an application may use.
	FirstUser Flag = 0x30
)

// ErrReservedFlag is returned by [CheckUser] for a flag inside the library's
// reserved range.
var ErrReservedFlag = errors.New("flags: flag is reserved for the library (0x00-0x2F)")

// IsReserved reports whether f belongs to the library's range 0x00–0x2F.
func (f Flag) IsReserved() bool { return f <= LastReserved }

// IsMainType reports whether f is one of the five main message types.
func (f Flag) IsMainType() bool { return f <= Pong }

// CheckUser returns nil if f may be used as an application flag and an error
// matching [ErrReservedFlag] otherwise.
func CheckUser(f Flag) error {
	if f.IsReserved() {
		return fmt.Errorf("%w: %s", ErrReservedFlag, f)
	}
	return nil
}

var flagNames = map[Flag]string{
	Broadcast:     "broadcast",
	Renegotiate:   "renegotiate",
	Whisper:       "whisper",
	Ping:          "ping",
	Pong:          "pong",
	Handshake:     "handshake",
	Notify:        "notify",
	Peers:         "peers",
	Request:       "request",
	Resend:        "resend",
	Response:      "response",
	Store:         "store",
	Retrieve:      "retrieve",
	Retrieved:     "retrieved",
	Forward:       "forward",
	AppRequest:    "app-request",
	AppResponse:   "app-response",
	Publish:       "publish",
	Member:        "member",
	MemberSync:    "member-sync",
	Bye:           "bye",
	FindSuccessor: "find-successor",
	GetNeighbours: "get-neighbours",
	ChordNotify:   "chord-notify",
	Leave:         "leave",
	Routed:        "routed",
	Punch:         "punch",
	IHave:         "ihave",
	Tree:          "tree",
}

// String returns the flag's name, "user(0xNN)" for an application flag and
// "reserved(0xNN)" for an unassigned library value.
func (f Flag) String() string {
	if name, ok := flagNames[f]; ok {
		return name
	}
	if f.IsReserved() {
		return fmt.Sprintf("reserved(0x%02x)", uint8(f))
	}
	return fmt.Sprintf("user(0x%02x)", uint8(f))
}

// Method identifies a compression method, as written in a frame's codec byte
// and in the handshake's list of accepted methods.
type Method uint8

// Compression methods. gzip, zlib and snappy keep py2p's values; zstd is new.
const (
	// None means the frame body is not compressed. Every peer accepts it.
	None   Method = 0x00
	Gzip   Method = 0x11
	Zlib   Method = 0x13
	Snappy Method = 0x20
	Zstd   Method = 0x21
)

var methodNames = map[Method]string{
	None:   "none",
	Gzip:   "gzip",
	Zlib:   "zlib",
	Snappy: "snappy",
	Zstd:   "zstd",
}

// String returns the method's name, or "method(0xNN)" for an unknown one.
func (m Method) String() string {
	if name, ok := methodNames[m]; ok {
		return name
	}
	return fmt.Sprintf("method(0x%02x)", uint8(m))
}

// Known reports whether m is one of the methods this package names.
func (m Method) Known() bool {
	_, ok := methodNames[m]
	return ok
}

// ParseMethod returns the method with the given name ("none", "gzip", "zlib",
// "snappy", "zstd").
func ParseMethod(name string) (Method, error) {
	for m, n := range methodNames {
		if n == name {
			return m, nil
		}
	}
	return 0, fmt.Errorf("flags: unknown compression method %q", name)
}
