package compress

import (
	"errors"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/snappy"

	"github.com/meshsock/meshsock/flags"
)

// snappyC is the codec for [flags.Snappy]. It uses the Snappy block format
// (a varint length followed by the elements), not the framed stream format,
// so a frame body is a single block.
type snappyC struct{}

// snappyMaxExpansion bounds how many output bytes one input byte of a valid
// Snappy block can stand for: the densest element is a 3-byte copy of 64
// bytes. A block whose header claims more is rejected before any allocation.
const snappyMaxExpansion = 22

var errSnappyTooBig = errors.New("compress: input too large for a snappy block")

func (snappyC) Method() flags.Method { return flags.Snappy }

func (snappyC) Compress(dst, src []byte) ([]byte, error) {
	n := s2.MaxEncodedLen(len(src))
	if n < 0 {
		return dst, errSnappyTooBig
	}
	start := len(dst)
	dst = grow(dst, n)
	// EncodeSnappy writes from the start of the slice it is given and uses
	// its capacity when that suffices, so hand it the free tail of dst.
	out := s2.EncodeSnappy(dst[start:], src)
	return dst[:start+len(out)], nil
}

func (snappyC) Decompress(dst, src []byte, max int) ([]byte, error) {
	max = clampMax(max)
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return dst, corrupt(flags.Snappy, err)
	}
	if n > max {
		return dst, tooLarge(flags.Snappy, max)
	}
	if n > snappyMaxExpansion*len(src) {
		return dst, corrupt(flags.Snappy, nil)
	}
	start, orig := len(dst), dst
	dst = grow(dst, n)
	// DecodeStrict accepts standard Snappy only (not the s2 extensions
	// that snappy.Decode lets through) and writes into the given slice.
	out, err := snappy.DecodeStrict(dst[start:start+n], src)
	if err != nil {
		return orig, corrupt(flags.Snappy, err)
	}
	if len(out) != n {
		return orig, corrupt(flags.Snappy, nil)
	}
	return dst[:start+n], nil
}
