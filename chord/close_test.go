package chord

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
)

// TestCloseFromHandler: a node whose request handler closes it (a "quit"
// command sent over the ring) returns from Close, and the requester gets an
// error rather than hanging (round 1: Close waited for the reader the
// handler ran on).
func TestCloseFromHandler(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	nodes := buildRing(t, 2, rng)
	waitRing(t, nodes, convergeWithin)
	owner := nodes[1]
	returned := make(chan error, 1)
	owner.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		returned <- owner.Close(context.Background())
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := nodes[0].Request(ctx, owner.ID(), []byte("quit"))
	if err == nil {
		t.Fatal("a request to a node that closed itself was answered")
	}
	select {
	case cerr := <-returned:
		if cerr != nil {
			t.Fatalf("Close from a handler: %v", cerr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close from a handler did not return")
	}
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrNoRoute) {
		t.Fatalf("request: %v, want ErrTimeout or ErrNoRoute", err)
	}
}

// TestSendWithoutPackets: SendTo and Request need at least one packet.
func TestSendWithoutPackets(t *testing.T) {
	s := newNode(t)
	ctx := context.Background()
	if err := s.SendTo(ctx, s.ID()); !errors.Is(err, ErrNoPackets) {
		t.Errorf("SendTo(): %v, want ErrNoPackets", err)
	}
	if _, err := s.Request(ctx, s.ID()); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Request(): %v, want ErrNoPackets", err)
	}
}
