// Command hubs is app-net's "subscription" example over a meshsock mesh:
// the nodes of group "myApp" publish events on the topic "myEvent"; some
// of them are hubs (mesh.WithHub). The listener subscribes to the topic
// with the mesh.HubsOnly filter, so it receives the hubs' events only: the
// events the other nodes publish reach it too (a second subscription,
// without a filter, shows them) but are filtered out. Last, the listener
// leaves and a hub publishes again: a publisher never fails for lack of
// subscribers.
//
//	go run ./examples/hubs -hubs 1 -peers 2 -message hello
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

// topic is the event's name (app-net's @net.event("myEvent")).
const topic = "myEvent"

// event is what a node publishes: app-net's events carry the arguments
// the event was triggered with; here, a typed value (mesh.PublishValue).
type event struct {
	From string `cbor:"from"`
	Text string `cbor:"text"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hubs:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hubs", flag.ContinueOnError)
	hubs := fs.Int("hubs", 1, "hub nodes")
	peers := fs.Int("peers", 2, "nodes that are not hubs")
	message := fs.String("message", "hello", "what each node publishes")
	timeout := fs.Duration("timeout", 20*time.Second, "how long the example may take")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *hubs < 1 || *peers < 0 {
		return errors.New("need at least one hub and no negative number of peers")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// hub-1 … peer-1 … listener: each joins through the node before it, so
	// events from the first nodes cross the others on their way.
	var specs []nodeSpec
	for i := range *hubs {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("hub-%d", i+1), hub: true})
	}
	for i := range *peers {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("peer-%d", i+1)})
	}
	specs = append(specs, nodeSpec{name: "listener"})
	nodes, closeAll, err := startLine(ctx, specs, *verbose)
	defer closeAll()
	if err != nil {
		return err
	}
	listener := nodes[len(nodes)-1]
	publishers := nodes[:len(nodes)-1]

	// app-net's @net.subscribe("myEvent", hubs_only=True). The filter is
	// subscribed first: a node hands a message to its subscriptions in the
	// order they were made, so once the unfiltered one has a message, the
	// filtered one has taken or refused it.
	fromHubs, err := listener.SubscribeTopic(topic, mesh.HubsOnly())
	if err != nil {
		return err
	}
	defer fromHubs.Close()
	everything, err := listener.SubscribeTopic(topic)
	if err != nil {
		return err
	}
	defer everything.Close()

	// The filter reads the publisher's member record: wait until the
	// listener has every node's, so that a non-hub's event is filtered out
	// for what its record says, not for want of one.
	if _, err := listener.WaitMembers(ctx, len(nodes), mesh.InGroups("myApp")); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listener knows %d hub(s) among %d members\n",
		len(listener.Members(mesh.HubsOnly())), len(listener.Members()))

	for i, n := range publishers {
		if err := n.PublishValue(ctx, topic, event{From: specs[i].name, Text: *message}); err != nil {
			return fmt.Errorf("%s publishing: %w", specs[i].name, err)
		}
	}

	// Every event reaches the listener…
	var all []string
	for range publishers {
		ev, err := next(ctx, everything)
		if err != nil {
			return fmt.Errorf("unfiltered subscription: %w", err)
		}
		all = append(all, ev.From)
	}
	slices.Sort(all)
	fmt.Fprintf(stdout, "published by %v\n", all)

	// …and the hubs-only subscription holds the hubs' events, no others.
	var got []string
	for range *hubs {
		ev, err := next(ctx, fromHubs)
		if err != nil {
			return fmt.Errorf("hubs-only subscription: %w", err)
		}
		got = append(got, fmt.Sprintf("%q from %s", ev.Text, ev.From))
	}
	slices.Sort(got)
	for _, g := range got {
		fmt.Fprintf(stdout, "listener received %s\n", g)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if ev, err := next(done, fromHubs); err == nil {
		return fmt.Errorf("hubs-only subscription got an event from %s, not a hub", ev.From)
	}
	fmt.Fprintf(stdout, "filtered out: %d event(s) from nodes that are not hubs\n", len(all)-len(got))

	// The listener goes; a hub that publishes is not failed by it.
	fromHubs.Close()
	everything.Close()
	if err := listener.Close(ctx); err != nil {
		return err
	}
	if err := nodes[0].PublishValue(ctx, topic, event{From: specs[0].name, Text: "anyone there?"}); err != nil {
		return fmt.Errorf("publishing without subscribers: %w", err)
	}
	fmt.Fprintf(stdout, "%s published again with no subscriber left: ok\n", specs[0].name)
	return nil
}

// next decodes the next event of a subscription.
func next(ctx context.Context, sub *mesh.Subscription) (event, error) {
	var ev event
	m, err := sub.Next(ctx)
	if err != nil {
		return ev, err
	}
	return ev, mesh.DecodeMessage(m, &ev)
}

// nodeSpec is one node to start: its name and whether it is a hub.
type nodeSpec struct {
	name string
	hub  bool
}

// startLine starts one node per spec, all in group "myApp", each joining
// the mesh through the node before it. closeAll closes those started.
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
			mesh.WithGroup("myApp"), mesh.WithHub(sp.hub), mesh.WithMetadata(map[string]string{"name": sp.name}))
		if err != nil {
			return nodes, closeAll, err
		}
		nodes = append(nodes, n)
		if i == 0 {
			continue
		}
		if err := n.Connect(ctx, nodes[i-1].Addr().String()); err != nil {
			return nodes, closeAll, fmt.Errorf("%s joining through %s: %w", sp.name, specs[i-1].name, err)
		}
	}
	return nodes, closeAll, nil
}
