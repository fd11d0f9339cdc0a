package compress

import (
	"bytes"
	"errors"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

// fuzzMaxLimit bounds the max the fuzzers pass, to keep memory modest.
const fuzzMaxLimit = 4 << 20

// addSeeds adds valid data of every codec (so each fuzzer also mutates the
// other formats), garbage and edge cases to f's corpus.
func addSeeds(f *testing.F) {
	inputs := [][]byte{
		nil,
		{0},
		[]byte("x"),
		repetitiveData(1000),
		textData(300, 1),
		textData(5000, 2),
		randomData(200, 3),
	}
	for _, m := range builtinMethods {
		c := mustBuiltin(f, m)
		for _, in := range inputs {
			comp, err := c.Compress(nil, in)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(comp, uint32(len(in)))
			f.Add(comp, uint32(len(in)+1000))
		}
	}
	for i := range 8 {
		f.Add(randomData(i*37, uint64(100+i)), uint32(64<<10))
	}
	f.Add(zstdRLEFrame(1<<20, false), uint32(100<<10))
	f.Add(zstdRLEFrame(300<<10, true), uint32(300<<10))
	f.Add(zstdRLEFrameDeclaring(300<<10, 1000, true), uint32(1<<20))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint32(100))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, uint32(100))
	f.Add([]byte{0x78, 0x9c}, uint32(100))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x00}, uint32(100))
}

// fuzzDecompress checks one codec on one input: no panic, errors of the
// documented kinds, output within max and dst's prefix kept, and that
// whatever decodes survives a round trip through the codec.
func fuzzDecompress(t *testing.T, m flags.Method, data []byte, maxArg uint32) {
	c := mustBuiltin(t, m)
	max := int(maxArg % (fuzzMaxLimit + 1))
	prefix := []byte("pre")
	out, err := c.Decompress(append([]byte(nil), prefix...), data, max)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("error %v matches neither ErrCorrupt nor ErrTooLarge", err)
		}
		if !bytes.Equal(out, prefix) {
			t.Fatalf("failed Decompress returned %q, want dst unchanged", out)
		}
		if errors.Is(err, ErrTooLarge) && max >= fuzzMaxLimit {
			return
		}
		// An input rejected as too large must decode to more than max.
		if errors.Is(err, ErrTooLarge) {
			big, err2 := c.Decompress(nil, data, fuzzMaxLimit)
			if err2 == nil && len(big) <= max {
				t.Fatalf("ErrTooLarge at max %d, but the input decodes to %d bytes", max, len(big))
			}
		}
		return
	}
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("Decompress lost the dst prefix")
	}
	out = out[len(prefix):]
	if len(out) > max {
		t.Fatalf("%d bytes out, max %d", len(out), max)
	}
	again, err := c.Decompress(nil, data, len(out))
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("decoding again with max = output size: %d bytes, %v", len(again), err)
	}

	// Round trip: compressing the output and decompressing gives it back.
	comp, err := c.Compress(nil, out)
	if err != nil {
		t.Fatalf("Compress: %v", err)
	}
	back, err := c.Decompress(nil, comp, len(out))
	if err != nil || !bytes.Equal(back, out) {
		t.Fatalf("round trip of %d bytes: %d bytes back, %v", len(out), len(back), err)
	}
	if len(out) > 0 {
		if _, err := c.Decompress(nil, comp, len(out)-1); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("round trip with max one short: %v, want ErrTooLarge", err)
		}
	}
}

func FuzzDecompressNone(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, max uint32) { fuzzDecompress(t, flags.None, data, max) })
}

func FuzzDecompressGzip(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, max uint32) { fuzzDecompress(t, flags.Gzip, data, max) })
}

func FuzzDecompressZlib(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, max uint32) { fuzzDecompress(t, flags.Zlib, data, max) })
}

func FuzzDecompressSnappy(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, max uint32) { fuzzDecompress(t, flags.Snappy, data, max) })
}

func FuzzDecompressZstd(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, max uint32) { fuzzDecompress(t, flags.Zstd, data, max) })
}
