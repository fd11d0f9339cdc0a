package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshsock/meshsock/bench/harness"
)

func TestParseSweep(t *testing.T) {
	for _, tc := range []struct {
		flags  []string
		mode   string
		param  string
		values []int
		modes  []string
	}{
		{[]string{"nodes=16,64,256,1024"}, harness.ModeMesh, "nodes", []int{16, 64, 256, 1024}, nil},
		{[]string{"nodes=16,64", "mode=flood"}, harness.ModeMesh, "nodes", []int{16, 64}, []string{"flood"}},
		{[]string{"mode=flood;nodes=8"}, harness.ModeMesh, "nodes", []int{8}, []string{"flood"}},
		{[]string{"mode=flood nodes=8"}, harness.ModeMesh, "nodes", []int{8}, []string{"flood"}},
		{[]string{"mode=flood"}, harness.ModeMesh, "", nil, []string{"flood"}},
		{[]string{"send-queue=4,4096"}, harness.ModeMesh, "send-queue", []int{4, 4096}, nil},
		{[]string{"requests=10,20"}, harness.ModeChord, "requests", []int{10, 20}, nil},
		{nil, harness.ModeMesh, "", nil, nil},
	} {
		spec, err := parseSweep(tc.flags, tc.mode)
		if err != nil {
			t.Errorf("%q: %v", tc.flags, err)
			continue
		}
		if spec.param != tc.param || !slices.Equal(spec.values, tc.values) || !slices.Equal(spec.modes, tc.modes) {
			t.Errorf("%q: got %+v", tc.flags, spec)
		}
	}
	for _, tc := range []struct {
		flags []string
		mode  string
		want  string // in the error
	}{
		{[]string{"nodes"}, harness.ModeMesh, "name=v1"},
		{[]string{"nodes="}, harness.ModeMesh, "name=v1"},
		{[]string{" ; "}, harness.ModeMesh, "name=v1"},
		{[]string{"nodes=a"}, harness.ModeMesh, "nodes"},
		{[]string{"colour=1"}, harness.ModeMesh, "mode=flood"},
		{[]string{"nodes=4", "size=64"}, harness.ModeMesh, "one numeric parameter"},
		{[]string{"mode=flood,nosuch"}, harness.ModeMesh, `"nosuch"`},
		{[]string{"mode=flood,flood"}, harness.ModeMesh, "twice"},
		{[]string{"mode=flood", "mode=flood"}, harness.ModeMesh, "twice"},
		{[]string{"mode=flood"}, harness.ModeChord, "chord"},
		{[]string{"window=1"}, harness.ModeChord, "window"},
	} {
		_, err := parseSweep(tc.flags, tc.mode)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q (%s): error %v, want one containing %q", tc.flags, tc.mode, err, tc.want)
		}
	}
}

func TestSweepPoints(t *testing.T) {
	spec := sweepSpec{param: "nodes", values: []int{16, 64}, modes: []string{"flood", "x"}}
	var got []string
	for _, r := range spec.points() {
		got = append(got, r.Param+"="+r.Label())
	}
	// The modes of one size run back to back.
	if want := []string{"nodes=16 flood", "nodes=16 x", "nodes=64 flood", "nodes=64 x"}; !slices.Equal(got, want) {
		t.Errorf("points %q, want %q", got, want)
	}
	rows := sweepSpec{modes: []string{"flood"}}.points()
	if len(rows) != 1 || rows[0].Param != "mode" || rows[0].Label() != "flood" {
		t.Errorf("mode-only points %+v", rows)
	}
	if rows := (sweepSpec{param: "size", values: []int{64, 128}}).points(); len(rows) != 2 || rows[1].Label() != "128" || rows[1].Broadcast != "" {
		t.Errorf("size points %+v", rows)
	}
}

func TestPlotPath(t *testing.T) {
	mesh := func(param string, v int, mode string) harness.SweepRow {
		return harness.SweepRow{Param: param, Value: v, Broadcast: mode, Mesh: &harness.Result{}}
	}
	two := []harness.SweepRow{mesh("nodes", 16, ""), mesh("nodes", 64, "")}
	modes := []harness.SweepRow{mesh("nodes", 16, "flood"), mesh("nodes", 16, "x"), mesh("nodes", 64, "flood"), mesh("nodes", 64, "x")}
	for _, tc := range []struct {
		name string
		flag string
		rows []harness.SweepRow
		want string
	}{
		{"two sizes by default", svgAuto, two, "bench-sweep-nodes.svg"},
		{"sizes and modes by default", svgAuto, modes, "bench-sweep-nodes-flood-x.svg"},
		{"turned off", svgOff, two, ""},
		{"a path of one's own", "out/s.svg", two, "out/s.svg"},
		{"one point", svgAuto, two[:1], ""},
		{"one size in two modes", svgAuto, modes[:2], ""},
		{"modes only", svgAuto, []harness.SweepRow{mesh("mode", 0, "flood"), mesh("mode", 0, "x")}, ""},
		{"chord", svgAuto, []harness.SweepRow{{Param: "nodes", Value: 4, Chord: &harness.ChordResult{}}, {Param: "nodes", Value: 8, Chord: &harness.ChordResult{}}}, ""},
		{"no sweep", svgAuto, nil, ""},
	} {
		if got := plotPath(tc.flag, tc.rows); got != tc.want {
			t.Errorf("%s: plot path %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestApplyBurst(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Int("window", 0, "")
	fs.Int("send-queue", 0, "")
	fs.Duration("drain", 0, "")
	if err := fs.Parse([]string{"-window", "7"}); err != nil {
		t.Fatal(err)
	}
	cfg := harness.Default()
	cfg.Window = 7
	applyBurst(fs, &cfg)
	// What the command line set stays; the rest is the burst's.
	if cfg.Window != 7 || cfg.SendQueue != burstSendQueue || cfg.Drain != burstDrain {
		t.Errorf("window %d, send queue %d, drain %v", cfg.Window, cfg.SendQueue, cfg.Drain)
	}
}

// A sweep of sizes and modes runs every point, prints the scale columns and
// writes its plot where -svg auto puts it, in the working directory; -svg
// off writes none.
func TestSweepModesPlotsByDefault(t *testing.T) {
	t.Chdir(t.TempDir())
	rep := runJSON(t, "-sweep", "nodes=3,4", "-sweep", "mode=flood", "-messages", "20", "-degree", "2")
	var rows []harness.SweepRow
	if err := json.Unmarshal(rep["Sweep"], &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Broadcast != "flood" || rows[1].Value != 4 {
		t.Fatalf("rows %+v", rows)
	}
	for _, row := range rows {
		r := row.Mesh
		checkComplete(t, r, row.Value, 20)
		if r.Broadcast != "flood" || r.Setup <= 0 || r.HeapPerNode <= 0 || r.StackPerNode <= 0 || r.PeakHeapPerNode <= 0 || r.GoroutinesPerNode <= 0 {
			t.Errorf("%d nodes: mode %q, setup %v, heap per node %.0f, peak %.0f, goroutines per node %.1f",
				row.Value, r.Broadcast, r.Setup, r.HeapPerNode, r.PeakHeapPerNode, r.GoroutinesPerNode)
		}
	}
	b, err := os.ReadFile("bench-sweep-nodes-flood.svg")
	if err != nil || !bytes.Contains(b, []byte("heap per node")) {
		t.Errorf("default plot: %v", err)
	}

	var out, errOut bytes.Buffer
	dir := t.TempDir()
	t.Chdir(dir)
	args := []string{"-sweep", "nodes=3,4", "-messages", "10", "-degree", "2", "-svg", "off", "-progress", "off"}
	if err := run(context.Background(), args, &out, &errOut, false, nil, nil); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 || strings.Contains(out.String(), "plot written") {
		t.Errorf("-svg off wrote %q", files)
	}
	for _, want := range []string{"heap/node", "gor/node", "stack/node", "setup", "relay drops"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sweep table lacks %q:\n%s", want, out.String())
		}
	}
}

// The burst workload shrinks the send queues and reports relay drops;
// -mode names the broadcast mode.
func TestBurstAndMode(t *testing.T) {
	rep := runJSON(t, "-mode", "flood", "-burst", "-send-queue", "64", "-nodes", "4", "-messages", "30", "-degree", "2")
	r := result(t, rep["Mesh"])
	checkComplete(t, r, 4, 30) // queues of 64 hold a window of 30
	if r.SendQueue != 64 || r.Window != burstWindow || r.Broadcast != "flood" {
		t.Errorf("send queue %d, window %d, mode %q", r.SendQueue, r.Window, r.Broadcast)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-burst", "-nodes", "3", "-messages", "10", "-progress", "off"}, &out, &errOut, false, nil, nil); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "send queues of 16 messages") || !strings.Contains(out.String(), "drops  ") {
		t.Errorf("burst report:\n%s", out.String())
	}
}

// -setupprofile profiles the setup, -cpuprofile the load after it, and
// -heapprofile the heap with the nodes still up: three files, one run.
func TestProfiles(t *testing.T) {
	dir := t.TempDir()
	setup, cpu, heap := filepath.Join(dir, "setup.prof"), filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "heap.prof")
	runJSON(t, "-nodes", "3", "-messages", "20", "-setupprofile", setup, "-cpuprofile", cpu, "-heapprofile", heap)
	for _, f := range []string{setup, cpu, heap} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", filepath.Base(f), err)
		}
	}
	calls := ""
	a, b := func() { calls += "a" }, func() { calls += "b" }
	chainHooks(a, b)()
	chainHooks(nil, b)()
	chainHooks(a, nil)()
	if calls != "abba" {
		t.Errorf("hooks ran %q", calls)
	}
}
