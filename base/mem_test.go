package base_test

// Memory bounds: what a hostile or merely busy peer can make a node hold.
// Each test measures the live heap after a GC (runtime.ReadMemStats) as
// well as the node's own gauges, so that a bound that is counted but not
// honoured still fails. Helpers are prefixed "mt".

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// mtLiveHeap returns the bytes of live heap objects after a full GC. Two
// collections: what sync.Pools hold (write buffers, scratch) survives the
// first in their victim caches, and how much that is depends on timing,
// not on what the node keeps.
func mtLiveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// mtGrowth is how far the live heap grew from base, 0 if it shrank.
func mtGrowth(base uint64) uint64 {
	if h := mtLiveHeap(); h > base {
		return h - base
	}
	return 0
}

// mtBomb returns a whisper frame from the raw peer (hop limit 2, so that
// the test node may relay it one hop) whose body is
// compressed with method: a payload of zeros, tiny on the wire.
func (r *ftRaw) mtBomb(t *testing.T, codec compress.Codec, seq uint64, payload int) []byte {
	t.Helper()
	env := protocol.Envelope{
		Type: flags.Whisper, Sub: flags.Whisper, Sender: r.id, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: 2, Packets: [][]byte{make([]byte, payload)},
	}
	// A hop limit above 1 means it may be relayed: it is signed.
	comp, err := codec.Compress(nil, append([]byte{0}, env.AppendSigned(nil, r.key)...))
	if err != nil {
		t.Fatal(err)
	}
	return protocol.AppendFrame(nil, codec.Method(), comp)
}

// TestResendWindowBoundedInBytes: a hostile peer sends zstd bombs (under
// 300 bytes on the wire, 1 MiB each once decompressed) to a node
// that relays them over a compressing link, as a mesh relays broadcasts.
// The relaying writer keeps frames for resends: it must hold no more than
// WithResendBytes of them, and nothing once they are older than
// WithResendAge. Before the bound it kept the last 1024 frames whatever
// their size, and kept them after the traffic stopped: here all 24 MiB.
func TestResendWindowBoundedInBytes(t *testing.T) {
	ftLeakCheck(t)
	const (
		bombs    = 24
		bombSize = 1 << 20
		bound    = 3 << 20 // room for one bomb (decompressed with 1 MiB to spare), not two
		age      = time.Second
	)
	// Beyond the bound: buffers, the test's own frames, GC noise, and the
	// zstd decoder's state, which keeps its last output per block decoder
	// (one per P), process-wide and whatever the number of links.
	slack := uint64(2<<20 + runtime.GOMAXPROCS(0)*(bombSize+bombSize/8))
	zstd, err := compress.Builtin(flags.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	sink := testnet.NewBase(t, "127.0.0.1:0")
	var sunk atomic.Int64
	sink.RegisterHandler(base.HandlerFunc(func(*base.Message) bool {
		sunk.Add(1)
		return true
	}))
	var relayTo atomic.Pointer[base.Conn]
	node, err := base.NewLayered("127.0.0.1:0", base.Layer{Handle: func(m *base.Message) bool {
		if c := relayTo.Load(); c != nil && m.Conn != c {
			_ = c.Forward(m.Hops, m.Envelope())
		}
		return true
	}}, base.WithLogger(testnet.Logger(t)), base.WithResendBytes(bound), base.WithResendAge(age))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Close(ftCtx(t)) })
	relay := ftConnect(t, node, sink)
	if m := relay.SendMethod(); m == flags.None {
		t.Fatal("the relay link does not compress")
	}
	relayTo.Store(relay)

	raw := ftRawHandshake(t, node.Addr())
	frames := make([][]byte, bombs)
	wire := 0
	for i := range frames {
		frames[i] = raw.mtBomb(t, zstd, uint64(i+1), bombSize)
		wire += len(frames[i])
	}
	before := mtLiveHeap()
	for _, f := range frames {
		if _, err := raw.nc.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	var peak int64
	testnet.Eventually(t, ftWait, func() bool {
		peak = max(peak, int64(node.Stats().RetainedBytes))
		return sunk.Load() == bombs
	}, "the sink receives every relayed bomb (%d of %d)", sunk.Load(), bombs)
	held := mtGrowth(before)
	st := node.Stats()
	t.Logf("%d bombs, %d bytes on the wire; retained %d bytes (peak %d), live heap +%d KiB",
		bombs, wire, st.RetainedBytes, peak, held>>10)
	if peak > bound || st.RetainedBytes > bound {
		t.Errorf("retained %d bytes (peak %d), bound %d", st.RetainedBytes, peak, bound)
	}
	if held > bound+slack {
		t.Errorf("live heap grew by %d KiB after the bombs, want at most the %d KiB bound + %d KiB", held>>10, bound>>10, slack>>10)
	}

	// Traffic stopped: once older than the age bound, nothing is kept.
	testnet.Eventually(t, ftWait, func() bool { return node.Stats().RetainedBytes == 0 },
		"the idle link releases its retained frames (%d bytes left)", node.Stats().RetainedBytes)
	if held := mtGrowth(before); held > slack {
		t.Errorf("live heap still %d KiB above the start after the link went idle", held>>10)
	}
	if relay.Err() != nil {
		t.Errorf("the relay link closed: %v", relay.Err())
	}
}

// TestReaderKeepsNoReadMessage: a node that has read large messages and
// handed them to the user, who let them go, holds none of them. Before,
// every message was carved from a block of 32 that the reader kept until
// all 32 were used, so the block kept up to 31 bodies of up to 4 MiB each
// alive after their users had dropped them; a compressed frame small
// enough for the read slab had its decompressed body treated the same.
func TestReaderKeepsNoReadMessage(t *testing.T) {
	const (
		messages = 16
		size     = 1 << 20
		slack    = 2 << 20
	)
	for _, tc := range []struct {
		name    string
		opts    []base.Option
		payload []byte
		slack   uint64
	}{
		{"plain", []base.Option{base.WithCompression()}, ftRandom(size, 9), slack},
		// 1 MiB of zeros: a frame of a few KiB on the wire. The sender
		// keeps its last frame for a resend and a compression buffer
		// of the frame's size.
		{"compressed", []base.Option{base.WithCompression(flags.Snappy), base.WithResendWindow(1)}, make([]byte, size), slack + 2*size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ftLeakCheck(t)
			socks := testnet.StartBase(t, 2, tc.opts...)
			a, b := socks[0], socks[1]
			ab := ftConnect(t, a, b)
			ftExchange(t, ab, b, "warm up") // the reader's first slab and block
			before := mtLiveHeap()
			ctx := ftCtx(t)
			for range messages {
				if err := ab.Send(ctx, tc.payload); err != nil {
					t.Fatal(err)
				}
				m, err := b.Recv(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Packets[0]) != size {
					t.Fatalf("received %d bytes, want %d", len(m.Packets[0]), size)
				}
			}
			st := a.Stats()
			if held := mtGrowth(before); held > tc.slack {
				t.Errorf("live heap %d KiB above the start after %d messages of %d KiB (%d KiB on the wire) were read and dropped",
					held>>10, messages, size>>10, st.BytesOut>>10)
			}
		})
	}
}

// TestRecvQueueBoundedInBytes: a node that does not read receives 4 MiB
// messages. Its receive queue holds at most WithRecvQueueBytes of them
// and drops the rest, counted; reading gives the room back. Before, the
// queue was bounded by count only (8192 messages): 150 broadcasts of
// 4 MiB took a node from 8 to 863 MiB without a drop.
func TestRecvQueueBoundedInBytes(t *testing.T) {
	ftLeakCheck(t)
	const (
		size     = 4<<20 - 4<<10
		messages = 12
		fit      = 3
		bound    = 15 << 20 // three messages, not four
		slack    = 4 << 20
	)
	a := testnet.NewBase(t, "", base.WithCompression())
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithCompression(), base.WithRecvQueueBytes(bound))
	ab := ftConnect(t, a, b)
	payload := ftRandom(size, 11)
	before := mtLiveHeap()
	ctx := ftCtx(t)
	for range messages {
		if err := ab.Send(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, ftWait, func() bool {
		st := b.Stats()
		return st.Delivered+st.RecvDrops == messages
	}, "every message queued or dropped")
	held := mtGrowth(before)
	st := b.Stats()
	t.Logf("%d messages of %d KiB: %d queued (%d KiB), %d dropped; live heap +%d KiB",
		messages, size>>10, st.Delivered, st.RecvQueueBytes>>10, st.RecvDrops, held>>10)
	if st.Delivered != fit || st.RecvDrops != messages-fit {
		t.Errorf("Delivered = %d, RecvDrops = %d; want %d and %d", st.Delivered, st.RecvDrops, fit, messages-fit)
	}
	if st.RecvQueueBytes > bound || st.RecvQueueBytes < fit*size {
		t.Errorf("RecvQueueBytes = %d, want between %d and the bound %d", st.RecvQueueBytes, fit*size, bound)
	}
	if held > bound+slack {
		t.Errorf("live heap grew by %d KiB, bound %d KiB", held>>10, bound>>10)
	}
	if s := b.Status(); s.Healthy || !strings.Contains(s.String(), "receive queue full") {
		t.Errorf("Status = %q, want the drops mentioned", s.String())
	}
	// Reading gives the room back: the queue takes as many again.
	for range fit {
		if m, err := b.Recv(ctx); err != nil || !bytes.Equal(m.Packets[0], payload) {
			t.Fatalf("Recv: %v", err)
		}
	}
	if n := b.Stats().RecvQueueBytes; n != 0 {
		t.Errorf("RecvQueueBytes = %d with the queue empty", n)
	}
	for range fit {
		if err := ab.Send(ctx, payload); err != nil {
			t.Fatal(err)
		}
		if m, err := b.Recv(ctx); err != nil || !bytes.Equal(m.Packets[0], payload) {
			t.Fatalf("Recv after the queue emptied: %v", err)
		}
	}
}

// TestEventQueueBoundedInBytes: events carry the messages they announce,
// so a subscriber stuck in a callback while 3 MiB messages keep coming
// holds at most WithEventQueueBytes of them (the rest of the events are
// dropped, counted), although Recv took every message at once. Before,
// only the count bound (1024 events) applied.
func TestEventQueueBoundedInBytes(t *testing.T) {
	ftLeakCheck(t)
	const (
		size     = 3 << 20
		messages = 8
		fit      = 2
		bound    = 8 << 20 // two messages, not three
		slack    = 4 << 20
	)
	a := testnet.NewBase(t, "", base.WithCompression())
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithCompression(), base.WithEventQueueBytes(bound))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cancel := b.Subscribe(func(base.Event) {
		once.Do(func() {
			close(started)
			<-release
		})
	})
	t.Cleanup(func() { close(release); cancel() }) // before the sockets close
	ab := ftConnect(t, a, b)
	select {
	case <-started: // stuck in the connect event
	case <-time.After(ftWait):
		t.Fatal("subscriber never called")
	}
	payload := ftRandom(size, 12)
	before := mtLiveHeap()
	ctx := ftCtx(t)
	for range messages {
		if err := ab.Send(ctx, payload); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().EventDrops == messages-fit },
		"%d of %d message events dropped (have %d)", messages-fit, messages, b.Stats().EventDrops)
	if held := mtGrowth(before); held > bound+slack {
		t.Errorf("live heap grew by %d KiB with the subscriber stuck, bound %d KiB", held>>10, bound>>10)
	}
	if s := b.Status(); s.Healthy || !strings.Contains(s.String(), "event queue full") {
		t.Errorf("Status = %q, want the event drops mentioned", s.String())
	}
}

// mtNumbered is a payload of size bytes that starts with i.
func mtNumbered(i, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint64(p, uint64(i))
	for j := 8; j < size; j++ {
		p[j] = byte(i + j)
	}
	return p
}

// mtSpreadLayer claims all but one message in every: the messages it
// leaves to the user each come from a different read slab, as when a slow
// reader's full queue takes one message now and then.
func mtSpreadLayer(every int64, seen *atomic.Int64) base.Layer {
	return base.Layer{Handle: func(*base.Message) bool { return seen.Add(1)%every != 0 }}
}

// TestRecvQueueHoldsNoSlabs: small messages waiting for Recv cost about
// their own size, not the reader's buffers around them. Before, each held
// its 16 KiB read slab and its block of 32 Messages: 1 KB messages read
// at 100 Recv/s grew a heap from 10 to 287 MiB for 9 MiB of messages.
func TestRecvQueueHoldsNoSlabs(t *testing.T) {
	ftLeakCheck(t)
	const (
		size   = 1000
		every  = 15
		queued = 1500
	)
	var seen atomic.Int64
	b, err := base.NewLayered("127.0.0.1:0", mtSpreadLayer(every, &seen), base.WithLogger(testnet.Logger(t)), base.WithCompression())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(ftCtx(t)) })
	a := testnet.NewBase(t, "", base.WithCompression())
	ab := ftConnect(t, a, b)
	before := mtLiveHeap()
	ctx := ftCtx(t)
	for i := range queued * every {
		if err := ab.Send(ctx, mtNumbered(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().Delivered == queued },
		"%d messages queued (have %d)", queued, b.Stats().Delivered)
	held := mtGrowth(before)
	limit := uint64(3*queued*size + 2<<20)
	t.Logf("%d messages of %d B queued (RecvQueueBytes %d KiB): live heap +%d KiB, limit %d KiB",
		queued, size, b.Stats().RecvQueueBytes>>10, held>>10, limit>>10)
	if held > limit {
		t.Errorf("live heap grew by %d KiB for %d KiB of queued messages", held>>10, queued*size>>10)
	}
	for k := range queued {
		m, err := b.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := mtNumbered((k+1)*every-1, size); !bytes.Equal(m.Packets[0], want) {
			t.Fatalf("message %d arrived damaged", k)
		}
	}
}

// TestDispatchQueueHoldsNoSlabs: WithDispatchQueue's byte bound is what
// the queued messages keep alive. A user handler is stuck, and small
// messages from different read slabs queue behind it. Before, each
// counted its envelope plus 256 bytes but held its 16 KiB slab and its
// block of 32 Messages, so a 1 MiB bound let them hold about 16 MiB.
func TestDispatchQueueHoldsNoSlabs(t *testing.T) {
	ftLeakCheck(t)
	const (
		size  = 1000
		every = 15
		bound = 1 << 20
		sent  = 1200 * every
		slack = 2 << 20
	)
	var seen atomic.Int64
	b, err := base.NewLayered("127.0.0.1:0", mtSpreadLayer(every, &seen), base.WithLogger(testnet.Logger(t)),
		base.WithCompression(), base.WithDispatchQueue(sent, bound))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(ftCtx(t)) })
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b.RegisterHandler(base.HandlerFunc(func(*base.Message) bool {
		first := false
		once.Do(func() {
			first = true
			close(started)
			<-release
		})
		return first
	}))
	var released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	t.Cleanup(free) // before b closes
	a := testnet.NewBase(t, "", base.WithCompression())
	ab := ftConnect(t, a, b)
	before := mtLiveHeap()
	ctx := ftCtx(t)
	for i := range sent {
		if err := ab.Send(ctx, mtNumbered(i, size)); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	testnet.Eventually(t, ftWait, func() bool { return seen.Load() == sent },
		"the reader handles all %d messages (have %d)", sent, seen.Load())
	held := mtGrowth(before)
	st := b.Stats()
	t.Logf("%d messages for the user, 1 handling, %d dropped: live heap +%d KiB, bound %d KiB",
		sent/every, st.DispatchDrops, held>>10, bound>>10)
	if st.DispatchDrops == 0 {
		t.Error("no message dropped: the queue did not fill")
	}
	if held > bound+slack {
		t.Errorf("live heap grew by %d KiB behind a stuck handler, bound %d KiB", held>>10, bound>>10)
	}
	// The handler goes on: what was queued reaches Recv intact, in order.
	free()
	queued := int(sent/every - 1 - st.DispatchDrops)
	last := -1
	for range queued {
		m, err := b.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := int(binary.BigEndian.Uint64(m.Packets[0]))
		if i <= last || (i+1)%every != 0 || !bytes.Equal(m.Packets[0], mtNumbered(i, size)) {
			t.Fatalf("message %d (after %d) damaged or out of order", i, last)
		}
		last = i
	}
}
