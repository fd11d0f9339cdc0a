package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/bench/harness"
)

func TestMain(m *testing.M) {
	// In procs mode the test binary is re-executed as a node.
	if os.Getenv(childEnv) == "1" {
		os.Exit(harness.ChildMain(os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}

// runJSON runs the bench command with args and decodes its JSON record.
func runJSON(t *testing.T, args ...string) map[string]json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	err = run(ctx, append([]string{"-json", "-progress", "off"}, args...), &out, &errOut, false,
		[]string{exe, "-test.run=^$"}, []string{childEnv + "=1"})
	if err != nil {
		t.Fatalf("bench %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	return rep
}

// decode decodes one result of a JSON record.
func decode[T any](t *testing.T, raw json.RawMessage) *T {
	t.Helper()
	var r T
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func result(t *testing.T, raw json.RawMessage) *harness.Result { return decode[harness.Result](t, raw) }

func checkComplete(t *testing.T, r *harness.Result, nodes, messages int) {
	t.Helper()
	want := int64(messages) * int64(nodes-1)
	if r.Lost != 0 || r.Duplicates != 0 || r.Deliveries != want || r.Sent != messages || r.SendErrors != 0 || !r.OK() {
		t.Errorf("%s: lost %d, duplicates %d, deliveries %d (want %d), sent %d of %d, send errors %d, problems %q",
			r.Mode, r.Lost, r.Duplicates, r.Deliveries, want, r.Sent, messages, r.SendErrors, r.Problems)
	}
	if r.Latency.Count != messages || r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 {
		t.Errorf("%s: latency summary %+v", r.Mode, r.Latency)
	}
	if r.FramesOut == 0 || r.FramesPerDelivery < 1 {
		t.Errorf("%s: frames out %d, per delivery %.2f", r.Mode, r.FramesOut, r.FramesPerDelivery)
	}
}

func TestInProcessWithBaseline(t *testing.T) {
	rep := runJSON(t, "-nodes", "4", "-messages", "50", "-topology", "ring", "-degree", "2", "-window", "8", "-senders", "2", "-baseline")
	mesh, raw := result(t, rep["Mesh"]), result(t, rep["Raw"])
	checkComplete(t, mesh, 4, 50)
	checkComplete(t, raw, 4, 50)
	if mesh.Mode != harness.ModeMesh || raw.Mode != harness.ModeRaw {
		t.Errorf("modes %q and %q", mesh.Mode, raw.Mode)
	}
	// On a ring every node forwards once to its other neighbour and the
	// origin sends two: 2E-(N-1) = 5 frames for 3 deliveries.
	if mesh.FloodBound < 1.66 || mesh.FloodBound > 1.67 || mesh.FramesPerDelivery > mesh.FloodBound+0.05 {
		t.Errorf("frames per delivery %.3f, flood bound %.3f", mesh.FramesPerDelivery, mesh.FloodBound)
	}
	if _, ok := rep["MeshOverRaw"]; !ok {
		t.Error("no mesh/raw comparison in the report")
	}
}

func TestRandomTopologyCompressed(t *testing.T) {
	rep := runJSON(t, "-nodes", "6", "-messages", "60", "-size", "2048", "-compression", "snappy", "-window", "4")
	r := result(t, rep["Mesh"])
	checkComplete(t, r, 6, 60)
	if r.BytesPerDelivery >= 2048*r.FramesPerDelivery {
		t.Errorf("compression did not shrink the wire bytes: %.0f B per delivery at %.2f frames", r.BytesPerDelivery, r.FramesPerDelivery)
	}
}

func TestProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	rep := runJSON(t, "-procs", "-nodes", "3", "-messages", "50", "-topology", "line", "-window", "4")
	r := result(t, rep["Mesh"])
	checkComplete(t, r, 3, 50)
	if r.Mode != harness.ModeProcs {
		t.Errorf("mode %q", r.Mode)
	}
	if r.Mallocs == 0 || r.CPU <= 0 {
		t.Errorf("children reported no allocations (%d) or CPU (%v)", r.Mallocs, r.CPU)
	}
}

func TestSweepAndSVG(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "sweep.svg")
	rep := runJSON(t, "-sweep", "nodes=3,5", "-messages", "30", "-degree", "2", "-svg", svg)
	var rows []harness.SweepRow
	if err := json.Unmarshal(rep["Sweep"], &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Value != 3 || rows[1].Value != 5 {
		t.Fatalf("sweep rows: %+v", rows)
	}
	for _, row := range rows {
		checkComplete(t, row.Mesh, row.Value, 30)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("<svg")) || !bytes.Contains(b, []byte("polyline")) {
		t.Errorf("not an SVG plot: %.200s", b)
	}

	// The saved record prints and plots again without a run.
	saved := filepath.Join(t.TempDir(), "sweep.json")
	raw, _ := json.Marshal(rep)
	if err := os.WriteFile(saved, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "again.svg")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-from", saved, "-svg", again}, &out, &errOut, false, nil, nil); err != nil {
		t.Fatalf("-from: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "deliv/s") || !strings.Contains(out.String(), "plot written") {
		t.Errorf("-from printed:\n%s", out.String())
	}
	if b2, err := os.ReadFile(again); err != nil || !bytes.Equal(b, b2) {
		t.Errorf("replotted SVG differs (%v)", err)
	}
}

func TestTextReport(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-nodes", "3", "-messages", "20", "-progress", "on"}, &out, &errOut, false, nil, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, want := range []string{"every broadcast reached every node exactly once", "deliveries/s", "coverage latency", "p99", "frames/delivery", "allocs/delivery", "not a leak", "terms:", "docs/performance.md"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "(done)") {
		t.Errorf("no final progress line on stderr: %q", errOut.String())
	}
}

// chordArgs make a small chord run quick: fast maintenance, so that the
// ring converges in a few rounds.
var chordArgs = []string{"-mode", "chord", "-stabilize", "50ms", "-fix-fingers", "50ms", "-senders", "3"}

// checkChord checks that every call was made and answered by the right
// node, and that the figures hang together.
func checkChord(t *testing.T, r *harness.ChordResult, nodes, lookups, requests int) {
	t.Helper()
	if r.Mode != harness.ModeChord || r.Nodes != nodes || !r.OK() || len(r.Problems) > 0 || r.Checked == 0 {
		t.Errorf("chord %d nodes: mode %q, ok %v, checked %d, problems %q", nodes, r.Mode, r.OK(), r.Checked, r.Problems)
	}
	for _, ph := range []struct {
		name string
		p    *harness.ChordPhase
		want int
	}{{"lookups", r.Lookups, lookups}, {"requests", r.Requests, requests}} {
		p := ph.p
		if p == nil {
			t.Fatalf("no %s phase", ph.name)
		}
		n := int64(ph.want)
		if p.Requested != ph.want || p.Done != n || p.Answered != n || p.Wrong != 0 || p.Errors != 0 || p.ReplyErrors != 0 {
			t.Errorf("%s: requested %d, done %d, answered %d (want %d), wrong %d, errors %d, reply errors %d; %s",
				ph.name, p.Requested, p.Done, p.Answered, ph.want, p.Wrong, p.Errors, p.ReplyErrors, p.FirstProblem)
		}
		if p.Latency.Count != ph.want || p.Latency.P50 <= 0 || p.Latency.Max < p.Latency.P99 || p.PerSec <= 0 {
			t.Errorf("%s: latency %+v, %.0f/s", ph.name, p.Latency, p.PerSec)
		}
		var calls int64
		for _, c := range p.Hops.Histogram {
			calls += c
		}
		if calls != n || !p.Hops.StatsAgree || p.Hops.Max >= nodes || p.Hops.P99 > p.Hops.Max || p.Hops.Mean > float64(p.Hops.Max) {
			t.Errorf("%s: hops %+v", ph.name, p.Hops)
		}
		// Each call sends at least its answer, unless the caller owned
		// the key; a hop is a frame too.
		if p.FramesOut == 0 || p.Mallocs == 0 || p.PeakGoroutines == 0 || p.PeakHeap == 0 {
			t.Errorf("%s: frames %d, allocations %d, goroutines %d, heap %d", ph.name, p.FramesOut, p.Mallocs, p.PeakGoroutines, p.PeakHeap)
		}
	}
}

func TestChord(t *testing.T) {
	rep := runJSON(t, append(chordArgs, "-nodes", "5", "-messages", "100", "-requests", "50")...)
	if _, ok := rep["Mesh"]; ok {
		t.Error("a chord run reported a mesh result")
	}
	checkChord(t, decode[harness.ChordResult](t, rep["Chord"]), 5, 100, 50)
}

func TestChordSweepAndText(t *testing.T) {
	rep := runJSON(t, append(chordArgs, "-sweep", "nodes=3,4", "-messages", "40", "-requests", "20")...)
	var rows []harness.SweepRow
	if err := json.Unmarshal(rep["Sweep"], &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Value != 3 || rows[1].Value != 4 || rows[0].Mesh != nil {
		t.Fatalf("sweep rows: %+v", rows)
	}
	for _, row := range rows {
		checkChord(t, row.Chord, row.Value, 40, 20)
	}
	// The saved sweep prints as a table.
	saved := filepath.Join(t.TempDir(), "chord.json")
	raw, _ := json.Marshal(rep)
	if err := os.WriteFile(saved, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-from", saved}, &out, &errOut, false, nil, nil); err != nil {
		t.Fatalf("-from: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"lookups/s", "requests/s", "hops p50"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sweep table lacks %q:\n%s", want, out.String())
		}
	}

	// The text report of a single run, with its progress line.
	out.Reset()
	errOut.Reset()
	args := append(chordArgs, "-nodes", "3", "-messages", "30", "-requests", "10", "-progress", "on")
	if err := run(context.Background(), args, &out, &errOut, false, nil, nil); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, want := range []string{"OK: every lookup agreed with the oracle", "lookup latency", "request hops", "allocs", "peak goroutines", "converged in"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "requests 10/10") || !strings.Contains(errOut.String(), "(done)") {
		t.Errorf("no final progress line on stderr: %q", errOut.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-nodes", "1"},
		{"-topology", "star"},
		{"-compression", "lzma"},
		{"-sweep", "colour=1,2"},
		{"-svg", "x.svg"},
		{"-size", "4"},
		{"-mode", "ring"},
		{"-requests", "5"},
		{"-mode", "chord", "-degree", "3"},
		{"-mode", "chord", "-baseline"},
		{"-mode", "chord", "-sweep", "window=1,2"},
		{"-mode", "chord", "-max-links", "4"},
		{"-mode", "chord", "-stabilize", "0s"},
		{"-mode", "chord", "-burst"},
		{"-mode", "chord", "-sweep", "mode=flood"},
		{"-sweep", "mode=nosuch"},
		{"-send-queue", "-1"},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut, false, nil, nil); err == nil {
			t.Errorf("bench %v: no error", args)
		}
	}
}
