package compress

import (
	"errors"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

// checkErr fails unless err is nil or matches ErrCorrupt or ErrTooLarge, and
// checks that a successful result respects max.
func checkDecompress(t *testing.T, c Codec, src []byte, max int) ([]byte, error) {
	t.Helper()
	out, err := c.Decompress(nil, src, max)
	switch {
	case err == nil:
		if len(out) > max {
			t.Fatalf("%s: %d bytes out, max %d", c.Method(), len(out), max)
		}
	case !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge):
		t.Fatalf("%s: error %v matches neither ErrCorrupt nor ErrTooLarge", c.Method(), err)
	}
	return out, err
}

func TestEmptyInput(t *testing.T) {
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		out, err := c.Decompress(nil, nil, 1<<20)
		if m == flags.None {
			if err != nil || len(out) != 0 {
				t.Errorf("none: empty input gave %d bytes, %v", len(out), err)
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: empty input gave %d bytes, %v; want ErrCorrupt", m, len(out), err)
		}
	}
}

func TestTruncated(t *testing.T) {
	src := textData(4<<10, 3)
	for _, m := range builtinMethods {
		if m == flags.None {
			continue
		}
		c := mustBuiltin(t, m)
		comp, err := c.Compress(nil, src)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(comp); n++ {
			if _, err := checkDecompress(t, c, comp[:n], len(src)); err == nil {
				t.Fatalf("%s: a %d-byte prefix of %d compressed bytes decoded without error", m, n, len(comp))
			}
		}
	}
}

func TestBitFlips(t *testing.T) {
	src := textData(2<<10, 4)
	for _, m := range builtinMethods {
		if m == flags.None {
			continue
		}
		c := mustBuiltin(t, m)
		comp, err := c.Compress(nil, src)
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for i := range comp {
			for bit := range 8 {
				mut := append([]byte(nil), comp...)
				mut[i] ^= 1 << bit
				if _, err := checkDecompress(t, c, mut, len(src)+100); err != nil {
					bad++
				}
			}
		}
		t.Logf("%s: %d of %d single-bit flips rejected", m, bad, 8*len(comp))
	}
}

func TestGarbage(t *testing.T) {
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		for i := range 2000 {
			g := randomData(i%300, uint64(i))
			checkDecompress(t, c, g, 64<<10)
		}
		// Data of the other codecs is garbage too.
		for _, other := range builtinMethods {
			comp, _ := mustBuiltin(t, other).Compress(nil, textData(1000, 5))
			out, err := checkDecompress(t, c, comp, 64<<10)
			if m != other && m != flags.None && err == nil {
				t.Errorf("%s accepted %s data (%d bytes out)", m, other, len(out))
			}
		}
	}
}

// TestCorruptZstd covers malformed zstd frames that garbage rarely hits.
func TestCorruptZstd(t *testing.T) {
	c := mustBuiltin(t, flags.Zstd)
	for _, single := range []bool{false, true} {
		// A frame that declares 1000 bytes of content but holds 300 KiB,
		// and one that declares more than it holds.
		for _, n := range []int{300 << 10, 900} {
			lying := zstdRLEFrameDeclaring(n, 1000, single)
			if _, err := checkDecompress(t, c, lying, 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Errorf("single segment %t: %d bytes declared as 1000: %v, want ErrCorrupt", single, n, err)
			}
		}
	}
	// Valid frame followed by trailing garbage.
	good, _ := c.Compress(nil, textData(5000, 6))
	if _, err := checkDecompress(t, c, append(good, 1, 2, 3, 4, 5, 6, 7, 8), 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing garbage: %v, want ErrCorrupt", err)
	}
	// Two valid frames in a row are one valid input.
	a, _ := c.Compress(nil, []byte("first "))
	b, _ := c.Compress(nil, textData(3000, 8))
	out, err := checkDecompress(t, c, append(a, b...), 1<<20)
	if err != nil || string(out[:6]) != "first " || len(out) != 3006 {
		t.Errorf("two frames: %d bytes, %v", len(out), err)
	}
	if _, err := checkDecompress(t, c, append(a, b...), 3005); !errors.Is(err, ErrTooLarge) {
		t.Errorf("two frames over the limit: %v, want ErrTooLarge", err)
	}
}
