package compress

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/meshsock/meshsock/flags"
)

// zstdLevel is the encoder level of the zstd codec. On JSON-like frame
// bodies of 64 B to 64 KiB, SpeedFastest measured 20-50% faster than
// SpeedDefault with the same ratio (within 2%, better at 64 KiB).
const zstdLevel = zstd.SpeedFastest

const (
	// zstdMaxBlock is the largest output a single zstd block can produce.
	zstdMaxBlock = 128 << 10
	// zstdSlack is the room granted beyond max on the last decoding attempt:
	// any block that starts within max then ends within the buffer, so the
	// decoder only runs out of room once the output is already too large.
	// (A block holds at most min(window, zstdMaxBlock) bytes; a smaller slack
	// is used first when the frame header shows a small window.)
	zstdSlack = zstdMaxBlock + 64
	// zstdMinRoom is the smallest buffer tried first for a frame that does
	// not declare its size. Our encoder leaves the size out only for inputs
	// under 256 bytes, so those decode in one attempt.
	zstdMinRoom = 256
	// zstdMaxRatio bounds how many output bytes one input byte can stand for
	// (a 4-byte RLE block of 128 KiB); a declared content size beyond it on a
	// short input is not believed for the first allocation.
	zstdMaxRatio = 32 << 10
	// zstdGrowth is the factor between successive decoding attempts.
	zstdGrowth = 4
)

// zstdC is the codec for [flags.Zstd] (RFC 8878 frames). The encoder and
// decoder are created on first use and shared; both are safe for concurrent
// use and start no goroutines in the EncodeAll/DecodeAll mode used here.
type zstdC struct{}

var (
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstdLevel),
			zstd.WithZeroFrames(true), // empty input still yields a valid frame
		)
	})
	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0), // one block decoder per P for DecodeAll
			// DecodeAll then never writes past cap(dst): together with the
			// size checks below, that is what bounds memory on hostile input.
			zstd.WithDecodeAllCapLimit(true),
		)
	})
)

// zstdContentErrors are decoder errors that describe the input itself, so a
// bigger output buffer cannot make them go away.
var zstdContentErrors = []error{
	zstd.ErrMagicMismatch,
	zstd.ErrReservedBlockType,
	zstd.ErrCompressedSizeTooBig,
	zstd.ErrBlockTooSmall,
	zstd.ErrUnexpectedBlockSize,
	zstd.ErrWindowSizeExceeded, // a window over 512 MiB, or a block larger than its window
	zstd.ErrWindowSizeTooSmall,
	zstd.ErrUnknownDictionary,
	zstd.ErrFrameSizeExceeded,
	zstd.ErrFrameSizeMismatch,
	zstd.ErrCRCMismatch,
	io.ErrUnexpectedEOF,
}

func (zstdC) Method() flags.Method { return flags.Zstd }

func (zstdC) Compress(dst, src []byte) ([]byte, error) {
	enc, err := zstdEncoder()
	if err != nil {
		return dst, fmt.Errorf("compress: zstd encoder: %w", err)
	}
	return enc.EncodeAll(src, dst), nil
}

// Decompress decodes with DecodeAll into a buffer whose capacity is the limit
// for that attempt. A frame that declares its content size (every frame our
// encoder writes for 256 bytes or more) is checked against maxOut and decoded
// into a buffer of exactly that size. Otherwise the buffer starts small and
// grows by zstdGrowth per attempt up to maxOut+zstdSlack, so the total
// allocation stays a small multiple of maxOut.
func (zstdC) Decompress(dst, src []byte, maxOut int) ([]byte, error) {
	maxOut = clampMax(maxOut)
	dec, err := zstdDecoder()
	if err != nil {
		return dst, fmt.Errorf("compress: zstd decoder: %w", err)
	}
	if len(src) == 0 {
		// RFC 8878: compressed data is one or more frames. (Our encoder
		// writes a frame even for empty input.)
		return dst, corrupt(flags.Zstd, io.ErrUnexpectedEOF)
	}
	start, orig := len(dst), dst

	room := min(max(8*len(src), zstdMinRoom), maxOut)
	declared := false // the first attempt uses the frame's declared size
	slack := zstdSlack
	var h zstd.Header
	if h.Decode(src) == nil {
		if h.HasFCS {
			if h.FrameContentSize > uint64(maxOut) {
				return orig, tooLarge(flags.Zstd, maxOut)
			}
			room = int(min(h.FrameContentSize, zstdMaxRatio*uint64(len(src))))
			declared = true
		}
		if h.WindowSize > 0 && h.WindowSize < zstdMaxBlock {
			slack = int(h.WindowSize) + 64
		}
	}

	buf := dst
	for {
		final := room >= maxOut && !declared
		capRoom := room
		if final {
			capRoom = maxOut + slack
		}
		buf = grow(buf[:start], capRoom)
		out, err := dec.DecodeAll(src, buf[start:start:start+capRoom])
		if len(out) > maxOut {
			return orig, tooLarge(flags.Zstd, maxOut)
		}
		if err == nil {
			if len(out) == 0 {
				return buf[:start], nil
			}
			if cap(buf) > start && &out[0] == &buf[start : start+1][0] {
				return buf[:start+len(out)], nil
			}
			// DecodeAll moved the output elsewhere; the cap limit should
			// prevent that, but stay correct if it ever happens.
			return append(orig, out...), nil
		}
		if final && slack < zstdSlack && zstdRetryable(err) {
			// A later frame may have a bigger window than the first.
			slack = zstdSlack
			continue
		}
		if final || !zstdRetryable(err) {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return orig, tooLarge(flags.Zstd, maxOut)
			}
			return orig, corrupt(flags.Zstd, err)
		}
		declared = false
		room = min(max(room, zstdMinRoom)*zstdGrowth, maxOut)
	}
}

// zstdRetryable reports whether err might only mean that the output buffer
// of a decoding attempt was too small.
func zstdRetryable(err error) bool {
	for _, e := range zstdContentErrors {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}
