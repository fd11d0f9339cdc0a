package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Tree mode: the nodes push each broadcast over the links of a spanning
// tree that forms from the flood, and only announce it over the others; a
// node that hears of a broadcast only by announcement pulls it. Four nodes
// in a ring: the first broadcasts settle the tree, and every broadcast
// still reaches every node once.
func ExampleWithBroadcastMode() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []mesh.Option{
		mesh.WithLogger(slog.New(slog.DiscardHandler)),
		mesh.WithBroadcastMode(mesh.Tree),
		mesh.WithMessageCache(1 << 20), // recent broadcasts kept to serve pulls
	}
	var nodes []*mesh.Socket
	for range 4 {
		n, err := mesh.NewSocket("127.0.0.1:0", opts...)
		if err != nil {
			panic(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	for i := range nodes { // a ring: 0-1-2-3-0
		if err := nodes[(i+1)%4].Connect(ctx, nodes[i].Addr().String()); err != nil {
			panic(err)
		}
	}
	for _, n := range nodes {
		if err := n.WaitPeers(ctx, 2); err != nil {
			panic(err)
		}
	}
	got := 0
	for i := range 20 {
		if err := nodes[0].Send(ctx, fmt.Appendf(nil, "news %d", i)); err != nil {
			panic(err)
		}
		for _, n := range nodes[1:] {
			if _, err := n.Recv(ctx); err != nil {
				panic(err)
			}
			got++
		}
	}
	fmt.Println("deliveries:", got)
	// Output:
	// deliveries: 60
}
