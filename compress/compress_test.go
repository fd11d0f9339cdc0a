package compress

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 64, 1 << 10, 64 << 10, 1 << 20}
	kinds := []struct {
		name string
		gen  func(n int) []byte
	}{
		{"random", func(n int) []byte { return randomData(n, uint64(n)) }},
		{"repetitive", repetitiveData},
		{"text", func(n int) []byte { return textData(n, uint64(n)) }},
	}
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		for _, kind := range kinds {
			for _, n := range sizes {
				t.Run(m.String()+"/"+kind.name+"/"+sizeName(n), func(t *testing.T) {
					src := kind.gen(n)
					comp, err := c.Compress(nil, src)
					if err != nil {
						t.Fatalf("Compress: %v", err)
					}
					got, err := c.Decompress(nil, comp, n)
					if err != nil {
						t.Fatalf("Decompress(max=%d) of %d compressed bytes: %v", n, len(comp), err)
					}
					if !bytes.Equal(got, src) {
						t.Fatalf("round trip changed the data (got %d bytes, want %d)", len(got), len(src))
					}

					// Appending keeps the existing prefix, whether or not dst
					// has spare capacity.
					for _, spare := range []int{0, len(comp) + len(src) + 64} {
						prefix := []byte("prefix:")
						dst := append(make([]byte, 0, len(prefix)+spare), prefix...)
						comp2, err := c.Compress(dst, src)
						if err != nil {
							t.Fatalf("Compress with prefix: %v", err)
						}
						if !bytes.HasPrefix(comp2, prefix) {
							t.Fatalf("Compress lost the dst prefix")
						}
						dst = append(make([]byte, 0, len(prefix)+spare), prefix...)
						got, err := c.Decompress(dst, comp2[len(prefix):], n)
						if err != nil {
							t.Fatalf("Decompress with prefix: %v", err)
						}
						if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], src) {
							t.Fatalf("Decompress with prefix: wrong result")
						}
					}
				})
			}
		}
	}
}

func TestMethod(t *testing.T) {
	for _, m := range builtinMethods {
		if got := mustBuiltin(t, m).Method(); got != m {
			t.Errorf("Builtin(%s).Method() = %s", m, got)
		}
	}
}

func TestBuiltinUnknown(t *testing.T) {
	for _, m := range []flags.Method{0x01, 0x10, 0x12, 0x22, 0xff} {
		c, err := Builtin(m)
		if !errors.Is(err, ErrUnknownMethod) || c != nil {
			t.Errorf("Builtin(%s) = %v, %v; want nil, ErrUnknownMethod", m, c, err)
		}
	}
}

func TestDefaultMethods(t *testing.T) {
	want := []flags.Method{flags.Snappy, flags.Zstd, flags.Zlib, flags.Gzip}
	got := DefaultMethods()
	if !slices.Equal(got, want) {
		t.Fatalf("DefaultMethods() = %v, want %v", got, want)
	}
	got[0] = flags.None
	if again := DefaultMethods(); !slices.Equal(again, want) {
		t.Fatalf("DefaultMethods shares its slice: %v after the caller changed its copy", again)
	}
	for _, m := range want {
		if _, err := Builtin(m); err != nil {
			t.Errorf("default method %s has no built-in codec", m)
		}
	}
}

func TestNegotiate(t *testing.T) {
	type ms = []flags.Method
	const (
		none   = flags.None
		gz     = flags.Gzip
		zl     = flags.Zlib
		snappy = flags.Snappy
		zstd   = flags.Zstd
	)
	tests := []struct {
		name          string
		local, remote ms
		want          flags.Method
	}{
		{"both empty", nil, nil, none},
		{"local empty", nil, ms{zstd, gz}, none},
		{"remote empty", ms{zstd, gz}, ms{}, none},
		{"sender preference wins", ms{snappy, zstd, zl, gz}, ms{gz, zl, zstd, snappy}, snappy},
		{"sender preference wins reversed", ms{gz, zl, zstd, snappy}, ms{snappy, zstd, zl, gz}, gz},
		{"first common", ms{snappy, zstd, zl}, ms{zl, zstd}, zstd},
		{"no overlap", ms{snappy, zstd}, ms{gz, zl}, none},
		{"only none remote", ms{snappy, zstd}, ms{none}, none},
		{"none preferred", ms{none, zstd}, ms{zstd}, none},
		{"none last", ms{zstd, none}, ms{gz}, none},
		{"duplicates local", ms{zl, zl, gz, gz}, ms{gz}, gz},
		{"duplicates remote", ms{zstd, gz}, ms{gz, gz, zstd, zstd}, zstd},
		{"unknown methods", ms{0x7f, zstd}, ms{0x7f}, 0x7f},
		{"unknown only remote", ms{zstd}, ms{0x7f}, none},
		{"defaults both sides", DefaultMethods(), DefaultMethods(), snappy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Negotiate(tt.local, tt.remote); got != tt.want {
				t.Errorf("Negotiate(%v, %v) = %s, want %s", tt.local, tt.remote, got, tt.want)
			}
		})
	}
}

// TestConcurrentUse runs every codec from many goroutines at once; with
// -race it checks that pooled encoders and decoders are not shared.
func TestConcurrentUse(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				m := builtinMethods[(g+i)%len(builtinMethods)]
				c, _ := Builtin(m)
				src := textData(100+g*997+i*131, uint64(g*100+i))
				comp, err := c.Compress(nil, src)
				if err != nil {
					errs <- err
					return
				}
				got, err := c.Decompress(nil, comp, len(src))
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, src) {
					errs <- errors.New(m.String() + ": concurrent round trip changed the data")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSteadyStateAllocs checks that the pooled codecs do not build a new
// encoder or decoder per call: with an output buffer that has room, a call
// allocates at most a few small objects.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	if testing.Short() {
		t.Skip("short")
	}
	src := textData(16<<10, 1)
	for _, m := range builtinMethods {
		c := mustBuiltin(t, m)
		comp, err := c.Compress(nil, src)
		if err != nil {
			t.Fatal(err)
		}
		cbuf := make([]byte, 0, 2*len(src)+1024)
		dbuf := make([]byte, 0, len(src))
		// Warm the pools and the lazily built zstd state.
		for range 3 {
			_, _ = c.Compress(cbuf, src)
			_, _ = c.Decompress(dbuf, comp, len(src))
		}
		ca := testing.AllocsPerRun(50, func() { _, _ = c.Compress(cbuf, src) })
		da := testing.AllocsPerRun(50, func() { _, _ = c.Decompress(dbuf, comp, len(src)) })
		t.Logf("%s: %.1f allocs per Compress, %.1f per Decompress", m, ca, da)
		if ca > 2 || da > 2 {
			t.Errorf("%s: %.1f allocs per Compress, %.1f per Decompress; want at most 2", m, ca, da)
		}
	}
}
