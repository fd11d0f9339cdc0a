package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// A closed network: only nodes that hold a key of the network keyring may
// link. A node keeps its identity across restarts in a key file.
func ExampleWithNetworkKey() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	dir, err := os.MkdirTemp("", "meshsock-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	nodeKey, err := mesh.LoadOrCreateKey(filepath.Join(dir, "node.key")) // created with mode 0600
	if err != nil {
		panic(err)
	}

	secret := []byte("a network key of at least 16 bytes, shared out of band")
	ring, err := mesh.NewKeyring(secret)
	if err != nil {
		panic(err)
	}
	a, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithKey(nodeKey), mesh.WithNetworkKey(ring))
	if err != nil {
		panic(err)
	}
	defer a.Close(context.Background())

	member, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithNetworkKey(ring))
	if err != nil {
		panic(err)
	}
	defer member.Close(context.Background())
	fmt.Println("member:", member.Connect(ctx, a.Addr().String()))

	outsider, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer outsider.Close(context.Background())
	err = outsider.Connect(ctx, a.Addr().String())
	fmt.Println("outsider refused:", errors.Is(err, mesh.ErrNotAuthorized))

	reloaded, err := mesh.LoadOrCreateKey(filepath.Join(dir, "node.key"))
	if err != nil {
		panic(err)
	}
	fmt.Println("same key, same ID:", mesh.NodeIDOf(reloaded) == a.ID())
	// Output:
	// member: <nil>
	// outsider refused: true
	// same key, same ID: true
}

// An authorisation hook sees each proven peer before its link is admitted;
// here, an allow-list of node IDs.
func ExampleWithAuthorize() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	friendKey := mesh.GenerateKey()
	allowed := mesh.NodeIDOf(friendKey)
	a, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithAuthorize(func(ctx context.Context, p mesh.PeerInfo) error {
		if p.ID != allowed {
			return fmt.Errorf("%s is not on the allow-list", p.ID.Short())
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	defer a.Close(context.Background())

	friend, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithKey(friendKey))
	if err != nil {
		panic(err)
	}
	defer friend.Close(context.Background())
	fmt.Println("friend:", friend.Connect(ctx, a.Addr().String()))

	stranger, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer stranger.Close(context.Background())
	err = stranger.Connect(ctx, a.Addr().String())
	fmt.Println("stranger refused:", errors.Is(err, mesh.ErrNotAuthorized))
	// Output:
	// friend: <nil>
	// stranger refused: true
}
