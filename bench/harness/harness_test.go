package harness

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func payloadFor(k int) []byte {
	p := make([]byte, PayloadHeader)
	binary.LittleEndian.PutUint32(p, uint32(k))
	return p
}

func TestTrackerCountsOnceAndCompletes(t *testing.T) {
	tr := newTracker(3, 130, 4, 7)
	k := 129 // in the third bitset word
	tr.window <- struct{}{}
	tr.sending(k, true)
	o := tr.origin(k)
	others := []int{}
	for i := 0; i < 3; i++ {
		if i != o {
			others = append(others, i)
		}
	}
	tr.deliver(o, payloadFor(k)) // an echo to the origin
	tr.deliver(others[0], payloadFor(k))
	tr.deliver(others[0], payloadFor(k))
	if tr.completed.Load() != 0 || len(tr.window) != 1 {
		t.Fatalf("completed early: %d, window %d", tr.completed.Load(), len(tr.window))
	}
	tr.deliver(others[1], payloadFor(k))
	if tr.completed.Load() != 1 || len(tr.window) != 0 {
		t.Fatalf("not completed: %d, window %d", tr.completed.Load(), len(tr.window))
	}
	if got := tr.duplicates.Load(); got != 2 {
		t.Errorf("duplicates = %d, want 2 (the echo and the repeat)", got)
	}
	tr.deliver(0, payloadFor(500))
	tr.deliver(0, []byte{1})
	if got := tr.bogus.Load(); got != 2 {
		t.Errorf("bogus = %d, want 2", got)
	}
	if m, a := tr.missing(130); m != 129 || a != 129*2 {
		t.Errorf("missing = %d broadcasts, %d arrivals", m, a)
	}
	if got := tr.arrivals(130); got != 2 {
		t.Errorf("arrivals = %d, want 2", got)
	}
	if l := tr.latencies(130); len(l) != 1 || l[0] < 0 {
		t.Errorf("latencies = %v", l)
	}
}

func TestTrackerLatencyIsTheLargest(t *testing.T) {
	tr := newTracker(3, 1, 1, 1)
	tr.window <- struct{}{}
	tr.sending(0, false)
	var others []int
	for i := 0; i < 3; i++ {
		if i != tr.origin(0) {
			others = append(others, i)
		}
	}
	tr.deliverLatency(others[0], 0, 900)
	tr.deliverLatency(others[1], 0, 300)
	if l := tr.latencies(1); len(l) != 1 || l[0] != 900 {
		t.Errorf("coverage latency = %v, want [900]", l)
	}
}

func TestOriginsSpread(t *testing.T) {
	tr := newTracker(16, 16000, 1, 3)
	counts := make([]int, 16)
	for k := 0; k < 16000; k++ {
		counts[tr.origin(k)]++
	}
	for i, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("node %d originates %d of 16000", i, c)
		}
	}
}

func TestTopology(t *testing.T) {
	for _, tc := range []struct {
		topo      string
		n, degree int
	}{{"line", 5, 2}, {"ring", 6, 2}, {"random", 16, 4}, {"random", 64, 4}, {"random", 10, 8}} {
		cfg := Default()
		cfg.Topology, cfg.Nodes, cfg.Degree = tc.topo, tc.n, tc.degree
		topo := cfg.BuildTopology()
		if topo.MaxOut > tc.degree {
			t.Errorf("%s %d: a node dials %d > degree %d", tc.topo, tc.n, topo.MaxOut, tc.degree)
		}
		per, perDelivery := topo.FloodFrames()
		if want := float64(2*len(topo.Edges) - (tc.n - 1)); per != want || perDelivery != want/float64(tc.n-1) {
			t.Errorf("%s %d: flood frames %.1f (%.2f per delivery), want %.1f", tc.topo, tc.n, per, perDelivery, want)
		}
	}
	cfg := Default()
	cfg.Topology, cfg.Nodes = "line", 4
	if _, per := cfg.BuildTopology().FloodFrames(); per != 1 {
		t.Errorf("a line costs %.2f frames per delivery, want 1", per)
	}
}

func TestSummarize(t *testing.T) {
	var v []int64
	for i := int64(1); i <= 1000; i++ {
		v = append(v, i)
	}
	l := summarize(v)
	if l.P50 != 500 || l.P90 != 900 || l.P99 != 990 || l.Max != 1000 || l.Min != 1 || l.Count != 1000 {
		t.Errorf("summary %+v", l)
	}
	if summarize(nil).Count != 0 {
		t.Error("empty summary")
	}
}

func TestSummarizeHops(t *testing.T) {
	// 50 calls of 1 hop, 40 of 2, 9 of 3, 1 of 40.
	hist := make([]int64, 41)
	hist[1], hist[2], hist[3], hist[40] = 50, 40, 9, 1
	h := summarizeHops(hist)
	// The same ranks as summarize over the values themselves.
	var values []int64
	for v, n := range hist {
		for range n {
			values = append(values, int64(v))
		}
	}
	l := summarize(values)
	if h.P50 != int(l.P50) || h.P90 != int(l.P90) || h.P99 != int(l.P99) || h.Max != 40 || h.Mean != (50+80+27+40)/100.0 {
		t.Errorf("summary %+v, want as %+v", h, l)
	}
	if h.P50 != 1 || h.P90 != 2 || h.P99 != 3 {
		t.Errorf("summary %+v", h)
	}
	b := hopBuckets(hist)
	if b[1] != 50 || b[3] != 9 || b[len(b)-1] != 1 {
		t.Errorf("buckets %v: 40 hops belong in the last", b)
	}
	if h := summarizeHops(nil); h.Max != 0 || h.Mean != 0 {
		t.Errorf("empty summary %+v", h)
	}
}

func TestValidate(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	cfg.Nodes, cfg.Size, cfg.Compression = 1, 3, "nope"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"nodes", "size", "compression"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestRunRawAndMesh(t *testing.T) {
	cfg := Default()
	cfg.Nodes, cfg.Messages, cfg.Degree, cfg.Window, cfg.Senders = 5, 40, 2, 4, 2
	for _, raw := range []bool{false, true} {
		r, err := Run(context.Background(), cfg, raw)
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() || r.Deliveries != 40*4 {
			t.Errorf("%s: %+v", r.Mode, r)
		}
		var b bytes.Buffer
		r.WriteText(&b)
		if !strings.Contains(b.String(), "OK: every broadcast") {
			t.Errorf("report:\n%s", b.String())
		}
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	cfg := Default()
	cfg.Nodes, cfg.Messages, cfg.Window, cfg.Duration = 3, 1_000_000, 2, 200*time.Millisecond
	start := time.Now()
	r, err := Run(context.Background(), cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("a 200ms run took %v", el)
	}
	if r.Sent == 0 || r.Sent >= cfg.Messages || !r.OK() {
		t.Errorf("sent %d, ok %v, problems %q", r.Sent, r.OK(), r.Problems)
	}
}

func TestSVG(t *testing.T) {
	rows := []SweepRow{{Param: "nodes", Value: 8}, {Param: "nodes", Value: 16}}
	for i := range rows {
		rows[i].Mesh = &Result{Topology: "random", DeliveriesPerSec: float64(100000 * (i + 1)), Latency: Latency{P50: Dur(time.Millisecond), P99: Dur(3 * time.Millisecond)}}
		rows[i].Raw = &Result{DeliveriesPerSec: 300000, Latency: Latency{P99: Dur(time.Millisecond)}}
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, rows); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	if !strings.HasPrefix(s, "<svg") || strings.Count(s, "<polyline") != 5 || !strings.HasSuffix(s, "</svg>\n") {
		t.Errorf("svg:\n%s", s)
	}
	if niceStep(0.7) != 1 || niceStep(13) != 20 || niceStep(4.2e5) != 5e5 {
		t.Error("niceStep")
	}
}

func TestRunPaced(t *testing.T) {
	cfg := Default()
	cfg.Nodes, cfg.Messages, cfg.Degree, cfg.Rate = 3, 100, 2, 1000
	start := time.Now()
	r, err := Run(context.Background(), cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Errorf("100 broadcasts paced at 1000/s took %v", el)
	}
	if !r.OK() || r.BroadcastsPerSec > 1300 {
		t.Errorf("ok %v, %.0f broadcasts/s at a pace of 1000/s", r.OK(), r.BroadcastsPerSec)
	}
}
