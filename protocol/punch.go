package protocol

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Hole-punch coordination (docs/protocol.md §12.6). A punch message is a
// whisper with sub-flag 0x2D and hop limit 1 between two neighbours; its
// first packet is one byte, the kind, and the packets after it depend on
// the kind:
//
//	request   (requester → introducer): [0x01, target (16), nonce (8), time (8), signature (64)]
//	introduce (introducer → target):    [0x02, requester key (32), requester address, nonce (8), time (8), signature (64), delay (2)]
//	go        (introducer → requester): [0x03, target (16), target address, nonce (8), delay (2)]
//	refused   (introducer → requester): [0x04, target (16), nonce (8), reason (1)]
//
// Integers are big-endian; time is Unix nanoseconds; delay is in
// milliseconds; an address is "ip:port" text, as the introducer sees the
// node's link (its NAT's mapping). The signature is the requester's, over
// PunchSigningInput: the target learns from it that the requester asked
// for this punch through this introducer, recently.

// PunchKind is the first packet of a punch message.
type PunchKind uint8

// Punch message kinds.
const (
	PunchRequest   PunchKind = 0x01
	PunchIntroduce PunchKind = 0x02
	PunchGo        PunchKind = 0x03
	PunchRefused   PunchKind = 0x04
)

// Reasons of a refused punch request.
const (
	PunchNotLinked   uint8 = 1 // the introducer has no link to the target
	PunchRateLimited uint8 = 2 // the requester asked too often
	PunchBadRequest  uint8 = 3 // the request does not verify or names the requester itself
	PunchDisabled    uint8 = 4 // the introducer does not introduce
	PunchNoAddress   uint8 = 5 // the introducer cannot tell an address of one of them
)

// PunchDomain starts the input of a punch request's signature, so that it
// can pass for no other signature the node key makes. It carries no wire
// version: a request is only ever checked by the current one.
const PunchDomain = "meshsock punch request"

// MaxPunchAddrLen bounds the address text of a punch message, in bytes.
const MaxPunchAddrLen = 64

// MaxPunchDelay is the largest delay a punch message can say.
const MaxPunchDelay = 65535 * time.Millisecond

// Punch is one punch message, decoded. Which fields a kind carries is
// listed above; the others are zero.
type Punch struct {
	Kind PunchKind
	// Peer is the other node of the punch: the target in a request, a go
	// and a refusal; the requester in an introduction (derived from Key).
	Peer      NodeID
	Key       ed25519.PublicKey // introduce: the requester's key
	Addr      string            // introduce, go: the peer's address as the introducer sees it
	Nonce     uint64
	Time      int64         // request, introduce: when the requester signed
	Signature []byte        // request, introduce: the requester's
	Delay     time.Duration // introduce, go: wait this long, then dial (whole milliseconds)
	Reason    uint8         // refused
}

// PunchSigningInput is what a punch request's signature covers: the
// domain, then the requester's, the target's and the introducer's node
// IDs, the nonce and the time.
func PunchSigningInput(requester, target, introducer NodeID, nonce uint64, unixNano int64) []byte {
	b := make([]byte, 0, len(PunchDomain)+3*nodeIDLen+16)
	b = append(b, PunchDomain...)
	b = append(b, requester[:]...)
	b = append(b, target[:]...)
	b = append(b, introducer[:]...)
	b = binary.BigEndian.AppendUint64(b, nonce)
	return binary.BigEndian.AppendUint64(b, uint64(unixNano))
}

// VerifyPunch reports whether sig is requester's signature (under key, from
// which requester's ID derives) over a punch request.
func VerifyPunch(key ed25519.PublicKey, target, introducer NodeID, nonce uint64, unixNano int64, sig []byte) bool {
	if len(key) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	requester := NodeIDFromKey(key)
	return ed25519.Verify(key, PunchSigningInput(requester, target, introducer, nonce, unixNano), sig)
}

// Packets encodes the message as the envelope's packets.
func (p *Punch) Packets() [][]byte {
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	delay := func() []byte {
		return binary.BigEndian.AppendUint16(nil, uint16(min(p.Delay, MaxPunchDelay)/time.Millisecond))
	}
	kind := []byte{byte(p.Kind)}
	switch p.Kind {
	case PunchRequest:
		return [][]byte{kind, p.Peer[:], u64(p.Nonce), u64(uint64(p.Time)), p.Signature}
	case PunchIntroduce:
		return [][]byte{kind, p.Key, []byte(p.Addr), u64(p.Nonce), u64(uint64(p.Time)), p.Signature, delay()}
	case PunchGo:
		return [][]byte{kind, p.Peer[:], []byte(p.Addr), u64(p.Nonce), delay()}
	case PunchRefused:
		return [][]byte{kind, p.Peer[:], u64(p.Nonce), {p.Reason}}
	}
	return [][]byte{kind}
}

// ParsePunch decodes a punch message's packets. Anything but the layouts
// above (an unknown kind, a wrong length, an address that is not an IP
// address and a non-zero port) fails with an error matching ErrMalformed.
// It does not check the signature (VerifyPunch).
func ParsePunch(packets [][]byte) (*Punch, error) {
	bad := func(format string, args ...any) (*Punch, error) {
		return nil, fmt.Errorf("%w: punch: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(packets) == 0 || len(packets[0]) != 1 {
		return bad("no kind byte")
	}
	p := &Punch{Kind: PunchKind(packets[0][0])}
	want := map[PunchKind][]int{ // packet lengths; -1: an address
		PunchRequest:   {1, nodeIDLen, 8, 8, ed25519.SignatureSize},
		PunchIntroduce: {1, ed25519.PublicKeySize, -1, 8, 8, ed25519.SignatureSize, 2},
		PunchGo:        {1, nodeIDLen, -1, 8, 2},
		PunchRefused:   {1, nodeIDLen, 8, 1},
	}[p.Kind]
	if want == nil {
		return bad("unknown kind 0x%02x", packets[0][0])
	}
	if len(packets) != len(want) {
		return bad("kind 0x%02x with %d packets, want %d", packets[0][0], len(packets), len(want))
	}
	for i, n := range want {
		if n >= 0 && len(packets[i]) != n {
			return bad("kind 0x%02x packet %d of %d bytes, want %d", packets[0][0], i, len(packets[i]), n)
		}
	}
	addr := func(b []byte) (string, error) {
		if len(b) > MaxPunchAddrLen {
			return "", fmt.Errorf("%w: punch: address of %d bytes, limit %d", ErrMalformed, len(b), MaxPunchAddrLen)
		}
		ap, err := netip.ParseAddrPort(string(b))
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() || ap.Addr().Zone() != "" {
			return "", fmt.Errorf("%w: punch: %q is not a unicast IP address and port", ErrMalformed, b)
		}
		return string(b), nil
	}
	be64 := binary.BigEndian.Uint64
	delay := func(b []byte) time.Duration { return time.Duration(binary.BigEndian.Uint16(b)) * time.Millisecond }
	var err error
	switch p.Kind {
	case PunchRequest:
		p.Peer = NodeID(packets[1])
		p.Nonce, p.Time, p.Signature = be64(packets[2]), int64(be64(packets[3])), packets[4]
	case PunchIntroduce:
		p.Key = ed25519.PublicKey(packets[1])
		p.Peer = NodeIDFromKey(p.Key)
		if p.Addr, err = addr(packets[2]); err != nil {
			return nil, err
		}
		p.Nonce, p.Time, p.Signature = be64(packets[3]), int64(be64(packets[4])), packets[5]
		p.Delay = delay(packets[6])
	case PunchGo:
		p.Peer = NodeID(packets[1])
		if p.Addr, err = addr(packets[2]); err != nil {
			return nil, err
		}
		p.Nonce, p.Delay = be64(packets[3]), delay(packets[4])
	case PunchRefused:
		p.Peer = NodeID(packets[1])
		p.Nonce, p.Reason = be64(packets[2]), packets[3][0]
	}
	return p, nil
}

// nodeIDLen is a node ID's length in a punch message's packets.
const nodeIDLen = len(NodeID{})
