// Command p2py runs p2py's examples on a meshsock chord ring:
//
//   - node B joins node A's ring (Join returns once it has joined: no
//     polling of a "joined" flag) and sends a text message to A's ID
//     (SendTo); A prints it;
//   - a custom "ADD" request, which A answers with n+1: B asks for 17 and
//     gets 18 (Request, and a handler that answers with Message.Reply);
//     a request it cannot serve gets an error answer, not silence;
//   - a request bounced: node C, which does not serve "ADD", passes a
//     request on to A's ID (Bounce), and A's answer still reaches B, the
//     node that asked;
//   - the network size, as each node finds it by walking the ring.
//
// A message here is a few packets, as p2py's is a dictionary: the first is
// its type ("TEXT", "ADD", "ADD RESP"), the second its data, as text.
//
// Run it with:
//
//	go run ./examples/p2py
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshsock/meshsock/chord"
)

// The message types, p2py's 'type' field.
const (
	typeText    = "TEXT"
	typeAdd     = "ADD"
	typeAddResp = "ADD RESP"
	typeAddErr  = "ADD ERROR"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "p2py:", err)
		os.Exit(1)
	}
}

// node is a chord node with the name the example prints for it.
type node struct {
	*chord.Socket
	name string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("p2py", flag.ContinueOnError)
	text := fs.String("text", "Hi!", "the text message B sends to A")
	number := fs.Int64("n", 17, "the number B asks A to add 1 to")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *text == "" {
		return errors.New("-text must not be empty")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var nodes []*node
	defer func() { closeAll(nodes) }()
	var namesMu sync.Mutex
	names := make(map[chord.NodeID]string)
	start := func(name string, seed byte) (*node, error) {
		s, err := chord.NewSocket("127.0.0.1:0",
			// A key made from a fixed seed gives the same ID, the same
			// place on the ring, on every run, so that the output does not
			// change; a real node uses chord.LoadOrCreateKey.
			chord.WithKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))),
			chord.WithLogger(logger.With("node", name)),
			// Fast maintenance, so that a ring of three settles at once;
			// the defaults suit long-running nodes.
			chord.WithStabilizeInterval(20*time.Millisecond),
			chord.WithFixFingersInterval(20*time.Millisecond),
			chord.WithCheckPredecessorInterval(100*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		n := &node{Socket: s, name: name}
		nodes = append(nodes, n)
		namesMu.Lock()
		names[n.ID()] = name
		namesMu.Unlock()
		fmt.Fprintf(stdout, "%s listens; its ID is %s\n", name, n.ID())
		return n, nil
	}
	// nameOf runs in handlers too, while nodes start.
	nameOf := func(id chord.NodeID) string {
		namesMu.Lock()
		defer namesMu.Unlock()
		if name, ok := names[id]; ok {
			return name
		}
		return id.Short()
	}

	a, err := start("A", 1)
	if err != nil {
		return err
	}
	// A's handler: prints text messages and answers ADD requests. What
	// it prints goes through a channel, so that this goroutine prints
	// everything in order.
	printed := make(chan string, 8)
	say := func(format string, args ...any) {
		select {
		case printed <- fmt.Sprintf(format, args...):
		case <-ctx.Done():
		}
	}
	a.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
		r, ok := chord.RouteOf(m)
		if !ok || len(m.Packets) != 2 {
			return false
		}
		switch string(m.Packets[0]) {
		case typeText:
			say("A: (%s) -> %q", nameOf(r.Origin.ID), m.Packets[1])
			return true
		case typeAdd:
			if !chord.IsRequest(m) {
				return false
			}
			n, err := strconv.ParseInt(string(m.Packets[1]), 10, 64)
			if err != nil {
				// An answer that says what is wrong, rather than none (the
				// requester would wait out its timeout).
				_ = m.Reply(ctx, []byte(typeAddErr), []byte("not a number"))
				return true
			}
			bounced := ""
			if r.Bounces > 0 {
				bounced = fmt.Sprintf(", bounced %d time(s) on the way", r.Bounces)
			}
			say("A: ADD %d requested by %s%s; answering %d", n, nameOf(r.Origin.ID), bounced, n+1)
			if err := m.Reply(ctx, []byte(typeAddResp), strconv.AppendInt(nil, n+1, 10)); err != nil {
				logger.Warn("answering ADD", "err", err)
			}
			return true
		}
		return false
	}))
	next := func() (string, error) {
		select {
		case line := <-printed:
			return line, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}

	// Node B joins A's ring and sends a text message to A's ID.
	b, err := start("B", 2)
	if err != nil {
		return err
	}
	if _, err := b.Join(ctx, a.Addr().String()); err != nil {
		return fmt.Errorf("B joining A's ring: %w", err)
	}
	fmt.Fprintln(stdout, "B joined A's ring")
	if err := b.SendTo(ctx, a.ID(), []byte(typeText), []byte(*text)); err != nil {
		return fmt.Errorf("B sending to A: %w", err)
	}
	fmt.Fprintf(stdout, "B: sent a %s message to %s's ID\n", typeText, nameOf(a.ID()))
	line, err := next()
	if err != nil {
		return fmt.Errorf("waiting for A to print the text: %w", err)
	}
	fmt.Fprintln(stdout, line)

	// A custom request: B asks A to add 1.
	resp, err := b.Request(ctx, a.ID(), []byte(typeAdd), strconv.AppendInt(nil, *number, 10))
	if err != nil {
		return fmt.Errorf("B's ADD request: %w", err)
	}
	if line, err = next(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, line)
	sum, err := answer(resp)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "B: %d + 1 = %d (answered by %s)\n", *number, sum, nameOf(resp.Sender))
	// A request A cannot serve gets an answer that says so, not silence.
	resp, err = b.Request(ctx, a.ID(), []byte(typeAdd), []byte("seventeen"))
	if err != nil {
		return fmt.Errorf("B's bad ADD request: %w", err)
	}
	if _, err := answer(resp); err != nil {
		fmt.Fprintf(stdout, "B: ADD \"seventeen\": %v\n", err)
	} else {
		return errors.New(`A added 1 to "seventeen"`)
	}

	// Node C joins; it does not serve ADD, so it bounces ADD requests to
	// A's ID. The answer goes straight from A to the node that asked.
	c, err := start("C", 3)
	if err != nil {
		return err
	}
	c.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
		if !chord.IsRequest(m) || len(m.Packets) == 0 || string(m.Packets[0]) != typeAdd {
			return false
		}
		say("C: cannot answer ADD; bouncing it to %s's ID", nameOf(a.ID()))
		if err := c.Bounce(ctx, m, a.ID()); err != nil {
			logger.Warn("bouncing ADD", "err", err)
		}
		return true
	}))
	if _, err := c.Join(ctx, a.Addr().String()); err != nil {
		return fmt.Errorf("C joining A's ring: %w", err)
	}
	fmt.Fprintln(stdout, "C joined A's ring")
	// A request to C's ID reaches C once the ring knows where C is: the
	// other nodes learn of it over the next stabilize rounds.
	if err := waitStable(ctx, nodes); err != nil {
		return err
	}
	resp, err = b.Request(ctx, c.ID(), []byte(typeAdd), strconv.AppendInt(nil, *number+1, 10))
	if err != nil {
		return fmt.Errorf("B's ADD request to C: %w", err)
	}
	for range 2 { // C's bounce, then A's answer
		if line, err = next(); err != nil {
			return err
		}
		fmt.Fprintln(stdout, line)
	}
	if sum, err = answer(resp); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "B: asked C: %d + 1 = %d (answered by %s)\n", *number+1, sum, nameOf(resp.Sender))

	// p2py's network_size: chord has no count of the nodes; walking the
	// ring from a node, successor after successor, finds them all. The
	// count is exact only while the ring is stable (no node joining or
	// leaving during the walk); each step is a lookup of O(log N) hops, so
	// it suits small rings.
	for _, n := range nodes {
		size, err := ringSize(ctx, n.Socket, 1000)
		if err != nil {
			return fmt.Errorf("walking the ring from %s: %w", n.name, err)
		}
		fmt.Fprintf(stdout, "network size, walking the ring from %s: %d\n", n.name, size)
	}
	return nil
}

// answer reads an answer to ADD: "ADD RESP" and the number, or
// "ADD ERROR" and what was wrong.
func answer(resp *chord.Message) (int64, error) {
	if len(resp.Packets) != 2 {
		return 0, fmt.Errorf("answer to ADD of %d packets", len(resp.Packets))
	}
	switch string(resp.Packets[0]) {
	case typeAddResp:
		return strconv.ParseInt(string(resp.Packets[1]), 10, 64)
	case typeAddErr:
		return 0, fmt.Errorf("A answered %s: %s", typeAddErr, resp.Packets[1])
	}
	return 0, fmt.Errorf("unexpected answer to ADD: %q", resp.Packets)
}

// ringSize counts the nodes on s's ring by walking it: from s, it looks up
// the owner of the key just past each node, which is that node's
// successor, until the walk comes back to s. It gives up past max nodes,
// since on a ring that changes during the walk it may never come back.
func ringSize(ctx context.Context, s *chord.Socket, max int) (int, error) {
	seen := map[chord.NodeID]bool{s.ID(): true}
	cur := s.ID()
	for {
		next, err := s.Lookup(ctx, chord.FingerStart(cur, 0)) // cur + 1
		if err != nil {
			return 0, err
		}
		if next.ID == s.ID() {
			return len(seen), nil
		}
		if seen[next.ID] {
			return 0, fmt.Errorf("the walk met %s twice without coming back: the ring is changing", next.ID.Short())
		}
		if len(seen) == max {
			return 0, fmt.Errorf("more than %d nodes", max)
		}
		seen[next.ID] = true
		cur = next.ID
	}
}

// waitStable waits until every node's successor is the next ID on the
// ring and its predecessor the one before, or ctx ends.
func waitStable(ctx context.Context, nodes []*node) error {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b *node) int { return a.ID().Compare(b.ID()) })
	stable := func() bool {
		for i, n := range sorted {
			pred, ok := n.Predecessor()
			if n.Successor().ID != sorted[(i+1)%len(sorted)].ID() || !ok || pred.ID != sorted[(i+len(sorted)-1)%len(sorted)].ID() {
				return false
			}
		}
		return true
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !stable() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the ring to settle: %w", ctx.Err())
		}
	}
	return nil
}

// closeAll closes the nodes concurrently: each hands over to its
// neighbours as it leaves.
func closeAll(nodes []*node) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.Close(context.Background())
		}()
	}
	wg.Wait()
}
