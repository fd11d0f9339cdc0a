package mesh

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// TestCallsAfterCloseReturnErrClosed: once a node is closed, Send, Whisper
// (to a former neighbour and to a node it never knew), Reply and Connect
// all fail with an error matching ErrClosed, not ErrNoRoute.
func TestCallsAfterCloseReturnErrClosed(t *testing.T) {
	c := startCluster(t, 3)
	c.wire(testnet.Line(3))
	ctx := ctxT(t, 10*time.Second)
	if err := c.nodes[1].Send(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	m, err := c.nodes[0].Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := c.nodes[0]
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{
		"Send":              a.Send(ctx, []byte("x")),
		"Whisper neighbour": a.Whisper(ctx, c.nodes[1].ID(), []byte("x")),
		"Whisper far node":  a.Whisper(ctx, c.nodes[2].ID(), []byte("x")),
		"Reply":             m.Reply(ctx, []byte("x")),
		"Connect":           a.Connect(ctx, c.nodes[2].Addr().String()),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
