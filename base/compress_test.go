package base

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// ctText is a 64 KiB payload that compresses well.
func ctText(tag int) []byte {
	line := fmt.Sprintf("message %d: meshsock moves length-prefixed frames between peers. ", tag)
	return bytes.Repeat([]byte(line), (64<<10)/len(line)+1)[:64<<10]
}

// ctSendIntact sends n large messages from c to s and checks they arrive
// byte for byte.
func ctSendIntact(t *testing.T, c *Conn, s *Socket, n int) {
	t.Helper()
	ctx := stCtx(t)
	for i := range n {
		if err := c.Send(ctx, ctText(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for i := range n {
		m := stRecv(t, s)
		if len(m.Packets) != 1 || !bytes.Equal(m.Packets[0], ctText(i)) {
			t.Fatalf("message %d arrived damaged (%d packets)", i, len(m.Packets))
		}
	}
}

// ctUncompressed reports whether every frame in the difference between two
// stats snapshots went uncompressed: its wire body equals its plain body.
func ctUncompressed(before, after Stats) bool {
	frames := after.FramesOut - before.FramesOut
	wire := after.BytesOut - before.BytesOut - protocol.FrameHeaderSize*frames
	return frames > 0 && wire == after.BodyBytesOut-before.BodyBytesOut
}

func TestCompressionZstd(t *testing.T) {
	a := stNew(t, WithCompression(flags.Zstd))
	b := stNew(t, WithCompression(flags.Zstd))
	ab, ba := stConnect(t, a, b)
	if m := ab.SendMethod(); m != flags.Zstd {
		t.Fatalf("a sends with %v, want zstd", m)
	}
	if m := ba.SendMethod(); m != flags.Zstd {
		t.Fatalf("b sends with %v, want zstd", m)
	}
	ctSendIntact(t, ab, b, 8)
	// The reader publishes its byte counts when it next waits for the
	// network, which may be just after the last message was handed over.
	var sa, sb Stats
	stWait(t, "b's counters to catch up with a's", func() bool {
		sa, sb = a.Stats(), b.Stats()
		return sb.BytesIn == sa.BytesOut
	})
	if r := sa.CompressionRatio(); r <= 0 || r >= 0.5 {
		t.Errorf("CompressionRatio = %.3f, want < 0.5 for repeated text", r)
	}
	if sa.BodyBytesOut < 8*64<<10 || sa.BytesOut >= sa.BodyBytesOut/2 {
		t.Errorf("BodyBytesOut = %d, BytesOut = %d", sa.BodyBytesOut, sa.BytesOut)
	}
	if sb.BodyBytesIn != sa.BodyBytesOut || sb.BytesIn != sa.BytesOut {
		t.Errorf("b read %d/%d bytes (wire/plain), a wrote %d/%d", sb.BytesIn, sb.BodyBytesIn, sa.BytesOut, sa.BodyBytesOut)
	}
	if sb.DecompressErrors != 0 || sb.ResendsSent != 0 {
		t.Errorf("DecompressErrors = %d, ResendsSent = %d", sb.DecompressErrors, sb.ResendsSent)
	}
}

func TestCompressionThreshold(t *testing.T) {
	a := stNew(t, WithCompression(flags.Zstd), WithCompressThreshold(1<<20))
	b := stNew(t, WithCompression(flags.Zstd))
	ab, _ := stConnect(t, a, b)
	if m := ab.SendMethod(); m != flags.Zstd {
		t.Fatalf("a sends with %v, want zstd", m)
	}
	before := a.Stats()
	ctSendIntact(t, ab, b, 4) // 64 KiB bodies, below the 1 MiB threshold
	after := a.Stats()
	if !ctUncompressed(before, after) {
		t.Errorf("bodies below the threshold were compressed: %+v", after)
	}
	if r := after.CompressionRatio(); r < 1 || r > 1.001 {
		t.Errorf("CompressionRatio = %v, want 1", r)
	}

	// A small message on a default link (1 KiB threshold) goes uncompressed
	// too, even though it would compress.
	c := stNew(t, WithCompression(flags.Zstd))
	cb, _ := stConnect(t, c, b)
	before = c.Stats()
	if err := cb.Send(stCtx(t), bytes.Repeat([]byte("a"), 500)); err != nil {
		t.Fatal(err)
	}
	if m := stRecv(t, b); len(m.Packets[0]) != 500 {
		t.Fatal("small message damaged")
	}
	if !ctUncompressed(before, c.Stats()) {
		t.Error("a body under DefaultCompressThreshold was compressed")
	}
}

func TestCompressionNegotiation(t *testing.T) {
	a := stNew(t, WithCompression(flags.Zstd, flags.Snappy))
	b := stNew(t, WithCompression(flags.Snappy))
	ab, ba := stConnect(t, a, b)
	if m := ab.SendMethod(); m != flags.Snappy {
		t.Errorf("a (prefers zstd, snappy) sends to b (snappy only) with %v, want snappy", m)
	}
	if m := ba.SendMethod(); m != flags.Snappy {
		t.Errorf("b sends with %v, want snappy", m)
	}
	if got := ab.Peer().Accept; !slices.Equal(got, []flags.Method{flags.Snappy}) {
		t.Errorf("a sees b accept %v", got)
	}
	if got := ba.Peer().Accept; !slices.Equal(got, []flags.Method{flags.Zstd, flags.Snappy}) {
		t.Errorf("b sees a accept %v", got)
	}
	ctSendIntact(t, ab, b, 2)
	ctSendIntact(t, ba, a, 2)
	if r := a.Stats().CompressionRatio(); r >= 1 {
		t.Errorf("a's ratio %v: snappy did not compress", r)
	}
	if r := b.Stats().CompressionRatio(); r >= 1 {
		t.Errorf("b's ratio %v: snappy did not compress", r)
	}

	// No method in common: both send uncompressed.
	c := stNew(t, WithCompression(flags.Zstd))
	cb, bc := stConnect(t, c, b)
	if cb.SendMethod() != flags.None || bc.SendMethod() != flags.None {
		t.Errorf("no common method: c sends %v, b sends %v; want none", cb.SendMethod(), bc.SendMethod())
	}
	before := c.Stats()
	ctSendIntact(t, cb, b, 1)
	if !ctUncompressed(before, c.Stats()) {
		t.Error("c compressed without a common method")
	}
}

func TestCompressionRenegotiate(t *testing.T) {
	a := stNew(t, WithCompression(flags.Zstd, flags.Snappy))
	b := stNew(t, WithCompression(flags.Zstd, flags.Snappy))
	ab, ba := stConnect(t, a, b)
	if ab.SendMethod() != flags.Zstd {
		t.Fatalf("a sends with %v, want zstd", ab.SendMethod())
	}
	// Messages sent just before the change still arrive.
	ctx := stCtx(t)
	for i := range 3 {
		if err := ab.Send(ctx, ctText(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetCompression(); err != nil {
		t.Fatal(err)
	}
	if ba.SendMethod() != flags.None {
		t.Errorf("b still sends with %v after disabling compression", ba.SendMethod())
	}
	stWait(t, "a to stop compressing towards b", func() bool { return ab.SendMethod() == flags.None })
	for i := range 3 {
		if m := stRecv(t, b); !bytes.Equal(m.Packets[0], ctText(i)) {
			t.Fatalf("message %d sent around the change arrived damaged", i)
		}
	}
	before := a.Stats()
	ctSendIntact(t, ab, b, 3)
	if !ctUncompressed(before, a.Stats()) {
		t.Error("a still compressed after b renegotiated to none")
	}

	// And back: b accepts snappy only.
	if err := b.SetCompression(flags.Snappy); err != nil {
		t.Fatal(err)
	}
	stWait(t, "a to switch to snappy", func() bool { return ab.SendMethod() == flags.Snappy })
	if ba.SendMethod() != flags.Snappy {
		t.Errorf("b sends with %v, want snappy", ba.SendMethod())
	}
	before = a.Stats()
	ctSendIntact(t, ab, b, 2)
	if ctUncompressed(before, a.Stats()) {
		t.Error("a did not compress after b accepted snappy again")
	}
	if st := b.Stats(); st.DecompressErrors != 0 || st.DecodeErrors != 0 {
		t.Errorf("renegotiation caused errors: %+v", st)
	}

	// A connection made after the change sees the new list in the handshake.
	c := stNew(t)
	cb, _ := stConnect(t, c, b)
	if got := cb.Peer().Accept; !slices.Equal(got, []flags.Method{flags.Snappy}) {
		t.Errorf("new peer sees b accept %v, want [snappy]", got)
	}
}

func TestSetCompressionRejects(t *testing.T) {
	snappy, err := compress.Builtin(flags.Snappy)
	if err != nil {
		t.Fatal(err)
	}
	set, err := compress.NewSet(snappy)
	if err != nil {
		t.Fatal(err)
	}
	a := stNew(t, WithCodecs(set), WithCompression(flags.Snappy))
	b := stNew(t)
	ab, _ := stConnect(t, a, b)
	for _, ms := range [][]flags.Method{
		{flags.Method(0x7e)},
		{flags.Snappy, flags.Method(0xff)},
		{flags.Zstd}, // a real method, but not in a's codec set
		make([]flags.Method, protocol.MaxAcceptMethods+1),
	} {
		if err := a.SetCompression(ms...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("SetCompression(%v): %v, want ErrInvalidOption", ms, err)
		}
	}
	// A rejected list changes nothing.
	if got := a.compressionList(); !slices.Equal(got, []flags.Method{flags.Snappy}) {
		t.Errorf("list after rejected changes = %v", got)
	}
	if ab.SendMethod() != flags.Snappy {
		t.Errorf("a sends with %v after rejected changes, want snappy", ab.SendMethod())
	}
}
