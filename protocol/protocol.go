package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// Version is the wire version this package implements. It is the second
// item of the handshake's [Preamble] and [Hello] and part of every
// [ProtocolID], so nodes of different versions refuse each other.
const Version = 3

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

// Protocol names an isolated network: nodes with different subnets or
// encryption settings refuse each other during the handshake.
type Protocol struct {
	// Subnet separates applications that share hosts and ports.
	Subnet string
	// Encryption names the transport security: [EncryptionTLS] or
	// [EncryptionPlaintext]. Sockets refuse any other value.
	Encryption string
}

// DefaultProtocol is used by sockets that are given no protocol: subnet
// "meshsock", TLS 1.3.
var DefaultProtocol = Protocol{Subnet: "meshsock", Encryption: EncryptionTLS}

// ProtocolID is the 16-byte digest of a [Protocol] and the wire version.
type ProtocolID [16]byte

// String returns the ID as 32 lower-case hex digits.
func (p ProtocolID) String() string { return hex.EncodeToString(p[:]) }

// ID returns the protocol's identifier: the first 16 bytes of
// SHA-256("meshsock-protocol" || u16be(Version) || u32be(len(Subnet)) ||
// Subnet || u32be(len(Encryption)) || Encryption). Length prefixes keep
// ("ab","c") and ("a","bc") apart.
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
	var id ProtocolID
	copy(id[:], h.Sum(nil))
	return id
}

// String returns "subnet/encryption".
func (p Protocol) String() string { return p.Subnet + "/" + p.Encryption }
