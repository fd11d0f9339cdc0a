package harness

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A sweep over sizes and broadcast modes draws one curve per mode in each
// panel, and the heap panel when the rows measured the heap per node.
func TestSVGModesAndHeap(t *testing.T) {
	var rows []SweepRow
	for _, n := range []int{16, 64} {
		for i, m := range []string{"flood", "other"} {
			rows = append(rows, SweepRow{Param: "nodes", Value: n, Broadcast: m, Mesh: &Result{
				Topology: "random", DeliveriesPerSec: float64(1000 * n * (i + 1)),
				Latency:     Latency{P50: Dur(time.Millisecond), P99: Dur(3 * time.Millisecond)},
				HeapPerNode: 1 << 20, PeakHeapPerNode: 2 << 20,
			}})
		}
	}
	var b bytes.Buffer
	if err := WriteSVG(&b, rows); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	// Per mode: throughput, p50, p99, idle heap, peak heap.
	if got := strings.Count(s, "<polyline"); got != 10 {
		t.Errorf("%d curves, want 10", got)
	}
	for _, want := range []string{"flood deliveries/s", "other p99", "heap per node (KiB)", "meshsock flood and other vs nodes"} {
		if !strings.Contains(s, want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	// Without the heap figures (an older record), two panels.
	for i := range rows {
		rows[i].Mesh.HeapPerNode = 0
	}
	b.Reset()
	if err := WriteSVG(&b, rows); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "heap per node") || strings.Count(b.String(), "<polyline") != 6 {
		t.Errorf("plot without heap figures:\n%s", b.String())
	}
	if err := WriteSVG(&b, []SweepRow{{Param: "nodes", Value: 4}}); err == nil {
		t.Error("a row without a mesh result plotted")
	}
}
