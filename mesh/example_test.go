package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Three nodes in a line: a broadcast from one end reaches both others, and
// a reply travels back to the sender two hops away.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	var nodes []*mesh.Socket
	for range 3 {
		n, err := mesh.NewSocket("127.0.0.1:0", quiet)
		if err != nil {
			panic(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	// a - b - c
	if err := nodes[1].Connect(ctx, nodes[0].Addr().String()); err != nil {
		panic(err)
	}
	if err := nodes[2].Connect(ctx, nodes[1].Addr().String()); err != nil {
		panic(err)
	}
	// Connect returns once both ends have the link: sending right away is safe.
	if err := nodes[0].Send(ctx, []byte("hello, mesh")); err != nil {
		panic(err)
	}
	msg, err := nodes[2].Recv(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("c got %q from a: %v\n", msg.Packets[0], msg.Sender == nodes[0].ID())

	if err := msg.Reply(ctx, []byte("hello back")); err != nil {
		panic(err)
	}
	reply, err := nodes[0].Recv(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("a got %q\n", reply.Packets[0])
	// Output:
	// c got "hello, mesh" from a: true
	// a got "hello back"
}

// WaitPeers blocks until a node has the neighbours it needs: Connect
// returns once the dialling side has the link; the other side registers
// it on its own goroutine.
func ExampleSocket_WaitPeers() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	a, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer a.Close(context.Background())
	b, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer b.Close(context.Background())

	if err := b.Connect(ctx, a.Addr().String()); err != nil {
		panic(err)
	}
	if err := a.WaitPeers(ctx, 1); err != nil {
		panic(err)
	}
	fmt.Println("a's neighbour is b:", a.Peers()[0].ID == b.ID())
	// Output:
	// a's neighbour is b: true
}

// A handler answers requests with Reply and shuts its node down on "quit":
// handlers run on dispatcher goroutines, so both may block, and Close
// called from a handler returns.
func ExampleSocket_RegisterHandler() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))
	server, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer server.Close(ctx)
	closed := make(chan error, 1)
	server.RegisterHandler(mesh.HandlerFunc(func(m *mesh.Message) bool {
		switch string(m.Packets[0]) {
		case "ping":
			_ = m.Reply(ctx, []byte("pong"))
		case "quit":
			closed <- server.Close(ctx)
		default:
			return false // not ours: Recv gets it
		}
		return true
	}))

	client, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer client.Close(ctx)
	if err := client.Connect(ctx, server.Addr().String()); err != nil {
		panic(err)
	}
	if err := client.Whisper(ctx, server.ID(), []byte("ping")); err != nil {
		panic(err)
	}
	answer, err := client.Recv(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", answer.Packets[0])
	if err := client.Whisper(ctx, server.ID(), []byte("quit")); err != nil {
		panic(err)
	}
	fmt.Println("server closed:", <-closed == nil)
	// Output:
	// pong
	// server closed: true
}
