// Command lan starts nodes that are given no address to connect to: each
// binds the first free port of a range on 127.0.0.1 (app-net's PORT_START
// and PORT_RANGE), finds the others by probing that range (on-host LAN
// discovery), and dials them, so that they form one mesh by themselves.
// It then prints what each node found and sends a broadcast through the
// mesh they made.
//
//	go run ./examples/lan -nodes 3
//
// On a real network, mesh.WithLAN(mesh.LANConfig{}) without OnHost does the
// same with broadcast probes (see docs/mesh.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lan:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lan", flag.ContinueOnError)
	n := fs.Int("nodes", 3, "nodes to start")
	start := fs.Int("port", 47100, "first TCP port of the range (each node's UDP discovery port is its TCP port)")
	count := fs.Int("range", 8, "ports in the range")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr, and how long finding took")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 2 || *n > *count {
		return fmt.Errorf("need 2 to %d nodes (the range's ports), got %d", *count, *n)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	began := time.Now()
	names := map[mesh.NodeID]string{}
	var nodes []*mesh.Socket
	defer func() {
		for _, s := range nodes {
			_ = s.Close(context.Background())
		}
	}()
	for i := range *n {
		// No address to connect to: only a host, a port range and
		// on-host discovery.
		s, err := mesh.NewSocket("127.0.0.1",
			mesh.WithPortRange(*start, *count),
			mesh.WithLAN(mesh.LANConfig{OnHost: true}),
			mesh.WithLogger(logger.With("node", i+1)))
		if err != nil {
			return fmt.Errorf("starting node %d: %w", i+1, err)
		}
		nodes = append(nodes, s)
		names[s.ID()] = fmt.Sprintf("node-%d", i+1)
	}
	fmt.Fprintf(stdout, "%d nodes started with no address to connect to\n", *n)

	// Each node lists the others.
	found := make([][]string, len(nodes))
	for i, s := range nodes {
		for {
			peers, err := s.Discover(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", names[s.ID()], err)
			}
			found[i] = found[i][:0]
			for _, p := range peers {
				found[i] = append(found[i], names[p.ID])
			}
			if len(found[i]) == *n-1 {
				break
			}
			if err := pause(ctx, 20*time.Millisecond); err != nil {
				return fmt.Errorf("%s found %d of %d nodes: %w", names[s.ID()], len(found[i]), *n-1, err)
			}
		}
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "all %d nodes found each other %v after the first started\n", *n, time.Since(began))
	}
	for i, f := range found {
		slices.Sort(f)
		fmt.Fprintf(stdout, "%s found %d node(s): %s\n", names[nodes[i].ID()], len(f), strings.Join(f, " "))
	}

	// They dial what they found: one mesh, which a broadcast crosses.
	for !connected(nodes) {
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("the nodes did not form one mesh: %w", err)
		}
	}
	if err := nodes[0].Send(ctx, []byte("hello")); err != nil {
		return err
	}
	var reached []string
	for _, s := range nodes[1:] {
		m, err := s.Recv(ctx)
		if err != nil {
			return fmt.Errorf("%s got no broadcast: %w", names[s.ID()], err)
		}
		reached = append(reached, fmt.Sprintf("%s (%q)", names[s.ID()], m.Packets[0]))
	}
	fmt.Fprintf(stdout, "one mesh: node-1's broadcast reached %s\n", strings.Join(reached, ", "))
	return nil
}

// connected reports whether the nodes' links join them all.
func connected(nodes []*mesh.Socket) bool {
	reached := map[mesh.NodeID]bool{nodes[0].ID(): true}
	queue := []*mesh.Socket{nodes[0]}
	byID := map[mesh.NodeID]*mesh.Socket{}
	for _, s := range nodes {
		byID[s.ID()] = s
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, p := range s.Peers() {
			if o, ok := byID[p.ID]; ok && !reached[p.ID] {
				reached[p.ID] = true
				queue = append(queue, o)
			}
		}
	}
	return len(reached) == len(nodes)
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
