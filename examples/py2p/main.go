// Command py2p walks through py2p's mesh tutorial on a meshsock mesh, step
// by step, with three nodes in a line (alice - bob - carol):
//
//   - connecting: Connect returns once the link is usable, so no pause and
//     no check of a routing table is needed after it;
//   - connect events (Subscribe, EventConnect), every time ("on") and once;
//   - a broadcast of several packets (Send), received one at a time (Recv)
//     by a neighbour and by a node two hops away;
//   - a question answered with Message.Reply, received with Recv;
//   - many messages received at once (RecvBatch) and each replied to;
//   - a handler chain (RegisterHandler): the first handler that claims a
//     message stops it, so the second sees only the messages the first
//     left, and those it leaves go on to Recv;
//   - the node's health and counters (Status, Stats);
//   - a node of another protocol (another subnet): py2p fails silently
//     there; here Connect returns an error matching
//     mesh.ErrProtocolMismatch, and the node dialled records the refusal in
//     its Status.
//
// Run it with:
//
//	go run ./examples/py2p
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
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "py2p:", err)
		os.Exit(1)
	}
}

// node is a mesh node with the name the example prints for it.
type node struct {
	*mesh.Socket
	name string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("py2p", flag.ContinueOnError)
	batch := fs.Int("batch", 3, "how many messages carol sends for alice's RecvBatch")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *batch < 1 {
		return errors.New("-batch must be at least 1")
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
	start := func(name string, opts ...mesh.Option) (*node, error) {
		// Discovery off keeps the line as built (no node dials another on
		// its own), so hop counts and events are the same on every run.
		opts = append([]mesh.Option{mesh.WithLogger(logger.With("node", name)), mesh.WithDiscovery(false)}, opts...)
		s, err := mesh.NewSocket("127.0.0.1:0", opts...)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		n := &node{Socket: s, name: name}
		nodes = append(nodes, n)
		return n, nil
	}
	alice, err := start("alice")
	if err != nil {
		return err
	}
	bob, err := start("bob")
	if err != nil {
		return err
	}
	carol, err := start("carol")
	if err != nil {
		return err
	}
	names := map[mesh.NodeID]string{alice.ID(): "alice", bob.ID(): "bob", carol.ID(): "carol"}
	nameOf := func(id mesh.NodeID) string {
		if name, ok := names[id]; ok {
			return name
		}
		return id.Short()
	}

	// py2p's sock.on('connect', ...) and sock.once('connect', ...): a
	// subscription, and one that cancels itself after its first event.
	// Subscribers run on the node's event goroutine, so they pass what
	// they see to this one, which prints it in order.
	onConnect := make(chan mesh.Event, 8)
	onceConnect := make(chan mesh.Event, 8)
	cancelOn := bob.Subscribe(func(e mesh.Event) {
		if e.Kind == mesh.EventConnect {
			onConnect <- e
		}
	})
	defer cancelOn()
	var onceCalls atomic.Int32 // calls of any kind: after its first, none
	var cancelOnce func()
	cancelOnce = bob.Subscribe(func(e mesh.Event) {
		if onceCalls.Add(1) == 1 && e.Kind == mesh.EventConnect {
			onceConnect <- e
			cancelOnce()
		}
	})
	defer cancelOnce()

	fmt.Fprintln(stdout, "bob connects to alice, carol to bob: alice - bob - carol")
	if err := bob.Connect(ctx, alice.Addr().String()); err != nil {
		return fmt.Errorf("bob connecting to alice: %w", err)
	}
	if err := carol.Connect(ctx, bob.Addr().String()); err != nil {
		return fmt.Errorf("carol connecting to bob: %w", err)
	}
	for range 2 {
		e, err := next(ctx, onConnect)
		if err != nil {
			return fmt.Errorf("bob's connect events: %w", err)
		}
		dir := "inbound"
		if e.Peer.Outbound {
			dir = "outbound"
		}
		fmt.Fprintf(stdout, "  bob, on connect: %s (%s)\n", nameOf(e.Peer.ID), dir)
	}
	e, err := next(ctx, onceConnect)
	if err != nil {
		return fmt.Errorf("bob's once-connect event: %w", err)
	}
	fmt.Fprintf(stdout, "  bob, once connect: %s\n", nameOf(e.Peer.ID))

	// py2p's sock.send('this is', 'a test'): each argument is a packet.
	fmt.Fprintln(stdout, `alice sends one broadcast of two packets: "this is", "a test"`)
	if err := alice.Send(ctx, []byte("this is"), []byte("a test")); err != nil {
		return err
	}
	for _, n := range []*node{bob, carol} {
		m, err := n.Recv(ctx)
		if err != nil {
			return fmt.Errorf("%s receiving: %w", n.name, err)
		}
		fmt.Fprintf(stdout, "  %s, Recv: %s from %s, %d hop(s)\n", n.name, packets(m), nameOf(m.Sender), m.Hops)
	}

	// py2p's msg = sock.recv(); msg.reply(...): carol answers the
	// broadcast's sender, two hops away, without a route search.
	fmt.Fprintln(stdout, `alice asks "Did you get this?"; carol replies`)
	if err := alice.Send(ctx, []byte("Did you get this?")); err != nil {
		return err
	}
	if _, err := bob.Recv(ctx); err != nil { // bob gets the question too
		return fmt.Errorf("bob receiving: %w", err)
	}
	q, err := carol.Recv(ctx)
	if err != nil {
		return fmt.Errorf("carol receiving: %w", err)
	}
	if err := q.Reply(ctx, []byte("yes"), []byte("I did")); err != nil {
		return fmt.Errorf("carol replying: %w", err)
	}
	m, err := alice.Recv(ctx)
	if err != nil {
		return fmt.Errorf("alice receiving: %w", err)
	}
	fmt.Fprintf(stdout, "  alice, Recv: %s from %s (%s)\n", packets(m), nameOf(m.Sender), kind(m))

	// py2p's for msg in sock.recv(10): msg.reply(...).
	fmt.Fprintf(stdout, "carol sends %d broadcasts; alice takes them with RecvBatch(10) and replies to each\n", *batch)
	for i := range *batch {
		if err := carol.Send(ctx, fmt.Appendf(nil, "message %d", i+1)); err != nil {
			return err
		}
	}
	if _, err := recvN(ctx, bob.Socket, *batch); err != nil { // bob relays them and gets them too
		return fmt.Errorf("bob receiving: %w", err)
	}
	got, err := recvN(ctx, alice.Socket, *batch)
	if err != nil {
		return fmt.Errorf("alice receiving: %w", err)
	}
	for _, m := range got {
		fmt.Fprintf(stdout, "  alice got %s from %s\n", packets(m), nameOf(m.Sender))
		if err := m.Reply(ctx, []byte("Replying to a list")); err != nil {
			return fmt.Errorf("alice replying: %w", err)
		}
	}
	replies, err := recvN(ctx, carol.Socket, *batch)
	if err != nil {
		return fmt.Errorf("carol receiving the replies: %w", err)
	}
	fmt.Fprintf(stdout, "  carol got %d replies from alice, the first %s\n", len(replies), packets(replies[0]))

	// py2p's register_handler: handlers are tried in order and the first
	// that claims a message (returns true) stops the chain.
	fmt.Fprintln(stdout, `carol registers two handlers: the first claims "test" and answers "success", the second notes what it sees`)
	secondSaw := make(chan string, 16)
	carol.RegisterHandler(mesh.HandlerFunc(func(m *mesh.Message) bool {
		if len(m.Packets) == 0 || string(m.Packets[0]) != "test" {
			return false
		}
		if err := m.Reply(ctx, []byte("success")); err != nil {
			logger.Warn("replying to test", "err", err)
		}
		return true
	}))
	carol.RegisterHandler(mesh.HandlerFunc(func(m *mesh.Message) bool {
		select {
		case secondSaw <- packets(m):
		default:
		}
		return false // left for Recv
	}))
	fmt.Fprintln(stdout, `alice sends "test", then "other"`)
	if err := alice.Send(ctx, []byte("test")); err != nil {
		return err
	}
	if err := alice.Send(ctx, []byte("other")); err != nil {
		return err
	}
	if _, err := recvN(ctx, bob.Socket, 2); err != nil { // bob has no handler: both go to his Recv
		return fmt.Errorf("bob receiving: %w", err)
	}
	m, err = alice.Recv(ctx)
	if err != nil {
		return fmt.Errorf("alice receiving: %w", err)
	}
	fmt.Fprintf(stdout, "  alice, Recv: %s from %s (handler 1 claimed \"test\")\n", packets(m), nameOf(m.Sender))
	m, err = carol.Recv(ctx)
	if err != nil {
		return fmt.Errorf("carol receiving: %w", err)
	}
	fmt.Fprintf(stdout, "  carol, Recv: %s (no handler claimed it)\n", packets(m))
	// carol's messages from bob's link are handled in order, and "other"
	// came after "test": by now handler 2 has seen all it will of the two.
	var saw []string
	for len(secondSaw) > 0 {
		saw = append(saw, <-secondSaw)
	}
	fmt.Fprintf(stdout, "  handler 2 saw: %s\n", strings.Join(saw, ", "))

	fmt.Fprintf(stdout, "bob's once-subscriber was called %d time(s) in all\n", onceCalls.Load())
	fmt.Fprintln(stdout, "status and counters")
	for _, n := range []*node{alice, bob, carol} {
		st := n.Stats()
		fmt.Fprintf(stdout, "  %s: %s; %d broadcast(s) sent, %d whisper(s) sent\n", n.name, n.Status(), st.Originated, st.Whispers)
	}

	// py2p: a different Protocol fails to connect, silently. Here Connect
	// says why, and the node dialled notes the refused handshake.
	fmt.Fprintln(stdout, `dave, on subnet "mesh2", connects to alice, on the default subnet`)
	dave, err := start("dave", mesh.WithProtocol(mesh.Protocol{Subnet: "mesh2", Encryption: mesh.EncryptionTLS}))
	if err != nil {
		return err
	}
	err = dave.Connect(ctx, alice.Addr().String())
	if err == nil {
		return errors.New("dave connected to a node of another subnet")
	}
	fmt.Fprintf(stdout, "  dave, Connect: error; errors.Is(err, mesh.ErrProtocolMismatch) = %t\n", errors.Is(err, mesh.ErrProtocolMismatch))
	st, err := waitStatus(ctx, alice.Socket, func(st mesh.Status) bool { return !st.Healthy })
	if err != nil {
		return fmt.Errorf("alice's status: %w", err)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(stdout, "  alice, Status: a problem, protocol mismatch: %t\n", errors.Is(p.Err, mesh.ErrProtocolMismatch))
	}
	fmt.Fprintf(stdout, "  alice: %d connection(s), %d protocol mismatch(es) counted\n", st.Connections, alice.Stats().ProtocolMismatches)
	return nil
}

// next returns the next event from ch, or an error when ctx ends first.
func next(ctx context.Context, ch <-chan mesh.Event) (mesh.Event, error) {
	select {
	case e := <-ch:
		return e, nil
	case <-ctx.Done():
		return mesh.Event{}, ctx.Err()
	}
}

// recvN takes n messages from s with RecvBatch, which returns as many as
// are waiting (up to its max) once one is; they may come in several
// batches. They are returned in the order they arrived.
func recvN(ctx context.Context, s *mesh.Socket, n int) ([]*mesh.Message, error) {
	var got []*mesh.Message
	for len(got) < n {
		batch, err := s.RecvBatch(ctx, min(10, n-len(got)))
		if err != nil {
			return got, err
		}
		got = append(got, batch...)
	}
	return got, nil
}

// waitStatus polls s.Status until ok accepts it or ctx ends: the node
// dialled records a refused handshake on its own goroutine, after the
// dialler's Connect may have returned.
func waitStatus(ctx context.Context, s *mesh.Socket, ok func(mesh.Status) bool) (mesh.Status, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st := s.Status()
		if ok(st) {
			return st, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// packets formats a message's packets as quoted strings.
func packets(m *mesh.Message) string {
	q := make([]string, len(m.Packets))
	for i, p := range m.Packets {
		q[i] = fmt.Sprintf("%q", p)
	}
	return "[" + strings.Join(q, " ") + "]"
}

// kind names a message's type.
func kind(m *mesh.Message) string {
	if m.Type == mesh.TypeWhisper {
		return "a whisper"
	}
	return "a broadcast"
}

// closeAll closes the nodes concurrently: each waits for its neighbours'
// queues at most briefly.
func closeAll(nodes []*node) {
	var wg sync.WaitGroup
	for _, n := range slices.Clone(nodes) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.Close(context.Background())
		}()
	}
	wg.Wait()
}
