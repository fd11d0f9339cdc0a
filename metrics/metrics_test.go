package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/chord"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/mesh"
	"github.com/meshsock/meshsock/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startMesh starts n connected mesh nodes in a line, closed when the test
// ends.
func startMesh(t *testing.T, n int) []*mesh.Socket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nodes []*mesh.Socket
	for i := range n {
		s, err := mesh.NewSocket("127.0.0.1:0", mesh.WithLogger(testnet.Logger(t)), mesh.WithMembership(false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		if i > 0 {
			if err := s.Connect(ctx, nodes[i-1].Addr().String()); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, s)
	}
	return nodes
}

// numericFields counts the fields a Collector must export for a Stats
// type: every number and bool, embedded structs included.
func numericFields(t reflect.Type) int {
	n := 0
	for i := range t.NumField() {
		f := t.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			n += numericFields(f.Type)
		case f.Type.Kind() == reflect.Array, f.Type.Kind() >= reflect.Bool && f.Type.Kind() <= reflect.Float64:
			n++
		}
	}
	return n
}

// scrape serves reg over HTTP as Prometheus would read it and returns the
// text.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestScrapeMesh: two mesh nodes in one registry; the scrape shows every
// Stats field of each, counters as counters, gauges as gauges, with the
// values the nodes report.
func TestScrapeMesh(t *testing.T) {
	nodes := startMesh(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 5 {
		if err := nodes[0].Send(ctx, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		if _, err := nodes[2].Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	for _, n := range nodes[:2] {
		c, err := metrics.ForMesh(n)
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(c)
	}
	text := scrape(t, reg)
	a, b := nodes[0].ID().Short(), nodes[1].ID().Short()
	for _, want := range []string{
		"# TYPE meshsock_mesh_originated_total counter",
		`meshsock_mesh_originated_total{node="` + a + `"} 5`,
		`meshsock_mesh_relayed_total{node="` + b + `"} 5`,
		"# TYPE meshsock_base_connections gauge",
		`meshsock_base_connections{node="` + b + `"} 2`,
		"# TYPE meshsock_base_retained_bytes gauge", // a uint64 tagged as a gauge
		"# TYPE meshsock_mesh_neighbours gauge",
		"# TYPE meshsock_member_sent_total counter",        // MemberStats
		"# TYPE meshsock_member_interval_seconds gauge",    // a Duration
		`meshsock_member_suspect_after_seconds{node="` + a, // in seconds, not ns
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	want := nodes[0].MemberStats().SuspectAfter.Seconds()
	if !strings.Contains(text, fmt.Sprintf(`meshsock_member_suspect_after_seconds{node="%s"} %g`, a, want)) {
		t.Errorf("suspect_after is not %g seconds", want)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if want := numericFields(reflect.TypeFor[mesh.Stats]()) + numericFields(reflect.TypeFor[mesh.MemberStats]()); len(families) != want {
		t.Errorf("%d metric families, want one per Stats field: %d", len(families), want)
	}
	for _, f := range families {
		if len(f.GetMetric()) != 2 {
			t.Errorf("%s has %d series, want one per node", f.GetName(), len(f.GetMetric()))
		}
	}
}

// TestLint: the names and help texts follow Prometheus' conventions.
func TestLint(t *testing.T) {
	nodes := startMesh(t, 1)
	c, err := metrics.ForMesh(nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestChordHistogram: chord's Stats has an array (hop counts); each element
// is a series with an index label.
func TestChordHistogram(t *testing.T) {
	s, err := chord.NewSocket("127.0.0.1:0", chord.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	c, err := metrics.ForChord(s)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	text := scrape(t, reg)
	hops := len(s.Stats().Hops)
	if n := strings.Count(text, "meshsock_chord_hops_total{"); n != hops {
		t.Errorf("%d hop series, want %d", n, hops)
	}
	if !strings.Contains(text, "# TYPE meshsock_chord_has_predecessor gauge") {
		t.Error("chord's bool field is not a gauge")
	}
}

func TestNewRejectsNonStruct(t *testing.T) {
	if _, err := metrics.New("x", "n", func() int { return 1 }); err == nil || !strings.Contains(err.Error(), "struct") {
		t.Fatalf("New with an int stats function: %v, want ErrNotStats", err)
	}
}

func TestSnakeNames(t *testing.T) {
	type group struct{ Sent uint64 }
	type stats struct {
		Group              group
		BytesIn            uint64
		VerifyBacklogBytes uint64 `metric:"gauge"`
		HopsMean           float64
		PeerIDs            int
		TLSBytes           int
	}
	c, err := metrics.New("t", "n", func() stats { return stats{BytesIn: 3} })
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	text := scrape(t, reg)
	for _, want := range []string{`meshsock_t_bytes_in_total{node="n"} 3`, "meshsock_t_verify_backlog_bytes{", "meshsock_t_hops_mean{", "meshsock_t_peer_ids{", "meshsock_t_tls_bytes{", "meshsock_t_group_sent_total{"} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q:\n%s", want, text)
		}
	}
}
