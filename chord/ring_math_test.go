package chord

import (
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/meshsock/meshsock/protocol"
)

func idOf(v uint64) protocol.NodeID { return u128{lo: v}.nodeID() }

func bigOf(id protocol.NodeID) *big.Int { return new(big.Int).SetBytes(id[:]) }

func TestBetween(t *testing.T) {
	max := u128{^uint64(0), ^uint64(0)}.nodeID()
	for _, tc := range []struct {
		x, a, b protocol.NodeID
		half    bool // x in (a, b]
		open    bool // x in (a, b)
	}{
		{idOf(5), idOf(1), idOf(10), true, true},
		{idOf(10), idOf(1), idOf(10), true, false},
		{idOf(1), idOf(1), idOf(10), false, false},
		{idOf(11), idOf(1), idOf(10), false, false},
		{idOf(0), max, idOf(3), true, true}, // wraps past zero
		{max, idOf(3), idOf(1), true, true}, // wraps past the top
		{idOf(2), idOf(3), idOf(1), false, false},
		{idOf(7), idOf(7), idOf(7), true, false}, // (a, a] is the whole ring, (a, a) all but a
		{idOf(8), idOf(7), idOf(7), true, true},
	} {
		if got := Between(tc.x, tc.a, tc.b); got != tc.half {
			t.Errorf("Between(%v, %v, %v) = %v, want %v", tc.x, tc.a, tc.b, got, tc.half)
		}
		if got := strictlyBetween(tc.x, tc.a, tc.b); got != tc.open {
			t.Errorf("strictlyBetween(%v, %v, %v) = %v, want %v", tc.x, tc.a, tc.b, got, tc.open)
		}
	}
}

// TestRingArithmetic checks the 128-bit arithmetic against math/big.
func TestRingArithmetic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	mod := new(big.Int).Lsh(big.NewInt(1), IDBits)
	for range 2000 {
		a, b := randomKey(rng), randomKey(rng)
		want := new(big.Int).Sub(bigOf(b), bigOf(a))
		want.Mod(want, mod)
		d := Distance(a, b)
		if bigOf(d).Cmp(want) != 0 {
			t.Fatalf("Distance(%v, %v) = %v, want %x", a, b, d, want)
		}
		i := rng.IntN(IDBits)
		f := new(big.Int).Add(bigOf(a), new(big.Int).Lsh(big.NewInt(1), uint(i)))
		f.Mod(f, mod)
		if got := FingerStart(a, i); bigOf(got).Cmp(f) != 0 {
			t.Fatalf("FingerStart(%v, %d) = %v, want %x", a, i, got, f)
		}
	}
}

func TestOwner(t *testing.T) {
	ids := []protocol.NodeID{idOf(10), idOf(20), idOf(30)}
	for _, tc := range []struct{ key, want uint64 }{
		{5, 10}, {10, 10}, {11, 20}, {20, 20}, {29, 30}, {30, 30}, {31, 10},
	} {
		if got, _ := Owner(ids, idOf(tc.key)); got != idOf(tc.want) {
			t.Errorf("Owner(%d) = %v, want %d", tc.key, got, tc.want)
		}
	}
	if _, ok := Owner(nil, idOf(1)); ok {
		t.Error("Owner of an empty ring reported ok")
	}
	// The oracle agrees with the ring's own definition: the owner o of k
	// has k in (predecessor(o), o].
	rng := rand.New(rand.NewPCG(3, 4))
	var many []protocol.NodeID
	for range 50 {
		many = append(many, randomKey(rng))
	}
	slices.SortFunc(many, func(a, b protocol.NodeID) int { return a.Compare(b) })
	for range 1000 {
		k := randomKey(rng)
		o, _ := Owner(many, k)
		i := slices.Index(many, o)
		pred := many[(i+len(many)-1)%len(many)]
		if !Between(k, pred, o) {
			t.Fatalf("Owner(%v) = %v, but the key is not in (%v, %v]", k, o, pred, o)
		}
	}
}
