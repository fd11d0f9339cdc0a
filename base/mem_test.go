package base_test

// Memory bounds: what a hostile or merely busy peer can make a node hold.
// Each test measures the live heap after a GC (runtime.ReadMemStats) as
// well as the node's own gauges, so that a bound that is counted but not
// honoured still fails. Helpers are prefixed "mt".

import (
	"runtime"
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
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
