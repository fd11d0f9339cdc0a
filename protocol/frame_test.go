package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"unsafe"

	"github.com/meshsock/meshsock/flags"
)

type testFrame struct {
	codec flags.Method
	body  []byte
}

func randomFrames(r *rand.Rand, n, maxBody int) []testFrame {
	codecs := []flags.Method{flags.None, flags.Gzip, flags.Zlib, flags.Snappy, flags.Zstd, 0xff}
	frames := make([]testFrame, n)
	for i := range frames {
		size := r.IntN(maxBody + 1)
		if i%7 == 0 {
			size = 0
		}
		body := make([]byte, size)
		for j := range body {
			body[j] = byte(r.Uint32())
		}
		frames[i] = testFrame{codec: codecs[r.IntN(len(codecs))], body: body}
	}
	return frames
}

func encodeFrames(t testing.TB, frames []testFrame) []byte {
	var buf bytes.Buffer
	for _, f := range frames {
		if err := WriteFrame(&buf, f.codec, f.body); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// readAll reads frames until an error; it returns the frames and the error
// that ended the stream.
func readAll(r io.Reader, maxBody int) ([]testFrame, error) {
	fr := NewFrameReader(r, maxBody)
	var out []testFrame
	buf := make([]byte, 0, 64)
	for {
		codec, body, err := fr.ReadFrame(buf)
		if err != nil {
			return out, err
		}
		out = append(out, testFrame{codec, bytes.Clone(body)})
	}
}

func sameFrames(t *testing.T, got, want []testFrame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].codec != want[i].codec || !bytes.Equal(got[i].body, want[i].body) {
			t.Fatalf("frame %d: got %v/%x, want %v/%x", i, got[i].codec, got[i].body, want[i].codec, want[i].body)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 100, 64 << 10, DefaultMaxFrameSize} {
		body := bytes.Repeat([]byte{0x5a}, size)
		var buf bytes.Buffer
		if err := WriteFrame(&buf, flags.Zstd, body); err != nil {
			t.Fatal(err)
		}
		enc := buf.Bytes()
		if len(enc) != FrameHeaderSize+size {
			t.Fatalf("frame of %d-byte body is %d bytes", size, len(enc))
		}
		if got := binary.BigEndian.Uint32(enc); got != uint32(size+1) {
			t.Fatalf("length prefix %d, want %d", got, size+1)
		}
		if enc[4] != byte(flags.Zstd) {
			t.Fatalf("codec byte %#x", enc[4])
		}
		if app := AppendFrame([]byte{9}, flags.Zstd, body); app[0] != 9 || !bytes.Equal(app[1:], enc) {
			t.Fatal("AppendFrame differs from WriteFrame")
		}
		var hdr [FrameHeaderSize]byte
		PutFrameHeader(hdr[:], flags.Zstd, size)
		if !bytes.Equal(hdr[:], enc[:FrameHeaderSize]) {
			t.Fatal("PutFrameHeader differs")
		}
		fr := NewFrameReader(bytes.NewReader(enc), DefaultMaxFrameSize)
		codec, got, err := fr.ReadFrame(nil)
		if err != nil || codec != flags.Zstd || !bytes.Equal(got, body) {
			t.Fatalf("ReadFrame: %v %v len %d", codec, err, len(got))
		}
		if _, _, err := fr.ReadFrame(nil); err != io.EOF {
			t.Fatalf("after the last frame: %v, want io.EOF", err)
		}
	}
}

func TestFrameStreamSplits(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	frames := randomFrames(r, 40, 100)
	stream := encodeFrames(t, frames)

	got, err := readAll(bytes.NewReader(stream), DefaultMaxFrameSize)
	if err != io.EOF {
		t.Fatalf("whole stream: %v", err)
	}
	sameFrames(t, got, frames)

	got, err = readAll(iotest.OneByteReader(bytes.NewReader(stream)), DefaultMaxFrameSize)
	if err != io.EOF {
		t.Fatalf("one byte at a time: %v", err)
	}
	sameFrames(t, got, frames)

	got, err = readAll(iotest.HalfReader(bytes.NewReader(stream)), DefaultMaxFrameSize)
	if err != io.EOF {
		t.Fatalf("half reader: %v", err)
	}
	sameFrames(t, got, frames)

	// A reader that returns data together with io.EOF.
	got, err = readAll(iotest.DataErrReader(bytes.NewReader(stream)), DefaultMaxFrameSize)
	if err != io.EOF {
		t.Fatalf("data+EOF reader: %v", err)
	}
	sameFrames(t, got, frames)

	for split := 0; split <= len(stream); split++ {
		rd := io.MultiReader(bytes.NewReader(stream[:split]), bytes.NewReader(stream[split:]))
		got, err := readAll(rd, DefaultMaxFrameSize)
		if err != io.EOF {
			t.Fatalf("split at %d: %v", split, err)
		}
		sameFrames(t, got, frames)
	}
}

func TestFrameTruncated(t *testing.T) {
	frames := []testFrame{{flags.None, []byte("first")}, {flags.Snappy, []byte("second frame")}}
	stream := encodeFrames(t, frames)
	firstLen := FrameHeaderSize + len("first")
	for n := 0; n < len(stream); n++ {
		got, err := readAll(bytes.NewReader(stream[:n]), DefaultMaxFrameSize)
		switch {
		case n == 0 || n == firstLen:
			if err != io.EOF {
				t.Errorf("cut at frame boundary %d: %v, want io.EOF", n, err)
			}
		default:
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("cut at %d: %v, want ErrTruncated", n, err)
			}
			if errors.Is(err, io.EOF) {
				t.Errorf("cut at %d: truncation also matches io.EOF: %v", n, err)
			}
		}
		if n >= firstLen && len(got) != 1 {
			t.Errorf("cut at %d: got %d complete frames", n, len(got))
		}
	}
}

func TestFrameZeroLength(t *testing.T) {
	fr := NewFrameReader(bytes.NewReader([]byte{0, 0, 0, 0, 0, 1, 2, 3}), DefaultMaxFrameSize)
	if _, _, err := fr.ReadFrame(nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("zero length: %v, want ErrMalformed", err)
	}
	// A length of 1 is a frame with a codec byte and an empty body.
	fr = NewFrameReader(bytes.NewReader([]byte{0, 0, 0, 1, 0x20}), DefaultMaxFrameSize)
	codec, body, err := fr.ReadFrame(make([]byte, 10))
	if err != nil || codec != flags.Snappy || len(body) != 0 {
		t.Fatalf("empty body: %v %v %x", codec, err, body)
	}
}

// strictReader serves data and fails the test if anyone reads past it.
type strictReader struct {
	t    *testing.T
	data []byte
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		r.t.Error("frame reader read past the header of an over-long frame")
		return 0, errors.New("read past the header")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestFrameTooLarge(t *testing.T) {
	const limit = 1000
	for _, length := range []uint32{limit + 2, limit + 100, 1 << 31, 0xffffffff} {
		hdr := binary.BigEndian.AppendUint32(nil, length)
		hdr = append(hdr, 0x00)
		fr := NewFrameReader(&strictReader{t: t, data: hdr}, limit)
		if _, _, err := fr.ReadFrame(nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("length %d: %v, want ErrFrameTooLarge", length, err)
		}
	}
	// Exactly at the limit is fine.
	body := make([]byte, limit)
	fr := NewFrameReader(bytes.NewReader(AppendFrame(nil, flags.None, body)), limit)
	if _, got, err := fr.ReadFrame(nil); err != nil || len(got) != limit {
		t.Fatalf("at the limit: %v", err)
	}
	// The default limit, and the handshake limit.
	for _, limit := range []int{DefaultMaxFrameSize, MaxHandshakeSize} {
		over := AppendFrame(nil, flags.None, make([]byte, limit+1))
		if _, _, err := NewFrameReader(bytes.NewReader(over), limit).ReadFrame(nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("limit %d: %v", limit, err)
		}
	}
	// No allocation of the body: a 4 GiB length costs only the error.
	hdr := []byte{0xff, 0xff, 0xff, 0xff, 0x00}
	rd := bytes.NewReader(hdr)
	fr = NewFrameReader(rd, 1<<30)
	perRun := bytesAllocatedPerRun(100, func() {
		rd.Reset(hdr)
		_, _, _ = fr.ReadFrame(nil)
	})
	if perRun > 1024 {
		t.Fatalf("rejecting an over-long frame allocates %d bytes", perRun)
	}
	// SetMaxBody applies to the next frame.
	stream := AppendFrame(AppendFrame(nil, flags.None, make([]byte, 50)), flags.None, make([]byte, 50))
	fr = NewFrameReader(bytes.NewReader(stream), 100)
	if _, _, err := fr.ReadFrame(nil); err != nil {
		t.Fatal(err)
	}
	fr.SetMaxBody(49)
	if _, _, err := fr.ReadFrame(nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("after SetMaxBody: %v", err)
	}
}

func TestFrameBufferReuse(t *testing.T) {
	stream := AppendFrame(AppendFrame(nil, flags.None, []byte("0123456789")), flags.Gzip, bytes.Repeat([]byte{1}, 100))
	fr := NewFrameReader(bytes.NewReader(stream), DefaultMaxFrameSize)
	buf := make([]byte, 3, 64)
	_, body, err := fr.ReadFrame(buf)
	if err != nil || string(body) != "0123456789" {
		t.Fatal(err)
	}
	if unsafe.SliceData(body) != unsafe.SliceData(buf) {
		t.Fatal("body does not reuse buf although it fits")
	}
	_, body, err = fr.ReadFrame(buf)
	if err != nil || len(body) != 100 {
		t.Fatal(err)
	}
	if unsafe.SliceData(body) == unsafe.SliceData(buf) || cap(body) != 100 {
		t.Fatalf("body that does not fit: cap %d", cap(body))
	}
	// Steady state: no allocation when buf is large enough.
	frame := AppendFrame(nil, flags.None, make([]byte, 1000))
	rd := bytes.NewReader(frame)
	fr = NewFrameReader(rd, DefaultMaxFrameSize)
	big := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		rd.Reset(frame)
		if _, _, err := fr.ReadFrame(big); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ReadFrame into a large enough buffer allocates %v times", allocs)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type errWriter struct {
	n   int // bytes accepted before failing
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	n := w.n
	w.n = 0
	return n, w.err
}

func TestFrameIOErrors(t *testing.T) {
	boom := errors.New("boom")
	fr := NewFrameReader(errReader{boom}, 100)
	if _, _, err := fr.ReadFrame(nil); !errors.Is(err, boom) {
		t.Fatalf("header read error: %v", err)
	}
	fr = NewFrameReader(io.MultiReader(bytes.NewReader([]byte{0, 0, 0, 5, 0, 1}), errReader{boom}), 100)
	if _, _, err := fr.ReadFrame(nil); !errors.Is(err, boom) {
		t.Fatalf("body read error: %v", err)
	}
	for _, n := range []int{0, 3, FrameHeaderSize, FrameHeaderSize + 2} {
		if err := WriteFrame(&errWriter{n: n, err: boom}, flags.None, []byte("body")); !errors.Is(err, boom) {
			t.Fatalf("write error after %d bytes: %v", n, err)
		}
	}
	// Through a bufio.Writer: one whole frame per Flush.
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := WriteFrame(bw, flags.None, []byte("x")); err != nil || out.Len() != 0 {
		t.Fatal("bufio: frame written before Flush")
	}
	if err := bw.Flush(); err != nil || out.Len() != FrameHeaderSize+1 {
		t.Fatal("bufio flush")
	}
}
