package chord

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
)

// TestSecurityOptions: chord.WithNetworkKey and chord.WithAuthorize reach
// the connection layer: a node without the ring's key cannot join it, and a
// hook's refusal is ErrNotAuthorized too.
func TestSecurityOptions(t *testing.T) {
	ring, err := base.NewKeyring(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := newNode(t, WithNetworkKey(ring))
	b := newNode(t, WithNetworkKey(ring))
	if _, err := b.Join(ctx, a.Addr().String()); err != nil {
		t.Fatalf("member joins: %v", err)
	}
	outsider := newNode(t)
	if _, err := outsider.Join(ctx, a.Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("outsider joins: %v; want ErrNotAuthorized", err)
	}
	picky := newNode(t, WithAuthorize(func(context.Context, base.PeerInfo) error { return errors.New("no") }))
	if _, err := outsider.Join(ctx, picky.Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("join refused by the hook: %v; want ErrNotAuthorized", err)
	}
}
