package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Dur is a duration that marshals to JSON as nanoseconds and prints
// rounded.
type Dur time.Duration

// D returns the time.Duration.
func (d Dur) D() time.Duration { return time.Duration(d) }

// String rounds to a readable precision.
func (d Dur) String() string { return fmtDur(time.Duration(d)) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	default:
		return d.Round(10 * time.Nanosecond).String()
	}
}

// Latency summarizes coverage latencies (Send until the last node has the
// broadcast).
type Latency struct {
	Count              int
	P50, P90, P99, Max Dur
	Mean, Min, P999    Dur
}

func summarize(sorted []int64) Latency {
	l := Latency{Count: len(sorted)}
	if len(sorted) == 0 {
		return l
	}
	q := func(p float64) Dur {
		i := int(p * float64(len(sorted)-1))
		return Dur(sorted[i])
	}
	var sum float64
	for _, v := range sorted {
		sum += float64(v)
	}
	l.Min, l.P50, l.P90, l.P99, l.P999 = Dur(sorted[0]), q(0.50), q(0.90), q(0.99), q(0.999)
	l.Max = Dur(sorted[len(sorted)-1])
	l.Mean = Dur(sum / float64(len(sorted)))
	return l
}

// Result is what one run measured.
type Result struct {
	Mode        string
	Nodes       int
	Topology    string
	Degree      int
	Edges       int
	AvgDegree   float64
	MaxDegree   int
	Size        int
	Senders     int
	Window      int
	Rate        int `json:",omitempty"` // broadcasts/s offered (0: unpaced)
	Compression string
	Unsigned    bool   `json:",omitempty"` // signatures off (Config.Unsigned)
	Plaintext   bool   `json:",omitempty"` // links without TLS (Config.Plaintext)
	Broadcast   string `json:",omitempty"` // the mesh's broadcast mode (Config.Broadcast; raw: none)
	SendQueue   int    `json:",omitempty"` // messages per connection send queue (Config.SendQueue; 0: the default)
	Seed        uint64
	Procs, CPUs int // GOMAXPROCS and CPUs of the measuring process

	Requested  int   // broadcasts asked for
	Sent       int   // broadcasts Send accepted
	SendErrors int64 // broadcasts Send refused
	Covered    int64 // broadcasts every node got
	Deliveries int64 // first arrivals of a broadcast at a node (origin excluded)
	Expected   int64 // sent * (nodes-1)
	// Lost counts (node, broadcast) arrivals that never happened by the
	// end of the run; LostBroadcasts the broadcasts concerned.
	Lost, LostBroadcasts int64
	// Duplicates counts arrivals at a node that already had the broadcast
	// (the mesh must filter them all).
	Duplicates int64
	Bogus      int64
	Stalled    bool // the run ended because nothing completed any more

	// Setup is the time to start the nodes and wire the topology.
	// SetupHeap, SetupStacks and SetupGoroutines are what the wired
	// cluster held before any load (live heap after a GC, goroutine
	// stacks, goroutines), beyond what the process held before it
	// started; HeapPerNode, StackPerNode, PeakHeapPerNode and
	// GoroutinesPerNode divide them, and PeakHeap, by the node count
	// (in-process runs only).
	Setup             Dur
	SetupHeap         uint64  `json:",omitempty"`
	SetupStacks       uint64  `json:",omitempty"`
	SetupGoroutines   int     `json:",omitempty"`
	HeapPerNode       float64 `json:",omitempty"`
	StackPerNode      float64 `json:",omitempty"`
	PeakHeapPerNode   float64 `json:",omitempty"`
	GoroutinesPerNode float64 `json:",omitempty"`
	Elapsed           Dur     // first send until the last broadcast was covered
	BroadcastsPerSec  float64
	DeliveriesPerSec  float64
	Latency           Latency

	FramesOut, BytesOut uint64
	FramesPerDelivery   float64
	BytesPerDelivery    float64
	FloodBound          float64 // frames per delivery the topology forces, at most
	FloodDuplicates     uint64  // redundant copies nodes dropped (flood cost)
	RelayDrops          uint64
	PullsSent           uint64 `json:",omitempty"` // loss repair: broadcasts pulled after an announcement
	Repairs             uint64 `json:",omitempty"` // broadcasts delivered after a pull
	RepairsGivenUp      uint64 `json:",omitempty"` // heard of, not delivered within the repair window
	Grafts, Prunes      uint64 `json:",omitempty"` // tree mode: GRAFT and PRUNE messages sent
	QueueDrops          uint64
	RecvDrops           uint64
	SlowDrops           uint64 `json:",omitempty"` // origin copies not queued for a slow neighbour
	DispatchDrops       uint64 `json:",omitempty"` // messages dropped before the handlers
	SeenRefused         uint64
	SeenCacheSize       int
	// Flood is the rate at which a hostile neighbour of node 0 flooded
	// made-up broadcasts during the run (Config.Flood): FloodSent of them,
	// of which nodes delivered FloodDelivered (cluster-wide); node 0 held
	// BudgetWaits of them back over the flooder's budget.
	Flood                     int    `json:",omitempty"`
	FloodSent, FloodDelivered uint64 `json:",omitempty"`
	BudgetWaits               uint64 `json:",omitempty"`
	// Verified counts the signatures the nodes checked, in VerifyBatches
	// batches.
	Verified, VerifyBatches uint64 `json:",omitempty"`

	Mallocs, AllocBytes uint64
	AllocsPerDelivery   float64
	AllocBytesPerDeliv  float64
	GCs                 uint32
	PeakHeap            uint64   // HeapInuse, peak (procs: summed over children)
	HeapTimeline        []uint64 `json:",omitempty"` // HeapInuse once a second
	LiveHeapTimeline    []uint64 `json:",omitempty"` // live heap after the latest GC, once a second
	PeakGoroutines      int
	CPU                 Dur // process CPU time (procs: summed over children)
	CPUPerDelivery      Dur
	CoordinatorCPU      Dur      `json:",omitempty"`
	ProfileFiles        []string `json:",omitempty"`

	Problems []string `json:",omitempty"`
}

func (r *Result) derive() {
	if r.Nodes > 0 && r.Mode != ModeProcs {
		n := float64(r.Nodes)
		r.HeapPerNode, r.PeakHeapPerNode = float64(r.SetupHeap)/n, float64(r.PeakHeap)/n
		r.StackPerNode = float64(r.SetupStacks) / n
		r.GoroutinesPerNode = float64(r.SetupGoroutines) / n
	}
	if r.Deliveries > 0 {
		d := float64(r.Deliveries)
		r.FramesPerDelivery = float64(r.FramesOut) / d
		r.BytesPerDelivery = float64(r.BytesOut) / d
		r.AllocsPerDelivery = float64(r.Mallocs) / d
		r.AllocBytesPerDeliv = float64(r.AllocBytes) / d
		r.CPUPerDelivery = Dur(float64(r.CPU) / d)
	}
}

// OK reports whether every broadcast reached every node exactly once.
func (r *Result) OK() bool {
	return r.Lost == 0 && r.Duplicates == 0 && r.Bogus == 0 && r.SendErrors == 0 && r.Deliveries == r.Expected
}

func human(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f G", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1f k", v/1e3)
	default:
		return fmt.Sprintf("%.0f ", v)
	}
}

func bytesHuman(v uint64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(v)/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(v)/(1<<10))
	default:
		return fmt.Sprintf("%d B", v)
	}
}

// WriteText prints the result as a readable report.
func (r *Result) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	pace := ""
	if r.Rate > 0 {
		pace = fmt.Sprintf(", paced at %d broadcasts/s", r.Rate)
	}
	signing := "signed"
	if r.Unsigned {
		signing = "unsigned"
	}
	if r.Plaintext {
		signing += ", plaintext links"
	} else {
		signing += ", TLS links"
	}
	mode := r.Mode
	if r.Broadcast != "" && r.Mode != ModeRaw {
		mode += " (" + r.Broadcast + ")"
	}
	if r.SendQueue > 0 {
		signing += fmt.Sprintf(", send queues of %d messages", r.SendQueue)
	}
	fmt.Fprintf(tw, "%s: %d nodes, %s topology (%d edges, avg degree %.2f, max %d), %d B payloads, %d senders, window %d%s, compression %s, %s\n",
		mode, r.Nodes, r.Topology, r.Edges, r.AvgDegree, r.MaxDegree, r.Size, r.Senders, r.Window, pace, r.Compression, signing)
	verdict := "OK: every broadcast reached every node exactly once"
	if !r.OK() {
		verdict = "FAILED: " + strings.Join(r.Problems, "; ")
	}
	p("result", "%s", verdict)
	p("broadcasts", "%d sent of %d asked, %d covered, %d send errors", r.Sent, r.Requested, r.Covered, r.SendErrors)
	p("deliveries", "%d of %d expected; lost %d (in %d broadcasts), duplicates %d", r.Deliveries, r.Expected, r.Lost, r.LostBroadcasts, r.Duplicates)
	p("elapsed", "%v (setup %v)", r.Elapsed, r.Setup)
	if r.SetupHeap > 0 {
		p("idle cluster", "after setup: %s live heap, %d goroutines, %s of stacks; per node %s, %.1f goroutines, %s",
			bytesHuman(r.SetupHeap), r.SetupGoroutines, bytesHuman(r.SetupStacks),
			bytesHuman(uint64(r.HeapPerNode)), r.GoroutinesPerNode, bytesHuman(uint64(r.StackPerNode)))
	}
	p("throughput", "%sbroadcasts/s, %sdeliveries/s", human(r.BroadcastsPerSec), human(r.DeliveriesPerSec))
	l := r.Latency
	p("coverage latency", "p50 %v  p90 %v  p99 %v  p99.9 %v  max %v  (mean %v, min %v)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Min)
	p("frames/delivery", "%.2f (topology forces at most %.2f); %d frames out, %d redundant copies dropped", r.FramesPerDelivery, r.FloodBound, r.FramesOut, r.FloodDuplicates)
	p("wire bytes/delivery", "%.1f B (%s out)", r.BytesPerDelivery, bytesHuman(r.BytesOut))
	if r.RelayDrops+r.QueueDrops+r.RecvDrops > 0 || r.SendQueue > 0 {
		p("drops", "relay %d, queue %d, receive queue %d, dispatch %d, slow neighbour %d", r.RelayDrops, r.QueueDrops, r.RecvDrops, r.DispatchDrops, r.SlowDrops)
	}
	if r.PullsSent+r.Repairs+r.RepairsGivenUp > 0 {
		p("repairs", "%d broadcasts pulled after an announcement, %d delivered so, %d given up", r.PullsSent, r.Repairs, r.RepairsGivenUp)
	}
	if r.Grafts+r.Prunes > 0 {
		p("tree", "%d grafts, %d prunes (links made eager again, and lazy)", r.Grafts, r.Prunes)
	}
	scope := "whole process"
	if r.Mode == ModeProcs {
		scope = "summed over the node processes"
	}
	p("allocations", "%.2f allocs/delivery, %.0f B/delivery (%s; %d GCs)", r.AllocsPerDelivery, r.AllocBytesPerDeliv, scope, r.GCs)
	p("CPU", "%v per delivery (%v in all, %s)", r.CPUPerDelivery, r.CPU, scope)
	heap := fmt.Sprintf("peak heap in use %s", bytesHuman(r.PeakHeap))
	if n := len(r.HeapTimeline); n >= 3 {
		heap += fmt.Sprintf(" (at 1/3 of the run %s, 2/3 %s, end %s)", bytesHuman(r.HeapTimeline[n/3]), bytesHuman(r.HeapTimeline[2*n/3]), bytesHuman(r.HeapTimeline[n-1]))
	}
	p("memory", "%s, peak goroutines %d (early growth is the seen-state filling, not a leak)", heap, r.PeakGoroutines)
	if n := len(r.LiveHeapTimeline); n >= 3 {
		p("live heap", "after GC: at 1/3 of the run %s, 2/3 %s, end %s", bytesHuman(r.LiveHeapTimeline[n/3]), bytesHuman(r.LiveHeapTimeline[2*n/3]), bytesHuman(r.LiveHeapTimeline[n-1]))
	}
	if r.Flood > 0 {
		p("flood", "a hostile neighbour of node 0 sent %d made-up broadcasts (asked: %d/s); %d held back over its budget, %d deliveries of them in all", r.FloodSent, r.Flood, r.BudgetWaits, r.FloodDelivered)
	}
	if r.VerifyBatches > 0 {
		p("signatures", "%d verified (%.2f per delivery) in %d batches of %.1f on average", r.Verified,
			float64(r.Verified)/float64(max(r.Deliveries, 1)), r.VerifyBatches, float64(r.Verified)/float64(r.VerifyBatches))
	}
	if r.Mode != ModeRaw {
		p("seen-state", "%d origins at the end, %d broadcasts refused for want of room", r.SeenCacheSize, r.SeenRefused)
	}
	if len(r.ProfileFiles) > 0 {
		p("profiles", "%s", strings.Join(r.ProfileFiles, ", "))
	}
	p("machine", "GOMAXPROCS %d, %d CPUs", r.Procs, r.CPUs)
	tw.Flush()
}

// Comparison is the mesh beside the raw-TCP baseline.
type Comparison struct {
	Mesh, Raw *Result
	// Ratios are mesh / raw.
	Throughput, LatencyP50, LatencyP99, FramesPerDelivery, BytesPerDelivery, CPUPerDelivery, AllocsPerDelivery float64
}

// Compare computes mesh/raw ratios.
func Compare(mesh, raw *Result) *Comparison {
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return &Comparison{
		Mesh: mesh, Raw: raw,
		Throughput:        ratio(mesh.DeliveriesPerSec, raw.DeliveriesPerSec),
		LatencyP50:        ratio(float64(mesh.Latency.P50), float64(raw.Latency.P50)),
		LatencyP99:        ratio(float64(mesh.Latency.P99), float64(raw.Latency.P99)),
		FramesPerDelivery: ratio(mesh.FramesPerDelivery, raw.FramesPerDelivery),
		BytesPerDelivery:  ratio(mesh.BytesPerDelivery, raw.BytesPerDelivery),
		CPUPerDelivery:    ratio(float64(mesh.CPUPerDelivery), float64(raw.CPUPerDelivery)),
		AllocsPerDelivery: ratio(mesh.AllocsPerDelivery, raw.AllocsPerDelivery),
	}
}

// WriteText prints the comparison table.
func (c *Comparison) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "mesh vs raw TCP (same topology, load and window)\t%s\t%s\tmesh/raw\t\n", c.Mesh.Mode, c.Raw.Mode)
	row := func(name, a, b string, ratio float64) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2fx\t\n", name, a, b, ratio)
	}
	row("deliveries/s", human(c.Mesh.DeliveriesPerSec), human(c.Raw.DeliveriesPerSec), c.Throughput)
	row("coverage p50", c.Mesh.Latency.P50.String(), c.Raw.Latency.P50.String(), c.LatencyP50)
	row("coverage p99", c.Mesh.Latency.P99.String(), c.Raw.Latency.P99.String(), c.LatencyP99)
	row("frames/delivery", fmt.Sprintf("%.2f", c.Mesh.FramesPerDelivery), fmt.Sprintf("%.2f", c.Raw.FramesPerDelivery), c.FramesPerDelivery)
	row("wire bytes/delivery", fmt.Sprintf("%.1f", c.Mesh.BytesPerDelivery), fmt.Sprintf("%.1f", c.Raw.BytesPerDelivery), c.BytesPerDelivery)
	row("CPU/delivery", c.Mesh.CPUPerDelivery.String(), c.Raw.CPUPerDelivery.String(), c.CPUPerDelivery)
	row("allocs/delivery", fmt.Sprintf("%.2f", c.Mesh.AllocsPerDelivery), fmt.Sprintf("%.2f", c.Raw.AllocsPerDelivery), c.AllocsPerDelivery)
	tw.Flush()
}

// SweepRow is one point of a sweep: a mesh run (and its raw baseline) or a
// chord run. Param and Value are the swept numeric parameter; Broadcast is
// the row's broadcast mode when the sweep varies it too (with Param "mode"
// and Value 0 when it varies nothing else).
type SweepRow struct {
	Param     string
	Value     int
	Broadcast string       `json:",omitempty"`
	Mesh      *Result      `json:",omitempty"`
	Raw       *Result      `json:",omitempty"`
	Chord     *ChordResult `json:",omitempty"`
	Ratio     *Comparison  `json:"-"`
}

// Label names the row's point: its value, and its broadcast mode if swept.
func (r SweepRow) Label() string {
	switch {
	case r.Param == "mode":
		return r.Broadcast
	case r.Broadcast != "":
		return fmt.Sprintf("%d %s", r.Value, r.Broadcast)
	default:
		return fmt.Sprint(r.Value)
	}
}

// WriteSweepTable prints a sweep as a table.
func WriteSweepTable(w io.Writer, rows []SweepRow) {
	if len(rows) > 0 && rows[0].Chord != nil {
		writeChordSweep(w, rows)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	withRaw := len(rows) > 0 && rows[0].Raw != nil
	hdr := "%s\tdeliv/s\tbcast/s\tp50\tp99\tmax\tframes/dlv\tbound\tB/dlv\tallocs/dlv\tCPU/dlv\tsetup\theap/node\tpeak/node\tgor/node\tstack/node\trelay drops\tlost\tdups\t"
	if withRaw {
		hdr += "raw deliv/s\tmesh/raw\t"
	}
	param := "nodes"
	if len(rows) > 0 {
		param = rows[0].Param
		if rows[0].Broadcast != "" && param != "mode" {
			param += " mode"
		}
	}
	fmt.Fprintf(tw, hdr+"\n", param)
	for _, row := range rows {
		r := row.Mesh
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\t%v\t%.2f\t%.2f\t%.0f\t%.2f\t%v\t%v\t%s\t%s\t%.1f\t%s\t%d\t%d\t%d\t",
			row.Label(), human(r.DeliveriesPerSec), human(r.BroadcastsPerSec), r.Latency.P50, r.Latency.P99, r.Latency.Max,
			r.FramesPerDelivery, r.FloodBound, r.BytesPerDelivery, r.AllocsPerDelivery, r.CPUPerDelivery, r.Setup,
			bytesHuman(uint64(r.HeapPerNode)), bytesHuman(uint64(r.PeakHeapPerNode)), r.GoroutinesPerNode, bytesHuman(uint64(r.StackPerNode)), r.RelayDrops, r.Lost, r.Duplicates)
		if withRaw && row.Raw != nil {
			fmt.Fprintf(tw, "%s\t%.2fx\t", human(row.Raw.DeliveriesPerSec), row.Mesh.DeliveriesPerSec/max(row.Raw.DeliveriesPerSec, 1))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// Report is the one JSON record -json prints.
type Report struct {
	Command    string       `json:",omitempty"`
	Mesh       *Result      `json:",omitempty"`
	Raw        *Result      `json:",omitempty"`
	Comparison *Comparison  `json:",omitempty"`
	Chord      *ChordResult `json:",omitempty"`
	Sweep      []SweepRow   `json:",omitempty"`
}

// WriteJSON writes the report as one JSON object on one line.
func (rep *Report) WriteJSON(w io.Writer) error {
	type cmp struct {
		Throughput, LatencyP50, LatencyP99, FramesPerDelivery, BytesPerDelivery, CPUPerDelivery, AllocsPerDelivery float64
	}
	out := struct {
		Command     string       `json:",omitempty"`
		Mesh        *Result      `json:",omitempty"`
		Raw         *Result      `json:",omitempty"`
		MeshOverRaw *cmp         `json:",omitempty"`
		Chord       *ChordResult `json:",omitempty"`
		Sweep       []SweepRow   `json:",omitempty"`
	}{Command: rep.Command, Mesh: rep.Mesh, Raw: rep.Raw, Chord: rep.Chord, Sweep: rep.Sweep}
	if c := rep.Comparison; c != nil {
		out.MeshOverRaw = &cmp{c.Throughput, c.LatencyP50, c.LatencyP99, c.FramesPerDelivery, c.BytesPerDelivery, c.CPUPerDelivery, c.AllocsPerDelivery}
	}
	return json.NewEncoder(w).Encode(out)
}
