package discover

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/meshsock/meshsock/protocol"
)

// A discovery datagram (docs/protocol.md §17), all integers big-endian:
//
//	magic    4  "MSDG"
//	version  1  protocol.Version
//	kind     1  1 probe, 2 answer
//	flags    1  bit 0: a network-key proof follows the addresses;
//	            bit 1: hidden (an invisible node's probe: not to be listed)
//	naddrs   1  0 to MaxAddrs
//	protocol 16 the sender's protocol.ProtocolID
//	node ID  16 the first 16 bytes of SHA-256(key)
//	key      32 the sender's Ed25519 public key
//	time     8  when it was sent, Unix nanoseconds (signed)
//	addrs       naddrs × (u8 length, 1 to 255 bytes of "host:port")
//	proof    32 HMAC-SHA256(network key, ProofDomain || all bytes above), if flagged
//	sig      64 Ed25519 by key over SignDomain || all bytes above

// Packet kinds.
const (
	// KindProbe asks every node that hears it to answer.
	KindProbe Kind = 1
	// KindAnswer answers a probe, sent to the probe's source address.
	KindAnswer Kind = 2
)

// Kind says what a datagram is: KindProbe or KindAnswer.
type Kind uint8

func (k Kind) String() string {
	switch k {
	case KindProbe:
		return "probe"
	case KindAnswer:
		return "answer"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Wire constants.
const (
	// Magic starts every discovery datagram.
	Magic = "MSDG"
	// SignDomain starts the input of a datagram's signature, so that no
	// signature the node key makes for another use (envelopes, records,
	// handshakes) can pass for a datagram's.
	SignDomain = "meshsock discovery datagram"
	// ProofDomain starts the input of a datagram's network-key proof.
	ProofDomain = "meshsock discovery network proof"
	// MaxPacketSize bounds a datagram, in bytes: the encoder refuses a
	// larger one, and receivers drop it unread. It fits one unfragmented
	// IPv6 packet on any link (1280-byte minimum MTU).
	MaxPacketSize = 1232
	// MaxAddrs bounds the listen addresses of one datagram.
	MaxAddrs = 8
	// MaxAddrLen bounds one listen address, in bytes.
	MaxAddrLen = 255
	// ProofSize is the size of a network-key proof.
	ProofSize = sha256.Size

	headerSize = 4 + 1 + 1 + 1 + 1 + 16 + 16 + 32 + 8
	// MinPacketSize is the size of a datagram with no address and no
	// proof.
	MinPacketSize = headerSize + ed25519.SignatureSize

	flagProof  = 1 << 0
	flagHidden = 1 << 1
)

// Packet is a decoded discovery datagram. Decode fills every field from
// the bytes; nothing in it is trusted until Verify (and, with a keyring,
// VerifyProof) accepted it.
type Packet struct {
	Version  uint8
	Kind     Kind
	Hidden   bool // the sender is invisible: it must not be listed
	Protocol protocol.ProtocolID
	ID       protocol.NodeID
	Key      ed25519.PublicKey
	Time     int64 // Unix nanoseconds
	Addrs    []string
	Proof    []byte // network-key proof (nil: none)
	Sig      []byte

	raw []byte // the datagram as received (Decode) or encoded (Encode)
}

// Signer signs msg with the node's Ed25519 key (base.Socket.Sign does).
type Signer func(msg []byte) []byte

// Encode returns the datagram for p, signed by sign, with a network-key
// proof under networkKey if it is not nil. p.ID, p.Version, p.Proof and
// p.Sig are set from the key and the result. It fails (matching
// protocol.ErrMalformed) when an address is empty or too long, there are
// too many, or the datagram would exceed MaxPacketSize.
func (p *Packet) Encode(sign Signer, networkKey []byte) ([]byte, error) {
	if len(p.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: discovery key of %d bytes", protocol.ErrMalformed, len(p.Key))
	}
	if len(p.Addrs) > MaxAddrs {
		return nil, fmt.Errorf("%w: %d addresses, limit %d", protocol.ErrMalformed, len(p.Addrs), MaxAddrs)
	}
	p.Version = protocol.Version
	p.ID = protocol.NodeIDFromKey(p.Key)
	b := make([]byte, 0, 256)
	b = append(b, Magic...)
	var fl byte
	if networkKey != nil {
		fl |= flagProof
	}
	if p.Hidden {
		fl |= flagHidden
	}
	b = append(b, p.Version, byte(p.Kind), fl, byte(len(p.Addrs)))
	b = append(b, p.Protocol[:]...)
	b = append(b, p.ID[:]...)
	b = append(b, p.Key...)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Time))
	for _, a := range p.Addrs {
		if len(a) == 0 || len(a) > MaxAddrLen {
			return nil, fmt.Errorf("%w: address of %d bytes", protocol.ErrMalformed, len(a))
		}
		b = append(b, byte(len(a)))
		b = append(b, a...)
	}
	p.Proof = nil
	if networkKey != nil {
		p.Proof = Proof(networkKey, b)
		b = append(b, p.Proof...)
	}
	if len(b)+ed25519.SignatureSize > MaxPacketSize {
		return nil, fmt.Errorf("%w: discovery datagram of %d bytes, limit %d", protocol.ErrMalformed, len(b)+ed25519.SignatureSize, MaxPacketSize)
	}
	p.Sig = sign(signInput(b))
	b = append(b, p.Sig...)
	p.raw = b
	return b, nil
}

// Proof returns the network-key proof of the datagram bytes before it.
func Proof(networkKey, before []byte) []byte {
	m := hmac.New(sha256.New, networkKey)
	m.Write([]byte(ProofDomain))
	m.Write(before)
	return m.Sum(nil)
}

func signInput(before []byte) []byte {
	return append([]byte(SignDomain), before...)
}

// Decode parses a datagram. It checks the layout only: the result must
// pass Verify before anything in it is believed. Errors match
// protocol.ErrMalformed (protocol.ErrVersion for another wire version),
// and Decode never panics, whatever b holds. p keeps a reference to b.
func Decode(b []byte) (*Packet, error) {
	if len(b) > MaxPacketSize {
		return nil, fmt.Errorf("%w: datagram of %d bytes, limit %d", protocol.ErrMalformed, len(b), MaxPacketSize)
	}
	if len(b) < MinPacketSize {
		return nil, fmt.Errorf("%w: datagram of %d bytes, at least %d", protocol.ErrMalformed, len(b), MinPacketSize)
	}
	if string(b[:4]) != Magic {
		return nil, fmt.Errorf("%w: not a discovery datagram", protocol.ErrMalformed)
	}
	p := &Packet{Version: b[4], Kind: Kind(b[5]), raw: b}
	if p.Version != protocol.Version {
		return nil, fmt.Errorf("%w: discovery datagram of version %d", protocol.ErrVersion, p.Version)
	}
	if p.Kind != KindProbe && p.Kind != KindAnswer {
		return nil, fmt.Errorf("%w: datagram kind %d", protocol.ErrMalformed, b[5])
	}
	fl, n := b[6], int(b[7])
	if fl&^(flagProof|flagHidden) != 0 {
		return nil, fmt.Errorf("%w: datagram flags %#x", protocol.ErrMalformed, fl)
	}
	if n > MaxAddrs {
		return nil, fmt.Errorf("%w: %d addresses, limit %d", protocol.ErrMalformed, n, MaxAddrs)
	}
	p.Hidden = fl&flagHidden != 0
	copy(p.Protocol[:], b[8:24])
	copy(p.ID[:], b[24:40])
	p.Key = ed25519.PublicKey(b[40:72])
	p.Time = int64(binary.BigEndian.Uint64(b[72:80]))
	rest := b[headerSize : len(b)-ed25519.SignatureSize]
	if n > 0 {
		p.Addrs = make([]string, 0, n)
	}
	for range n {
		if len(rest) < 1 || rest[0] == 0 || len(rest) < 1+int(rest[0]) {
			return nil, fmt.Errorf("%w: truncated address", protocol.ErrMalformed)
		}
		a := rest[1 : 1+int(rest[0])]
		if !utf8.Valid(a) {
			return nil, fmt.Errorf("%w: address is not UTF-8", protocol.ErrMalformed)
		}
		p.Addrs = append(p.Addrs, string(a))
		rest = rest[1+len(a):]
	}
	if fl&flagProof != 0 {
		if len(rest) != ProofSize {
			return nil, fmt.Errorf("%w: %d bytes where a proof of %d belongs", protocol.ErrMalformed, len(rest), ProofSize)
		}
		p.Proof = rest
	} else if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the addresses", protocol.ErrMalformed, len(rest))
	}
	p.Sig = b[len(b)-ed25519.SignatureSize:]
	return p, nil
}

// signed returns the bytes the signature covers.
func (p *Packet) signed() []byte { return p.raw[:len(p.raw)-ed25519.SignatureSize] }

// proven returns the bytes the network-key proof covers.
func (p *Packet) proven() []byte { return p.raw[:len(p.raw)-ed25519.SignatureSize-len(p.Proof)] }

// Verify checks that the key hashes to the node ID (no one advertises
// another's ID) and that the signature verifies (cofactored, canonical,
// as for envelopes). It returns nil or an error matching
// protocol.ErrBadSignature.
func (p *Packet) Verify() error {
	if !protocol.KeyMatchesID(p.Key, p.ID) {
		return fmt.Errorf("%w: discovery key does not belong to node %s", protocol.ErrBadSignature, p.ID)
	}
	if !voi.Verify(voi.PublicKey(p.Key), signInput(p.signed()), p.Sig) {
		return fmt.Errorf("%w: discovery datagram signature does not verify", protocol.ErrBadSignature)
	}
	return nil
}

// VerifyProof reports whether the datagram carries a network-key proof
// under one of keys. Every key is tried, so the time taken depends on the
// number of keys only.
func (p *Packet) VerifyProof(keys [][]byte) bool {
	if p.Proof == nil {
		return false
	}
	ok := false
	for _, k := range keys {
		if hmac.Equal(p.Proof, Proof(k, p.proven())) {
			ok = true
		}
	}
	return ok
}

// Bytes returns the datagram's bytes, as decoded or encoded.
func (p *Packet) Bytes() []byte { return p.raw }
