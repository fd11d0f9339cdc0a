package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrCertificate: a TLS peer's certificate is not a meshsock node
// certificate (docs/protocol.md §9.3): not exactly one certificate, not
// X.509, not an Ed25519 key, or its self-signature does not verify.
var ErrCertificate = errors.New("protocol: not a meshsock node certificate")

// Validity of the certificates NewCertificate makes. Verification ignores
// it (the certificate only carries the key, which the Hello names and the
// handshake proves); a fixed, wide range keeps clocks out of the
// handshake and makes the certificate a function of the key alone.
var (
	certNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) // RFC 5280 §4.1.2.5: no expiry
)

// NewCertificate returns the self-signed TLS certificate of the node whose
// key is key: X.509 v3, subject common name the node ID, serial number the
// node ID as an unsigned integer, valid from 2000-01-01 to
// 9999-12-31T23:59:59Z, key usage digital signature, signed with key
// (Ed25519). Ed25519 signatures are deterministic, so the same key always
// gives the same certificate.
func NewCertificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("%w: Ed25519 private key of %d bytes", ErrCertificate, len(key))
	}
	pub := key.Public().(ed25519.PublicKey)
	id := NodeIDFromKey(pub)
	serial := new(big.Int).SetBytes(id[:])
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.String()},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	// The template's own key signs: rand is not used by Ed25519, but
	// CreateCertificate wants a reader.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertificateKey checks a TLS peer's certificate chain as a meshsock node
// certificate and returns its key: exactly one DER certificate that parses
// as X.509, with an Ed25519 public key and signature algorithm, whose
// signature verifies under its own key. Nothing else (names, validity,
// extensions) is checked. Errors match [ErrCertificate].
func CertificateKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) != 1 {
		return nil, fmt.Errorf("%w: %d certificates, want 1", ErrCertificate, len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || cert.PublicKeyAlgorithm != x509.Ed25519 {
		return nil, fmt.Errorf("%w: %v public key, want Ed25519", ErrCertificate, cert.PublicKeyAlgorithm)
	}
	if cert.SignatureAlgorithm != x509.PureEd25519 {
		return nil, fmt.Errorf("%w: signed with %v, want Ed25519", ErrCertificate, cert.SignatureAlgorithm)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("%w: self-signature: %w", ErrCertificate, err)
	}
	return pub, nil
}

// TLSConfig returns the TLS configuration of one side of a link
// (docs/protocol.md §9.3): TLS 1.3 only, cert as this node's certificate,
// a certificate required from the peer and checked by [CertificateKey]
// instead of against certificate authorities, ALPN [ALPN], no session
// resumption. The dialer is the TLS client, the listener the server.
// The configuration may be shared by any number of connections.
func TLSConfig(cert tls.Certificate, dialer bool) *tls.Config {
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		_, err := CertificateKey(rawCerts)
		return err
	}
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
		VerifyPeerCertificate:  verify,
	}
	if dialer {
		// No certificate authority vouches for a node: the chain and name
		// checks are replaced by verify (and by the Hello's key, which
		// must be the certificate's).
		cfg.InsecureSkipVerify = true
	} else {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	return cfg
}
