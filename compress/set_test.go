package compress

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

// corruptingCodec wraps a codec and flips a bit in everything it compresses,
// as tests of the socket layer do to exercise the error paths.
type corruptingCodec struct{ Codec }

func (c corruptingCodec) Compress(dst, src []byte) ([]byte, error) {
	start := len(dst)
	out, err := c.Codec.Compress(dst, src)
	if err == nil && len(out) > start {
		out[len(out)-1] ^= 0x01
	}
	return out, err
}

// customCodec is a codec for a method that is not built in.
type customCodec struct{ noneC }

func (customCodec) Method() flags.Method { return 0x7e }

func TestDefaultSet(t *testing.T) {
	s := DefaultSet()
	if s != DefaultSet() {
		t.Error("DefaultSet returns a different Set each time")
	}
	want := []flags.Method{flags.None, flags.Gzip, flags.Zlib, flags.Snappy, flags.Zstd}
	got := s.Methods()
	if !slices.Equal(got, want) {
		t.Fatalf("DefaultSet().Methods() = %v, want %v", got, want)
	}
	got[0] = 0x55
	if again := s.Methods(); !slices.Equal(again, want) {
		t.Fatalf("Methods shares its slice: %v after the caller changed its copy", again)
	}
	for _, m := range want {
		c, ok := s.Get(m)
		b, _ := Builtin(m)
		if !ok || c != b {
			t.Errorf("DefaultSet().Get(%s) = %v, %t; want the built-in codec", m, c, ok)
		}
	}
	if c, ok := s.Get(0x7e); ok || c != nil {
		t.Errorf("Get of an absent method = %v, %t", c, ok)
	}
}

func TestNewSet(t *testing.T) {
	t.Run("empty has none", func(t *testing.T) {
		s, err := NewSet()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Methods(); !slices.Equal(got, []flags.Method{flags.None}) {
			t.Errorf("Methods() = %v, want [none]", got)
		}
		if c, ok := s.Get(flags.None); !ok || c.Method() != flags.None {
			t.Errorf("Get(none) = %v, %t", c, ok)
		}
	})
	t.Run("nil codec", func(t *testing.T) {
		if s, err := NewSet(zstdCodec, nil); err == nil || s != nil {
			t.Errorf("NewSet with a nil codec = %v, %v; want an error", s, err)
		}
	})
	t.Run("duplicate method", func(t *testing.T) {
		if s, err := NewSet(zstdCodec, gzipCodec, corruptingCodec{zstdCodec}); err == nil || s != nil {
			t.Errorf("NewSet with two zstd codecs = %v, %v; want an error", s, err)
		}
		if _, err := NewSet(noneCodec, noneCodec); err == nil {
			t.Error("NewSet with two none codecs succeeded")
		}
	})
	t.Run("sorted methods", func(t *testing.T) {
		s, err := NewSet(zstdCodec, customCodec{}, gzipCodec)
		if err != nil {
			t.Fatal(err)
		}
		want := []flags.Method{flags.None, flags.Gzip, flags.Zstd, 0x7e}
		if got := s.Methods(); !slices.Equal(got, want) {
			t.Errorf("Methods() = %v, want %v", got, want)
		}
		if _, ok := s.Get(flags.Snappy); ok {
			t.Error("the Set has snappy, which was not given")
		}
	})
	t.Run("custom none replaces the built-in", func(t *testing.T) {
		custom := corruptingCodec{noneCodec}
		s, err := NewSet(custom)
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Get(flags.None); c != Codec(custom) {
			t.Errorf("Get(none) = %v, want the custom codec", c)
		}
	})
}

func TestCustomCodecInSet(t *testing.T) {
	zc, _ := Builtin(flags.Zstd)
	s, err := NewSet(corruptingCodec{zc}, snappyCodec)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := s.Get(flags.Zstd)
	if !ok {
		t.Fatal("custom zstd codec missing")
	}
	src := textData(2000, 9)
	comp, err := c.Compress(nil, src)
	if err != nil {
		t.Fatal(err)
	}
	// The built-in decoder detects the damage (the frame has a checksum).
	if out, err := zc.Decompress(nil, comp, len(src)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decoding corrupted output: %d bytes, %v; want ErrCorrupt", len(out), err)
	}
	// The custom codec still decompresses like the built-in one.
	good, _ := zc.Compress(nil, src)
	if out, err := c.Decompress(nil, good, len(src)); err != nil || !bytes.Equal(out, src) {
		t.Fatalf("custom codec Decompress: %d bytes, %v", len(out), err)
	}
	// The built-in set is unaffected.
	if d, _ := DefaultSet().Get(flags.Zstd); d != zc {
		t.Fatal("DefaultSet changed")
	}
}
