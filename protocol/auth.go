package protocol

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Handshake authentication (docs/protocol.md §9.5). Every input to a
// signature or an HMAC starts with a distinct "meshsock/3 <use>" string, so
// that nothing signed for one use can be passed off as another.
const (
	// ALPN is the TLS application protocol both sides of a TLS link
	// offer and require.
	ALPN = "meshsock/3"
	// ExporterLabel is the TLS exporter label (RFC 8446 §7.5) of the
	// channel binding that the transcript covers.
	ExporterLabel = "EXPORTER-meshsock/3 channel binding"
	// BindingSize is the size of the channel binding of a TLS link; a
	// plaintext link has an empty one.
	BindingSize = 32

	// TranscriptDomain starts the input of the transcript hash.
	TranscriptDomain = "meshsock/3 handshake transcript"
	// AuthDomainDialer and AuthDomainListener start the input of the
	// dialer's and the listener's Auth signature.
	AuthDomainDialer   = "meshsock/3 auth dialer"
	AuthDomainListener = "meshsock/3 auth listener"
	// ProofDomainDialer and ProofDomainListener start the input of the
	// dialer's and the listener's network-key proof.
	ProofDomainDialer   = "meshsock/3 network proof dialer"
	ProofDomainListener = "meshsock/3 network proof listener"
)

// Transcript returns the transcript hash of a handshake:
//
//	SHA-256(TranscriptDomain
//	        || u32be(len(dialerHello))   || dialerHello
//	        || u32be(len(listenerHello)) || listenerHello
//	        || u32be(len(binding))       || binding)
//
// where the Hellos are the two Hello frame bodies exactly as sent and
// binding is the TLS exported keying material ([ExporterLabel],
// [BindingSize] bytes, no context) or empty on a plaintext link. Both
// Hellos carry a fresh random nonce, so a transcript never repeats; on a
// TLS link the binding ties it to the session.
func Transcript(dialerHello, listenerHello, binding []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	h.Write([]byte(TranscriptDomain))
	for _, part := range [][]byte{dialerHello, listenerHello, binding} {
		binary.BigEndian.PutUint32(n[:], uint32(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var th [sha256.Size]byte
	h.Sum(th[:0])
	return th
}

// AuthSignInput returns what the dialer (dialer true) or the listener signs
// in its Auth frame: its role's domain string followed by the transcript
// hash. The role keeps a signature from being reflected back to its signer.
func AuthSignInput(dialer bool, th [sha256.Size]byte) []byte {
	domain := AuthDomainListener
	if dialer {
		domain = AuthDomainDialer
	}
	return append([]byte(domain), th[:]...)
}

// SignAuth returns the Auth signature of the dialer (dialer true) or the
// listener, whose node key is key, for transcript th.
func SignAuth(key ed25519.PrivateKey, dialer bool, th [sha256.Size]byte) []byte {
	return ed25519.Sign(key, AuthSignInput(dialer, th))
}

// VerifyAuth reports whether sig is the Auth signature of the holder of pub
// in the given role for transcript th.
func VerifyAuth(pub ed25519.PublicKey, dialer bool, th [sha256.Size]byte, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, AuthSignInput(dialer, th), sig)
}

// NetworkProof returns the network-key proof of the dialer (dialer true) or
// the listener for transcript th:
//
//	HMAC-SHA256(networkKey, role's proof domain || th)
func NetworkProof(networkKey []byte, dialer bool, th [sha256.Size]byte) []byte {
	domain := ProofDomainListener
	if dialer {
		domain = ProofDomainDialer
	}
	m := hmac.New(sha256.New, networkKey)
	m.Write([]byte(domain))
	m.Write(th[:])
	return m.Sum(nil)
}

// VerifyNetworkProof reports, in constant time for one key, whether proof
// is the network-key proof of the given role for th under networkKey.
func VerifyNetworkProof(networkKey []byte, dialer bool, th [sha256.Size]byte, proof []byte) bool {
	return len(proof) == ProofSize && hmac.Equal(proof, NetworkProof(networkKey, dialer, th))
}
