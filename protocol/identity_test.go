package protocol

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

func TestNodeIDFromKeyVector(t *testing.T) {
	// RFC 8032 §7.1 test 1's public key; its SHA-256 is computed by any
	// tool (sha256sum of the 32 raw bytes).
	pub, _ := hex.DecodeString("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
	want := MustParseNodeID("21fe31df-a154-a261-626b-f854046fd227")
	if got := NodeIDFromKey(pub); got != want {
		t.Fatalf("NodeIDFromKey = %s, want %s", got, want)
	}
	if !KeyMatchesID(pub, want) {
		t.Fatal("KeyMatchesID refused the matching ID")
	}
	other := want
	other[15] ^= 1
	if KeyMatchesID(pub, other) || KeyMatchesID(pub[:31], want) {
		t.Fatal("KeyMatchesID accepted a wrong ID or a short key")
	}
}

func TestNodeIDFromKeyDiffers(t *testing.T) {
	a, _, _ := ed25519.GenerateKey(nil)
	b, _, _ := ed25519.GenerateKey(nil)
	if NodeIDFromKey(a) == NodeIDFromKey(b) {
		t.Fatal("two fresh keys gave the same ID")
	}
}
