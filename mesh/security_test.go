package mesh

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
)

// TestSecurityOptions: mesh.WithNetworkKey and mesh.WithAuthorize reach the
// connection layer without WithBaseOptions: members of a closed network
// connect, a node without the key is refused on both sides with
// ErrNotAuthorized, and the hook's refusal is ErrNotAuthorized too.
func TestSecurityOptions(t *testing.T) {
	ring, err := base.NewKeyring(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	members := startCluster(t, 2, WithNetworkKey(ring))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := members.nodes[0].Connect(ctx, members.nodes[1].Addr().String()); err != nil {
		t.Fatalf("members: %v", err)
	}
	outsider := startCluster(t, 1)
	if err := outsider.nodes[0].Connect(ctx, members.nodes[0].Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("outsider: %v; want ErrNotAuthorized", err)
	}
	picky := startCluster(t, 1, WithAuthorize(func(context.Context, base.PeerInfo) error {
		return errors.New("closed today")
	}))
	if err := outsider.nodes[0].Connect(ctx, picky.nodes[0].Addr().String()); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("refused by the hook: %v; want ErrNotAuthorized", err)
	}
}
