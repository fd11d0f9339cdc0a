package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Version is the wire version this package implements. It is the second
// item of the handshake's [Preamble] and [Hello] and part of every
// [ProtocolID], so nodes of different versions refuse each other.
const Version = 4

// Link encryption: the values of [Protocol.Encryption], which name what
// really runs on a link (docs/protocol.md §9).
const (
	// EncryptionTLS runs every link inside TLS 1.3, mutually authenticated
	// with certificates that carry the nodes' Ed25519 keys. The default.
	EncryptionTLS = "tls-1.3"
	// EncryptionPlaintext runs links in the clear, for trusted networks and
	// measurement. Each side still proves its node key in the handshake.
	EncryptionPlaintext = "plaintext"
)

// ValidEncryption reports whether s is one of the encryption settings this
// version implements ([EncryptionTLS], [EncryptionPlaintext]).
func ValidEncryption(s string) bool { return s == EncryptionTLS || s == EncryptionPlaintext }

// Protocol names an isolated network: nodes with different subnets,
// encryption or signing settings refuse each other during the handshake.
type Protocol struct {
	// Subnet separates applications that share hosts and ports.
	Subnet string
	// Encryption names the transport security: [EncryptionTLS] or
	// [EncryptionPlaintext]. Sockets refuse any other value.
	Encryption string
	// Signing says whether origins sign the envelopes that may travel
	// beyond one link (SigningEd25519, the default, also when empty) or
	// nothing is signed (SigningNone, for trusted networks and
	// measurement). Nodes that sign and nodes that do not refuse each
	// other: a signing node would drop every relayed message of the
	// others.
	Signing string
}

// Signing settings (Protocol.Signing).
const (
	// SigningEd25519: origins sign broadcasts and every envelope that may
	// be relayed (docs/protocol.md §5.3); receivers verify. The default.
	SigningEd25519 = "ed25519"
	// SigningNone: nothing is signed or verified.
	SigningNone = "none"
)

// DefaultProtocol is used by sockets that are given no protocol: subnet
// "meshsock", TLS 1.3, signed envelopes.
var DefaultProtocol = Protocol{Subnet: "meshsock", Encryption: EncryptionTLS, Signing: SigningEd25519}

// Signs reports whether the protocol signs envelopes: Signing is
// SigningEd25519 or empty.
func (p Protocol) Signs() bool { return p.signing() == SigningEd25519 }

// signing is Signing with the default filled in.
func (p Protocol) signing() string {
	if p.Signing == "" {
		return SigningEd25519
	}
	return p.Signing
}

// ProtocolID is the 16-byte digest of a [Protocol] and the wire version.
type ProtocolID [16]byte

// String returns the ID as 32 lower-case hex digits.
func (p ProtocolID) String() string { return hex.EncodeToString(p[:]) }

// ID returns the protocol's identifier: the first 16 bytes of
// SHA-256("meshsock-protocol" || u16be(Version) || u32be(len(Subnet)) ||
// Subnet || u32be(len(Encryption)) || Encryption || u32be(len(Signing)) ||
// Signing), with an empty Signing taken as SigningEd25519. Length prefixes
// keep ("ab","c") and ("a","bc") apart.
func (p Protocol) ID() ProtocolID { return p.idForVersion(Version) }

func (p Protocol) idForVersion(version uint16) ProtocolID {
	h := sha256.New()
	var scratch [4]byte
	h.Write([]byte("meshsock-protocol"))
	binary.BigEndian.PutUint16(scratch[:2], version)
	h.Write(scratch[:2])
	binary.BigEndian.PutUint32(scratch[:], uint32(len(p.Subnet)))
	h.Write(scratch[:])
	h.Write([]byte(p.Subnet))
	binary.BigEndian.PutUint32(scratch[:], uint32(len(p.Encryption)))
	h.Write(scratch[:])
	h.Write([]byte(p.Encryption))
	signing := p.signing()
	binary.BigEndian.PutUint32(scratch[:], uint32(len(signing)))
	h.Write(scratch[:])
	h.Write([]byte(signing))
	var id ProtocolID
	copy(id[:], h.Sum(nil))
	return id
}

// String returns "subnet/encryption", followed by "/unsigned" when the
// protocol does not sign.
func (p Protocol) String() string {
	if !p.Signs() {
		return p.Subnet + "/" + p.Encryption + "/unsigned"
	}
	return p.Subnet + "/" + p.Encryption
}
