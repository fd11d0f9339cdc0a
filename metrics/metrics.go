// Package metrics exports a node's counters and gauges to Prometheus.
//
// A Collector reads the node's Stats snapshot at every scrape and turns
// each field into one metric, so every counter the node keeps is exported
// without a list to maintain:
//
//   - a uint64 field is a counter (name ending in _total), unless its
//     struct tag says `metric:"gauge"` (a byte or message level that goes
//     down as well as up);
//   - int, float and bool fields are gauges (a bool is 0 or 1);
//   - a time.Duration is a gauge in seconds (name ending in _seconds);
//   - an array of uint64 (chord's Hops histogram) is a counter with an
//     "index" label per element.
//
// Names are meshsock_<layer>_<field in snake case>, where layer is the
// package whose Stats declares the field (base for the connection-level
// counters every layer embeds); a field that is itself a struct of counters
// adds its own name (meshsock_mesh_lan_...). Every series carries a "node" label with
// the node's short ID, so one registry can hold several nodes.
//
//	reg := prometheus.NewRegistry()
//	c, err := metrics.ForMesh(node)
//	if err != nil { ... }
//	reg.MustRegister(c)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
package metrics

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/chord"
	"github.com/meshsock/meshsock/mesh"
)

// ErrNotStats is returned when a Stats function does not return a struct.
var ErrNotStats = errors.New("metrics: the stats function must return a struct")

// Collector is a prometheus.Collector for one node's Stats.
type Collector struct {
	sources []source
}

// source is one stats function and the metrics of its struct's fields.
type source struct {
	read    func() reflect.Value
	metrics []metric
}

// metric is one exported field (or one element of an array field).
type metric struct {
	desc    *prometheus.Desc
	kind    prometheus.ValueType
	index   []int // reflect field index path
	array   bool
	seconds bool // a time.Duration, exported in seconds
}

// ForMesh returns a Collector for a mesh node: mesh's counters, the
// embedded connection-level ones, and the member and topic layers'
// (MemberStats, as meshsock_member_...).
func ForMesh(s *mesh.Socket) (*Collector, error) {
	c, err := New("mesh", s.ID().Short(), s.Stats)
	if err != nil {
		return nil, err
	}
	m, err := New("member", s.ID().Short(), s.MemberStats)
	if err != nil {
		return nil, err
	}
	c.sources = append(c.sources, m.sources...)
	return c, nil
}

// ForChord returns a Collector for a chord node.
func ForChord(s *chord.Socket) (*Collector, error) {
	return New("chord", s.ID().Short(), s.Stats)
}

// ForBase returns a Collector for a base socket (connection-level
// counters only).
func ForBase(s *base.Socket) (*Collector, error) {
	return New("base", s.ID().Short(), s.Stats)
}

// New returns a Collector for any layer's stats function: stats must
// return a struct (fields as the package doc says; other field types are
// skipped), layer names the metrics of the struct's own fields (embedded
// structs name theirs by their package), and node is the value of the
// "node" label.
func New[S any](layer, node string, stats func() S) (*Collector, error) {
	t := reflect.TypeFor[S]()
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: %v", ErrNotStats, t)
	}
	if layer == "" {
		return nil, errors.New("metrics: empty layer name")
	}
	src := source{read: func() reflect.Value { return reflect.ValueOf(stats()) }}
	src.walk(t, layer, nil, prometheus.Labels{"node": node})
	return &Collector{sources: []source{src}}, nil
}

// walk adds a metric for each exported field of t, descending into
// embedded structs (named by their own package).
func (c *source) walk(t reflect.Type, layer string, path []int, labels prometheus.Labels) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		idx := append(append([]int(nil), path...), i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			if f.Anonymous { // base.Stats in mesh.Stats: named by its package
				c.walk(f.Type, packageName(f.Type, layer), idx, labels)
			} else { // a group of counters, such as mesh.Stats.LAN: named by the field
				c.walk(f.Type, layer+"_"+snake(f.Name), idx, labels)
			}
			continue
		}
		name := "meshsock_" + layer + "_" + snake(f.Name)
		help := fmt.Sprintf("%s.%s.%s (see its doc comment)", packageName(t, layer), t.Name(), f.Name)
		m := metric{index: idx}
		if f.Type == reflect.TypeFor[time.Duration]() {
			m.kind, m.seconds = prometheus.GaugeValue, true
			m.desc = prometheus.NewDesc(name+"_seconds", help, nil, labels)
			c.metrics = append(c.metrics, m)
			continue
		}
		switch f.Type.Kind() {
		case reflect.Uint64, reflect.Uint32, reflect.Uint:
			if f.Tag.Get("metric") == "gauge" {
				m.kind = prometheus.GaugeValue
			} else {
				m.kind = prometheus.CounterValue
				name += "_total"
			}
		case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64, reflect.Bool:
			m.kind = prometheus.GaugeValue
		case reflect.Array:
			if f.Type.Elem().Kind() != reflect.Uint64 {
				continue
			}
			m.kind, m.array = prometheus.CounterValue, true
			name += "_total"
			m.desc = prometheus.NewDesc(name, help, []string{"index"}, labels)
			c.metrics = append(c.metrics, m)
			continue
		default:
			continue
		}
		m.desc = prometheus.NewDesc(name, help, nil, labels)
		c.metrics = append(c.metrics, m)
	}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, src := range c.sources {
		for _, m := range src.metrics {
			ch <- m.desc
		}
	}
}

// Collect reads one Stats snapshot and sends every metric's value.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, src := range c.sources {
		v := src.read()
		for _, m := range src.metrics {
			f := v.FieldByIndex(m.index)
			switch {
			case m.array:
				for i := range f.Len() {
					ch <- prometheus.MustNewConstMetric(m.desc, m.kind, float64(f.Index(i).Uint()), fmt.Sprint(i))
				}
			case m.seconds:
				ch <- prometheus.MustNewConstMetric(m.desc, m.kind, time.Duration(f.Int()).Seconds())
			default:
				ch <- prometheus.MustNewConstMetric(m.desc, m.kind, number(f))
			}
		}
	}
}

func number(v reflect.Value) float64 {
	switch v.Kind() {
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		return float64(v.Uint())
	case reflect.Int, reflect.Int64, reflect.Int32:
		return float64(v.Int())
	case reflect.Float64:
		return v.Float()
	case reflect.Bool:
		if v.Bool() {
			return 1
		}
	}
	return 0
}

// packageName is the last element of t's package path ("base" for
// base.Stats), or fallback for a type without one.
func packageName(t reflect.Type, fallback string) string {
	p := t.PkgPath()
	if p == "" {
		return fallback
	}
	return p[strings.LastIndex(p, "/")+1:]
}

// snake turns a Go field name into snake case: BytesIn → bytes_in,
// HopsMean → hops_mean, VerifyBacklogBytes → verify_backlog_bytes.
func snake(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			// A new word starts at an upper-case letter after a lower-case
			// one, or at the last capital of an acronym when a lower-case
			// word follows (TLSBytes → tls_bytes), but not at a plural
			// acronym's s (PeerIDs → peer_ids).
			plural := i+2 == len(rs) && rs[i+1] == 's' || i+2 < len(rs) && rs[i+1] == 's' && unicode.IsUpper(rs[i+2])
			if i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1]) && !plural) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
