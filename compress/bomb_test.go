package compress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"runtime"
	"sync"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/meshsock/meshsock/flags"
)

const (
	bombSize  = 101 << 20 // decompressed size of every bomb
	bombLimit = 1 << 20   // the max given to Decompress
	// bombAllocBudget is how much one rejected bomb may allocate.
	bombAllocBudget = 16 << 20
)

// writeZeros streams n zero bytes into w in 1 MiB writes.
func writeZeros(tb testing.TB, w interface{ Write([]byte) (int, error) }, n int) {
	tb.Helper()
	zeros := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(zeros))
		if _, err := w.Write(zeros[:k]); err != nil {
			tb.Fatal(err)
		}
		n -= k
	}
}

// zstdRLEFrame hand-builds a zstd frame of n zero bytes made of RLE blocks.
// With fcs false the header declares no content size, so the decoder cannot
// reject it up front; a zstd encoder leaves the size out the same way when it
// streams.
func zstdRLEFrame(n int, fcs bool) []byte {
	declared := -1
	if fcs {
		declared = n
	}
	return zstdRLEFrameDeclaring(n, declared, false)
}

// zstdRLEFrameDeclaring is zstdRLEFrame with the declared content size given
// separately (none if negative), so that it can lie, and with a choice of the
// single-segment layout (no window descriptor; the window is the content).
func zstdRLEFrameDeclaring(n, declared int, single bool) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	switch {
	case declared >= 0 && single:
		b = append(b, 0xe0) // 8-byte FCS, single segment
		b = binary.LittleEndian.AppendUint64(b, uint64(declared))
	case declared >= 0:
		b = append(b, 0xc0, 7<<3) // 8-byte FCS, window descriptor 128 KiB
		b = binary.LittleEndian.AppendUint64(b, uint64(declared))
	default:
		b = append(b, 0x00, 7<<3) // no FCS, window descriptor 128 KiB
	}
	for {
		k := min(n, zstdMaxBlock)
		n -= k
		hdr := uint32(k)<<3 | 1<<1 // RLE block of k bytes
		if n == 0 {
			hdr |= 1 // last block
		}
		b = append(b, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0x00)
		if n == 0 {
			return b
		}
	}
}

// deflateZeros returns a raw DEFLATE stream of n zero bytes (n a multiple of
// 1 MiB, at least 2 MiB). Compressing 100 MiB is slow under the race
// detector, so it compresses 2 MiB with a flush after each MiB and repeats
// the second MiB's blocks: they only refer back to zeros, and a flush leaves
// them byte-aligned and self-contained. A final empty block ends the stream.
func deflateZeros(tb testing.TB, n int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		tb.Fatal(err)
	}
	mib := make([]byte, 1<<20)
	_, _ = w.Write(mib)
	_ = w.Flush()
	first := buf.Len()
	_, _ = w.Write(mib)
	_ = w.Flush()
	out := bytes.Clone(buf.Bytes()[:first])
	out = append(out, bytes.Repeat(buf.Bytes()[first:], n>>20-1)...)
	return append(out, 0x03, 0x00) // final block, fixed Huffman, end of block
}

// gzipZeros wraps deflateZeros(n) as a gzip member.
func gzipZeros(tb testing.TB, n int) []byte {
	b := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	b = append(b, deflateZeros(tb, n)...)
	crc := crc32.NewIEEE()
	writeZeros(tb, crc, n)
	b = binary.LittleEndian.AppendUint32(b, crc.Sum32())
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// zlibZeros wraps deflateZeros(n) as a zlib stream.
func zlibZeros(tb testing.TB, n int) []byte {
	b := []byte{0x78, 0xda}
	b = append(b, deflateZeros(tb, n)...)
	// Adler-32 of n zeros: a stays 1, b adds 1 per byte.
	return binary.BigEndian.AppendUint32(b, uint32(n%65521)<<16|1)
}

type bomb struct {
	name string
	m    flags.Method
	data []byte
}

// bombs builds, once, inputs that decompress to bombSize bytes (or claim to).
var bombs = sync.OnceValue(func() []bomb {
	tb := &testing.T{} // writes to in-memory writers cannot fail

	// A real Snappy block of bombSize zeros (Snappy cannot do better than
	// about 21:1, so it is not small) and a tiny block that merely claims
	// that size.
	zeros := make([]byte, bombSize)
	snappyReal := s2.EncodeSnappy(nil, zeros)
	snappyClaim := binary.AppendUvarint(nil, bombSize)
	snappyClaim = append(snappyClaim, 0x00, 'x')

	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	zstdFCS := enc.EncodeAll(zeros, nil)
	var zs bytes.Buffer
	enc.Reset(&zs) // streamed: the frame carries no content size
	writeZeros(tb, enc, bombSize)
	_ = enc.Close()

	return []bomb{
		{"gzip", flags.Gzip, gzipZeros(tb, bombSize)},
		// Concatenated gzip members of 8 MiB each.
		{"gzip-multistream", flags.Gzip, bytes.Repeat(gzipZeros(tb, 8<<20), bombSize/(8<<20)+1)},
		{"zlib", flags.Zlib, zlibZeros(tb, bombSize)},
		{"snappy", flags.Snappy, snappyReal},
		{"snappy-claimed-size", flags.Snappy, snappyClaim},
		{"zstd-declared-size", flags.Zstd, zstdFCS},
		{"zstd-streamed", flags.Zstd, zs.Bytes()},
		{"zstd-rle-no-size", flags.Zstd, zstdRLEFrame(bombSize, false)},
		{"zstd-rle-size", flags.Zstd, zstdRLEFrame(bombSize, true)},
		{"none", flags.None, make([]byte, bombLimit+1)},
	}
})

// allocatedBy returns the bytes allocated on the heap while f runs. It runs
// f once before measuring, after a GC, so that pools emptied by the GC are
// refilled and only f's own cost is measured.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	f()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestBombs(t *testing.T) {
	for _, b := range bombs() {
		t.Run(b.name, func(t *testing.T) {
			c := mustBuiltin(t, b.m)
			var out []byte
			var err error
			alloc := allocatedBy(func() { out, err = c.Decompress(nil, b.data, bombLimit) })
			t.Logf("%d-byte input: %v; allocated %.2f MiB", len(b.data), err, float64(alloc)/(1<<20))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decompress = %d bytes, %v; want ErrTooLarge", len(out), err)
			}
			if alloc > bombAllocBudget {
				t.Errorf("allocated %d bytes for a rejected bomb, budget %d", alloc, bombAllocBudget)
			}
		})
	}
}

// TestBombSizes documents that the bombs are what they claim to be.
func TestBombSizes(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("decompresses about 1 GiB in all; too slow under -race or -short")
	}
	for _, b := range bombs() {
		switch b.name {
		case "gzip", "zlib", "zstd-declared-size", "zstd-streamed", "zstd-rle-no-size", "zstd-rle-size":
			if len(b.data) >= 128<<10 {
				t.Errorf("%s bomb is %d bytes, want a small input", b.name, len(b.data))
			}
		}
		if b.name == "snappy-claimed-size" || b.name == "none" {
			continue
		}
		out, err := mustBuiltin(t, b.m).Decompress(nil, b.data, bombSize+(8<<20))
		if err != nil || len(out) < bombSize || bytes.ContainsFunc(out, func(r rune) bool { return r != 0 }) {
			t.Errorf("%s bomb decompresses to %d bytes (%v), want at least %d zeros", b.name, len(out), err, bombSize)
		}
	}
}

// TestExactLimit checks the boundary: output of exactly max bytes is
// accepted, and max-1 is rejected with ErrTooLarge.
func TestExactLimit(t *testing.T) {
	type input struct {
		name string
		m    flags.Method
		comp []byte
		n    int
	}
	var inputs []input
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		for _, n := range []int{1, 100, 255, 256, 4 << 10, 300 << 10} {
			src := textData(n, 7)
			comp, err := c.Compress(nil, src)
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, input{m.String() + "/" + sizeName(n), m, comp, n})
		}
	}
	for _, n := range []int{1, 1000, zstdMaxBlock, zstdMaxBlock + 1, 300 << 10, 1 << 20} {
		inputs = append(inputs,
			input{"zstd-rle-no-size/" + sizeName(n), flags.Zstd, zstdRLEFrame(n, false), n},
			input{"zstd-rle-size/" + sizeName(n), flags.Zstd, zstdRLEFrame(n, true), n})
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			c := mustBuiltin(t, in.m)
			out, err := c.Decompress(nil, in.comp, in.n)
			if err != nil || len(out) != in.n {
				t.Fatalf("max=%d: got %d bytes, %v; want %d bytes", in.n, len(out), err, in.n)
			}
			out, err = c.Decompress([]byte("prefix"), in.comp, in.n-1)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("max=%d: got %d bytes, %v; want ErrTooLarge", in.n-1, len(out), err)
			}
			if string(out) != "prefix" {
				t.Fatalf("a failed Decompress returned %q, want dst unchanged", out)
			}
		})
	}
}

func TestNegativeAndZeroMax(t *testing.T) {
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		empty, err := c.Compress(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := c.Decompress(nil, empty, 0); err != nil || len(out) != 0 {
			t.Errorf("%s: empty payload with max 0: %d bytes, %v", m, len(out), err)
		}
		one, _ := c.Compress(nil, []byte{'x'})
		for _, max := range []int{0, -1, -1 << 40} {
			if _, err := c.Decompress(nil, one, max); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%s: 1 byte with max %d: %v, want ErrTooLarge", m, max, err)
			}
		}
	}
}

// TestSmallLimitSmallAlloc checks that decoding a small body with a small max
// allocates about the body, not the size of a zstd block or a read buffer.
func TestSmallLimitSmallAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	src := textData(150, 11)
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		comp, err := c.Compress(nil, src)
		if err != nil {
			t.Fatal(err)
		}
		for _, max := range []int{len(src), len(src) - 1, 1 << 20} {
			var err error
			alloc := allocatedBy(func() { _, err = c.Decompress(nil, comp, max) })
			if (err != nil) != (max < len(src)) {
				t.Fatalf("%s: max %d: %v", m, max, err)
			}
			if alloc > 16<<10 { // a little noise from the runtime and testing
				t.Errorf("%s: decoding %d bytes with max %d allocated %d bytes", m, len(src), max, alloc)
			}
		}
	}
}
