package protocol

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/meshsock/meshsock/flags"
)

// Envelope is the body of every message frame after the hop byte: who sent
// it, when, how far it may travel, and the application's packets.
//
// On the wire it is a CBOR array of eight items in this order, encoded
// deterministically (RFC 8949 §4.2.1: shortest-form heads, definite lengths):
//
//	[type uint, sub uint, sender bstr(16), seq uint, time int, hoplimit uint, packets [bstr...], auth bstr(0 or 96)]
//
// The last item, auth, is empty for an unsigned envelope, or the origin's
// Ed25519 public key (32 bytes) followed by its signature (64 bytes) over
// [SigningInput] of the seven items before it (see sign.go).
//
// The encoder and decoder here are written by hand because they sit on the
// hot path; tests check them against fxamacker/cbor.
type Envelope struct {
	// Type is the main type: Broadcast, Whisper, Ping, Pong or Renegotiate.
	Type flags.Flag
	// Sub is the sub-flag; user messages carry their main type here, or a
	// user flag (>= 0x30).
	Sub flags.Flag
	// Sender is the node that created the message (not the last relay).
	Sender NodeID
	// Seq is the sender's per-message counter, so that two identical
	// payloads are two different messages.
	Seq uint64
	// Time is the origin time in Unix nanoseconds.
	Time int64
	// HopLimit is how many links the message may cross; relays drop a
	// message whose hop count has reached it.
	HopLimit uint8
	// Packets are the application's payloads. After DecodeEnvelope they
	// alias the decoded buffer.
	Packets [][]byte
	// Auth is empty for an unsigned envelope, or AuthSize bytes: the
	// origin's Ed25519 public key, then its signature over the envelope's
	// SigningInput. AppendTo writes it as it is (AppendSigned makes it);
	// after DecodeEnvelope it aliases the decoded buffer.
	Auth []byte
}

// envelopeItems is the number of items in the envelope array.
const envelopeItems = 8

// Limits bounds what a decoder accepts.
type Limits struct {
	// MaxPackets is the most packets one envelope may carry.
	MaxPackets int
	// MaxPacketSize is the largest single packet, in bytes.
	MaxPacketSize int
}

// DefaultLimits are the limits used when none are configured: 256 packets of
// at most DefaultMaxFrameSize bytes (the frame limit bounds their sum).
var DefaultLimits = Limits{MaxPackets: 256, MaxPacketSize: DefaultMaxFrameSize}

// EncodedLen returns the exact number of bytes AppendTo will append.
func (e *Envelope) EncodedLen() int {
	n := 1 + headLen(uint64(e.Type)) + headLen(uint64(e.Sub)) + 1 + len(e.Sender) +
		headLen(e.Seq) + headLen(timeArg(e.Time)) + headLen(uint64(e.HopLimit)) +
		headLen(uint64(len(e.Packets)))
	for _, p := range e.Packets {
		n += headLen(uint64(len(p))) + len(p)
	}
	return n + headLen(uint64(len(e.Auth))) + len(e.Auth)
}

// SignedLen returns the exact number of bytes AppendSigned will append:
// EncodedLen with an auth item of AuthSize bytes.
func (e *Envelope) SignedLen() int {
	return e.EncodedLen() - headLen(uint64(len(e.Auth))) - len(e.Auth) + headLen(AuthSize) + AuthSize
}

// AppendTo appends the envelope's deterministic CBOR encoding to dst,
// with e.Auth as its auth item.
func (e *Envelope) AppendTo(dst []byte) []byte {
	dst = append(dst, majorArray<<5|envelopeItems)
	dst = e.appendItems(dst)
	dst = appendHead(dst, majorBytes, uint64(len(e.Auth)))
	return append(dst, e.Auth...)
}

// appendItems appends the items a signature covers: all but auth.
func (e *Envelope) appendItems(dst []byte) []byte {
	dst = appendHead(dst, majorUint, uint64(e.Type))
	dst = appendHead(dst, majorUint, uint64(e.Sub))
	dst = appendHead(dst, majorBytes, uint64(len(e.Sender)))
	dst = append(dst, e.Sender[:]...)
	dst = appendHead(dst, majorUint, e.Seq)
	if e.Time >= 0 {
		dst = appendHead(dst, majorUint, uint64(e.Time))
	} else {
		dst = appendHead(dst, majorNegInt, timeArg(e.Time))
	}
	dst = appendHead(dst, majorUint, uint64(e.HopLimit))
	dst = appendHead(dst, majorArray, uint64(len(e.Packets)))
	for _, p := range e.Packets {
		dst = appendHead(dst, majorBytes, uint64(len(p)))
		dst = append(dst, p...)
	}
	return dst
}

// DecodeEnvelope decodes data into env. It accepts only the deterministic
// encoding (so one message has exactly one byte form and one ID), rejects
// trailing bytes, and checks counts and lengths against lim before it
// allocates. env.Packets reuses its capacity and aliases data.
func DecodeEnvelope(data []byte, env *Envelope, lim Limits) error {
	d := decoder{buf: data}
	n, err := d.head(majorArray)
	if err != nil {
		return err
	}
	if n != envelopeItems {
		return fmt.Errorf("%w: envelope has %d items, want %d", ErrMalformed, n, envelopeItems)
	}
	typ, err := d.small("type")
	if err != nil {
		return err
	}
	sub, err := d.small("sub-flag")
	if err != nil {
		return err
	}
	senderLen, err := d.head(majorBytes)
	if err != nil {
		return err
	}
	if senderLen != uint64(len(env.Sender)) {
		return fmt.Errorf("%w: sender is %d bytes, want 16", ErrMalformed, senderLen)
	}
	if len(d.buf)-d.off < len(env.Sender) {
		return fmt.Errorf("%w: sender: %d bytes left", ErrTruncated, len(d.buf)-d.off)
	}
	sender := d.buf[d.off : d.off+len(env.Sender)]
	d.off += len(env.Sender)
	seq, err := d.head(majorUint)
	if err != nil {
		return err
	}
	t, err := d.int64()
	if err != nil {
		return err
	}
	hopLimit, err := d.small("hop limit")
	if err != nil {
		return err
	}
	count, err := d.head(majorArray)
	if err != nil {
		return err
	}
	if count > uint64(lim.MaxPackets) {
		return fmt.Errorf("%w: %d packets, limit %d", ErrTooManyPackets, count, lim.MaxPackets)
	}
	// Each packet takes at least one byte, so a count larger than what is
	// left cannot be honest; checking it first keeps the allocation bounded
	// by the input size.
	if count > uint64(len(d.buf)-d.off) {
		return fmt.Errorf("%w: %d packets declared, %d bytes left", ErrTruncated, count, len(d.buf)-d.off)
	}
	packets := env.Packets[:0]
	if uint64(cap(packets)) < count {
		packets = make([][]byte, 0, count)
	}
	for i := uint64(0); i < count; i++ {
		p, err := d.bytes(uint64(lim.MaxPacketSize))
		if err != nil {
			return err
		}
		packets = append(packets, p)
	}
	authLen, err := d.head(majorBytes)
	if err != nil {
		return err
	}
	if authLen != 0 && authLen != AuthSize {
		return fmt.Errorf("%w: auth of %d bytes, want 0 or %d", ErrMalformed, authLen, AuthSize)
	}
	if authLen > uint64(len(d.buf)-d.off) {
		return fmt.Errorf("%w: auth of %d bytes, %d left", ErrTruncated, authLen, len(d.buf)-d.off)
	}
	auth := d.buf[d.off : d.off+int(authLen) : d.off+int(authLen)]
	d.off += int(authLen)
	if d.off != len(d.buf) {
		return fmt.Errorf("%w: %d trailing bytes after envelope", ErrMalformed, len(d.buf)-d.off)
	}
	env.Type = flags.Flag(typ)
	env.Sub = flags.Flag(sub)
	copy(env.Sender[:], sender)
	env.Seq = seq
	env.Time = t
	env.HopLimit = uint8(hopLimit)
	env.Packets = packets
	env.Auth = auth
	return nil
}

// AppendMessage appends a message frame body: the hop byte, then the
// envelope.
func AppendMessage(dst []byte, hops uint8, env *Envelope) []byte {
	dst = append(dst, hops)
	return env.AppendTo(dst)
}

// SplitMessage splits a message frame body into its hop count and its
// envelope bytes (aliasing body).
func SplitMessage(body []byte) (hops uint8, envelope []byte, err error) {
	if len(body) < 2 {
		return 0, nil, fmt.Errorf("%w: message body of %d bytes", ErrTruncated, len(body))
	}
	return body[0], body[1:], nil
}

// CBOR major types used by the envelope.
const (
	majorUint   = 0
	majorNegInt = 1
	majorBytes  = 2
	majorArray  = 4
)

// timeArg returns the CBOR argument for t: t itself, or -1-t when negative.
func timeArg(t int64) uint64 {
	if t >= 0 {
		return uint64(t)
	}
	return uint64(-1 - t)
}

func headLen(v uint64) int {
	switch {
	case v < 24:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	default:
		return 9
	}
}

func appendHead(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= math.MaxUint8:
		return append(dst, m|24, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(dst, m|27), v)
	}
}

// decoder reads deterministic CBOR heads from a byte slice.
type decoder struct {
	buf []byte
	off int
}

// rawHead reads one head and returns its major type and argument, enforcing
// shortest form and definite length.
func (d *decoder) rawHead() (major byte, arg uint64, err error) {
	if d.off >= len(d.buf) {
		return 0, 0, fmt.Errorf("%w: CBOR head at offset %d", ErrTruncated, d.off)
	}
	b := d.buf[d.off]
	d.off++
	major, info := b>>5, b&0x1f
	var size int
	switch {
	case info < 24:
		return major, uint64(info), nil
	case info == 24:
		size = 1
	case info == 25:
		size = 2
	case info == 26:
		size = 4
	case info == 27:
		size = 8
	default:
		return 0, 0, fmt.Errorf("%w: CBOR additional info %d at offset %d (indefinite or reserved)", ErrMalformed, info, d.off-1)
	}
	if len(d.buf)-d.off < size {
		return 0, 0, fmt.Errorf("%w: CBOR argument at offset %d", ErrTruncated, d.off)
	}
	p := d.buf[d.off : d.off+size]
	d.off += size
	switch size {
	case 1:
		arg = uint64(p[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(p))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(p))
	default:
		arg = binary.BigEndian.Uint64(p)
	}
	if headLen(arg) != 1+size {
		return 0, 0, fmt.Errorf("%w: non-shortest CBOR head at offset %d", ErrMalformed, d.off-1-size)
	}
	return major, arg, nil
}

func (d *decoder) head(want byte) (uint64, error) {
	major, arg, err := d.rawHead()
	if err != nil {
		return 0, err
	}
	if major != want {
		return 0, fmt.Errorf("%w: CBOR major type %d, want %d", ErrMalformed, major, want)
	}
	return arg, nil
}

// small reads an unsigned integer that must fit in a byte.
func (d *decoder) small(what string) (uint64, error) {
	v, err := d.head(majorUint)
	if err != nil {
		return 0, err
	}
	if v > math.MaxUint8 {
		return 0, fmt.Errorf("%w: %s %d does not fit in a byte", ErrMalformed, what, v)
	}
	return v, nil
}

// bytes reads a byte string of at most limit bytes, aliasing the input.
func (d *decoder) bytes(limit uint64) ([]byte, error) {
	n, err := d.head(majorBytes)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: byte string of %d bytes, limit %d", ErrPacketTooLarge, n, limit)
	}
	if n > uint64(len(d.buf)-d.off) {
		return nil, fmt.Errorf("%w: byte string of %d bytes, %d left", ErrTruncated, n, len(d.buf)-d.off)
	}
	b := d.buf[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return b, nil
}

func (d *decoder) int64() (int64, error) {
	major, arg, err := d.rawHead()
	if err != nil {
		return 0, err
	}
	if arg > math.MaxInt64 {
		return 0, fmt.Errorf("%w: time out of range", ErrMalformed)
	}
	switch major {
	case majorUint:
		return int64(arg), nil
	case majorNegInt:
		return -1 - int64(arg), nil
	}
	return 0, fmt.Errorf("%w: time has CBOR major type %d", ErrMalformed, major)
}
