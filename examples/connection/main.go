// Command connection is app-net's "connection" example over a meshsock
// mesh: peer1 serves a function under a tag, peer2 joins the mesh a few
// hops away, finds peer1 among the mesh's members by the tags each member
// serves, and calls the function there. Then it shows the two ways a call
// fails at once: the function's own error, which comes back as a
// *mesh.RemoteError, and a tag that peer1 does not serve
// (mesh.ErrUnknownTag).
//
//	go run ./examples/connection -relays 2 -message "My Message!"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// tag is the function's tag (app-net's @net.connect("connected_function")).
const tag = "connected_function"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "connection:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("connection", flag.ContinueOnError)
	relays := fs.Int("relays", 1, "nodes between peer2 (the caller) and peer1")
	message := fs.String("message", "My Message!", "what peer2 asks peer1 to print")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *relays < 0 || *message == "" {
		return errors.New("need no negative number of relays and a message")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	out := &lockedWriter{w: stdout}

	// peer1 - relay-1 - … - peer2: each node joins through the one before.
	names := []string{"peer1"}
	for i := range *relays {
		names = append(names, fmt.Sprintf("relay-%d", i+1))
	}
	names = append(names, "peer2")
	nodes, closeAll, err := startLine(ctx, names, *verbose)
	defer closeAll()
	if err != nil {
		return err
	}
	peer1, peer2 := nodes[0], nodes[len(nodes)-1]

	// peer1's function: print the message here, answer how long it was.
	err = peer1.Handle(tag, func(ctx context.Context, from mesh.NodeID, args mesh.Decoder) (any, error) {
		var msg string
		if err := args.Decode(&msg); err != nil {
			return nil, err // the caller gets a *mesh.RemoteError with BadArgs set
		}
		if msg == "" {
			return nil, errors.New("nothing to print")
		}
		fmt.Fprintf(out, "peer1 prints %q (called by %s)\n", msg, nameOf(peer1, from))
		return len(msg), nil
	})
	if err != nil {
		return err
	}

	// peer2 waits until it knows every node of the mesh (app-net's
	// net.peers), then asks each one which tags it serves (the built-in
	// "tags" call) to find who serves the function.
	members, err := peer2.WaitMembers(ctx, len(nodes))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "peer2 knows %d members of the mesh (itself included)\n", len(members))
	var target mesh.NodeID
	found := false
	for _, m := range members {
		if m.ID == peer2.ID() {
			continue
		}
		var tags []string
		if err := peer2.Call(ctx, m.ID, mesh.TagTags, nil, &tags); err != nil {
			return fmt.Errorf("asking %s for its tags: %w", m.Meta["name"], err)
		}
		if slices.Contains(tags, tag) {
			fmt.Fprintf(out, "peer2 finds %s serving %s\n", m.Meta["name"], tag)
			target, found = m.ID, true
		}
	}
	if !found {
		return fmt.Errorf("no member serves %s", tag)
	}

	// The call, across the relays.
	var n int
	if err := peer2.Call(ctx, target, tag, *message, &n); err != nil {
		return fmt.Errorf("calling %s: %w", tag, err)
	}
	fmt.Fprintf(out, "peer2: %s answered %d (bytes printed)\n", nameOf(peer2, target), n)

	// The function's own error comes back as a *mesh.RemoteError.
	err = peer2.Call(ctx, target, tag, "", &n)
	var re *mesh.RemoteError
	if !errors.As(err, &re) {
		return fmt.Errorf("calling with an empty message: want a remote error, got %v", err)
	}
	fmt.Fprintf(out, "peer2: remote error from %s: %s\n", nameOf(peer2, re.Node), re.Message)

	// A tag nobody registered fails at once with mesh.ErrUnknownTag.
	err = peer2.Call(ctx, target, "no_such_function", *message, nil)
	if !errors.Is(err, mesh.ErrUnknownTag) {
		return fmt.Errorf("calling an unknown tag: want mesh.ErrUnknownTag, got %v", err)
	}
	fmt.Fprintf(out, "peer2: %s serves no %q (mesh.ErrUnknownTag)\n", nameOf(peer2, target), "no_such_function")
	return nil
}

// startLine starts one node per name, named in its metadata, each joining
// the mesh through the node before it. closeAll closes those started.
func startLine(ctx context.Context, names []string, verbose bool) (nodes []*mesh.Socket, closeAll func(), err error) {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	closeAll = func() {
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
	for i, name := range names {
		n, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(logger.With("node", name)),
			mesh.WithMetadata(map[string]string{"name": name}))
		if err != nil {
			return nodes, closeAll, err
		}
		nodes = append(nodes, n)
		if i == 0 {
			continue
		}
		if err := n.Connect(ctx, nodes[i-1].Addr().String()); err != nil {
			return nodes, closeAll, fmt.Errorf("%s joining through %s: %w", name, names[i-1], err)
		}
	}
	return nodes, closeAll, nil
}

// nameOf is the name a member gave in its metadata, or its short ID.
func nameOf(node *mesh.Socket, id mesh.NodeID) string {
	if m, ok := node.Member(id); ok && m.Meta["name"] != "" {
		return m.Meta["name"]
	}
	return id.Short()
}

// lockedWriter lets handlers and the main goroutine print to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
