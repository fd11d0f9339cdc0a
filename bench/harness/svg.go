package harness

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteSVG plots a sweep: deliveries per second (mesh, and raw TCP when
// measured) on the left, coverage latency p50 and p99 on the right, against
// the swept parameter on a log2 axis.
func WriteSVG(w io.Writer, rows []SweepRow) error {
	if len(rows) == 0 {
		return fmt.Errorf("svg: empty sweep")
	}
	bw := bufio.NewWriter(w)
	const (
		width, height = 1040, 400
		panelW        = 400
		panelH        = 280
		top           = 60
	)
	xs := make([]float64, len(rows))
	for i, r := range rows {
		xs[i] = float64(r.Value)
	}
	thr := series{name: "mesh deliveries/s", color: "#1f77b4"}
	raw := series{name: "raw TCP deliveries/s", color: "#7f7f7f", dash: true}
	p50 := series{name: "mesh p50", color: "#2ca02c"}
	p99 := series{name: "mesh p99", color: "#d62728"}
	rawP99 := series{name: "raw TCP p99", color: "#7f7f7f", dash: true}
	for _, r := range rows {
		thr.ys = append(thr.ys, r.Mesh.DeliveriesPerSec)
		p50.ys = append(p50.ys, float64(r.Mesh.Latency.P50)/1e6)
		p99.ys = append(p99.ys, float64(r.Mesh.Latency.P99)/1e6)
		if r.Raw != nil {
			raw.ys = append(raw.ys, r.Raw.DeliveriesPerSec)
			rawP99.ys = append(rawP99.ys, float64(r.Raw.Latency.P99)/1e6)
		}
	}
	left := []series{thr}
	right := []series{p50, p99}
	if len(raw.ys) == len(rows) {
		left = append(left, raw)
		right = append(right, rawP99)
	}
	r0 := rows[0].Mesh
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := fmt.Sprintf("meshsock flood vs %s: %s topology, degree %d, %d B payloads, window %d, GOMAXPROCS %d",
		rows[0].Param, r0.Topology, r0.Degree, r0.Size, r0.Window, r0.Procs)
	fmt.Fprintf(bw, `<text x="%d" y="24" text-anchor="middle" font-size="15">%s</text>`+"\n", width/2, html.EscapeString(title))
	panel(bw, 70, top, panelW, panelH, rows[0].Param, "deliveries/s", xs, left)
	panel(bw, 70+panelW+90, top, panelW, panelH, rows[0].Param, "coverage latency (ms)", xs, right)
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

type series struct {
	name  string
	color string
	dash  bool
	ys    []float64
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
	// The legend goes in the top corner the lines stay away from.
	legendX := x0 + pw - 150
	for _, s := range ss {
		if n := len(s.ys); n > 1 && s.ys[n-1] > s.ys[0] {
			legendX = x0 + 10
		}
	}
	for i, s := range ss {
		var pts []string
		for j, y := range s.ys {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(y)))
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for j, y := range s.ys {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(xs[j]), py(y), s.color)
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
