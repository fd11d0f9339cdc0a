// Command chat is a terminal chat over a meshsock mesh: every line typed is
// broadcast to every node; "/w <id-prefix> text" whispers to one node,
// "/peers" lists neighbours, "/quit" (or end of input) leaves.
//
//	go run ./examples/chat -listen 127.0.0.1:4444 -name alice
//	go run ./examples/chat -listen 127.0.0.1:4445 -peer 127.0.0.1:4444 -name bob
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	peers := flag.String("peer", "", "comma-separated addresses of nodes to join through")
	name := flag.String("name", "", "name shown to others (default: the first digits of the node ID)")
	verbose := flag.Bool("v", false, "log connection events to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdin, os.Stdout, *listen, *peers, *name, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, in io.Reader, out io.Writer, listen, peers, name string, verbose bool) error {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	node, err := mesh.NewSocket(listen, mesh.WithLogger(logger), mesh.WithMetadata(map[string]string{"name": name}))
	if err != nil {
		return err
	}
	defer node.Close(context.Background())
	if name == "" {
		name = node.ID().Short()
	}
	fmt.Fprintf(out, "* %s listening on %s (node %s)\n", name, node.Addr(), node.ID())

	for _, addr := range strings.Split(peers, ",") {
		if addr = strings.TrimSpace(addr); addr == "" {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := node.Connect(dctx, addr)
		cancel()
		if err != nil {
			return fmt.Errorf("joining through %s: %w", addr, err)
		}
		fmt.Fprintf(out, "* joined through %s\n", addr)
	}

	// Print what arrives, on its own goroutine; stopped by cancel and waited for.
	rctx, cancel := context.WithCancel(ctx)
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for {
			m, err := node.Recv(rctx)
			if err != nil {
				return
			}
			from := m.Sender.Short()
			for _, p := range node.Peers() {
				if p.ID == m.Sender && p.Meta["name"] != "" {
					from = p.Meta["name"]
				}
			}
			if len(m.Packets) == 2 {
				from = string(m.Packets[0])
			}
			kind := ""
			if m.Type == mesh.TypeWhisper {
				kind = " (whisper)"
			}
			fmt.Fprintf(out, "<%s>%s %s\n", from, kind, m.Packets[len(m.Packets)-1])
		}
	}()
	defer func() { cancel(); <-printed }()

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
			if !ok {
				return nil
			}
		}
		if err := command(ctx, node, out, name, line); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			fmt.Fprintln(out, "!", err)
		}
	}
}

// command handles one input line.
func command(ctx context.Context, node *mesh.Socket, out io.Writer, name, line string) error {
	line = strings.TrimSpace(line)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch {
	case line == "":
		return nil
	case line == "/quit":
		return io.EOF
	case line == "/peers":
		for _, p := range node.Peers() {
			dir := "in"
			if p.Outbound {
				dir = "out"
			}
			fmt.Fprintf(out, "* %s %-3s %s %s\n", p.ID, dir, p.Addr, p.Meta["name"])
		}
		return nil
	case strings.HasPrefix(line, "/w "):
		fields := strings.SplitN(strings.TrimPrefix(line, "/w "), " ", 2)
		if len(fields) != 2 {
			return errors.New("usage: /w <node-id or prefix> text")
		}
		to, err := findNode(node, fields[0])
		if err != nil {
			return err
		}
		return node.Whisper(sctx, to, []byte(name), []byte(fields[1]))
	default:
		return node.Send(sctx, []byte(name), []byte(line))
	}
}

// findNode resolves a full node ID, or a prefix of a neighbour's ID.
func findNode(node *mesh.Socket, s string) (mesh.NodeID, error) {
	if id, err := mesh.ParseNodeID(s); err == nil {
		return id, nil
	}
	for _, p := range node.Peers() {
		if strings.HasPrefix(p.ID.String(), s) || p.Meta["name"] == s {
			return p.ID, nil
		}
	}
	return mesh.NodeID{}, fmt.Errorf("no neighbour matches %q (give a full node ID to reach others)", s)
}
