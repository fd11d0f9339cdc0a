package chord_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/chord"
	"github.com/meshsock/meshsock/protocol"
)

// startRing starts one node per ID (sorted ascending), joins them all
// through the first, and waits until every successor and predecessor is
// right. Maintenance runs fast so that the example finishes quickly.
func startRing(ids ...string) ([]*chord.Socket, error) {
	var nodes []*chord.Socket
	for _, id := range ids {
		s, err := chord.NewSocket("127.0.0.1:0",
			chord.WithNodeID(protocol.MustParseNodeID(id)),
			chord.WithLogger(slog.New(slog.DiscardHandler)),
			chord.WithStabilizeInterval(20*time.Millisecond),
			chord.WithFixFingersInterval(20*time.Millisecond))
		if err != nil {
			closeAll(nodes)
			return nil, err
		}
		nodes = append(nodes, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range nodes[1:] {
		if err := s.Join(ctx, nodes[0].Addr().String()); err != nil {
			closeAll(nodes)
			return nil, err
		}
	}
	for !stable(nodes) {
		select {
		case <-ctx.Done():
			closeAll(nodes)
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nodes, nil
}

// stable reports whether each node's successor is the next ID and its
// predecessor the previous one.
func stable(nodes []*chord.Socket) bool {
	n := len(nodes)
	for i, s := range nodes {
		pred, ok := s.Predecessor()
		if s.Successor().ID != nodes[(i+1)%n].ID() || !ok || pred.ID != nodes[(i+n-1)%n].ID() {
			return false
		}
	}
	return true
}

func closeAll(nodes []*chord.Socket) {
	for _, s := range nodes {
		_ = s.Close(context.Background())
	}
}

// A four-node ring: a key belongs to the first node at or after it, and a
// request for the key is answered by that node, whichever node asks.
func Example() {
	nodes, err := startRing(
		"20000000-0000-0000-0000-000000000000",
		"60000000-0000-0000-0000-000000000000",
		"a0000000-0000-0000-0000-000000000000",
		"e0000000-0000-0000-0000-000000000000")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	for _, s := range nodes {
		name := s.ID().Short()
		s.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
			if !chord.IsRequest(m) {
				return false
			}
			_ = m.Reply(context.Background(), []byte(name+" got "+string(m.Packets[0])))
			return true
		}))
	}
	ctx := context.Background()
	for _, k := range []string{"10000000", "60000000", "70000000", "f0000000"} {
		key := protocol.MustParseNodeID(k + "-0000-0000-0000-000000000000")
		owner, err := nodes[0].Lookup(ctx, key)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp, err := nodes[3].Request(ctx, key, []byte("key "+k))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s is owned by %s; %s\n", k, owner.ID.Short(), resp.Packets[0])
	}
	// Output:
	// 10000000 is owned by 20000000; 20000000 got key 10000000
	// 60000000 is owned by 60000000; 60000000 got key 60000000
	// 70000000 is owned by a0000000; a0000000 got key 70000000
	// f0000000 is owned by 20000000; 20000000 got key f0000000
}

// A node that cannot answer a request bounces it to the owner of another
// key; that node's answer goes straight to the original requester.
func ExampleSocket_Bounce() {
	nodes, err := startRing(
		"20000000-0000-0000-0000-000000000000",
		"60000000-0000-0000-0000-000000000000",
		"a0000000-0000-0000-0000-000000000000")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	requester, front, back := nodes[0], nodes[1], nodes[2]
	front.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if err := front.Bounce(context.Background(), m, back.ID()); err != nil {
			fmt.Println("bounce:", err)
		}
		return true
	}))
	back.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		r, _ := chord.RouteOf(m)
		fmt.Printf("%s answers a request from %s, bounced %d time(s)\n", back.ID().Short(), m.Sender.Short(), r.Bounces)
		_ = m.Reply(context.Background(), []byte("42"))
		return true
	}))
	resp, err := requester.Request(context.Background(), front.ID(), []byte("question"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s got %q from %s over a direct link: %v\n",
		requester.ID().Short(), resp.Packets[0], resp.Sender.Short(), resp.Conn.ID() == back.ID())
	// Output:
	// a0000000 answers a request from 20000000, bounced 1 time(s)
	// 20000000 got "42" from a0000000 over a direct link: true
}

// SendTo delivers to the key's owner, one way; a node owns its own ID.
func ExampleSocket_SendTo() {
	nodes, err := startRing(
		"20000000-0000-0000-0000-000000000000",
		"a0000000-0000-0000-0000-000000000000")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := protocol.MustParseNodeID("90000000-0000-0000-0000-000000000000")
	if err := nodes[0].SendTo(ctx, key, []byte("hello")); err != nil {
		fmt.Println(err)
		return
	}
	m, err := nodes[1].Recv(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	r, _ := chord.RouteOf(m)
	fmt.Printf("%s received %q for key %s from %s\n", nodes[1].ID().Short(), m.Packets[0], r.Key.Short(), m.Sender.Short())
	// Output:
	// a0000000 received "hello" for key 90000000 from 20000000
}
