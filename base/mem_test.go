package base_test

// Memory bounds: what a hostile or merely busy peer can make a node hold.
// Each test measures the live heap after a GC (runtime.ReadMemStats) as
// well as the node's own gauges, so that a bound that is counted but not
// honoured still fails. Helpers are prefixed "mt".

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// mtLiveHeap returns the bytes of live heap objects after a full GC.
func mtLiveHeap() uint64 {
	var ms runtime.MemStats
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

// mtBomb returns a whisper frame from the raw peer whose body is
// compressed with method: a payload of zeros, tiny on the wire.
func (r *ftRaw) mtBomb(t *testing.T, codec compress.Codec, seq uint64, payload int) []byte {
	t.Helper()
	env := protocol.Envelope{
		Type: flags.Whisper, Sub: flags.Whisper, Sender: r.id, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: [][]byte{make([]byte, payload)},
	}
	comp, err := codec.Compress(nil, protocol.AppendMessage(nil, 0, &env))
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
