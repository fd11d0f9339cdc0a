package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshsock/meshsock/mesh"
	"github.com/meshsock/meshsock/metrics"
)

// A node's counters served on /metrics for Prometheus to scrape.
func ExampleForMesh() {
	node, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	defer node.Close(context.Background())

	c, err := metrics.ForMesh(node)
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux) // in a program: http.ListenAndServe(":9100", mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# TYPE meshsock_mesh_originated_total") || strings.HasPrefix(line, "meshsock_base_connections{") {
			fmt.Println(strings.Replace(line, node.ID().Short(), "<node>", 1))
		}
	}
	// Output:
	// meshsock_base_connections{node="<node>"} 0
	// # TYPE meshsock_mesh_originated_total counter
}
