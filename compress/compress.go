// Package compress holds the codecs that compress and decompress frame
// bodies, keyed by the [flags.Method] byte that a frame carries.
//
// Each link negotiates its compression in package base: during the handshake
// both peers send the list of methods they accept, and afterwards a sender
// compresses with the first method of its own preference order that the peer
// accepts ([Negotiate]). [flags.None] is always acceptable, so two peers
// without a common method still talk. Whether a particular frame is worth
// compressing at all (small messages go out uncompressed) is also base's
// decision; this package only does the byte work.
//
// The built-in codecs ([Builtin]) are none, gzip, zlib, snappy (block format)
// and zstd. A [Set] lets a socket swap in its own codecs, for example a test
// codec that corrupts its output on purpose.
//
// Decompression treats its input as hostile: every codec stops once the output
// would exceed the caller's limit and reports [ErrTooLarge] without having
// allocated much more than that limit, whatever sizes the compressed data
// claims, and malformed input yields [ErrCorrupt] rather than a panic.
package compress

import (
	"errors"
	"fmt"
	"math"

	"github.com/meshsock/meshsock/flags"
)

// Codec compresses and decompresses frame bodies for one method.
// Implementations are safe for concurrent use. In both directions src must
// not overlap the spare capacity of dst, which the codec may write to.
type Codec interface {
	// Method returns the method this codec implements, as written in a
	// frame's codec byte.
	Method() flags.Method
	// Compress appends the compressed form of src to dst and returns the
	// extended slice.
	Compress(dst, src []byte) ([]byte, error)
	// Decompress appends the decompressed form of src to dst. If the
	// decompressed output would exceed max bytes it stops and returns an
	// error matching ErrTooLarge, having allocated no more than about max
	// bytes (never trust a size header in the compressed data). Corrupt input
	// returns an error matching ErrCorrupt. On error the returned slice is
	// dst unchanged.
	Decompress(dst, src []byte, max int) ([]byte, error)
}

var (
	// ErrTooLarge is returned (wrapped) by Decompress when the output would
	// exceed the caller's limit.
	ErrTooLarge = errors.New("compress: decompressed data exceeds the limit")
	// ErrCorrupt is returned (wrapped) by Decompress when the input is not
	// valid compressed data for the codec's method.
	ErrCorrupt = errors.New("compress: corrupt compressed data")
	// ErrUnknownMethod is returned (wrapped) by [Builtin] for a method that
	// has no built-in codec.
	ErrUnknownMethod = errors.New("compress: unknown compression method")
)

// maxLimit bounds the max argument of Decompress so that offsets computed
// from it cannot overflow an int. No frame body comes near it.
const maxLimit = math.MaxInt / 4

// clampMax turns a caller's max into a usable limit: negative means nothing
// may be produced, and huge values are cut to maxLimit.
func clampMax(max int) int {
	if max < 0 {
		return 0
	}
	if max > maxLimit {
		return maxLimit
	}
	return max
}

// corrupt wraps a library error so that it matches both ErrCorrupt and the
// original error.
func corrupt(m flags.Method, err error) error {
	if err == nil {
		return fmt.Errorf("%w (%s)", ErrCorrupt, m)
	}
	return fmt.Errorf("%w (%s): %w", ErrCorrupt, m, err)
}

// tooLarge reports output of method m beyond max bytes.
func tooLarge(m flags.Method, max int) error {
	return fmt.Errorf("%w (%s: more than %d bytes)", ErrTooLarge, m, max)
}

// grow returns b, or a copy of it in a new array, with room for at least n
// more bytes after len(b). Unlike append it allocates exactly what is asked,
// which keeps the memory a hostile input can cost predictable.
func grow(b []byte, n int) []byte {
	if n <= cap(b)-len(b) {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

var (
	noneCodec   Codec = noneC{}
	gzipCodec   Codec = gzipC{}
	zlibCodec   Codec = zlibC{}
	snappyCodec Codec = snappyC{}
	zstdCodec   Codec = zstdC{}
)

// Builtin returns the built-in codec for m ([flags.None], [flags.Gzip],
// [flags.Zlib], [flags.Snappy] or [flags.Zstd]), and an error matching
// [ErrUnknownMethod] for any other method. The codecs are shared values.
func Builtin(m flags.Method) (Codec, error) {
	switch m {
	case flags.None:
		return noneCodec, nil
	case flags.Gzip:
		return gzipCodec, nil
	case flags.Zlib:
		return zlibCodec, nil
	case flags.Snappy:
		return snappyCodec, nil
	case flags.Zstd:
		return zstdCodec, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownMethod, m)
}

// DefaultMethods returns a new slice with the default preference order:
// Snappy, Zstd, Zlib, Gzip. Snappy comes first because it is the cheapest on
// CPU; [flags.None] is not listed because it is always acceptable.
func DefaultMethods() []flags.Method {
	return []flags.Method{flags.Snappy, flags.Zstd, flags.Zlib, flags.Gzip}
}

// Negotiate returns the first method in local (the sender's preference order)
// that remote (the peer's accepted list) also contains, and [flags.None] when
// there is no overlap. None is always acceptable: if local lists None before
// any method the peer accepts, None is the answer even when remote omits it.
func Negotiate(local, remote []flags.Method) flags.Method {
	for _, m := range local {
		if m == flags.None {
			return flags.None
		}
		for _, r := range remote {
			if r == m {
				return m
			}
		}
	}
	return flags.None
}
