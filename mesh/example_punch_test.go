package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Punch links two nodes directly through the neighbour they share. Here
// all three run on one host, so no NAT is in the way; behind NATs the same
// call gets through those that keep one public port per listening port
// (see docs/mesh.md, "NAT hole punching").
func ExampleSocket_Punch() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))
	var nodes []*mesh.Socket
	for range 3 {
		// Discovery off: a and b link only through r until they punch.
		n, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithDiscovery(false))
		if err != nil {
			panic(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	r, a, b := nodes[0], nodes[1], nodes[2]
	for _, n := range []*mesh.Socket{a, b} {
		if err := n.Connect(ctx, r.Addr().String()); err != nil {
			panic(err)
		}
	}
	// b answers r's introduction only for a member it knows.
	if _, err := b.WaitMembers(ctx, 3); err != nil { // r, a and b itself
		panic(err)
	}
	if err := a.Punch(ctx, b.ID()); err != nil {
		panic(err)
	}
	_, linked := a.Base().Conn(b.ID())
	fmt.Println("a and b linked directly:", linked)
	fmt.Println("introductions made by r:", r.Stats().PunchIntroductions)
	// Output:
	// a and b linked directly: true
	// introductions made by r: 1
}
