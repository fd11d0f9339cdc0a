package base_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestHopByteCannotWrap: a hop byte of 255 once read as hops+1 = 0, so a
// message relayed (or forged) past its limit looked fresh. A hop byte at
// or above the hop limit is dropped on arrival and counted; one just below
// it arrives with Hops equal to the limit.
func TestHopByteCannotWrap(t *testing.T) {
	socks := testnet.StartBase(t, 2)
	a, b := socks[0], socks[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := a.Connect(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	env := func(limit uint8, payload string) []byte {
		b, _, err := a.NewEnvelope(flags.Whisper, flags.Whisper, limit, [][]byte{[]byte(payload)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, f := range []struct {
		hops, limit uint8
		payload     string
	}{
		{255, 255, "wrapped"},
		{3, 3, "at-limit"},
		{254, 255, "last-hop"},
	} {
		if err := conn.SendEnvelope(ctx, f.hops, env(f.limit, f.payload)); err != nil {
			t.Fatal(err)
		}
	}
	// Per-link order: once "last-hop" is in, the others have been judged.
	m, err := b.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.Packets[0]); got != "last-hop" {
		t.Fatalf("got %q (Hops %d) first; the messages past their limit must be dropped", got, m.Hops)
	}
	if m.Hops != 255 {
		t.Fatalf("Hops = %d, want 255", m.Hops)
	}
	if got := b.Stats().HopDrops; got != 2 {
		t.Fatalf("HopDrops = %d, want 2", got)
	}
}
