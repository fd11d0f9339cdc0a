package base_test

import (
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestIdleLinkMemory: what sockets hold with their links up and nothing to
// send. A large mesh is mostly idle links, and in one process (tests, the
// bench) a thousand nodes add up. An idle link end holds no write buffer
// (it borrows one for each batch), an event queue holds pointers rather
// than events, and a socket that verified nothing yet holds no batch
// verifier: each of these was part of the idle figure before.
func TestIdleLinkMemory(t *testing.T) {
	ftLeakCheck(t)
	const n = 8 // in a ring: n links, 2n link ends
	before := mtLiveHeap()
	socks := testnet.StartBase(t, n, base.WithLogger(testnet.Discard))
	for i, s := range socks {
		ftConnect(t, s, socks[(i+1)%n])
	}
	// A round trip on every link, so that every writer has written.
	for i, s := range socks {
		c, ok := s.Conn(socks[(i+1)%n].ID())
		if !ok {
			t.Fatalf("node %d: no link to node %d", i, (i+1)%n)
		}
		ftExchange(t, c, socks[(i+1)%n], "hello")
	}
	perSocket := mtGrowth(before) / n
	// Measured with the default buffers (64 KiB read and write): 760 KiB
	// a socket with two idle link ends before, 366 KiB with the write
	// buffers lent per batch, the event queue of pointers, the key cache
	// grown on demand and the batch verifier made on first use. The bound
	// leaves room for the rest to grow a little, not for those to come
	// back.
	const bound = 480 << 10
	t.Logf("live heap per socket with 2 idle link ends: %d KiB", perSocket>>10)
	if perSocket > bound {
		t.Errorf("live heap per socket with 2 idle link ends: %d KiB, want at most %d KiB", perSocket>>10, bound>>10)
	}
}
