package discover

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

func TestPacketRoundTrip(t *testing.T) {
	n := newNode(t, testProto)
	nk := bytes.Repeat([]byte{7}, 32)
	for _, key := range [][]byte{nil, nk} {
		p := &Packet{Kind: KindAnswer, Protocol: testProto, Key: n.id.Key, Time: 42,
			Addrs: []string{"10.0.0.1:4000", "[::1]:4001"}}
		b, err := p.Encode(n.id.Sign, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if err := got.Verify(); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.ID != n.ID() || got.Kind != KindAnswer || got.Time != 42 || got.Protocol != testProto ||
			len(got.Addrs) != 2 || got.Addrs[1] != "[::1]:4001" || got.Version != protocol.Version {
			t.Fatalf("decoded %+v", got)
		}
		if proven := got.VerifyProof([][]byte{bytes.Repeat([]byte{8}, 32), nk}); proven != (key != nil) {
			t.Fatalf("proof verified %v with key %x", proven, key)
		}
		if got.VerifyProof([][]byte{bytes.Repeat([]byte{8}, 32)}) {
			t.Fatal("proof verified under another key")
		}
	}
}

// TestPacketTamper: every single changed byte makes the datagram fail to
// decode or to verify (the signature covers it all).
func TestPacketTamper(t *testing.T) {
	n := newNode(t, testProto)
	p := &Packet{Kind: KindProbe, Protocol: testProto, Key: n.id.Key, Time: time.Now().UnixNano(), Addrs: []string{"10.0.0.1:4000"}}
	b, err := p.Encode(n.id.Sign, bytes.Repeat([]byte{1}, 16))
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		q, err := Decode(c)
		if err == nil {
			err = q.Verify()
		}
		if err == nil {
			t.Fatalf("byte %d flipped: still decodes and verifies", i)
		}
	}
}

// TestPacketOthersID: a datagram that names another node's ID, signed by
// the sender's own key, fails Verify: no one advertises someone else's ID.
func TestPacketOthersID(t *testing.T) {
	me, victim := newNode(t, testProto), newNode(t, testProto)
	p := &Packet{Kind: KindAnswer, Protocol: testProto, Key: me.id.Key, Time: 1}
	b, err := p.Encode(me.id.Sign, nil)
	if err != nil {
		t.Fatal(err)
	}
	vid := victim.ID()
	copy(b[24:40], vid[:]) // the victim's ID, re-signed by me
	sig := ed25519.Sign(me.priv, signInput(b[:len(b)-64]))
	copy(b[len(b)-64:], sig)
	q, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Verify(); !errors.Is(err, protocol.ErrBadSignature) {
		t.Fatalf("Verify of a datagram naming another's ID: %v", err)
	}
}

func TestPacketLimits(t *testing.T) {
	n := newNode(t, testProto)
	long := string(bytes.Repeat([]byte{'a'}, 250))
	p := &Packet{Kind: KindProbe, Protocol: testProto, Key: n.id.Key, Addrs: []string{long, long, long, long, long}}
	if _, err := p.Encode(n.id.Sign, nil); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("oversized datagram: %v", err)
	}
	p.Addrs = make([]string, MaxAddrs+1)
	if _, err := p.Encode(n.id.Sign, nil); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("too many addresses: %v", err)
	}
	if _, err := Decode(make([]byte, MaxPacketSize+1)); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("oversized decode: %v", err)
	}
}

// FuzzDiscoveryPacket: Decode never panics, and what it accepts is
// consistent: within the limits, and it verifies only if unchanged.
func FuzzDiscoveryPacket(f *testing.F) {
	n := newNode(f, testProto)
	for _, nk := range [][]byte{nil, bytes.Repeat([]byte{3}, 32)} {
		p := &Packet{Kind: KindProbe, Hidden: nk != nil, Protocol: testProto, Key: n.id.Key, Time: 5, Addrs: []string{"192.0.2.1:1", "h:2"}}
		b, err := p.Encode(n.id.Sign, nk)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if !errors.Is(err, protocol.ErrMalformed) && !errors.Is(err, protocol.ErrVersion) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		if len(b) > MaxPacketSize || len(p.Addrs) > MaxAddrs || (p.Proof != nil && len(p.Proof) != ProofSize) ||
			len(p.Sig) != 64 || len(p.Key) != 32 {
			t.Fatalf("accepted out of bounds: %d bytes, %+v", len(b), p)
		}
		for _, a := range p.Addrs {
			if a == "" || len(a) > MaxAddrLen {
				t.Fatalf("address %q accepted", a)
			}
		}
		_ = p.Verify()
		_ = p.VerifyProof([][]byte{{1, 2, 3}})
	})
}
