// Command ring starts a few chord nodes in one process, joins them into a
// ring, sends a message to a few random keys and prints which node owns
// each key and how many hops the message took; then the nodes leave the
// ring gracefully and the program exits.
//
//	go run ./examples/ring -nodes 16 -keys 8
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/meshsock/meshsock/chord"
)

func main() {
	nodes := flag.Int("nodes", 8, "number of nodes on the ring")
	keys := flag.Int("keys", 5, "number of random keys to send to")
	verbose := flag.Bool("v", false, "log what the nodes do")
	flag.Parse()
	if err := run(*nodes, *keys, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "ring:", err)
		os.Exit(1)
	}
}

// delivery is what an owner saw of a message.
type delivery struct {
	owner chord.NodeID
	key   chord.NodeID
	hops  int
	from  chord.NodeID
	text  string
}

func run(n, k int, verbose bool) error {
	if n < 1 || k < 0 {
		return errors.New("need at least one node and no negative number of keys")
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts := []chord.Option{
		chord.WithLogger(logger),
		// Fast maintenance so that a small demo ring settles in well under
		// a second; the defaults suit long-running nodes.
		chord.WithStabilizeInterval(25 * time.Millisecond),
		chord.WithFixFingersInterval(25 * time.Millisecond),
		chord.WithCheckPredecessorInterval(100 * time.Millisecond),
	}

	deliveries := make(chan delivery, k)
	var ring []*chord.Socket
	defer func() {
		// Close concurrently: each node hands over to its neighbours.
		var wg sync.WaitGroup
		for _, s := range ring {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.Close(context.Background())
			}()
		}
		wg.Wait()
	}()
	for i := range n {
		s, err := chord.NewSocket("127.0.0.1:0", opts...)
		if err != nil {
			return err
		}
		ring = append(ring, s)
		owner := s.ID()
		s.RegisterHandler(chord.HandlerFunc(func(m *chord.Message) bool {
			r, ok := chord.RouteOf(m)
			if !ok || len(m.Packets) == 0 {
				return false
			}
			select {
			case deliveries <- delivery{owner: owner, key: r.Key, hops: r.Hops, from: m.Sender, text: string(m.Packets[0])}:
			default:
			}
			return true
		}))
		if i == 0 {
			continue
		}
		via := ring[rand.IntN(i)]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = s.Join(ctx, via.Addr().String())
		cancel()
		if err != nil {
			return fmt.Errorf("node %s joining via %s: %w", s.ID().Short(), via.ID().Short(), err)
		}
	}
	start := time.Now()
	if err := waitStable(ring, 30*time.Second); err != nil {
		return err
	}
	fmt.Printf("%d nodes joined; the ring was stable %v after the last join\n", n, time.Since(start).Round(time.Millisecond))
	ids := make([]chord.NodeID, len(ring))
	for i, s := range ring {
		ids[i] = s.ID()
	}
	slices.SortFunc(ids, func(a, b chord.NodeID) int { return a.Compare(b) })
	for _, id := range ids {
		fmt.Printf("  node %s\n", id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fmt.Printf("sending to %d random keys:\n", k)
	for i := range k {
		key := chord.NewKey()
		from := ring[rand.IntN(len(ring))]
		res, err := from.LookupDetail(ctx, key)
		if err != nil {
			return fmt.Errorf("lookup of %s: %w", key, err)
		}
		if err := from.SendTo(ctx, key, []byte(fmt.Sprintf("message %d", i))); err != nil {
			return fmt.Errorf("send to %s: %w", key, err)
		}
		var d delivery
		select {
		case d = <-deliveries:
		case <-ctx.Done():
			return fmt.Errorf("message %d was not delivered: %w", i, ctx.Err())
		}
		want, _ := chord.Owner(ids, key)
		check := "ok"
		if d.owner != want || res.Owner.ID != want || d.key != key {
			check = "WRONG, expected " + want.Short()
		}
		fmt.Printf("  key %s: owner %s (lookup from %s: hops=%d, %v); %q delivered, hops=%d [%s]\n",
			key, d.owner.Short(), from.ID().Short(), res.Hops, res.Elapsed.Round(time.Microsecond), d.text, d.hops, check)
	}
	var forwarded, stabilizations uint64
	for _, s := range ring {
		st := s.Stats()
		forwarded += st.Forwarded
		stabilizations += st.Stabilizations
	}
	fmt.Printf("the nodes ran %d stabilize rounds and relayed %d routed messages (mostly their own finger lookups); leaving the ring\n",
		stabilizations, forwarded)
	return nil
}

// waitStable waits until every node's successor is the next ID on the ring
// and its predecessor the previous one.
func waitStable(ring []*chord.Socket, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if stable(ring) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ring not stable after %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stable(ring []*chord.Socket) bool {
	sorted := slices.Clone(ring)
	slices.SortFunc(sorted, func(a, b *chord.Socket) int { return a.ID().Compare(b.ID()) })
	n := len(sorted)
	if n == 1 {
		return true
	}
	for i, s := range sorted {
		pred, ok := s.Predecessor()
		if s.Successor().ID != sorted[(i+1)%n].ID() || !ok || pred.ID != sorted[(i+n-1)%n].ID() {
			return false
		}
	}
	return true
}
