package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Two nodes of one host, given no address to connect to: each takes the
// first free port of 47300 to 47315 and probes that range on 127.0.0.1.
// Discover on the second lists the first, and they link by themselves.
func ExampleSocket_Discover() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []mesh.Option{
		mesh.WithPortRange(47300, 16),
		mesh.WithLAN(mesh.LANConfig{OnHost: true}),
		mesh.WithLogger(slog.New(slog.DiscardHandler)),
	}
	a, err := mesh.NewSocket("127.0.0.1", opts...)
	if err != nil {
		panic(err)
	}
	defer a.Close(context.Background())
	b, err := mesh.NewSocket("127.0.0.1", opts...)
	if err != nil {
		panic(err)
	}
	defer b.Close(context.Background())

	found, err := b.Discover(ctx)
	if err != nil {
		panic(err)
	}
	for _, p := range found {
		fmt.Println("found the first node:", p.ID == a.ID(), "at", p.Addrs[0] == a.Addr().String())
	}
	// What discovery found is dialled like any known peer.
	if err := b.WaitPeers(ctx, 1); err != nil {
		panic(err)
	}
	fmt.Println("linked:", b.Peers()[0].ID == a.ID())
	// Output:
	// found the first node: true at true
	// linked: true
}
