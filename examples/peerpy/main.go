// Command peerpy is peerpy's user manual in Go, on a meshsock mesh: peers
// on one host find each other with no address given (peerpy's PING/PONG
// discovery; here on-host discovery over a port range), an offer hook
// accepts or denies each connection (peerpy's "offer" handler; here
// mesh.WithAuthorize), typed data travels as bytes or JSON-like values,
// "data" and "close" events reach the application, and a broadcast goes to
// the connected peers.
//
//	go run ./examples/peerpy
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
	"time"

	"github.com/meshsock/meshsock/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "peerpy:", err)
		os.Exit(1)
	}
}

// reading is the JSON-like value bob sends (peerpy's "json" data type).
type reading struct {
	Sensor string   `cbor:"sensor"`
	Temp   float64  `cbor:"temp"`
	Tags   []string `cbor:"tags"`
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("peerpy", flag.ContinueOnError)
	start := fs.Int("port", 47300, "first TCP port of the range the peers listen on and probe")
	count := fs.Int("range", 8, "ports in the range")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the peers do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 2 || *start <= 0 || *start+*count > 65536 {
		return errors.New("need a range of at least 2 valid ports")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	// The offer hook: every peer's handshake shows its metadata; a peer
	// named mallory is denied.
	offer := func(name string) func(context.Context, mesh.PeerInfo) error {
		return func(_ context.Context, p mesh.PeerInfo) error {
			if p.Meta["name"] == "mallory" {
				return fmt.Errorf("%s does not accept mallory", name)
			}
			return nil
		}
	}
	peer := func(name string, opts ...mesh.Option) (*mesh.Socket, error) {
		return mesh.NewSocket("127.0.0.1", append([]mesh.Option{
			mesh.WithPortRange(*start, *count),
			mesh.WithMetadata(map[string]string{"name": name}),
			mesh.WithAuthorize(offer(name)),
			mesh.WithLogger(logger.With("peer", name)),
		}, opts...)...)
	}
	alice, err := peer("alice", mesh.WithLAN(mesh.LANConfig{OnHost: true}))
	if err != nil {
		return err
	}
	defer alice.Close(context.Background())

	// alice's events, in the order they happen: a connection, data, a
	// close (peerpy's "connect", "data" and "close").
	events := make(chan string, 16)
	alice.Subscribe(func(ev mesh.Event) {
		switch ev.Kind {
		case mesh.EventConnect:
			events <- "alice: connected to " + ev.Peer.Meta["name"]
		case mesh.EventDisconnect:
			if ev.Replaced {
				return // a newer connection to the same peer took its place
			}
			events <- "alice: the connection with " + ev.Peer.Meta["name"] + " closed"
		}
	})
	alice.RegisterHandler(mesh.HandlerFunc(func(m *mesh.Message) bool {
		from := "?"
		if c, ok := alice.Base().Conn(m.Sender); ok {
			from = c.Peer().Meta["name"]
		}
		switch string(m.Packets[0]) {
		case "json":
			var r reading
			if err := mesh.NewDecoder(m.Packets[1]).Decode(&r); err != nil {
				events <- "alice: bad data from " + from + ": " + err.Error()
				return true
			}
			events <- fmt.Sprintf("alice: data from %s (json): %+v", from, r)
		case "bytes":
			events <- fmt.Sprintf("alice: data from %s (bytes): % x", from, m.Packets[1])
		default:
			return false
		}
		return true
	}))

	// bob probes but does not answer probes (Invisible): he finds alice and
	// dials her, and she, not listing him, does not dial him back, so the
	// two have one link from the start.
	bob, err := peer("bob", mesh.WithLAN(mesh.LANConfig{OnHost: true, Invisible: true}))
	if err != nil {
		return err
	}
	defer bob.Close(context.Background())
	fmt.Fprintln(stdout, "alice and bob started, given no address to connect to")

	// Discovery: bob probes the range, finds alice, and they connect.
	found, err := waitDiscover(ctx, bob, alice.ID())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bob discovered alice (%d address) and dialled her\n", len(found.Addrs))
	if err := expect(ctx, events, "alice: connected to bob", stdout); err != nil {
		return err
	}

	// An offer the hook denies: mallory's connection is refused, and she
	// is told so.
	mallory, err := peer("mallory")
	if err != nil {
		return err
	}
	defer mallory.Close(context.Background())
	err = mallory.Connect(ctx, alice.Addr().String())
	if !errors.Is(err, mesh.ErrNotAuthorized) {
		return fmt.Errorf("mallory's offer: %v, want it denied", err)
	}
	fmt.Fprintln(stdout, "mallory's offer to alice was denied (mesh.ErrNotAuthorized)")

	// Typed data: a JSON-like value and raw bytes, each tagged with its type.
	value, err := mesh.EncodeValue(reading{Sensor: "kitchen", Temp: 21.5, Tags: []string{"indoor", "ground floor"}})
	if err != nil {
		return err
	}
	if err := bob.Whisper(ctx, alice.ID(), []byte("json"), value); err != nil {
		return err
	}
	if err := expect(ctx, events, `alice: data from bob (json): {Sensor:kitchen Temp:21.5 Tags:[indoor ground floor]}`, stdout); err != nil {
		return err
	}
	if err := bob.Whisper(ctx, alice.ID(), []byte("bytes"), []byte{0xca, 0xfe, 0x01}); err != nil {
		return err
	}
	if err := expect(ctx, events, "alice: data from bob (bytes): ca fe 01", stdout); err != nil {
		return err
	}

	// A broadcast to the connected peers.
	if err := alice.Send(ctx, []byte("hello, peers")); err != nil {
		return err
	}
	m, err := bob.Recv(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bob got alice's broadcast: %q\n", m.Packets[0])

	// bob leaves: alice's close event.
	if err := bob.Close(ctx); err != nil {
		return err
	}
	return expect(ctx, events, "alice: the connection with bob closed", stdout)
}

// waitDiscover returns what s's discovery lists for node id, asking again
// every 20 ms until it does or ctx ends.
func waitDiscover(ctx context.Context, s *mesh.Socket, id mesh.NodeID) (mesh.Discovered, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		peers, err := s.Discover(ctx)
		if err != nil {
			return mesh.Discovered{}, err
		}
		for _, p := range peers {
			if p.ID == id {
				return p, nil
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return mesh.Discovered{}, fmt.Errorf("bob did not discover alice: %w", ctx.Err())
		}
	}
}

// expect waits for the event want and prints it; another event first is
// an error.
func expect(ctx context.Context, events <-chan string, want string, stdout io.Writer) error {
	select {
	case got := <-events:
		if got != want {
			return fmt.Errorf("event %q, want %q", got, want)
		}
		fmt.Fprintln(stdout, got)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %q: %w", want, ctx.Err())
	}
}
