package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/meshsock/meshsock/flags"
)

// FrameHeaderSize is the size of a frame header: a 4-byte big-endian length
// (of the codec byte plus the body) followed by the codec byte.
const FrameHeaderSize = 5

// DefaultMaxFrameSize is the default limit on a frame body, compressed or
// not: 4 MiB.
const DefaultMaxFrameSize = 4 << 20

// MaxHandshakeSize limits the handshake frames, which are read before the
// peer is known: 16 KiB.
const MaxHandshakeSize = 16 << 10

// PutFrameHeader writes the header of a frame whose body is bodyLen bytes
// long into hdr, which must be at least [FrameHeaderSize] long.
func PutFrameHeader(hdr []byte, codec flags.Method, bodyLen int) {
	binary.BigEndian.PutUint32(hdr, uint32(bodyLen)+1)
	hdr[4] = byte(codec)
}

// AppendFrame appends a whole frame (header and body) to dst.
func AppendFrame(dst []byte, codec flags.Method, body []byte) []byte {
	var hdr [FrameHeaderSize]byte
	PutFrameHeader(hdr[:], codec, len(body))
	dst = append(dst, hdr[:]...)
	return append(dst, body...)
}

// WriteFrame writes one whole frame to w. With a buffered writer the header
// and body end up in one system call; either way nothing else may write to w
// concurrently.
func WriteFrame(w io.Writer, codec flags.Method, body []byte) error {
	var hdr []byte
	if bw, ok := w.(*bufio.Writer); ok && bw.Available() >= FrameHeaderSize {
		// Write the header in the buffer's own space: no allocation.
		hdr = bw.AvailableBuffer()[:FrameHeaderSize]
	} else {
		hdr = make([]byte, FrameHeaderSize)
	}
	PutFrameHeader(hdr, codec, len(body))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// FrameReader reads frames from a stream with full reads, so a stream split
// at any byte boundary yields the same frames.
type FrameReader struct {
	r       io.Reader
	maxBody int
	hdr     [FrameHeaderSize]byte
}

// NewFrameReader returns a reader that refuses frame bodies longer than
// maxBody bytes. Give it a buffered reader for speed.
func NewFrameReader(r io.Reader, maxBody int) *FrameReader {
	return &FrameReader{r: r, maxBody: maxBody}
}

// SetMaxBody changes the body limit for the frames read from now on.
func (fr *FrameReader) SetMaxBody(maxBody int) { fr.maxBody = maxBody }

// ReadFrame reads the next frame. The body is read into buf when it fits in
// buf's capacity, otherwise into a new slice of exactly the right size; the
// length is checked against the limit before any allocation.
//
// It returns io.EOF if the stream ends cleanly between frames, an error
// matching [ErrTruncated] if it ends inside one, [ErrFrameTooLarge] for an
// over-long length prefix and [ErrMalformed] for a zero length.
func (fr *FrameReader) ReadFrame(buf []byte) (codec flags.Method, body []byte, err error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: frame header: %w", ErrTruncated, err)
		}
		return 0, nil, err
	}
	return fr.readBody(buf)
}

func (fr *FrameReader) readBody(buf []byte) (flags.Method, []byte, error) {
	length := binary.BigEndian.Uint32(fr.hdr[:4])
	if length == 0 {
		return 0, nil, fmt.Errorf("%w: zero-length frame (no codec byte)", ErrMalformed)
	}
	n := uint64(length) - 1
	if n > uint64(fr.maxBody) {
		return 0, nil, fmt.Errorf("%w: body of %d bytes, limit %d", ErrFrameTooLarge, n, fr.maxBody)
	}
	codec := flags.Method(fr.hdr[4])
	if uint64(cap(buf)) >= n {
		body := buf[:n]
		if got, err := io.ReadFull(fr.r, body); err != nil {
			return 0, nil, truncated(err, got, n)
		}
		return codec, body, nil
	}
	if n <= growChunk {
		body := make([]byte, n)
		if got, err := io.ReadFull(fr.r, body); err != nil {
			return 0, nil, truncated(err, got, n)
		}
		return codec, body, nil
	}
	// A large body is allocated as it arrives, so a peer that sends only a
	// header claiming megabytes pins no more than a chunk.
	body := make([]byte, 0, growChunk)
	for uint64(len(body)) < n {
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(2*uint64(cap(body)), n))
			copy(grown, body)
			body = grown
		}
		end := min(uint64(cap(body)), n)
		got, err := io.ReadFull(fr.r, body[len(body):end])
		body = body[:len(body)+got]
		if err != nil {
			return 0, nil, truncated(err, len(body), n)
		}
	}
	return codec, body, nil
}

// growChunk is the largest body allocated before its bytes arrive: a
// header alone pins at most this much per connection.
const growChunk = 256 << 10

func truncated(err error, got int, n uint64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: frame body: got %d of %d bytes", ErrTruncated, got, n)
	}
	return err
}
