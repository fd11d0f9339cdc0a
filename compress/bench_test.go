package compress

import (
	"testing"
)

// benchSizes are the body sizes benchmarked: a small message, a typical one
// and a large one.
var benchSizes = []int{64, 1 << 10, 64 << 10}

// BenchmarkCompress measures every built-in codec on JSON-like text (see
// textData). Besides throughput it reports "ratio", the original size divided
// by the compressed size.
func BenchmarkCompress(b *testing.B) {
	for _, m := range builtinMethods {
		c := mustBuiltin(b, m)
		for _, n := range benchSizes {
			b.Run(m.String()+"/"+sizeName(n), func(b *testing.B) {
				src := textData(n, 42)
				dst, err := c.Compress(nil, src)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					dst, err = c.Compress(dst[:0], src)
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)/float64(len(dst)), "ratio")
			})
		}
	}
}

// BenchmarkDecompress measures decompressing the output of BenchmarkCompress
// into a reused buffer. Throughput is in uncompressed bytes.
func BenchmarkDecompress(b *testing.B) {
	for _, m := range builtinMethods {
		c := mustBuiltin(b, m)
		for _, n := range benchSizes {
			b.Run(m.String()+"/"+sizeName(n), func(b *testing.B) {
				src := textData(n, 42)
				comp, err := c.Compress(nil, src)
				if err != nil {
					b.Fatal(err)
				}
				dst := make([]byte, 0, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					dst, err = c.Decompress(dst[:0], comp, n)
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
