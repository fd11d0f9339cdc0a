package compress

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"

	"github.com/meshsock/meshsock/flags"
)

// Compression levels for the DEFLATE-based codecs. On JSON-like frame bodies
// level 1 measured about twice as fast as the default level 6 at 64 KiB, for
// output 9% (1 KiB) to 20% (64 KiB) larger. Gzip and zlib are last in the
// default preference order, there for peers that lack snappy and zstd.
const (
	gzipLevel = gzip.BestSpeed
	zlibLevel = zlib.BestSpeed
)

// appendWriter is an io.Writer that appends to a byte slice.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// flateEstimate is the room reserved in dst before DEFLATE compression, so
// that text-like bodies usually need a single allocation.
func flateEstimate(n int) int { return n/2 + 64 }

// flateWriter is what gzip.Writer and zlib.Writer have in common.
type flateWriter interface {
	io.WriteCloser
	Reset(io.Writer)
}

// flateEncoder is a pooled gzip or zlib writer and the slice it appends to.
type flateEncoder struct {
	out appendWriter
	w   flateWriter
}

// flateCompress appends the compressed form of src to dst with an encoder
// from pool; name is for errors.
func flateCompress(pool *sync.Pool, name string, dst, src []byte) ([]byte, error) {
	e := pool.Get().(*flateEncoder)
	e.out.b = grow(dst, flateEstimate(len(src)))
	e.w.Reset(&e.out)
	_, err := e.w.Write(src)
	if cerr := e.w.Close(); err == nil {
		err = cerr
	}
	out := e.out.b
	e.out.b = nil
	pool.Put(e)
	if err != nil {
		return dst, fmt.Errorf("compress: %s: %w", name, err)
	}
	return out, nil
}

// gzipC is the codec for [flags.Gzip] (RFC 1952).
type gzipC struct{}

type gzipDecoder struct {
	src   bytes.Reader
	r     gzip.Reader
	probe [1]byte
}

var (
	gzipEncoders = sync.Pool{New: func() any {
		e := new(flateEncoder)
		w, err := gzip.NewWriterLevel(&e.out, gzipLevel)
		if err != nil {
			panic(fmt.Sprintf("compress: gzip level %d rejected: %v", gzipLevel, err))
		}
		e.w = w
		return e
	}}
	gzipDecoders = sync.Pool{New: func() any { return new(gzipDecoder) }}
)

func (gzipC) Method() flags.Method { return flags.Gzip }

func (gzipC) Compress(dst, src []byte) ([]byte, error) {
	return flateCompress(&gzipEncoders, "gzip", dst, src)
}

func (gzipC) Decompress(dst, src []byte, max int) ([]byte, error) {
	max = clampMax(max)
	d := gzipDecoders.Get().(*gzipDecoder)
	defer func() {
		d.src.Reset(nil)
		gzipDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.r.Reset(&d.src); err != nil {
		return dst, corrupt(flags.Gzip, err)
	}
	// The trailer's ISIZE field gives the size of the last member mod 2^32.
	// It is only a hint for the first allocation (readCapped enforces max),
	// and DEFLATE cannot expand more than deflateMaxRatio times, so a lying
	// trailer on a short input cannot make that allocation large.
	hint := 0
	if len(src) >= 8 {
		hint = int(min(uint64(binary.LittleEndian.Uint32(src[len(src)-4:])),
			uint64(deflateMaxRatio)*uint64(len(src))))
	}
	return readCapped(flags.Gzip, dst, &d.r, max, hint, d.probe[:])
}

// zlibC is the codec for [flags.Zlib] (RFC 1950).
type zlibC struct{}

type zlibDecoder struct {
	src   bytes.Reader
	r     io.Reader // implements zlib.Resetter
	probe [1]byte
}

// emptyZlib is a complete zlib stream of no data; it primes new readers,
// because the zlib package only builds a reader from a valid header.
var emptyZlib = []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}

var (
	zlibEncoders = sync.Pool{New: func() any {
		e := new(flateEncoder)
		w, err := zlib.NewWriterLevel(&e.out, zlibLevel)
		if err != nil {
			panic(fmt.Sprintf("compress: zlib level %d rejected: %v", zlibLevel, err))
		}
		e.w = w
		return e
	}}
	zlibDecoders = sync.Pool{New: func() any {
		d := new(zlibDecoder)
		d.src.Reset(emptyZlib)
		r, err := zlib.NewReader(&d.src)
		if err != nil {
			panic(fmt.Sprintf("compress: priming zlib reader: %v", err))
		}
		d.r = r
		return d
	}}
)

func (zlibC) Method() flags.Method { return flags.Zlib }

func (zlibC) Compress(dst, src []byte) ([]byte, error) {
	return flateCompress(&zlibEncoders, "zlib", dst, src)
}

func (zlibC) Decompress(dst, src []byte, max int) ([]byte, error) {
	max = clampMax(max)
	d := zlibDecoders.Get().(*zlibDecoder)
	defer func() {
		d.src.Reset(nil)
		zlibDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.r.(zlib.Resetter).Reset(&d.src, nil); err != nil {
		return dst, corrupt(flags.Zlib, err)
	}
	// zlib records no size; guess a typical ratio for the first allocation.
	return readCapped(flags.Zlib, dst, d.r, max, 4*len(src), d.probe[:])
}

// deflateMaxRatio bounds how many output bytes one byte of a DEFLATE stream
// can stand for (258-byte matches coded in about two bits).
const deflateMaxRatio = 1032

// minReadRoom is the smallest allocation readCapped makes, except for a
// first allocation sized by a hint.
const minReadRoom = 512

// readCapped appends everything r yields to dst, failing with ErrTooLarge as
// soon as more than maxOut bytes arrive and with ErrCorrupt on any read error.
// It never asks r for more than maxOut+1 bytes in total and grows dst
// geometrically from hint, so the memory it allocates stays within about
// twice maxOut whatever the input is. probe is a one-byte scratch buffer.
func readCapped(m flags.Method, dst []byte, r io.Reader, maxOut, hint int, probe []byte) ([]byte, error) {
	start, orig := len(dst), dst
	limit := start + maxOut // dst may grow up to this length
	hint = min(hint, maxOut)
	stalls := 0
	for {
		var n int
		var err error
		if len(dst) == cap(dst) || len(dst) == limit {
			// No room left. Probe for one more byte before growing, so that
			// output which exactly fills the buffer costs no reallocation
			// and output of exactly maxOut bytes is accepted.
			n, err = r.Read(probe)
			if n > 0 {
				if len(dst) == limit {
					return orig, tooLarge(m, maxOut)
				}
				// Double what has been decoded; the first allocation takes
				// the hint as is, so an honest size hint costs exactly one.
				decoded := len(dst) - start
				room := max(decoded, hint)
				if decoded > 0 || hint == 0 {
					room = max(room, minReadRoom)
				}
				dst = grow(dst, min(room, limit-len(dst)))
				dst = append(dst, probe[0])
			}
		} else {
			n, err = r.Read(dst[len(dst):min(cap(dst), limit)])
			dst = dst[:len(dst)+n]
		}
		switch {
		case err == io.EOF:
			return dst, nil
		case err != nil:
			return orig, corrupt(m, err)
		case n == 0:
			if stalls++; stalls > 100 {
				return orig, corrupt(m, io.ErrNoProgress)
			}
		default:
			stalls = 0
		}
	}
}
