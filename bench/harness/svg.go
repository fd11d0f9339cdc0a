package harness

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// WriteSVG plots a sweep against the swept parameter on a log2 axis:
// deliveries per second (mesh, and raw TCP when measured) on the left,
// coverage latency p50 and p99 in the middle, and, when the rows measured
// it, the heap per node on the right (live after setup, and peak under
// load). A sweep that also varies the broadcast mode draws one curve per
// mode in each panel.
func WriteSVG(w io.Writer, rows []SweepRow) error {
	if len(rows) == 0 {
		return fmt.Errorf("svg: empty sweep")
	}
	for _, r := range rows {
		if r.Mesh == nil {
			return fmt.Errorf("svg: a mesh sweep only")
		}
	}
	bw := bufio.NewWriter(w)
	const (
		height = 400
		panelH = 280
		top    = 60
		gap    = 90
		left   = 70
	)
	var xs []float64
	for _, r := range rows {
		if x := float64(r.Value); !slices.Contains(xs, x) {
			xs = append(xs, x)
		}
	}
	slices.Sort(xs)
	// One group of curves per broadcast mode, in the order of the rows.
	var groups []string
	withHeap := true
	for _, r := range rows {
		if !slices.Contains(groups, r.Broadcast) {
			groups = append(groups, r.Broadcast)
		}
		withHeap = withHeap && r.Mesh.HeapPerNode > 0
	}
	var thr, lat, heap []series
	for gi, g := range groups {
		name := "mesh"
		if g != "" {
			name = g
		}
		c := groupColors[gi%len(groupColors)]
		t := series{name: name + " deliveries/s", color: c[0]}
		raw := series{name: "raw TCP deliveries/s", color: "#7f7f7f", dash: true}
		p50 := series{name: name + " p50", color: c[1]}
		p99 := series{name: name + " p99", color: c[2]}
		rawP99 := series{name: "raw TCP p99", color: "#7f7f7f", dash: true}
		idle := series{name: name + " live after setup", color: c[0]}
		peak := series{name: name + " peak under load", color: c[2], dash: true}
		if len(groups) > 1 {
			p50.dash = true
		}
		for _, r := range rows {
			if r.Broadcast != g {
				continue
			}
			x := float64(r.Value)
			t.add(x, r.Mesh.DeliveriesPerSec)
			p50.add(x, float64(r.Mesh.Latency.P50)/1e6)
			p99.add(x, float64(r.Mesh.Latency.P99)/1e6)
			idle.add(x, r.Mesh.HeapPerNode/(1<<10))
			peak.add(x, r.Mesh.PeakHeapPerNode/(1<<10))
			if r.Raw != nil {
				raw.add(x, r.Raw.DeliveriesPerSec)
				rawP99.add(x, float64(r.Raw.Latency.P99)/1e6)
			}
		}
		thr = append(thr, t)
		lat = append(lat, p50, p99)
		heap = append(heap, idle, peak)
		if gi == 0 && len(raw.ys) == len(t.ys) {
			thr = append(thr, raw)
			lat = append(lat, rawP99)
		}
	}
	panels := 2
	if withHeap {
		panels = 3
	}
	panelW := 400
	if panels == 3 {
		panelW = 300
	}
	width := left + panels*panelW + (panels-1)*gap + 40
	r0 := rows[0].Mesh
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	what := "meshsock flood"
	if len(groups) > 1 || groups[0] != "" {
		what = "meshsock " + strings.Join(groups, " and ")
	}
	title := fmt.Sprintf("%s vs %s: %s topology, degree %d, %d B payloads, window %d, GOMAXPROCS %d",
		what, rows[0].Param, r0.Topology, r0.Degree, r0.Size, r0.Window, r0.Procs)
	fmt.Fprintf(bw, `<text x="%d" y="24" text-anchor="middle" font-size="15">%s</text>`+"\n", width/2, html.EscapeString(title))
	panel(bw, left, top, panelW, panelH, rows[0].Param, "deliveries/s", xs, thr)
	panel(bw, left+panelW+gap, top, panelW, panelH, rows[0].Param, "coverage latency (ms)", xs, lat)
	if withHeap {
		panel(bw, left+2*(panelW+gap), top, panelW, panelH, rows[0].Param, "heap per node (KiB)", xs, heap)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// groupColors are the colours of one broadcast mode's curves: throughput
// (and idle heap), p50, p99 (and peak heap).
var groupColors = [][3]string{
	{"#1f77b4", "#2ca02c", "#d62728"},
	{"#ff7f0e", "#9467bd", "#8c564b"},
	{"#17becf", "#bcbd22", "#e377c2"},
}

type series struct {
	name   string
	color  string
	dash   bool
	xs, ys []float64
}

func (s *series) add(x, y float64) {
	s.xs = append(s.xs, x)
	s.ys = append(s.ys, y)
}

func panel(w io.Writer, x0, y0, pw, ph int, xlabel, ylabel string, xs []float64, ss []series) {
	lx := func(v float64) float64 { return math.Log2(math.Max(v, 1)) }
	xmin, xmax := lx(xs[0]), lx(xs[0])
	for _, x := range xs {
		xmin, xmax = math.Min(xmin, lx(x)), math.Max(xmax, lx(x))
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			ymax = math.Max(ymax, y)
		}
	}
	// Headroom above the highest point for the legend (a line of 16 px
	// per series), so that no curve runs under it.
	if legend := float64(14 + 16*len(ss)); legend < float64(ph)/2 {
		ymax *= float64(ph) / (float64(ph) - legend)
	}
	step := niceStep(ymax / 5)
	if step <= 0 {
		step = 1
	}
	ymax = math.Ceil(ymax/step) * step
	if ymax == 0 {
		ymax = 1
	}
	px := func(x float64) float64 { return float64(x0) + (lx(x)-xmin)/(xmax-xmin)*float64(pw) }
	py := func(y float64) float64 { return float64(y0+ph) - y/ymax*float64(ph) }
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", x0, y0, pw, ph)
	for y := 0.0; y <= ymax+step/2; y += step {
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x0, py(y), x0+pw, py(y))
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", x0-6, py(y), axisLabel(y))
	}
	for _, x := range xs {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", px(x), y0, px(x), y0+ph)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", px(x), y0+ph+16, x)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x0+pw/2, y0+ph+36, html.EscapeString(xlabel))
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle" transform="rotate(-90 %d %d)">%s</text>`+"\n",
		x0-52, y0+ph/2, x0-52, y0+ph/2, html.EscapeString(ylabel))
	// The legend goes in the top corner with fewer points under it: those
	// in the upper third of the panel, on that half of its width.
	crowded := [2]int{} // left, right
	for _, s := range ss {
		for j, y := range s.ys {
			if py(y) < float64(y0)+float64(ph)/3 {
				side := 0
				if px(s.xs[j]) > float64(x0)+float64(pw)/2 {
					side = 1
				}
				crowded[side]++
			}
		}
	}
	legendX := x0 + pw - 160
	if crowded[0] < crowded[1] {
		legendX = x0 + 10
	}
	for i, s := range ss {
		var pts []string
		for j, y := range s.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.xs[j]), py(y)))
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for j, y := range s.ys {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(s.xs[j]), py(y), s.color)
		}
		ly := y0 + 14 + 16*i
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", legendX, ly, legendX+20, ly, s.color, dash)
		fmt.Fprintf(w, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", legendX+25, ly, html.EscapeString(s.name))
	}
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func axisLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", v)
	}
}
