package protocol

import (
	"testing"

	"github.com/cespare/xxhash/v2"
)

func TestHasher(t *testing.T) {
	env := validEnvelope()
	h := NewHasherWithSeed(42)
	if h.Sum(env) != NewHasherWithSeed(42).Sum(env) {
		t.Fatal("not deterministic for a seed")
	}
	seen := map[MessageID]uint64{}
	for seed := uint64(0); seed < 1000; seed++ {
		id := NewHasherWithSeed(seed).Sum(env)
		if prev, ok := seen[id]; ok {
			t.Fatalf("seeds %d and %d give the same ID", prev, seed)
		}
		seen[id] = seed
	}
	// Random seeds differ from each other.
	if NewHasher().Sum(env) == NewHasher().Sum(env) {
		t.Fatal("two random hashers agree (or the seed is not random)")
	}
	// Different envelopes differ: the Seq separates identical payloads.
	other := goldenBroadcast()
	other.Seq = 2
	a, b := goldenBroadcast().AppendTo(nil), other.AppendTo(nil)
	if h.Sum(a) == h.Sum(b) {
		t.Fatal("Seq does not change the ID")
	}
	// Seed 0 is plain XXH64.
	if got, want := uint64(NewHasherWithSeed(0).Sum(env)), xxhash.Sum64(env); got != want {
		t.Fatalf("seed 0: %x, xxhash.Sum64 %x", got, want)
	}
	// Known XXH64 values (computed independently from the XXH64 spec).
	vectors := []struct {
		seed uint64
		in   []byte
		want MessageID
	}{
		{0, nil, 0xef46db3751d8e999},
		{0, goldenBroadcast().AppendTo(nil), 0xb1cca9fbcb18d1c3},
		{1, goldenBroadcast().AppendTo(nil), 0x588cdeb0d17edcfa},
	}
	for _, v := range vectors {
		if got := NewHasherWithSeed(v.seed).Sum(v.in); got != v.want {
			t.Errorf("XXH64(seed %d, %x) = %v, want %v", v.seed, v.in, got, v.want)
		}
	}
	if s := MessageID(0xab).String(); s != "00000000000000ab" {
		t.Errorf("String() = %q", s)
	}
}

func TestHasherNoAlloc(t *testing.T) {
	h := NewHasher()
	for _, n := range []int{0, 10, 64, 1 << 16} {
		data := make([]byte, n)
		var sink MessageID
		if a := testing.AllocsPerRun(100, func() { sink ^= h.Sum(data) }); a != 0 {
			t.Fatalf("Sum of %d bytes allocates %v times", n, a)
		}
		_ = sink
	}
}
