package mesh

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWaitPeers: WaitPeers returns at once for n <= 0, times out with
// ErrTimeout wrapping the context's error, returns nil only once enough
// neighbours are up, and returns ErrClosed when the node closes while it
// waits and after.
func TestWaitPeers(t *testing.T) {
	c := startCluster(t, 3)
	a := c.nodes[0]
	if err := a.WaitPeers(context.Background(), 0); err != nil {
		t.Fatalf("WaitPeers(0) with no peers: %v", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := a.WaitPeers(short, 1)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitPeers on a lonely node: %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}

	ctx := ctxT(t, 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- a.WaitPeers(ctx, 2) }()
	if err := c.nodes[1].Connect(ctx, a.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitPeers(ctx, 1); err != nil {
		t.Fatalf("WaitPeers(1) after a peer joined: %v", err)
	}
	if got := len(a.Peers()); got != 1 {
		t.Fatalf("WaitPeers(1) returned with %d peers", got)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitPeers(2) returned %v with one peer", err)
	default:
	}
	if err := c.nodes[2].Connect(ctx, a.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitPeers(2): %v", err)
	}
	if got := len(a.Peers()); got < 2 {
		t.Fatalf("WaitPeers(2) returned with %d peers", got)
	}

	go func() { done <- a.WaitPeers(ctx, 3) }()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitPeers across Close: %v, want ErrClosed", err)
	}
	if err := a.WaitPeers(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitPeers after Close: %v, want ErrClosed", err)
	}
}
