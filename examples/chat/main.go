// Command chat is a terminal chat over a meshsock mesh: every line typed is
// broadcast to every node; "/w <name or id-prefix> text" whispers to one
// node, "/who" lists who is in the chat, "/peers" the direct neighbours,
// "/help" the commands, "/quit" (or end of input) leaves. Others joining
// and leaving are announced. Every -peer address is tried; the chat starts
// if one of them answers.
//
//	go run ./examples/chat -listen 127.0.0.1:4444 -name alice
//	go run ./examples/chat -listen 127.0.0.1:4445 -peer 127.0.0.1:4444 -name bob
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// maxLine bounds a line typed, in bytes: longer ones are refused with a
// message, not sent (and do not end the chat).
const maxLine = 16 << 10

const help = `commands:
  <text>                  send text to everyone
  /w <name or id> <text>  whisper to one node (a name, or a node ID or its first digits)
  /who                    who is in the chat
  /peers                  the nodes this one is linked to directly
  /help                   this list
  /quit                   leave (so does end of input, Ctrl-D)`

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	peers := flag.String("peer", "", "comma-separated addresses of nodes to join through; each is tried")
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

// lockedWriter serialises the lines the chat's goroutines print.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

func run(ctx context.Context, in io.Reader, stdout io.Writer, listen, peers, name string, verbose bool) error {
	out := &lockedWriter{w: stdout}
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
	out.Printf("* %s listening on %s (node %s); /help lists the commands\n", name, node.Addr(), node.ID())
	if err := join(ctx, node, out, peers); err != nil {
		return err
	}

	// Print what arrives and who comes and goes, each on its own
	// goroutine; stopped by cancel and waited for.
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	watch := node.WatchMembers(64)
	defer watch.Close()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			m, err := node.Recv(rctx)
			if err != nil {
				return
			}
			show(node, out, m)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-rctx.Done():
				return
			case ev := <-watch.C:
				switch ev.Kind {
				case mesh.MemberJoined:
					out.Printf("* %s joined\n", nameOf(ev.Member))
				case mesh.MemberLeftEv:
					out.Printf("* %s left\n", nameOf(ev.Member))
				case mesh.MemberFailedEv:
					out.Printf("* %s is gone (no longer heard from)\n", nameOf(ev.Member))
				}
			}
		}
	}()

	lines := make(chan string)
	go readLines(ctx, in, out, lines)
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
			out.Printf("! %v\n", err)
		}
	}
}

// join tries every address of the comma-separated list and says how each
// went; it fails only if addresses were given and none answered.
func join(ctx context.Context, node *mesh.Socket, out *lockedWriter, peers string) error {
	var tried, joined int
	var errs []error
	for _, addr := range strings.Split(peers, ",") {
		if addr = strings.TrimSpace(addr); addr == "" {
			continue
		}
		tried++
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := node.Connect(dctx, addr)
		cancel()
		if err != nil {
			out.Printf("! could not join through %s: %v\n", addr, err)
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		joined++
		out.Printf("* joined through %s\n", addr)
	}
	if tried > 0 && joined == 0 {
		return fmt.Errorf("no -peer address answered: %w", errors.Join(errs...))
	}
	return nil
}

// readLines sends each input line on lines, refusing (with a message) any
// longer than maxLine, and closes lines at the end of input.
func readLines(ctx context.Context, in io.Reader, out *lockedWriter, lines chan<- string) {
	defer close(lines)
	r := bufio.NewReaderSize(in, 4096)
	var buf bytes.Buffer
	tooLong := false
	for {
		chunk, err := r.ReadSlice('\n')
		if len(chunk) > 0 && !tooLong {
			if buf.Len()+len(chunk) > maxLine+1 { // +1: the newline
				tooLong = true
			} else {
				buf.Write(chunk)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			out.Printf("! line too long: at most %d bytes; not sent\n", maxLine)
		} else if buf.Len() > 0 {
			select {
			case lines <- strings.TrimRight(buf.String(), "\r\n"):
			case <-ctx.Done():
				return
			}
		}
		buf.Reset()
		tooLong = false
		if err != nil {
			return
		}
	}
}

// show prints a chat message: [name, text] packets from the chat.
func show(node *mesh.Socket, out *lockedWriter, m *mesh.Message) {
	from := m.Sender.Short()
	if mb, ok := node.Member(m.Sender); ok {
		from = nameOf(mb)
	}
	if len(m.Packets) == 2 {
		from = string(m.Packets[0])
	}
	kind := ""
	if m.Type == mesh.TypeWhisper {
		kind = " (whisper)"
	}
	out.Printf("<%s>%s %s\n", from, kind, m.Packets[len(m.Packets)-1])
}

// nameOf is a member's chat name, or its short ID without one.
func nameOf(m mesh.Member) string {
	if n := m.Meta["name"]; n != "" {
		return n
	}
	return m.ID.Short()
}

// command handles one input line.
func command(ctx context.Context, node *mesh.Socket, out *lockedWriter, name, line string) error {
	line = strings.TrimSpace(line)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	switch {
	case line == "":
		return nil
	case line == "/quit":
		return io.EOF
	case line == "/help":
		out.Printf("%s\n", help)
		return nil
	case line == "/peers":
		for _, p := range node.Peers() {
			dir := "in"
			if p.Outbound {
				dir = "out"
			}
			out.Printf("* %s %-3s %s %s\n", p.ID, dir, p.Addr, p.Meta["name"])
		}
		return nil
	case line == "/who":
		out.Printf("* %s (you)\n", name)
		for _, m := range node.Members(node.Others()) {
			if m.Live() {
				out.Printf("* %s %s\n", nameOf(m), m.ID)
			}
		}
		return nil
	case strings.HasPrefix(line, "/w "):
		fields := strings.SplitN(strings.TrimPrefix(line, "/w "), " ", 2)
		if len(fields) != 2 {
			return errors.New("usage: /w <name or node id> text")
		}
		to, err := findNode(node, fields[0])
		if err != nil {
			return err
		}
		return node.Whisper(sctx, to, []byte(name), []byte(fields[1]))
	case strings.HasPrefix(line, "/"):
		return fmt.Errorf("unknown command %s; /help lists them", strings.Fields(line)[0])
	default:
		return node.Send(sctx, []byte(name), []byte(line))
	}
}

// findNode resolves a full node ID, or a name or ID prefix of a member.
func findNode(node *mesh.Socket, s string) (mesh.NodeID, error) {
	if id, err := mesh.ParseNodeID(s); err == nil {
		return id, nil
	}
	for _, m := range node.Members(node.Others()) {
		if m.Live() && (m.Meta["name"] == s || strings.HasPrefix(m.ID.String(), s)) {
			return m.ID, nil
		}
	}
	return mesh.NodeID{}, fmt.Errorf("no one in the chat matches %q (/who lists them)", s)
}
