package base

import (
	"testing"
)

// TestConnectReadyAtBothEnds: when Connect returns, the listening side has
// registered the link too, so either side can send over it at once. In
// round 1 the listener registered the link only after the dialer's Connect
// had returned, and a broadcast sent by it right away could find no peer.
func TestConnectReadyAtBothEnds(t *testing.T) {
	a := stNew(t)
	for i := 0; i < 50; i++ {
		b := stNewAt(t, "")
		c, err := b.Connect(stCtx(t), a.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Conn(b.ID()); !ok {
			t.Fatalf("round %d: Connect returned before the listener registered the link", i)
		}
		if err := a.Broadcast(stCtx(t), []byte("now")); err != nil {
			t.Fatalf("round %d: broadcast right after Connect: %v", i, err)
		}
		if got := stPacket(stRecv(t, b)); got != "now" {
			t.Fatalf("round %d: got %q", i, got)
		}
		_ = c.Close()
		stWait(t, "the listener to drop the link", func() bool { _, ok := a.Conn(b.ID()); return !ok })
	}
}
