package compress

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/flags"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// builtinMethods lists every method with a built-in codec.
var builtinMethods = []flags.Method{flags.None, flags.Gzip, flags.Zlib, flags.Snappy, flags.Zstd}

// mustBuiltin returns the built-in codec for m or fails the test.
func mustBuiltin(tb testing.TB, m flags.Method) Codec {
	tb.Helper()
	c, err := Builtin(m)
	if err != nil {
		tb.Fatalf("Builtin(%s): %v", m, err)
	}
	return c
}

// randomData returns n incompressible bytes, the same for the same seed.
func randomData(n int, seed uint64) []byte {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// repetitiveData returns n bytes of a short phrase repeated.
func repetitiveData(n int) []byte {
	return bytes.Repeat([]byte("meshsock frame body "), n/20+1)[:n]
}

// textData returns n bytes of JSON-like log records, semi-repetitive like
// the bodies a messaging application sends, the same for the same seed.
func textData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6d657368736f636b))
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
	ops := []string{"put", "get", "delete", "join", "leave", "ping", "notify", "store"}
	b := make([]byte, 0, n+256)
	for id := 1; len(b) < n; id++ {
		b = fmt.Appendf(b, `{"id":%d,"from":%q,"op":%q,"key":"/mesh/%s/%08x","ts":%d,"ttl":%d,"ok":%t,"note":%q}`+"\n",
			id, users[r.IntN(len(users))], ops[r.IntN(len(ops))], users[r.IntN(len(users))], r.Uint32(),
			1700000000+id*17+r.IntN(9), 30*(1+r.IntN(4)), r.IntN(10) != 0, randomWords(r))
	}
	return b[:n]
}

func randomWords(r *rand.Rand) string {
	words := []string{"peer", "route", "frame", "chord", "ring", "hash", "sock", "mesh", "link", "ack", "hop", "node"}
	var s []byte
	for i := r.IntN(5); i >= 0; i-- {
		if len(s) > 0 {
			s = append(s, ' ')
		}
		s = append(s, words[r.IntN(len(words))]...)
	}
	return string(s)
}

// sizeName formats a byte count as the benchmarks and subtests name it.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
