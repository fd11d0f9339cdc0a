package protocol

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

func TestPreambleRoundTrip(t *testing.T) {
	for _, p := range []Preamble{
		{Version: Version, Encryption: EncryptionTLS},
		{Version: Version, Encryption: EncryptionPlaintext},
		{Version: Version, Encryption: ""},
		{Version: 65535, Encryption: string(make([]byte, MaxEncryptionLen))},
	} {
		b, err := MarshalPreamble(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalPreamble(b)
		if err != nil || got != p {
			t.Fatalf("%+v: got %+v, %v", p, got, err)
		}
	}
	if _, err := MarshalPreamble(Preamble{Version: Version, Encryption: string(make([]byte, MaxEncryptionLen+1))}); !errors.Is(err, ErrMalformed) {
		t.Errorf("over-long encryption name encoded: %v", err)
	}
}

func TestPreambleRejects(t *testing.T) {
	valid, _ := MarshalPreamble(Preamble{Version: Version, Encryption: EncryptionTLS})
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"extra item", encodeItems(t, []any{Magic, Version, EncryptionTLS, 1}), ErrMalformed},
		{"missing item", encodeItems(t, []any{Magic, Version}), ErrMalformed},
		{"encryption bytes", encodeItems(t, []any{Magic, Version, []byte(EncryptionTLS)}), ErrMalformed},
		{"encryption int", encodeItems(t, []any{Magic, Version, 13}), ErrMalformed},
		{"encryption bad UTF-8", append(encodeItems(t, []any{Magic, Version})[:11:11], 0x62, 0xff, 0xfe), ErrMalformed},
		{"encryption 65 bytes", encodeItems(t, []any{Magic, Version, string(make([]byte, MaxEncryptionLen+1))}), ErrMalformed},
		{"version text", encodeItems(t, []any{Magic, "3", EncryptionTLS}), ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"truncated", valid[:len(valid)-1], ErrMalformed},
		{"a hello of this version", encodeItems(t, helloItems()), ErrMalformed},
		{"empty", nil, ErrNotMeshsock},
		{"TLS client hello", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00}, ErrNotMeshsock},
		{"wrong magic", encodeItems(t, []any{"meshsocK", Version, EncryptionTLS}), ErrNotMeshsock},
		{"a verdict", encodeItems(t, []any{4, "busy"}), ErrNotMeshsock},
	}
	for _, c := range cases {
		if p, err := UnmarshalPreamble(c.data); !errors.Is(err, c.want) || p != (Preamble{}) {
			t.Errorf("%s: UnmarshalPreamble(%x) = %+v, %v; want %v", c.name, c.data, p, err, c.want)
		}
	}
	// The first frame of another version decodes with its version only,
	// so that it is refused with a protocol mismatch: a version 2 Hello,
	// a future version's preamble of another shape.
	for name, c := range map[string]struct {
		items   []any
		version uint16
	}{
		"version 2 hello":    {append([]any{Magic, 2}, helloItems()[2:9]...), 2},
		"future, 2 items":    {[]any{Magic, Version + 1}, Version + 1},
		"future, 3 items":    {[]any{Magic, Version + 1, "quantum"}, Version + 1},
		"version 0, 4 items": {[]any{Magic, 0, "x", 1}, 0},
	} {
		p, err := UnmarshalPreamble(encodeItems(t, c.items))
		if err != nil || p.Version != c.version {
			t.Errorf("%s: UnmarshalPreamble = %+v, %v; want version %d", name, p, err, c.version)
		}
	}
}

func TestAuthRoundTripAndRejects(t *testing.T) {
	sig := seq(1, SignatureSize)
	for _, a := range []Auth{{Signature: sig}, {Signature: sig, Proof: seq(2, ProofSize)}} {
		b, err := MarshalAuth(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalAuth(b)
		if err != nil || !bytes.Equal(got.Signature, a.Signature) || !bytes.Equal(got.Proof, a.Proof) {
			t.Fatalf("%x: got %x, %v", a, got, err)
		}
	}
	if b, _ := MarshalAuth(Auth{Signature: sig}); !bytes.Equal(b[len(b)-1:], []byte{0x40}) || b[0] != 0x82 || len(b) != 68 {
		t.Errorf("an Auth without a proof encodes as %x; want array(2) ending in an empty bstr", b)
	}
	for _, a := range []Auth{{}, {Signature: sig[:63]}, {Signature: sig, Proof: seq(0, 31)}, {Signature: sig, Proof: seq(0, 64)}} {
		if _, err := MarshalAuth(a); !errors.Is(err, ErrMalformed) {
			t.Errorf("MarshalAuth(%d-byte signature, %d-byte proof) = %v; want ErrMalformed", len(a.Signature), len(a.Proof), err)
		}
	}
	for name, data := range map[string][]byte{
		"empty":           nil,
		"signature 63":    encodeItems(t, []any{sig[:63], []byte{}}),
		"signature 65":    encodeItems(t, []any{append(bytes.Clone(sig), 0), []byte{}}),
		"proof 1":         encodeItems(t, []any{sig, []byte{1}}),
		"proof 33":        encodeItems(t, []any{sig, seq(0, 33)}),
		"proof missing":   encodeItems(t, []any{sig}),
		"extra item":      encodeItems(t, []any{sig, []byte{}, 0}),
		"signature text":  encodeItems(t, []any{string(sig), []byte{}}),
		"a verdict":       encodeItems(t, []any{9, "identity"}),
		"trailing":        append(encodeItems(t, []any{sig, []byte{}}), 0),
		"indefinite bstr": append(append([]byte{0x82, 0x5f, 0x58, 0x40}, sig...), 0xff, 0x40),
	} {
		if a, err := UnmarshalAuth(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: UnmarshalAuth(%x) = %x, %v; want ErrMalformed", name, data, a, err)
		}
	}
}

// TestTranscriptConstruction recomputes the transcript hash exactly as
// docs/protocol.md describes it, from one concatenated byte string.
func TestTranscriptConstruction(t *testing.T) {
	d, l, b := []byte("dialer hello"), []byte("the listener's hello"), seq(0xb0, BindingSize)
	var in []byte
	in = append(in, "meshsock/3 handshake transcript"...)
	for _, part := range [][]byte{d, l, b} {
		in = binary.BigEndian.AppendUint32(in, uint32(len(part)))
		in = append(in, part...)
	}
	if got, want := Transcript(d, l, b), sha256.Sum256(in); got != want {
		t.Fatalf("Transcript = %x, construction gives %x", got, want)
	}
	// Every input counts, and the length prefixes keep a split apart.
	base := Transcript(d, l, b)
	for name, th := range map[string][32]byte{
		"hellos swapped":   Transcript(l, d, b),
		"no binding":       Transcript(d, l, nil),
		"other binding":    Transcript(d, l, seq(0xb1, BindingSize)),
		"boundary shifted": Transcript(d[:len(d)-1], append([]byte{d[len(d)-1]}, l...), b),
	} {
		if th == base {
			t.Errorf("%s: same transcript", name)
		}
	}
	if AuthDomainDialer != "meshsock/3 auth dialer" || ProofDomainListener != "meshsock/3 network proof listener" {
		t.Error("domain strings changed: they are part of the wire format")
	}
}

// TestAuthRoles: a signature or a proof made in one role does not verify
// in the other (a node cannot be handed its own Auth back), nor for
// another transcript, key or network key.
func TestAuthRoles(t *testing.T) {
	th := Transcript([]byte("a"), []byte("b"), nil)
	other := Transcript([]byte("a"), []byte("c"), nil)
	pub := publicOf(goldenDialerKey)
	sig := SignAuth(goldenDialerKey, true, th)
	if !VerifyAuth(pub, true, th, sig) {
		t.Fatal("a valid signature does not verify")
	}
	if VerifyAuth(pub, false, th, sig) || VerifyAuth(pub, true, other, sig) ||
		VerifyAuth(publicOf(goldenListenerKey), true, th, sig) || VerifyAuth(pub[:31], true, th, sig) {
		t.Error("a signature verifies in another role, transcript or key")
	}
	if !bytes.Equal(AuthSignInput(true, th), append([]byte(AuthDomainDialer), th[:]...)) {
		t.Error("AuthSignInput is not the domain string and the transcript")
	}
	proof := NetworkProof(goldenNetworkKey, true, th)
	if !VerifyNetworkProof(goldenNetworkKey, true, th, proof) {
		t.Fatal("a valid proof does not verify")
	}
	if VerifyNetworkProof(goldenNetworkKey, false, th, proof) || VerifyNetworkProof(goldenNetworkKey, true, other, proof) ||
		VerifyNetworkProof(seq(0x41, 32), true, th, proof) || VerifyNetworkProof(goldenNetworkKey, true, th, proof[:31]) {
		t.Error("a proof verifies in another role, transcript or key")
	}
}

// TestCertificate: a node certificate is deterministic, carries the key and
// passes CertificateKey; anything else fails it with ErrCertificate.
func TestCertificate(t *testing.T) {
	cert, err := NewCertificate(goldenDialerKey)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := NewCertificate(goldenDialerKey)
	if !bytes.Equal(cert.Certificate[0], again.Certificate[0]) {
		t.Error("the certificate is not a function of the key")
	}
	key, err := CertificateKey(cert.Certificate)
	if err != nil || !key.Equal(publicOf(goldenDialerKey)) {
		t.Fatalf("CertificateKey = %x, %v; want the node key", key, err)
	}
	if cert.Leaf.Subject.CommonName != NodeIDFromKey(key).String() {
		t.Errorf("common name %q, want the node ID", cert.Leaf.Subject.CommonName)
	}
	other, _ := NewCertificate(goldenListenerKey)

	// A certificate whose signature was not made by its own key: the
	// listener's TBS signed by the dialer.
	forged := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: certNotBefore, NotAfter: certNotAfter}
	forgedDER, err := x509.CreateCertificate(rand.Reader, forged, forged, publicOf(goldenListenerKey), goldenDialerKey)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, err := x509.CreateCertificate(rand.Reader, forged, forged, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(cert.Certificate[0])
	flipped[len(flipped)-1] ^= 1 // in the signature
	for name, chain := range map[string][][]byte{
		"none":            nil,
		"two":             {cert.Certificate[0], other.Certificate[0]},
		"garbage":         {[]byte("not DER")},
		"signed by other": {forgedDER},
		"ECDSA":           {ecDER},
		"bad signature":   {flipped},
	} {
		if _, err := CertificateKey(chain); !errors.Is(err, ErrCertificate) {
			t.Errorf("%s: CertificateKey = %v; want ErrCertificate", name, err)
		}
	}
	if _, err := NewCertificate(goldenDialerKey[:10]); !errors.Is(err, ErrCertificate) {
		t.Errorf("NewCertificate(short key) = %v", err)
	}
}

// TestTLSConfig: two TLSConfig ends complete a TLS 1.3 handshake with
// ALPN meshsock/3, see each other's node key, and derive the same channel
// binding; a client that offers TLS 1.2 only, or a certificate that is not
// a node certificate, fails.
func TestTLSConfig(t *testing.T) {
	// readAfter makes the client read once after its handshake: in TLS
	// 1.3 the client is done before the server has checked its
	// certificate, and learns of a refusal from the next record.
	run := func(client, server *tls.Config, readAfter bool) (cs, ss tls.ConnectionState, cerr, serr error) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		deadline := time.Now().Add(10 * time.Second)
		_ = a.SetDeadline(deadline)
		_ = b.SetDeadline(deadline)
		tc, ts := tls.Client(a, client), tls.Server(b, server)
		done := make(chan struct{})
		go func() {
			defer close(done)
			serr = ts.Handshake()
			ss = ts.ConnectionState()
			if serr != nil {
				_ = b.Close()
			}
		}()
		cerr = tc.Handshake()
		if cerr == nil && readAfter {
			_, cerr = tc.Read(make([]byte, 1))
		}
		if cerr != nil {
			_ = a.Close()
		}
		<-done
		return tc.ConnectionState(), ss, cerr, serr
	}
	dc, _ := NewCertificate(goldenDialerKey)
	lc, _ := NewCertificate(goldenListenerKey)
	cs, ss, cerr, serr := run(TLSConfig(dc, true), TLSConfig(lc, false), false)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != ALPN || ss.NegotiatedProtocol != ALPN {
		t.Errorf("version %x, ALPN %q/%q", cs.Version, cs.NegotiatedProtocol, ss.NegotiatedProtocol)
	}
	if k := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !k.Equal(publicOf(goldenListenerKey)) {
		t.Error("the client does not see the listener's key")
	}
	if k := ss.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !k.Equal(publicOf(goldenDialerKey)) {
		t.Error("the server does not see the dialer's key")
	}
	cb, _ := cs.ExportKeyingMaterial(ExporterLabel, nil, BindingSize)
	sb, _ := ss.ExportKeyingMaterial(ExporterLabel, nil, BindingSize)
	if len(cb) != BindingSize || !bytes.Equal(cb, sb) {
		t.Errorf("channel bindings %x and %x", cb, sb)
	}

	old := TLSConfig(dc, true)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, _, cerr, serr := run(old, TLSConfig(lc, false), false); cerr == nil || serr == nil {
		t.Error("a TLS 1.2 client got through")
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: certNotBefore, NotAfter: certNotAfter}
	ecDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	ecCert := tls.Certificate{Certificate: [][]byte{ecDER}, PrivateKey: ecKey}
	if _, _, cerr, serr := run(TLSConfig(ecCert, true), TLSConfig(lc, false), true); !errors.Is(serr, ErrCertificate) || cerr == nil {
		t.Errorf("an ECDSA client certificate: client %v, server %v; want the server to refuse it", cerr, serr)
	}
}
