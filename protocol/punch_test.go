package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
)

// checkPunch checks a golden punch frame: the envelope, then its packets
// decoded as a punch message, whose requester signature verifies in its
// place only.
func checkPunch(want *Envelope) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		checkMessage(want)(t, codec, body)
		p, err := ParsePunch(want.Packets)
		if err != nil {
			t.Fatal(err)
		}
		pub := goldenKey().Public().(ed25519.PublicKey)
		requester := NodeIDFromKey(pub)
		target, introducer := p.Peer, goldenNodeID
		if p.Kind == PunchIntroduce {
			if p.Peer != requester || p.Addr != "198.51.100.7:4444" || p.Delay != 100*time.Millisecond {
				t.Fatalf("introduction decodes to %+v", p)
			}
			target = goldenTarget
		}
		if !VerifyPunch(pub, target, introducer, p.Nonce, p.Time, p.Signature) {
			t.Fatal("the example's signature does not verify")
		}
		if VerifyPunch(pub, target, requester, p.Nonce, p.Time, p.Signature) ||
			VerifyPunch(pub, target, introducer, p.Nonce+1, p.Time, p.Signature) {
			t.Fatal("the signature verifies for another introducer or nonce")
		}
	}
}

func TestPunchRoundTrip(t *testing.T) {
	key := goldenKey()
	pub := key.Public().(ed25519.PublicKey)
	sig := bytes.Repeat([]byte{7}, ed25519.SignatureSize)
	for _, p := range []Punch{
		{Kind: PunchRequest, Peer: goldenTarget, Nonce: 1, Time: 2, Signature: sig},
		{Kind: PunchIntroduce, Peer: NodeIDFromKey(pub), Key: pub, Addr: "[2001:db8::1]:9", Nonce: 3, Time: -4, Signature: sig, Delay: 250 * time.Millisecond},
		{Kind: PunchGo, Peer: goldenTarget, Addr: "192.0.2.9:65535", Nonce: 5, Delay: 0},
		{Kind: PunchRefused, Peer: goldenTarget, Nonce: 6, Reason: PunchRateLimited},
	} {
		got, err := ParsePunch(p.Packets())
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		if got.Kind != p.Kind || got.Peer != p.Peer || !got.Key.Equal(p.Key) || got.Addr != p.Addr ||
			got.Nonce != p.Nonce || got.Time != p.Time || !bytes.Equal(got.Signature, p.Signature) ||
			got.Delay != p.Delay || got.Reason != p.Reason {
			t.Fatalf("round trip: %+v, want %+v", *got, p)
		}
	}
}

func TestPunchMalformed(t *testing.T) {
	pub := goldenKey().Public().(ed25519.PublicKey)
	sig := make([]byte, ed25519.SignatureSize)
	intro := func(addr string) [][]byte {
		return (&Punch{Kind: PunchIntroduce, Key: pub, Addr: addr, Signature: sig}).Packets()
	}
	good := (&Punch{Kind: PunchRequest, Peer: goldenTarget, Signature: sig}).Packets()
	for name, packets := range map[string][][]byte{
		"empty":          nil,
		"long kind":      {{1, 2}},
		"unknown kind":   {{9}},
		"missing packet": good[:4],
		"extra packet":   append(good[:5:5], []byte{}),
		"short target":   {{1}, {1, 2}, good[2], good[3], good[4]},
		"short sig":      {{1}, good[1], good[2], good[3], {1}},
		"hostname":       intro("example.com:80"),
		"no port":        intro("192.0.2.1"),
		"port zero":      intro("192.0.2.1:0"),
		"unspecified":    intro("0.0.0.0:80"),
		"multicast":      intro("224.0.0.1:80"),
		"zone":           intro("[fe80::1%eth0]:80"),
		"long address":   intro("[2001:db8::1]:80" + string(bytes.Repeat([]byte{'0'}, MaxPunchAddrLen))),
	} {
		if _, err := ParsePunch(packets); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if VerifyPunch(pub[:5], goldenTarget, goldenNodeID, 0, 0, sig) || VerifyPunch(pub, goldenTarget, goldenNodeID, 0, 0, sig[:3]) {
		t.Error("VerifyPunch took a short key or signature")
	}
}

func FuzzParsePunch(f *testing.F) {
	for _, e := range []*Envelope{goldenPunchRequest(), goldenPunchIntroduce()} {
		f.Add(bytes.Join(e.Packets, []byte{0xff, 0xfe}))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePunch(bytes.Split(b, []byte{0xff, 0xfe}))
		if err != nil {
			return
		}
		if _, err := ParsePunch(p.Packets()); err != nil {
			t.Fatalf("a decoded message does not decode again: %v", err)
		}
	})
}
