package protocol

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/meshsock/meshsock/flags"
)

// Run: go test ./protocol -run '^$' -bench . -benchmem -count 3
// Results and their reading are in docs/performance.md.

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

// benchEnvelope is a broadcast with one packet of n bytes and realistic
// field values (8-byte time, multi-byte seq).
func benchEnvelope(n int) *Envelope {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 31)
	}
	return &Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: goldenNodeID, Seq: 123456,
		Time: goldenTime, HopLimit: 32, Packets: [][]byte{p}}
}

func BenchmarkEnvelopeEncode(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			e := benchEnvelope(s.n)
			buf := make([]byte, 0, e.EncodedLen())
			b.SetBytes(int64(e.EncodedLen()))
			b.ReportAllocs()
			for b.Loop() {
				buf = e.AppendTo(buf[:0])
			}
		})
	}
}

func BenchmarkEnvelopeEncodeFxamacker(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			ref := toRef(benchEnvelope(s.n))
			data, _ := refEncMode.Marshal(ref)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := refEncMode.Marshal(&ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEnvelopeDecode(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			data := benchEnvelope(s.n).AppendTo(nil)
			var env Envelope
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := DecodeEnvelope(data, &env, DefaultLimits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEnvelopeDecodeFxamacker(b *testing.B) {
	dm, err := cbor.DecOptions{IndefLength: cbor.IndefLengthForbidden, MaxArrayElements: 256}.DecMode()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			data := benchEnvelope(s.n).AppendTo(nil)
			var ref refEnvelope
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := dm.Unmarshal(data, &ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFrameWrite(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			body := make([]byte, s.n)
			bw := bufio.NewWriterSize(io.Discard, 64<<10)
			b.SetBytes(int64(FrameHeaderSize + s.n))
			b.ReportAllocs()
			for b.Loop() {
				if err := WriteFrame(bw, flags.None, body); err != nil {
					b.Fatal(err)
				}
			}
			if err := bw.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkFrameRead(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			body := make([]byte, s.n)
			var stream []byte
			for len(stream) < 4<<20 {
				stream = AppendFrame(stream, flags.None, body)
			}
			rd := bytes.NewReader(stream)
			br := bufio.NewReaderSize(rd, 64<<10)
			fr := NewFrameReader(br, DefaultMaxFrameSize)
			buf := make([]byte, 0, s.n)
			b.SetBytes(int64(FrameHeaderSize + s.n))
			b.ReportAllocs()
			for b.Loop() {
				_, got, err := fr.ReadFrame(buf)
				if err == io.EOF {
					rd.Reset(stream)
					br.Reset(rd)
					_, got, err = fr.ReadFrame(buf)
				}
				if err != nil || len(got) != s.n {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMessageID(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			data := benchEnvelope(s.n).AppendTo(nil)
			h := NewHasherWithSeed(0x1234)
			var sink MessageID
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				sink ^= h.Sum(data)
			}
			_ = sink
		})
	}
}

// BenchmarkEnvelopeSign is what signing costs the origin per message: the
// SHA-256 of the items and one Ed25519 signature (curve25519-voi).
func BenchmarkEnvelopeSign(b *testing.B) {
	e := benchEnvelope(256)
	key := goldenKey()
	buf := make([]byte, 0, e.SignedLen())
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendSigned(buf[:0], key)
	}
}

// BenchmarkEnvelopeVerify is one signature checked on its own
// (VerifyEnvelope: key-to-ID hash, SHA-256 of the items, Ed25519
// verification). Package base verifies in batches instead
// (BenchmarkVerifyBatch there).
func BenchmarkEnvelopeVerify(b *testing.B) {
	e := benchEnvelope(256)
	e.Sender = goldenSignedBroadcast().Sender
	raw := e.AppendSigned(nil, goldenKey())
	var d Envelope
	if err := DecodeEnvelope(raw, &d, DefaultLimits); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyEnvelope(raw, &d); err != nil {
			b.Fatal(err)
		}
	}
}
