// Command dashboard runs a small mesh on this host and serves what an
// operator looks at while it runs: the live view of one node
// (meshview, at /mesh/) and every node's counters for Prometheus
// (metrics, at /metrics). A few nodes broadcast all the time, so the
// rates move.
//
//	go run ./examples/dashboard -nodes 8 -http 127.0.0.1:8080
//
// then open http://127.0.0.1:8080/mesh/ in a browser.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshsock/meshsock/mesh"
	"github.com/meshsock/meshsock/meshview"
	"github.com/meshsock/meshsock/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	n := fs.Int("nodes", 8, "nodes in the mesh (at least 2)")
	addr := fs.String("http", "127.0.0.1:8080", "address to serve the view and the metrics on")
	rate := fs.Duration("every", 20*time.Millisecond, "each sender broadcasts once per this interval")
	verbose := fs.Bool("v", false, "log what the nodes do to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 2 || *rate <= 0 {
		return errors.New("need at least 2 nodes and a positive -every")
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	// A ring with a chord across: node i dials i-1, node 0 is dialled by
	// the last one, and node n/2 dials node 0 too.
	nodes := make([]*mesh.Socket, 0, *n)
	defer func() {
		for _, s := range nodes {
			_ = s.Close(context.Background())
		}
	}()
	reg := prometheus.NewRegistry()
	for i := range *n {
		s, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(logger.With("node", i)), mesh.WithMetadata(map[string]string{"name": fmt.Sprintf("node-%d", i)}))
		if err != nil {
			return err
		}
		nodes = append(nodes, s)
		c, err := metrics.ForMesh(s)
		if err != nil {
			return err
		}
		reg.MustRegister(c)
	}
	edges := [][2]int{{*n - 1, 0}}
	for i := 1; i < *n; i++ {
		edges = append(edges, [2]int{i, i - 1})
	}
	if *n > 3 {
		edges = append(edges, [2]int{*n / 2, 0})
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, e := range edges {
		if err := nodes[e[0]].Connect(cctx, nodes[e[1]].Addr().String()); err != nil && !errors.Is(err, mesh.ErrDuplicate) {
			return fmt.Errorf("connecting node %d to node %d: %w", e[0], e[1], err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/mesh/", http.StripPrefix("/mesh", meshview.Handler(nodes[0])))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "view: http://%s/mesh/\nmetrics: http://%s/metrics\n", ln.Addr(), ln.Addr())

	// Every third node broadcasts; everyone drains what it receives.
	done := make(chan struct{})
	for i, s := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			tick := time.NewTicker(*rate)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if i%3 == 0 {
						_ = s.Send(ctx, []byte(fmt.Sprintf("hello from node %d", i)))
					}
					for {
						if _, ok := s.TryRecv(); !ok {
							break
						}
					}
				}
			}
		}()
	}
	<-ctx.Done()
	for range nodes {
		<-done
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
