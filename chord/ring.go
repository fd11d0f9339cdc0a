package chord

import (
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/meshsock/meshsock/protocol"
)

// IDBits is the size of the ring: IDs are 128-bit unsigned integers, so
// the ring has 2^128 positions and a finger table has IDBits entries.
const IDBits = 128

// u128 is a node ID read as a big-endian unsigned 128-bit integer.
type u128 struct{ hi, lo uint64 }

func toU128(id protocol.NodeID) u128 {
	return u128{binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])}
}

func (a u128) nodeID() protocol.NodeID {
	var id protocol.NodeID
	binary.BigEndian.PutUint64(id[:8], a.hi)
	binary.BigEndian.PutUint64(id[8:], a.lo)
	return id
}

// sub returns a - b mod 2^128.
func (a u128) sub(b u128) u128 {
	lo, borrow := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, borrow)
	return u128{hi, lo}
}

// add returns a + b mod 2^128.
func (a u128) add(b u128) u128 {
	lo, carry := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, carry)
	return u128{hi, lo}
}

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a u128) isZero() bool { return a.hi == 0 && a.lo == 0 }

// pow2 returns 2^i for 0 <= i < 128.
func pow2(i int) u128 {
	if i >= 64 {
		return u128{hi: 1 << (i - 64)}
	}
	return u128{lo: 1 << i}
}

// Distance returns the clockwise distance from a to b on the ring:
// (b - a) mod 2^128, as an ID-shaped big-endian number.
func Distance(a, b protocol.NodeID) protocol.NodeID { return distance(a, b).nodeID() }

func distance(a, b protocol.NodeID) u128 { return toU128(b).sub(toU128(a)) }

// Between reports whether x lies in the ring interval (a, b]: clockwise
// after a and no further than b. (a, a] is the whole ring, the interval a
// node alone on its ring owns.
func Between(x, a, b protocol.NodeID) bool {
	if a == b {
		return true
	}
	dx := distance(a, x)
	return !dx.isZero() && dx.cmp(distance(a, b)) <= 0
}

// strictlyBetween reports whether x lies in the open interval (a, b);
// (a, a) is the whole ring except a.
func strictlyBetween(x, a, b protocol.NodeID) bool {
	if a == b {
		return x != a
	}
	dx := distance(a, x)
	return !dx.isZero() && dx.cmp(distance(a, b)) < 0
}

// closer reports whether a is closer than b to target, approaching it
// clockwise (the smaller distance from the candidate to target wins).
func closer(a, b, target protocol.NodeID) bool {
	return distance(a, target).cmp(distance(b, target)) < 0
}

// FingerStart returns id + 2^i mod 2^128: finger i of node id is the
// owner of this key. i must be in [0, IDBits).
func FingerStart(id protocol.NodeID, i int) protocol.NodeID {
	return toU128(id).add(pow2(i)).nodeID()
}

// Owner returns the owner of key among the given live node IDs, which must
// be sorted in ascending order: the first ID >= key, or the smallest ID if
// key is beyond the largest (the ring wraps). It is the oracle the ring's
// routing converges to; tests and tools use it. ok is false for no IDs.
func Owner(sorted []protocol.NodeID, key protocol.NodeID) (owner protocol.NodeID, ok bool) {
	if len(sorted) == 0 {
		return owner, false
	}
	i, _ := slices.BinarySearchFunc(sorted, key, func(a, b protocol.NodeID) int { return a.Compare(b) })
	if i == len(sorted) {
		i = 0
	}
	return sorted[i], true
}
