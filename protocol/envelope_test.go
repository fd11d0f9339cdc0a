package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/fxamacker/cbor/v2"

	"github.com/meshsock/meshsock/flags"
)

// refEnvelope is the envelope as fxamacker/cbor sees it: a struct encoded as
// an array. The hand-written codec must agree with it byte for byte.
type refEnvelope struct {
	_        struct{} `cbor:",toarray"`
	Type     uint8
	Sub      uint8
	Sender   [16]byte
	Seq      uint64
	Time     int64
	HopLimit uint8
	Packets  [][]byte
	Auth     []byte
}

var refEncMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

func toRef(e *Envelope) refEnvelope {
	r := refEnvelope{
		Type: uint8(e.Type), Sub: uint8(e.Sub), Sender: e.Sender, Seq: e.Seq,
		Time: e.Time, HopLimit: e.HopLimit, Packets: make([][]byte, len(e.Packets)), Auth: e.Auth,
	}
	if r.Auth == nil {
		r.Auth = []byte{}
	}
	// fxamacker encodes nil slices as CBOR null; the envelope has none.
	for i, p := range e.Packets {
		if p == nil {
			p = []byte{}
		}
		r.Packets[i] = p
	}
	return r
}

var (
	seqBoundaries = []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32 - 1, math.MaxUint32,
		math.MaxUint32 + 1, math.MaxUint64 - 1, math.MaxUint64}
	timeBoundaries = []int64{0, 1, -1, 23, 24, -24, -25, 255, 256, -256, -257, 65535, 65536, -65536, -65537,
		math.MaxUint32, math.MaxUint32 + 1, -math.MaxUint32 - 1, -math.MaxUint32 - 2,
		1700000000000000000, -1700000000000000000, math.MaxInt64, math.MinInt64, math.MinInt64 + 1}
	lenBoundaries = []int{0, 1, 23, 24, 255, 256, 65535, 65536, 70000}
	allTypes      = []flags.Flag{flags.Broadcast, flags.Renegotiate, flags.Whisper, flags.Ping, flags.Pong}
)

// randomEnvelope returns an envelope with fields drawn from the boundaries
// above and from the whole range.
func randomEnvelope(r *rand.Rand) *Envelope {
	e := &Envelope{Type: allTypes[r.IntN(len(allTypes))]}
	switch r.IntN(4) {
	case 0:
		e.Sub = e.Type
	case 1:
		e.Sub = flags.Flag(r.IntN(int(flags.LastReserved) + 1))
	default:
		e.Sub = flags.Flag(r.IntN(256))
	}
	for i := range e.Sender {
		e.Sender[i] = byte(r.Uint32())
	}
	if r.IntN(2) == 0 {
		e.Seq = seqBoundaries[r.IntN(len(seqBoundaries))]
	} else {
		e.Seq = r.Uint64() >> r.IntN(64)
	}
	if r.IntN(2) == 0 {
		e.Time = timeBoundaries[r.IntN(len(timeBoundaries))]
	} else {
		e.Time = int64(r.Uint64()) >> r.IntN(64)
	}
	e.HopLimit = uint8(r.IntN(256))
	var n int
	switch r.IntN(6) {
	case 0:
		n = 0
	case 1:
		n = DefaultLimits.MaxPackets
	default:
		n = 1 + r.IntN(8)
	}
	if n > 0 || r.IntN(2) == 0 {
		e.Packets = make([][]byte, n)
	}
	for i := range e.Packets {
		var size int
		switch r.IntN(10) {
		case 0:
			size = lenBoundaries[r.IntN(len(lenBoundaries))]
		case 1:
			size = 0
		default:
			size = r.IntN(64)
		}
		if n > 16 && size > 300 {
			size = 300 // keep 256-packet envelopes small
		}
		if size == 0 && r.IntN(2) == 0 {
			continue // nil packet: encodes like an empty one
		}
		p := make([]byte, size)
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		e.Packets[i] = p
	}
	return e
}

func envelopesEqual(a, b *Envelope) bool {
	if a.Type != b.Type || a.Sub != b.Sub || a.Sender != b.Sender || a.Seq != b.Seq ||
		a.Time != b.Time || a.HopLimit != b.HopLimit || len(a.Packets) != len(b.Packets) || !bytes.Equal(a.Auth, b.Auth) {
		return false
	}
	for i := range a.Packets {
		if !bytes.Equal(a.Packets[i], b.Packets[i]) {
			return false
		}
	}
	return true
}

func checkEnvelopeRoundTrip(t *testing.T, e *Envelope) {
	t.Helper()
	enc := e.AppendTo(nil)
	if len(enc) != e.EncodedLen() {
		t.Fatalf("EncodedLen() = %d, AppendTo wrote %d bytes", e.EncodedLen(), len(enc))
	}
	// AppendTo appends: it keeps what is already in dst.
	prefixed := e.AppendTo([]byte{0xaa, 0xbb})
	if !bytes.Equal(prefixed[:2], []byte{0xaa, 0xbb}) || !bytes.Equal(prefixed[2:], enc) {
		t.Fatal("AppendTo does not append")
	}
	ref, err := refEncMode.Marshal(toRef(e))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc, ref) {
		t.Fatalf("hand-written encoding differs from fxamacker CoreDet:\n ours %x\n fxam %x", enc, ref)
	}
	lim := Limits{MaxPackets: DefaultLimits.MaxPackets, MaxPacketSize: DefaultLimits.MaxPacketSize}
	var got Envelope
	if err := DecodeEnvelope(enc, &got, lim); err != nil {
		t.Fatalf("DecodeEnvelope: %v\n%x", err, enc)
	}
	if !envelopesEqual(e, &got) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *e)
	}
	// Packets alias the input and cannot grow into the next item.
	for _, p := range got.Packets {
		if len(p) > 0 && cap(p) != len(p) {
			t.Fatalf("decoded packet has spare capacity %d > %d", cap(p), len(p))
		}
	}
	var back refEnvelope
	if err := cbor.Unmarshal(enc, &back); err != nil {
		t.Fatalf("fxamacker cannot decode our bytes: %v", err)
	}
	if !envelopesEqual(e, &Envelope{Type: flags.Flag(back.Type), Sub: flags.Flag(back.Sub), Sender: back.Sender,
		Seq: back.Seq, Time: back.Time, HopLimit: back.HopLimit, Packets: back.Packets, Auth: back.Auth}) {
		t.Fatalf("fxamacker decoded %+v, want %+v", back, *e)
	}
	// Message frame body.
	body := AppendMessage([]byte{0x01}, 7, e)
	hops, env, err := SplitMessage(body[1:])
	if err != nil || hops != 7 || !bytes.Equal(env, enc) {
		t.Fatalf("SplitMessage(AppendMessage) = %d, %x, %v", hops, env, err)
	}
}

func TestEnvelopeRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := 0; i < n; i++ {
		e := randomEnvelope(r)
		t.Run("", func(t *testing.T) { checkEnvelopeRoundTrip(t, e) })
		if t.Failed() {
			return
		}
	}
}

func TestEnvelopeRoundTripBoundaries(t *testing.T) {
	sender := MustParseNodeID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
	for _, seq := range seqBoundaries {
		checkEnvelopeRoundTrip(t, &Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: sender, Seq: seq, Packets: [][]byte{{1}}})
	}
	for _, tm := range timeBoundaries {
		checkEnvelopeRoundTrip(t, &Envelope{Type: flags.Whisper, Sub: flags.FirstUser, Sender: sender, Time: tm, HopLimit: 255})
	}
	for _, n := range lenBoundaries {
		checkEnvelopeRoundTrip(t, &Envelope{Type: flags.Broadcast, Sender: sender, Packets: [][]byte{make([]byte, n)}})
	}
	for _, f := range []flags.Flag{0, 23, 24, 255} {
		checkEnvelopeRoundTrip(t, &Envelope{Type: f, Sub: f, HopLimit: uint8(f)})
	}
	// Packet counts at and around the head-width boundaries (limit permitting).
	for _, n := range []int{0, 1, 23, 24, 255, 256} {
		checkEnvelopeRoundTrip(t, &Envelope{Type: flags.Ping, Sub: flags.Ping, Packets: make([][]byte, n)})
	}
	// A large packet: 1 MiB.
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	checkEnvelopeRoundTrip(t, &Envelope{Type: flags.Broadcast, Sender: sender, Seq: 1, Packets: [][]byte{big, nil, {}, big[:3]}})
}

func TestEnvelopeSubFlags(t *testing.T) {
	for _, typ := range allTypes {
		for sub := 0; sub < 256; sub++ {
			checkEnvelopeRoundTrip(t, &Envelope{Type: typ, Sub: flags.Flag(sub), Seq: uint64(sub), Packets: [][]byte{[]byte("x")}})
		}
	}
}

// validEnvelope is a small well-formed encoding:
// [0, 0, h'00..0f', 1, 1700000000000000000, 32, [h'68656c6c6f', h'776f726c64'], h”].
func validEnvelope() []byte {
	e := Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Seq: 1, Time: 1700000000000000000, HopLimit: 32,
		Packets: [][]byte{[]byte("hello"), []byte("world")}}
	for i := range e.Sender {
		e.Sender[i] = byte(i)
	}
	return e.AppendTo(nil)
}

// cborHead encodes a CBOR head with an explicit argument width (0 = in the
// initial byte, else 1, 2, 4 or 8 bytes), for building non-canonical input.
func cborHead(major byte, arg uint64, width int) []byte {
	switch width {
	case 0:
		return []byte{major<<5 | byte(arg)}
	case 1:
		return []byte{major<<5 | 24, byte(arg)}
	case 2:
		return binary.BigEndian.AppendUint16([]byte{major<<5 | 25}, uint16(arg))
	case 4:
		return binary.BigEndian.AppendUint32([]byte{major<<5 | 26}, uint32(arg))
	default:
		return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, arg)
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// envelopeParts builds an envelope from pre-encoded items so that each test
// case can replace exactly one of them.
type envelopeParts struct {
	head, typ, sub, sender, seq, time, hop, count []byte
	packets                                       [][]byte
	auth, trailer                                 []byte
}

func goodParts() envelopeParts {
	sender := make([]byte, 16)
	for i := range sender {
		sender[i] = byte(i)
	}
	return envelopeParts{
		head:    []byte{0x88},
		typ:     []byte{0x00},
		sub:     []byte{0x00},
		sender:  cat([]byte{0x50}, sender),
		seq:     []byte{0x01},
		time:    cborHead(0, 1700000000000000000, 8),
		hop:     []byte{0x18, 0x20},
		count:   []byte{0x82},
		packets: [][]byte{cat([]byte{0x45}, []byte("hello")), cat([]byte{0x45}, []byte("world"))},
		auth:    []byte{0x40},
	}
}

func (p envelopeParts) bytes() []byte {
	out := cat(p.head, p.typ, p.sub, p.sender, p.seq, p.time, p.hop, p.count)
	for _, pk := range p.packets {
		out = append(out, pk...)
	}
	out = append(out, p.auth...)
	return append(out, p.trailer...)
}

func TestEnvelopeGoodParts(t *testing.T) {
	if got := goodParts().bytes(); !bytes.Equal(got, validEnvelope()) {
		t.Fatalf("goodParts %x\nvalid     %x", got, validEnvelope())
	}
}

func TestEnvelopeRejects(t *testing.T) {
	type tc struct {
		name string
		mod  func(p *envelopeParts)
		lim  *Limits
		want error
	}
	small := Limits{MaxPackets: 2, MaxPacketSize: 4}
	cases := []tc{
		// Non-shortest heads.
		{"array head 1-byte", func(p *envelopeParts) { p.head = cborHead(4, 8, 1) }, nil, ErrMalformed},
		{"type head 1-byte", func(p *envelopeParts) { p.typ = cborHead(0, 0, 1) }, nil, ErrMalformed},
		{"type 23 head 1-byte", func(p *envelopeParts) { p.typ = cborHead(0, 23, 1) }, nil, ErrMalformed},
		{"sub head 2-byte", func(p *envelopeParts) { p.sub = cborHead(0, 5, 2) }, nil, ErrMalformed},
		{"sender length 1-byte", func(p *envelopeParts) { p.sender = cat(cborHead(2, 16, 1), p.sender[1:]) }, nil, ErrMalformed},
		{"seq 1-byte for 1", func(p *envelopeParts) { p.seq = cborHead(0, 1, 1) }, nil, ErrMalformed},
		{"seq 2-byte for 255", func(p *envelopeParts) { p.seq = cborHead(0, 255, 2) }, nil, ErrMalformed},
		{"seq 4-byte for 65535", func(p *envelopeParts) { p.seq = cborHead(0, 65535, 4) }, nil, ErrMalformed},
		{"seq 8-byte for 2^32-1", func(p *envelopeParts) { p.seq = cborHead(0, math.MaxUint32, 8) }, nil, ErrMalformed},
		{"time 8-byte for 0", func(p *envelopeParts) { p.time = cborHead(0, 0, 8) }, nil, ErrMalformed},
		{"negative time 1-byte for -1", func(p *envelopeParts) { p.time = cborHead(1, 0, 1) }, nil, ErrMalformed},
		{"hop limit 2-byte", func(p *envelopeParts) { p.hop = cborHead(0, 32, 2) }, nil, ErrMalformed},
		{"packet count 1-byte", func(p *envelopeParts) { p.count = cborHead(4, 2, 1) }, nil, ErrMalformed},
		{"packet length 2-byte", func(p *envelopeParts) { p.packets[0] = cat(cborHead(2, 5, 2), []byte("hello")) }, nil, ErrMalformed},
		// Indefinite lengths and reserved additional information.
		{"indefinite envelope", func(p *envelopeParts) { p.head = []byte{0x9f}; p.trailer = []byte{0xff} }, nil, ErrMalformed},
		{"indefinite packets", func(p *envelopeParts) { p.count = []byte{0x9f}; p.trailer = []byte{0xff} }, nil, ErrMalformed},
		{"indefinite packet", func(p *envelopeParts) {
			p.packets[0] = cat([]byte{0x5f, 0x45}, []byte("hello"), []byte{0xff})
		}, nil, ErrMalformed},
		{"indefinite sender", func(p *envelopeParts) { p.sender = cat([]byte{0x5f}, p.sender, []byte{0xff}) }, nil, ErrMalformed},
		{"reserved info 28", func(p *envelopeParts) { p.seq = []byte{0x1c} }, nil, ErrMalformed},
		{"reserved info 30", func(p *envelopeParts) { p.typ = []byte{0x1e} }, nil, ErrMalformed},
		// Wrong item count.
		{"7 items (version 2)", func(p *envelopeParts) { p.head = []byte{0x87}; p.auth = nil }, nil, ErrMalformed},
		{"9 items", func(p *envelopeParts) { p.head = []byte{0x89}; p.trailer = []byte{0x00} }, nil, ErrMalformed},
		// The auth item.
		{"auth missing", func(p *envelopeParts) { p.auth = nil }, nil, ErrTruncated},
		{"auth 1 byte", func(p *envelopeParts) { p.auth = []byte{0x41, 0x00} }, nil, ErrMalformed},
		{"auth 95 bytes", func(p *envelopeParts) { p.auth = cat([]byte{0x58, 95}, make([]byte, 95)) }, nil, ErrMalformed},
		{"auth 97 bytes", func(p *envelopeParts) { p.auth = cat([]byte{0x58, 97}, make([]byte, 97)) }, nil, ErrMalformed},
		{"auth 64 bytes", func(p *envelopeParts) { p.auth = cat([]byte{0x58, 64}, make([]byte, 64)) }, nil, ErrMalformed},
		{"auth empty 1-byte head", func(p *envelopeParts) { p.auth = []byte{0x58, 0x00} }, nil, ErrMalformed},
		{"auth 96 2-byte head", func(p *envelopeParts) { p.auth = cat([]byte{0x59, 0, 96}, make([]byte, 96)) }, nil, ErrMalformed},
		{"auth longer than input", func(p *envelopeParts) { p.auth = cat([]byte{0x58, 96}, make([]byte, 95)) }, nil, ErrTruncated},
		{"auth text", func(p *envelopeParts) { p.auth = []byte{0x60} }, nil, ErrMalformed},
		{"auth null", func(p *envelopeParts) { p.auth = []byte{0xf6} }, nil, ErrMalformed},
		{"auth array", func(p *envelopeParts) { p.auth = []byte{0x80} }, nil, ErrMalformed},
		{"auth indefinite", func(p *envelopeParts) { p.auth = []byte{0x5f, 0xff} }, nil, ErrMalformed},
		{"0 items", func(p *envelopeParts) { *p = envelopeParts{head: []byte{0x80}} }, nil, ErrMalformed},
		// Wrong major types.
		{"top level map", func(p *envelopeParts) { p.head = []byte{0xa8} }, nil, ErrMalformed},
		{"top level bstr", func(p *envelopeParts) { *p = envelopeParts{head: []byte{0x41, 0x00}} }, nil, ErrMalformed},
		{"type negative", func(p *envelopeParts) { p.typ = []byte{0x20} }, nil, ErrMalformed},
		{"type text", func(p *envelopeParts) { p.typ = []byte{0x61, 'a'} }, nil, ErrMalformed},
		{"type false", func(p *envelopeParts) { p.typ = []byte{0xf4} }, nil, ErrMalformed},
		{"type float", func(p *envelopeParts) { p.typ = []byte{0xf9, 0x00, 0x00} }, nil, ErrMalformed},
		{"type tagged", func(p *envelopeParts) { p.typ = []byte{0xc0, 0x00} }, nil, ErrMalformed},
		{"sub bstr", func(p *envelopeParts) { p.sub = []byte{0x41, 0x00} }, nil, ErrMalformed},
		{"sender text", func(p *envelopeParts) { p.sender[0] = 0x70 }, nil, ErrMalformed},
		{"sender array", func(p *envelopeParts) { p.sender = cat([]byte{0x90}, bytes.Repeat([]byte{0}, 16)) }, nil, ErrMalformed},
		{"seq negative", func(p *envelopeParts) { p.seq = []byte{0x20} }, nil, ErrMalformed},
		{"time bstr", func(p *envelopeParts) { p.time = []byte{0x40} }, nil, ErrMalformed},
		{"time float", func(p *envelopeParts) { p.time = []byte{0xfb, 0, 0, 0, 0, 0, 0, 0, 0} }, nil, ErrMalformed},
		{"time tag 1", func(p *envelopeParts) { p.time = []byte{0xc1, 0x00} }, nil, ErrMalformed},
		{"time > MaxInt64", func(p *envelopeParts) { p.time = cborHead(0, math.MaxInt64+1, 8) }, nil, ErrMalformed},
		{"time < MinInt64", func(p *envelopeParts) { p.time = cborHead(1, math.MaxInt64+1, 8) }, nil, ErrMalformed},
		{"hop limit negative", func(p *envelopeParts) { p.hop = []byte{0x38, 0x20} }, nil, ErrMalformed},
		{"packets map", func(p *envelopeParts) { p.count = []byte{0xa1} }, nil, ErrMalformed},
		{"packets bstr", func(p *envelopeParts) { p.count = []byte{0x42} }, nil, ErrMalformed},
		{"packet text", func(p *envelopeParts) { p.packets[0][0] = 0x65 }, nil, ErrMalformed},
		{"packet uint", func(p *envelopeParts) { p.packets[0] = []byte{0x05} }, nil, ErrMalformed},
		{"packet null", func(p *envelopeParts) { p.packets[0] = []byte{0xf6} }, nil, ErrMalformed},
		{"packet nested array", func(p *envelopeParts) { p.packets[0] = []byte{0x81, 0x40} }, nil, ErrMalformed},
		// Sender length.
		{"sender 15 bytes", func(p *envelopeParts) { p.sender = cat([]byte{0x4f}, p.sender[1:16]) }, nil, ErrMalformed},
		{"sender 17 bytes", func(p *envelopeParts) { p.sender = cat([]byte{0x51}, p.sender[1:], []byte{0}) }, nil, ErrMalformed},
		{"sender 0 bytes", func(p *envelopeParts) { p.sender = []byte{0x40} }, nil, ErrMalformed},
		{"sender 2^40 bytes", func(p *envelopeParts) { p.sender = cat(cborHead(2, 1<<40, 8), p.sender[1:]) }, nil, ErrMalformed},
		// Fields that must fit in a byte.
		{"type 256", func(p *envelopeParts) { p.typ = cborHead(0, 256, 2) }, nil, ErrMalformed},
		{"sub 256", func(p *envelopeParts) { p.sub = cborHead(0, 256, 2) }, nil, ErrMalformed},
		{"sub 2^64-1", func(p *envelopeParts) { p.sub = cborHead(0, math.MaxUint64, 8) }, nil, ErrMalformed},
		{"hop limit 256", func(p *envelopeParts) { p.hop = cborHead(0, 256, 2) }, nil, ErrMalformed},
		// Packet limits.
		{"257 packets", func(p *envelopeParts) {
			p.count = cborHead(4, 257, 2)
			p.packets = make([][]byte, 257)
			for i := range p.packets {
				p.packets[i] = []byte{0x40}
			}
		}, nil, ErrTooManyPackets},
		{"3 packets, limit 2", func(p *envelopeParts) { p.count = []byte{0x83}; p.packets = append(p.packets, []byte{0x40}) }, &small, ErrTooManyPackets},
		{"2^32 packets", func(p *envelopeParts) { p.count = cborHead(4, 1<<32, 8); p.packets = nil; p.auth = nil }, nil, ErrTooManyPackets},
		{"packet 5 bytes, limit 4", func(p *envelopeParts) {}, &small, ErrPacketTooLarge},
		{"packet over default limit", func(p *envelopeParts) {
			p.packets = [][]byte{cborHead(2, DefaultMaxFrameSize+1, 4)}
			p.count = []byte{0x81}
			p.auth = nil
		}, nil, ErrPacketTooLarge},
		{"packet 2^64-1 bytes", func(p *envelopeParts) {
			p.packets = [][]byte{cborHead(2, math.MaxUint64, 8)}
			p.count = []byte{0x81}
			p.auth = nil
		}, nil, ErrPacketTooLarge},
		// Declared sizes larger than the input.
		{"packet longer than input", func(p *envelopeParts) { p.packets[1] = cat([]byte{0x46}, []byte("world")); p.auth = nil }, nil, ErrTruncated},
		{"more packets than bytes", func(p *envelopeParts) { p.count = cborHead(4, 200, 1) }, nil, ErrTruncated},
		// Trailing bytes.
		{"trailing byte", func(p *envelopeParts) { p.trailer = []byte{0x00} }, nil, ErrMalformed},
		{"trailing envelope", func(p *envelopeParts) { p.trailer = validEnvelope() }, nil, ErrMalformed},
		{"one extra packet after count", func(p *envelopeParts) { p.trailer = []byte{0x40} }, nil, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := goodParts()
			c.mod(&p)
			data := p.bytes()
			lim := DefaultLimits
			if c.lim != nil {
				lim = *c.lim
			}
			var env Envelope
			err := DecodeEnvelope(data, &env, lim)
			if !errors.Is(err, c.want) {
				t.Fatalf("DecodeEnvelope(%x) = %v, want %v", data, err, c.want)
			}
			// fxamacker must not see it as a canonical envelope either, unless
			// only our limits reject it.
			// (Auth lengths other than 0 and 96 are canonical CBOR; only our
			// rule refuses them.)
			if c.want == ErrMalformed && !strings.HasPrefix(c.name, "auth ") {
				var ref refEnvelope
				if cbor.Unmarshal(data, &ref) == nil {
					// (null decodes to a nil slice: re-encode that as empty.)
					opts := cbor.CoreDetEncOptions()
					opts.NilContainers = cbor.NilContainerAsEmpty
					em, _ := opts.EncMode()
					canon, _ := em.Marshal(ref)
					if bytes.Equal(canon, data) {
						t.Fatalf("fxamacker accepts %x as canonical", data)
					}
				}
			}
		})
	}
}

func TestEnvelopeLimitsExact(t *testing.T) {
	lim := Limits{MaxPackets: 3, MaxPacketSize: 5}
	e := &Envelope{Packets: [][]byte{[]byte("12345"), nil, []byte("abcde")}}
	var got Envelope
	if err := DecodeEnvelope(e.AppendTo(nil), &got, lim); err != nil {
		t.Fatalf("at the limits: %v", err)
	}
	e.Packets = append(e.Packets, nil)
	if err := DecodeEnvelope(e.AppendTo(nil), &got, lim); !errors.Is(err, ErrTooManyPackets) {
		t.Fatalf("one packet over: %v", err)
	}
	e.Packets = [][]byte{[]byte("123456")}
	if err := DecodeEnvelope(e.AppendTo(nil), &got, lim); !errors.Is(err, ErrPacketTooLarge) {
		t.Fatalf("one byte over: %v", err)
	}
}

func TestEnvelopeHugeCountDoesNotAllocate(t *testing.T) {
	p := goodParts()
	p.count = cborHead(4, 1<<32, 8)
	p.packets = [][]byte{{0x40}}
	data := p.bytes()
	lim := Limits{MaxPackets: math.MaxInt, MaxPacketSize: math.MaxInt}
	var env Envelope
	if err := DecodeEnvelope(data, &env, lim); !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
	perRun := bytesAllocatedPerRun(100, func() {
		var env Envelope
		_ = DecodeEnvelope(data, &env, lim)
	})
	if perRun > 1024 {
		t.Fatalf("decoding %d bytes that declare 2^32 packets allocates %d bytes", len(data), perRun)
	}
	// The same with the default limits, which refuse the count outright.
	perRun = bytesAllocatedPerRun(100, func() {
		var env Envelope
		_ = DecodeEnvelope(data, &env, DefaultLimits)
	})
	if perRun > 1024 {
		t.Fatalf("default limits: %d bytes per decode", perRun)
	}
	// A packet length of 2^62 with no bytes behind it.
	p = goodParts()
	p.packets = [][]byte{cborHead(2, 1<<62, 8)}
	p.count = []byte{0x81}
	data = p.bytes()
	if err := DecodeEnvelope(data, &env, lim); !errors.Is(err, ErrTruncated) {
		t.Fatalf("huge packet: %v", err)
	}
	if perRun := bytesAllocatedPerRun(100, func() { _ = DecodeEnvelope(data, &env, lim) }); perRun > 1024 {
		t.Fatalf("huge packet length allocates %d bytes", perRun)
	}
}

func TestEnvelopeTruncation(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	inputs := [][]byte{validEnvelope()}
	for i := 0; i < 50; i++ {
		e := randomEnvelope(r)
		if e.EncodedLen() < 4096 {
			inputs = append(inputs, e.AppendTo(nil))
		}
	}
	for _, full := range inputs {
		for n := 0; n < len(full); n++ {
			var env Envelope
			err := DecodeEnvelope(full[:n], &env, DefaultLimits)
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("prefix %d of %x: err = %v, want ErrTruncated or ErrMalformed", n, full, err)
			}
		}
		var env Envelope
		if err := DecodeEnvelope(full, &env, DefaultLimits); err != nil {
			t.Fatalf("full input: %v", err)
		}
		if err := DecodeEnvelope(append(full[:len(full):len(full)], 0), &env, DefaultLimits); !errors.Is(err, ErrMalformed) {
			t.Fatalf("trailing byte: %v", err)
		}
	}
}

func TestEnvelopeDecodeReusesPackets(t *testing.T) {
	data := validEnvelope()
	env := Envelope{Packets: make([][]byte, 5, 8)}
	backing := unsafe.SliceData(env.Packets)
	if err := DecodeEnvelope(data, &env, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(env.Packets) != backing || len(env.Packets) != 2 || cap(env.Packets) != 8 {
		t.Fatalf("Packets not reused: len %d cap %d", len(env.Packets), cap(env.Packets))
	}
	// Packets alias the input.
	if unsafe.SliceData(env.Packets[0]) != &data[len(data)-12] {
		t.Fatal("packet does not alias the input")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := DecodeEnvelope(data, &env, DefaultLimits); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeEnvelope into a reused envelope allocates %v times", allocs)
	}
	// Too small a capacity: a new slice of exactly the declared count.
	env.Packets = make([][]byte, 0, 1)
	if err := DecodeEnvelope(data, &env, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if len(env.Packets) != 2 {
		t.Fatal(len(env.Packets))
	}
	// A decode with zero packets keeps the capacity too.
	empty := (&Envelope{}).AppendTo(nil)
	if err := DecodeEnvelope(empty, &env, DefaultLimits); err != nil || len(env.Packets) != 0 || cap(env.Packets) < 2 {
		t.Fatalf("empty: %v len %d cap %d", err, len(env.Packets), cap(env.Packets))
	}
}

func TestEnvelopeEncodeAllocs(t *testing.T) {
	e := &Envelope{Type: flags.Broadcast, Seq: 99, Time: 1, Packets: [][]byte{make([]byte, 100), make([]byte, 10)}}
	buf := make([]byte, 0, e.EncodedLen())
	if a := testing.AllocsPerRun(100, func() { buf = e.AppendTo(buf[:0]) }); a != 0 {
		t.Fatalf("AppendTo into a large enough buffer allocates %v times", a)
	}
}

func TestSplitMessage(t *testing.T) {
	env := validEnvelope()
	e := &Envelope{}
	if err := DecodeEnvelope(env, e, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	for _, hops := range []uint8{0, 1, 31, 255} {
		body := AppendMessage(nil, hops, e)
		if body[0] != hops || !bytes.Equal(body[1:], env) {
			t.Fatalf("AppendMessage(%d) = %x", hops, body)
		}
		h, got, err := SplitMessage(body)
		if err != nil || h != hops || !bytes.Equal(got, env) {
			t.Fatalf("SplitMessage = %d %x %v", h, got, err)
		}
		if unsafe.SliceData(got) != &body[1] {
			t.Fatal("SplitMessage copies")
		}
	}
	for _, short := range [][]byte{nil, {}, {0x00}} {
		if _, _, err := SplitMessage(short); !errors.Is(err, ErrTruncated) {
			t.Errorf("SplitMessage(%x) = %v", short, err)
		}
	}
}

// Example of the ordinary encode/decode cycle.
func ExampleDecodeEnvelope() {
	e := &Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Seq: 1, Time: 1700000000000000000, HopLimit: 32,
		Packets: [][]byte{[]byte("hello"), []byte("world")}}
	body := AppendMessage(nil, 0, e)
	hops, raw, _ := SplitMessage(body)
	var got Envelope
	if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
		panic(err)
	}
	fmt.Println(hops, got.Type, got.Seq, string(got.Packets[0]), string(got.Packets[1]))
	// Output: 0 broadcast 1 hello world
}
