package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// A request to a node that does not listen, two hops away: it travels hop
// by hop through the node between, and so does the answer; no direct link
// is made or waited for. (Discovery is off so that no node dials another
// in the background, which it would otherwise do as an optimisation.)
func ExampleSocket_Request_routed() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := []mesh.Option{mesh.WithLogger(slog.New(slog.DiscardHandler)), mesh.WithDiscovery(false)}
	var nodes []*mesh.Socket
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.1:0", ""} { // the last only dials
		n, err := mesh.NewSocket(addr, opts...)
		if err != nil {
			panic(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	a, relay, hidden := nodes[0], nodes[1], nodes[2]
	if err := relay.Connect(ctx, a.Addr().String()); err != nil {
		panic(err)
	}
	if err := hidden.Connect(ctx, relay.Addr().String()); err != nil {
		panic(err)
	}
	if err := relay.WaitPeers(ctx, 2); err != nil {
		panic(err)
	}
	if err := a.WaitPeers(ctx, 1); err != nil {
		panic(err)
	}
	hidden.RegisterHandler(mesh.HandlerFunc(func(m *mesh.Message) bool {
		_ = m.Reply(ctx, []byte("hello from behind"))
		return true
	}))

	ans, err := a.Request(ctx, hidden.ID(), []byte("anyone there?"))
	if err != nil {
		panic(err)
	}
	_, linked := a.Base().Conn(hidden.ID())
	fmt.Printf("%s (after %d hops); direct link: %v; routed: %v\n",
		ans.Packets[0], ans.Hops, linked, a.Stats().RoutedSent > 0)
	// Output: hello from behind (after 2 hops); direct link: false; routed: true
}
