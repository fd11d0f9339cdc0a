package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

func signedFor(t testing.TB, key ed25519.PrivateKey, e *Envelope) ([]byte, *Envelope) {
	t.Helper()
	raw := e.AppendSigned(nil, key)
	var got Envelope
	if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	return raw, &got
}

func TestSignedEnvelopeRoundTrip(t *testing.T) {
	key := goldenKey()
	for _, e := range []*Envelope{
		goldenSignedBroadcast(),
		{Type: flags.Whisper, Sub: flags.Forward, Seq: 1 << 40, Time: -5, HopLimit: 255, Packets: [][]byte{nil, make([]byte, 70000)}},
		{Type: flags.Broadcast, Auth: []byte("ignored")},
	} {
		e.Sender = goldenSignedBroadcast().Sender
		raw, got := signedFor(t, key, e)
		if len(raw) != e.SignedLen() {
			t.Fatalf("AppendSigned wrote %d bytes, SignedLen %d", len(raw), e.SignedLen())
		}
		want := *e
		want.Auth = got.Auth
		if !envelopesEqual(got, &want) || len(got.Auth) != AuthSize {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
		if err := VerifyEnvelope(raw, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.AuthKey(), key[32:]) || !bytes.Equal(got.AuthSignature(), raw[len(raw)-64:]) {
			t.Fatal("AuthKey or AuthSignature wrong")
		}
		// Re-encoding what was decoded gives the same bytes.
		if !bytes.Equal(got.AppendTo(nil), raw) {
			t.Fatal("AppendTo of a decoded signed envelope differs")
		}
		// Appending after a prefix signs only the envelope's own bytes.
		pre := e.AppendSigned([]byte{1, 2, 3}, key)
		if !bytes.Equal(pre[3:], raw) {
			t.Fatal("AppendSigned depends on what dst held")
		}
	}
}

// TestVerifyEnvelopeRejects: every way an envelope's signature can be
// wrong is ErrBadSignature.
func TestVerifyEnvelopeRejects(t *testing.T) {
	key := goldenKey()
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	raw, _ := signedFor(t, key, goldenSignedBroadcast())
	type tc struct {
		name string
		make func() []byte
	}
	flip := func(off int) func() []byte {
		return func() []byte { b := bytes.Clone(raw); b[off] ^= 0x01; return b }
	}
	cases := []tc{
		{"unsigned", func() []byte { return goldenSignedBroadcast().AppendTo(nil) }},
		{"packet altered", flip(0x28 - 6)}, // frame offset 0028 is envelope offset 0022: "hello"
		{"seq altered", flip(0x1a - 6)},
		{"time altered", flip(0x23 - 6)},
		{"hop limit altered", flip(0x25 - 6)},
		{"key altered", flip(len(raw) - 96)},
		{"signature R altered", flip(len(raw) - 64)},
		{"signature S altered", flip(len(raw) - 1)},
		{"signed by another key", func() []byte { return goldenSignedBroadcast().AppendSigned(nil, other) }},
		{"another key, its own ID in sender, then sender swapped", func() []byte {
			e := goldenSignedBroadcast()
			e.Sender = NodeIDFromKey(other.Public().(ed25519.PublicKey))
			b := e.AppendSigned(nil, other)
			copy(b[4:20], goldenSignedBroadcast().Sender[:])
			return b
		}},
		{"S not reduced", func() []byte {
			// S + L verifies under a lax check; the canonical-S rule refuses it.
			b := bytes.Clone(raw)
			s := b[len(b)-32:]
			l := []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
			carry := 0
			for i := range s {
				v := int(s[i]) + int(l[i]) + carry
				s[i], carry = byte(v), v>>8
			}
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.make()
			var e Envelope
			if err := DecodeEnvelope(b, &e, DefaultLimits); err != nil {
				t.Fatalf("does not decode: %v", err)
			}
			if err := VerifyEnvelope(b, &e); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifyEnvelope = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestSigningInputLayout(t *testing.T) {
	raw, e := signedFor(t, goldenKey(), goldenSignedBroadcast())
	items := SignedItems(raw, e)
	if !bytes.Equal(items, raw[1:len(raw)-2-AuthSize]) {
		t.Fatal("SignedItems is not the bytes between the array head and the auth item")
	}
	unsigned := goldenSignedBroadcast().AppendTo(nil)
	var u Envelope
	if err := DecodeEnvelope(unsigned, &u, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	// Signed or not, the items are the same bytes.
	if !bytes.Equal(SignedItems(unsigned, &u), items) {
		t.Fatal("SignedItems differs between the signed and unsigned forms")
	}
	in := EnvelopeSigningInput(items)
	if string(in[:len(EnvelopeDomain)]) != "meshsock/3 envelope" || len(in) != 51 {
		t.Fatalf("input %x", in)
	}
	if a := testing.AllocsPerRun(100, func() { in = EnvelopeSigningInput(items) }); a != 0 {
		t.Fatalf("EnvelopeSigningInput allocates %v times", a)
	}
}

func TestAppendSignedAllocs(t *testing.T) {
	e := goldenSignedBroadcast()
	key := goldenKey()
	buf := make([]byte, 0, e.SignedLen())
	// One allocation: the signature.
	if a := testing.AllocsPerRun(50, func() { buf = e.AppendSigned(buf[:0], key) }); a > 1 {
		t.Fatalf("AppendSigned allocates %v times", a)
	}
}
