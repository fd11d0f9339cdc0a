package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// twoNodes starts two linked nodes, closed by the returned function.
func twoNodes(ctx context.Context) (a, b *mesh.Socket, closeAll func()) {
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))
	a, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	b, err = mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	if err := b.Connect(ctx, a.Addr().String()); err != nil {
		panic(err)
	}
	return a, b, func() {
		_ = b.Close(context.Background())
		_ = a.Close(context.Background())
	}
}

// A call by tag: b registers "greet", a calls it with a typed argument
// and gets a typed result back; an unknown tag fails at once.
func ExampleSocket_Call() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b, closeAll := twoNodes(ctx)
	defer closeAll()

	type greeting struct {
		Name  string
		Times int
	}
	err := b.Handle("greet", func(ctx context.Context, from mesh.NodeID, args mesh.Decoder) (any, error) {
		var g greeting
		if err := args.Decode(&g); err != nil {
			return nil, err
		}
		if g.Times < 1 {
			return nil, errors.New("times must be positive")
		}
		return strings.TrimSpace(strings.Repeat("hello "+g.Name+"! ", g.Times)), nil
	})
	if err != nil {
		panic(err)
	}

	var s string
	if err := a.Call(ctx, b.ID(), "greet", greeting{Name: "mesh", Times: 2}, &s); err != nil {
		panic(err)
	}
	fmt.Println(s)

	var re *mesh.RemoteError
	err = a.Call(ctx, b.ID(), "greet", greeting{Name: "mesh"}, &s)
	fmt.Println(errors.As(err, &re), re.Message)

	err = a.Call(ctx, b.ID(), "no-such-tag", nil, nil)
	fmt.Println(errors.Is(err, mesh.ErrUnknownTag))

	var tags []string
	if err := a.Call(ctx, b.ID(), mesh.TagTags, nil, &tags); err != nil {
		panic(err)
	}
	fmt.Println(tags)
	// Output:
	// hello mesh! hello mesh!
	// true times must be positive
	// true
	// [greet info pass_through tags]
}

// A request answered with Reply: the answer is correlated with the request
// by an ID the library keeps.
func ExampleSocket_Request() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b, closeAll := twoNodes(ctx)
	defer closeAll()

	go func() {
		m, err := b.Recv(ctx)
		if err != nil || m.Flag != mesh.FlagRequest {
			return
		}
		_ = m.Reply(ctx, []byte("pong: "+string(m.Packets[0])))
	}()

	ans, err := a.Request(ctx, b.ID(), []byte("ping"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q from b: %v\n", ans.Packets[0], ans.Sender == b.ID())
	// Output:
	// "pong: ping" from b: true
}
