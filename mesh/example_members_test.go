package mesh_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Members lists every live node of the mesh, neighbours or not, with the
// group and hub flag each one signed into its record; filters select by
// group, hub, host or ID.
func ExampleSocket_Members() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	var nodes []*mesh.Socket
	for i, group := range []string{"eu", "eu", "us"} {
		n, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithGroup(group), mesh.WithHub(i == 0),
			mesh.WithMetadata(map[string]string{"name": fmt.Sprint("node-", i)}))
		if err != nil {
			panic(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	// a - b - c: c is no neighbour of a, yet a lists it.
	for i := 1; i < len(nodes); i++ {
		if err := nodes[i].Connect(ctx, nodes[i-1].Addr().String()); err != nil {
			panic(err)
		}
	}
	w := nodes[0].WatchMembers(16)
	defer w.Close()
	for len(nodes[0].Members()) < 3 {
		select {
		case <-w.C: // a member joined
		case <-ctx.Done():
			panic("members did not converge")
		}
	}
	fmt.Println("members:", len(nodes[0].Members()))
	for _, m := range nodes[0].Members(mesh.InGroups("us")) {
		fmt.Println("in us:", m.Meta["name"], m.State)
	}
	for _, m := range nodes[0].Members(mesh.HubsOnly()) {
		fmt.Println("hub:", m.Meta["name"])
	}
	// Output:
	// members: 3
	// in us: node-2 alive
	// hub: node-0
}

// SubscribeTopic takes the messages published on a topic anywhere in the
// mesh; nodes that do not subscribe only relay them. A filter selects
// publishers by their member record (here: hubs only).
func ExampleSocket_SubscribeTopic() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := mesh.WithLogger(slog.New(slog.DiscardHandler))

	hub, err := mesh.NewSocket("127.0.0.1:0", quiet, mesh.WithHub(true))
	if err != nil {
		panic(err)
	}
	defer hub.Close(context.Background())
	relay, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer relay.Close(context.Background())
	listener, err := mesh.NewSocket("127.0.0.1:0", quiet)
	if err != nil {
		panic(err)
	}
	defer listener.Close(context.Background())

	sub, err := listener.SubscribeTopic("weather", mesh.HubsOnly())
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	if err := relay.Connect(ctx, hub.Addr().String()); err != nil {
		panic(err)
	}
	if err := listener.Connect(ctx, relay.Addr().String()); err != nil {
		panic(err)
	}
	// The filter needs the hub's member record: wait until it is known.
	for len(listener.Members(mesh.HubsOnly())) == 0 {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			panic("the hub's record did not arrive")
		}
	}
	if err := relay.Publish(ctx, "weather", []byte("rain (not from a hub)")); err != nil {
		panic(err)
	}
	if err := hub.Publish(ctx, "weather", []byte("sun")); err != nil {
		panic(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s from the hub: %v\n", m.Packets[0], m.Sender == hub.ID())
	// Output:
	// sun from the hub: true
}
