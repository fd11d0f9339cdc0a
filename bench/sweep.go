package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/meshsock/meshsock/bench/harness"
)

// The parameters a sweep may vary, per mode; a mesh sweep may also vary
// the broadcast mode (mode=flood,...), alone or with one of these.
var (
	sweepParams      = []string{"nodes", "degree", "size", "window", "senders", "messages", "rate", "sign", "tls", "send-queue"}
	chordSweepParams = []string{"nodes", "size", "senders", "messages", "requests", "sign", "tls"}
)

// sweepModeParam is the sweep parameter that names broadcast modes.
const sweepModeParam = "mode"

// sweepList collects -sweep flags: each holds one or more name=v1,v2,...
// terms, separated by spaces or semicolons.
type sweepList []string

func (l *sweepList) String() string { return strings.Join(*l, " ") }

func (l *sweepList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// sweepSpec is what the -sweep flags ask for: the values of one numeric
// parameter, the broadcast modes, or both (every value in every mode).
type sweepSpec struct {
	param  string // "" when only modes are swept
	values []int
	modes  []string // nil when the mode is not swept
}

func (s sweepSpec) empty() bool { return s.param == "" && s.modes == nil }

// points returns the rows to run, in order: for each value, each mode (so
// that the modes of one size run back to back).
func (s sweepSpec) points() []harness.SweepRow {
	values, modes := s.values, s.modes
	if s.param == "" {
		values = []int{0}
	}
	if modes == nil {
		modes = []string{""}
	}
	var rows []harness.SweepRow
	for _, v := range values {
		for _, m := range modes {
			row := harness.SweepRow{Param: s.param, Value: v, Broadcast: m}
			if s.param == "" {
				row.Param = sweepModeParam
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// parseSweep parses the -sweep flags for a run of the given mode
// (harness.ModeMesh or harness.ModeChord).
func parseSweep(flags []string, mode string) (sweepSpec, error) {
	var spec sweepSpec
	params := sweepParams
	if mode == harness.ModeChord {
		params = chordSweepParams
	}
	for _, f := range flags {
		terms := strings.FieldsFunc(f, func(r rune) bool { return r == ' ' || r == ';' })
		if len(terms) == 0 {
			return spec, fmt.Errorf("-sweep %q: want name=v1,v2,...", f)
		}
		for _, term := range terms {
			name, list, ok := strings.Cut(term, "=")
			if !ok || list == "" {
				return spec, fmt.Errorf("-sweep %q: want name=v1,v2,...", term)
			}
			if name == sweepModeParam {
				if mode == harness.ModeChord {
					return spec, errors.New("-sweep mode: chord has no broadcast modes")
				}
				if spec.modes != nil {
					return spec, errors.New("-sweep: mode given twice")
				}
				for _, m := range strings.Split(list, ",") {
					m = strings.TrimSpace(m)
					if _, err := harness.ModeOptions(m); err != nil {
						return spec, fmt.Errorf("-sweep mode: %w", err)
					}
					if slices.Contains(spec.modes, m) {
						return spec, fmt.Errorf("-sweep mode: %q given twice", m)
					}
					spec.modes = append(spec.modes, m)
				}
				continue
			}
			if !slices.Contains(params, name) {
				return spec, fmt.Errorf("-sweep: unknown parameter %q for -mode %s (one of %s%s)", name, mode, strings.Join(params, ", "), modeHint(mode))
			}
			if spec.param != "" {
				return spec, fmt.Errorf("-sweep: %s and %s: one numeric parameter at a time (it may be combined with mode=...)", spec.param, name)
			}
			for _, v := range strings.Split(list, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					return spec, fmt.Errorf("-sweep %s: %w", name, err)
				}
				spec.values = append(spec.values, n)
			}
			spec.param = name
		}
	}
	return spec, nil
}

func modeHint(mode string) string {
	if mode == harness.ModeChord {
		return ""
	}
	return "; or mode=" + strings.Join(harness.BroadcastModes(), ",")
}

// The -svg flag's words: the default plots a sweep of more than one point
// to a file named after it; svgOff plots nothing.
const (
	svgAuto = "auto"
	svgOff  = "off"
)

// plotPath says where the plot of a finished run goes ("": nowhere).
// flag is -svg: svgOff, a path, or svgAuto, which plots a mesh sweep with
// more than one value of its numeric parameter (one curve per broadcast
// mode) to bench-sweep-PARAM[-MODES].svg in the working directory.
func plotPath(flag string, rows []harness.SweepRow) string {
	switch flag {
	case svgOff:
		return ""
	case svgAuto:
	default:
		return flag
	}
	if len(rows) == 0 || rows[0].Mesh == nil || rows[0].Param == sweepModeParam {
		return ""
	}
	var values []int
	var modes []string
	for _, r := range rows {
		if !slices.Contains(values, r.Value) {
			values = append(values, r.Value)
		}
		if r.Broadcast != "" && !slices.Contains(modes, r.Broadcast) {
			modes = append(modes, r.Broadcast)
		}
	}
	if len(values) < 2 {
		return ""
	}
	name := "bench-sweep-" + rows[0].Param
	if len(modes) > 0 {
		name += "-" + strings.Join(modes, "-")
	}
	return filepath.Clean(name + ".svg")
}

func setParam(c *harness.Config, name string, v int) {
	switch name {
	case "nodes":
		c.Nodes = v
	case "degree":
		c.Degree = v
	case "size":
		c.Size = v
	case "window":
		c.Window = v
	case "senders":
		c.Senders = v
	case "messages":
		c.Messages = v
	case "rate":
		c.Rate = v
	case "requests":
		c.Requests = v
	case "sign": // 1: signed, 0: unsigned
		c.Unsigned = v == 0
	case "tls": // 1: TLS links, 0: plaintext
		c.Plaintext = v == 0
	case "send-queue":
		c.SendQueue = v
	}
}
