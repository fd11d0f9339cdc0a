package protocol

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Signed envelopes (docs/protocol.md §5.3).
//
// The origin of an envelope may sign it: its auth item then holds the
// origin's Ed25519 public key and a signature over
//
//	SigningInput = EnvelopeDomain || SHA-256(items)
//
// where items are the bytes of the envelope's first seven items exactly as
// they are on the wire: everything after the array head and before the auth
// item. The hop byte is outside the envelope, so relays still forward the
// bytes unchanged. A receiver accepts the signature only if the key hashes
// to the envelope's sender (KeyMatchesID) and the signature verifies under
// the cofactored Ed25519 equation with canonical encodings (VerifyEnvelope).

const (
	// EnvelopeDomain starts every envelope signature's input, so that no
	// signature the node key makes for another use (handshake, records)
	// can pass for an envelope's, or the other way round.
	EnvelopeDomain = "meshsock/3 envelope"
	// AuthSize is the size of a signed envelope's auth item: public key
	// (32 bytes) then signature (64 bytes).
	AuthSize = ed25519.PublicKeySize + ed25519.SignatureSize
)

// SigningInput is what an envelope's signature covers (EnvelopeDomain then
// the SHA-256 of the signed items). It is an array, so computing one does
// not allocate.
type SigningInput [len(EnvelopeDomain) + sha256.Size]byte

// EnvelopeSigningInput returns the signing input for the signed items of an
// envelope (see SignedItems).
func EnvelopeSigningInput(items []byte) SigningInput {
	var in SigningInput
	copy(in[:], EnvelopeDomain)
	sum := sha256.Sum256(items)
	copy(in[len(EnvelopeDomain):], sum[:])
	return in
}

// SignedItems returns the part of an encoded envelope its signature covers:
// the bytes after the array head and before the auth item. envelope must
// be bytes DecodeEnvelope accepted into e (their auth item is e.Auth).
func SignedItems(envelope []byte, e *Envelope) []byte {
	end := len(envelope) - len(e.Auth) - headLen(uint64(len(e.Auth)))
	if end < 1 {
		return nil
	}
	return envelope[1:end]
}

// AppendSigned appends the envelope's encoding to dst, signed with key:
// its auth item is key's public key and the signature over the signing
// input of the items before it. e.Auth is ignored. It appends exactly
// e.SignedLen() bytes, and allocates only the signature.
func (e *Envelope) AppendSigned(dst []byte, key ed25519.PrivateKey) []byte {
	start := len(dst)
	dst = append(dst, majorArray<<5|envelopeItems)
	dst = e.appendItems(dst)
	in := EnvelopeSigningInput(dst[start+1:])
	// curve25519-voi signs twice as fast as crypto/ed25519 here; Ed25519
	// signatures are deterministic, so both give the same bytes.
	sig := voi.Sign(voi.PrivateKey(key), in[:])
	dst = appendHead(dst, majorBytes, AuthSize)
	dst = append(dst, key[ed25519.SeedSize:]...)
	return append(dst, sig...)
}

// AuthKey returns the public key of a signed envelope's auth item (nil if
// it is unsigned). It aliases e.Auth.
func (e *Envelope) AuthKey() []byte {
	if len(e.Auth) != AuthSize {
		return nil
	}
	return e.Auth[:ed25519.PublicKeySize]
}

// AuthSignature returns the signature of a signed envelope's auth item
// (nil if it is unsigned). It aliases e.Auth.
func (e *Envelope) AuthSignature() []byte {
	if len(e.Auth) != AuthSize {
		return nil
	}
	return e.Auth[ed25519.PublicKeySize:]
}

// VerifyEnvelope checks the signature of envelope, which DecodeEnvelope
// decoded into e: it must be signed, its key must be the key of e.Sender
// (KeyMatchesID) and its signature valid under the rules of
// docs/protocol.md §5.3 (cofactored verification, canonical R, S and key,
// the key not of small order). It returns nil or an error matching
// ErrBadSignature. It is the reference check, one envelope at a time;
// package base verifies in batches, with the same outcome.
func VerifyEnvelope(envelope []byte, e *Envelope) error {
	if len(e.Auth) == 0 {
		return fmt.Errorf("%w: envelope is not signed", ErrBadSignature)
	}
	key := e.AuthKey()
	if key == nil {
		return fmt.Errorf("%w: auth of %d bytes", ErrBadSignature, len(e.Auth))
	}
	if !KeyMatchesID(key, e.Sender) {
		return fmt.Errorf("%w: key does not belong to sender %s", ErrBadSignature, e.Sender)
	}
	in := EnvelopeSigningInput(SignedItems(envelope, e))
	if !voi.Verify(voi.PublicKey(key), in[:], e.AuthSignature()) {
		return fmt.Errorf("%w: signature does not verify", ErrBadSignature)
	}
	return nil
}
