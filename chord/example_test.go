package chord_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"time"

	"github.com/meshsock/meshsock/chord"
)

// startRing starts n nodes, joins them all through the first, and waits
// until every successor and predecessor is right. It returns them in ring
// order (ascending ID). Each node's key comes from a fixed seed, so that
// the IDs, which derive from the keys, are the same on every run.
// Maintenance runs fast so that the example finishes quickly.
func startRing(n int) ([]*chord.Socket, error) {
	var nodes []*chord.Socket
	for i := range n {
		seed := bytes.Repeat([]byte{byte(i + 1)}, ed25519.SeedSize)
		s, err := chord.NewSocket("127.0.0.1:0",
			chord.WithKey(ed25519.NewKeyFromSeed(seed)),
			chord.WithLogger(slog.New(slog.DiscardHandler)),
			chord.WithStabilizeInterval(20*time.Millisecond),
			chord.WithFixFingersInterval(20*time.Millisecond))
		if err != nil {
			closeAll(nodes)
			return nil, err
		}
		nodes = append(nodes, s)
	}
	slices.SortFunc(nodes, func(a, b *chord.Socket) int { return a.ID().Compare(b.ID()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range nodes[1:] {
		if _, err := s.Join(ctx, nodes[0].Addr().String()); err != nil {
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

// name names a node by its place on the ring.
func name(nodes []*chord.Socket, id chord.NodeID) string {
	for i, s := range nodes {
		if s.ID() == id {
			return fmt.Sprintf("node%d", i)
		}
	}
	return id.String()
}

// step returns id+d on the ring (d may be negative).
func step(id chord.NodeID, d int64) chord.NodeID {
	v := new(big.Int).SetBytes(id[:])
	v.Add(v, big.NewInt(d))
	v.Mod(v, new(big.Int).Lsh(big.NewInt(1), 128))
	var out chord.NodeID
	v.FillBytes(out[:])
	return out
}

func closeAll(nodes []*chord.Socket) {
	for _, s := range nodes {
		_ = s.Close(context.Background())
	}
}

// A four-node ring: a key belongs to the first node at or after it, and a
// request for the key is answered by that node, whichever node asks.
func Example() {
	nodes, err := startRing(4)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	for _, s := range nodes {
		me := name(nodes, s.ID())
		s.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
			if !chord.IsRequest(m) {
				return false
			}
			_ = m.Reply(context.Background(), []byte(me+" got "+string(m.Packets[0])))
			return true
		}))
	}
	ctx := context.Background()
	keys := []struct {
		what string
		key  chord.NodeID
	}{
		{"just before node1", step(nodes[1].ID(), -1)},
		{"node1's own ID", nodes[1].ID()},
		{"just after node1", step(nodes[1].ID(), 1)},
		{"just after node3", step(nodes[3].ID(), 1)},
	}
	for _, k := range keys {
		owner, err := nodes[0].Lookup(ctx, k.key)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp, err := nodes[3].Request(ctx, k.key, []byte(k.what))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s is owned by %s; %s\n", k.what, name(nodes, owner.ID), resp.Packets[0])
	}
	// Output:
	// just before node1 is owned by node1; node1 got just before node1
	// node1's own ID is owned by node1; node1 got node1's own ID
	// just after node1 is owned by node2; node2 got just after node1
	// just after node3 is owned by node0; node0 got just after node3
}

// A node that cannot answer a request bounces it to the owner of another
// key; that node's answer goes straight to the original requester.
func ExampleSocket_Bounce() {
	nodes, err := startRing(3)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	requester, front, back := nodes[0], nodes[1], nodes[2]
	front.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
		if err := front.Bounce(context.Background(), m, back.ID()); err != nil {
			fmt.Println("bounce:", err)
		}
		return true
	}))
	back.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
		r, _ := chord.RouteOf(m)
		fmt.Printf("%s answers a request from %s, bounced %d time(s)\n", name(nodes, back.ID()), name(nodes, m.Sender), r.Bounces)
		_ = m.Reply(context.Background(), []byte("42"))
		return true
	}))
	resp, err := requester.Request(context.Background(), front.ID(), []byte("question"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s got %q from %s over a direct link: %v\n",
		name(nodes, requester.ID()), resp.Packets[0], name(nodes, resp.Sender), resp.Conn.ID() == back.ID())
	// Output:
	// node2 answers a request from node0, bounced 1 time(s)
	// node0 got "42" from node2 over a direct link: true
}

// SendTo delivers to the key's owner, one way; a node owns its own ID.
func ExampleSocket_SendTo() {
	nodes, err := startRing(2)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := step(nodes[1].ID(), -5) // owned by node1
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
	fmt.Printf("%s received %q for key %s from %s\n", name(nodes, nodes[1].ID()), m.Packets[0],
		name(nodes, step(r.Key, 5))+"-5", name(nodes, m.Sender))
	// Output:
	// node1 received "hello" for key node1-5 from node0
}
