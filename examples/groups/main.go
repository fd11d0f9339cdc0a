// Command groups is app-net's "tagged connection" example over a meshsock
// mesh: two versions of an application serve the same function under one
// tag. Nodes running version 1 are in group "v1" and answer with
// " Version 1" appended; nodes running version 2 are in group "v2" and
// answer with " Version 2". peer3, itself running version 2, picks the
// nodes of each group among the mesh's members (mesh.InGroups) and calls
// the tagged function on each: both versions answer, so a newer
// application can still call an older one by the tag they share.
//
//	go run ./examples/groups -v1 2 -v2 1
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
	"strings"
	"sync"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// tag is the function's tag (app-net's @net.connect("myTaggedFunction")).
const tag = "myTaggedFunction"

// version returns the function a version of the application serves.
func version(n int) mesh.CallHandler {
	return func(ctx context.Context, from mesh.NodeID, args mesh.Decoder) (any, error) {
		var msg string
		if err := args.Decode(&msg); err != nil {
			return nil, err
		}
		return fmt.Sprintf("%s Version %d", msg, n), nil
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "groups:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("groups", flag.ContinueOnError)
	v1 := fs.Int("v1", 1, "nodes running version 1 (group v1)")
	v2 := fs.Int("v2", 1, "nodes running version 2 (group v2), besides peer3")
	message := fs.String("message", "My Message!", "what peer3 passes to the function")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *v1 < 1 || *v2 < 0 {
		return errors.New("need at least one node in v1 and no negative count in v2")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// The nodes of both versions, then peer3 (version 2, the caller); each
	// joins the mesh through the node before it.
	var specs []nodeSpec
	for i := range *v1 {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("v1-peer-%d", i+1), group: "v1", version: 1})
	}
	for i := range *v2 {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("v2-peer-%d", i+1), group: "v2", version: 2})
	}
	specs = append(specs, nodeSpec{name: "peer3", group: "v2", version: 2})
	nodes, closeAll, err := startLine(ctx, specs, *verbose)
	defer closeAll()
	if err != nil {
		return err
	}
	peer3 := nodes[len(nodes)-1]

	// app-net's net.peers(groups=["v1", "v2"]): every member of either
	// group, once peer3 knows them all.
	if _, err := peer3.WaitMembers(ctx, len(nodes), mesh.InGroups("v1", "v2")); err != nil {
		return err
	}
	for _, group := range []string{"v1", "v2"} {
		members := peer3.Members(mesh.InGroups(group), peer3.Others())
		slices.SortFunc(members, func(a, b mesh.Member) int { return strings.Compare(a.Meta["name"], b.Meta["name"]) })
		fmt.Fprintf(stdout, "group %s: %d node(s) besides peer3\n", group, len(members))
		for _, m := range members {
			var answer string
			if err := peer3.Call(ctx, m.ID, tag, *message, &answer); err != nil {
				return fmt.Errorf("calling %s on %s: %w", tag, m.Meta["name"], err)
			}
			fmt.Fprintf(stdout, "  %s (group %s) answered %q\n", m.Meta["name"], m.Group, answer)
		}
	}
	return nil
}

// nodeSpec is one node to start: its name, group and the version of the
// function it serves.
type nodeSpec struct {
	name, group string
	version     int
}

// startLine starts one node per spec, each joining the mesh through the
// node before it. closeAll closes those started.
func startLine(ctx context.Context, specs []nodeSpec, verbose bool) (nodes []*mesh.Socket, closeAll func(), err error) {
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
	for i, sp := range specs {
		n, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(logger.With("node", sp.name)),
			mesh.WithGroup(sp.group), mesh.WithMetadata(map[string]string{"name": sp.name}))
		if err != nil {
			return nodes, closeAll, err
		}
		nodes = append(nodes, n)
		if err := n.Handle(tag, version(sp.version)); err != nil {
			return nodes, closeAll, err
		}
		if i == 0 {
			continue
		}
		if err := n.Connect(ctx, nodes[i-1].Addr().String()); err != nil {
			return nodes, closeAll, fmt.Errorf("%s joining through %s: %w", sp.name, specs[i-1].name, err)
		}
	}
	return nodes, closeAll, nil
}
