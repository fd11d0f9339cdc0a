package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Join takes a seed list. A host name resolves to every address it has (a
// DNS name with a record per member, such as a Kubernetes headless
// service, joins them all), each address is tried with back-off, and the
// join succeeds if any link forms. When none does, the *JoinError says
// which addresses failed and why.
func ExampleSocket_Join() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))
	fast := mesh.WithJoin(mesh.JoinConfig{Attempts: 2, Backoff: 10 * time.Millisecond})

	seed, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer seed.Close(context.Background())
	gone, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	goneAddr := gone.Addr().String()
	gone.Close(context.Background())

	node, err := mesh.NewSocket("127.0.0.1:0", quiet, fast)
	if err != nil {
		panic(err)
	}
	defer node.Close(context.Background())

	// "localhost" resolves to 127.0.0.1 (and ::1, where the seed does not
	// listen); the second seed is gone. One link is a success.
	_, port, _ := net.SplitHostPort(seed.Addr().String())
	joined, err := node.Join(ctx, net.JoinHostPort("localhost", port), goneAddr)
	fmt.Println("links:", joined, "error:", err)

	// No link at all: the error lists every failure.
	_, err = node.Join(ctx, goneAddr)
	var je *mesh.JoinError
	if errors.As(err, &je) {
		for _, f := range je.Failures {
			fmt.Println("failed:", f.Addr == goneAddr, "attempts:", f.Attempts, "unreachable:", errors.Is(f.Err, mesh.ErrUnreachable))
		}
	}
	// Output:
	// links: 1 error: <nil>
	// failed: true attempts: 2 unreachable: true
}
