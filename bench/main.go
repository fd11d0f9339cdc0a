// Command bench measures a meshsock flooding mesh on this machine: it starts
// a cluster of mesh nodes on 127.0.0.1, wires them into a fixed topology,
// floods numbered broadcasts from random nodes and reports throughput,
// coverage latency (Send until the last node has the broadcast), flood
// redundancy, losses, duplicates, allocations and memory.
//
// With -mode chord it measures a chord ring instead: it joins the nodes one
// by one, waits until the ring has converged, then reports lookups/s and
// requests/s of random keys from random nodes, their latency and hops, and
// every answer checked against the owner of the key among the sorted IDs.
//
//	go run ./bench                              # 16 nodes, random degree 4, 256 B
//	go run ./bench -baseline                    # also the raw-TCP flood, and mesh/raw ratios
//	go run ./bench -procs                       # one OS process per node
//	go run ./bench -sweep nodes=8,16,32,64,128 -svg bench/out/sweep.svg
//	go run ./bench -window 1 -messages 5000     # latency when lightly loaded
//	go run ./bench -json                        # one JSON record on stdout
//	go run ./bench -rate 1000 -flood 94000      # while a hostile neighbour floods node 0
//	go run ./bench -sign=false                  # without signatures (the library signs by default)
//	go run ./bench -sweep sign=0,1              # unsigned and signed, side by side
//	go run ./bench -tls=false                   # plaintext links (the library runs TLS 1.3 by default)
//	go run ./bench -mode chord                  # a 16-node chord ring
//	go run ./bench -mode chord -sweep nodes=8,16,32,64
//
// See docs/performance.md, sections "Mesh cluster (bench)" and "Chord ring
// (bench -mode chord)", and docs/chord.md §11.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	"github.com/meshsock/meshsock/bench/harness"
)

// childEnv makes this binary a procs-mode node (the -child flag does too).
const childEnv = "MESHBENCH_CHILD"

func main() {
	if (len(os.Args) > 1 && os.Args[1] == "-child") || os.Getenv(childEnv) == "1" {
		os.Exit(harness.ChildMain(os.Stdin, os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	err = run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr), []string{exe, "-child"}, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errFailed):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// errFailed: the runs completed but failed their checks.
var errFailed = errors.New("bench: a run failed its checks (lost or duplicated broadcasts, or wrong or failed chord calls)")

// Flags that only one mode uses; the other refuses them.
var (
	meshFlags  = []string{"degree", "topology", "window", "rate", "compression", "compress-min", "drain", "seen", "flood", "flood-budget", "procs", "baseline", "svg"}
	chordFlags = []string{"requests", "stabilize", "fix-fingers", "max-links", "converge"}
)

// run parses args, runs what they ask and writes the report to stdout.
// childArgv and childEnv say how to start a procs-mode node.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool, childArgv, childEnvVars []string) error {
	cfg := harness.Default()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Mode, "mode", harness.ModeMesh, "what to measure: mesh (the flooding mesh) or chord (the chord ring router)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "mesh or chord nodes")
	fs.IntVar(&cfg.Degree, "degree", cfg.Degree, "average degree of the random topology; also each node's max outgoing")
	fs.StringVar(&cfg.Topology, "topology", cfg.Topology, "topology: line, ring or random")
	fs.IntVar(&cfg.Messages, "messages", cfg.Messages, "broadcasts to send (chord: lookups)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload bytes per broadcast or chord request (at least 12)")
	fs.IntVar(&cfg.Senders, "senders", cfg.Senders, "concurrent senders (chord: workers, one call in flight each)")
	fs.IntVar(&cfg.Requests, "requests", 0, "chord: requests after the lookups (0: as many as -messages)")
	fs.DurationVar(&cfg.Stabilize, "stabilize", cfg.Stabilize, "chord: stabilize interval of every node")
	fs.DurationVar(&cfg.FixFingers, "fix-fingers", cfg.FixFingers, "chord: fix-fingers interval of every node")
	fs.IntVar(&cfg.MaxLinks, "max-links", 0, "chord: link cap of every node (0: the chord default, 64)")
	fs.DurationVar(&cfg.Converge, "converge", cfg.Converge, "chord: give up when the ring has not converged by then")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "in-flight window: most broadcasts sent but not yet delivered everywhere")
	fs.IntVar(&cfg.Rate, "rate", 0, "pace the senders to this many broadcasts/s in all (0: as fast as the window allows)")
	fs.StringVar(&cfg.Compression, "compression", cfg.Compression, "accepted compression methods, most preferred first: none, snappy, zstd, gzip, zlib (comma-separated)")
	fs.IntVar(&cfg.CompressMin, "compress-min", 0, "smallest body compressed, bytes (0: the library default, 1 KiB)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed for the topology and the choice of senders")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "stop sending after this long (chord: each phase; 0: no limit)")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "give up when no broadcast completes for this long")
	fs.IntVar(&cfg.SeenSize, "seen", 0, "mesh seen-state origins (0: the mesh default)")
	fs.IntVar(&cfg.Flood, "flood", 0, "add a hostile neighbour of node 0 that floods this many made-up broadcasts/s during the run (0: none)")
	fs.IntVar(&cfg.FloodBudget, "flood-budget", 0, "every node's per-neighbour flood budget, broadcasts/s (0: the mesh default)")
	fs.StringVar(&cfg.Broadcast, "broadcast", "", "mesh broadcast mode: flood (the default) or tree")
	useTLS := fs.Bool("tls", true, "links run TLS 1.3 (the library default); -tls=false measures plaintext links")
	sign := fs.Bool("sign", true, "origins sign and every node verifies (the library default); -sign=false measures without signatures")
	jsonOut := fs.Bool("json", false, "print one JSON record on stdout instead of the text report")
	sweep := fs.String("sweep", "", "run once per value, e.g. nodes=8,16,32,64 (also degree, size, window, senders, messages, rate, sign (0: unsigned, 1: signed); chord: nodes, size, senders, messages, requests, sign)")
	procs := fs.Bool("procs", false, "run each node as its own OS process")
	baseline := fs.Bool("baseline", false, "also run the raw-TCP flood and print mesh/raw ratios")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measured load to this file (procs: one per node, suffixed .nodeN)")
	memprofile := fs.String("memprofile", "", "write an allocation profile to this file at the end")
	svg := fs.String("svg", "", "with -sweep: write a plot of the sweep to this SVG file")
	from := fs.String("from", "", "print the report of an earlier -json run read from this file (with -svg: plot its sweep) instead of running")
	progress := fs.String("progress", "auto", "live progress on stderr: auto (when stderr is a terminal: live line; otherwise a line every 10 s), on, off")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./bench [flags]\n\nMeasures the meshsock flooding mesh (-mode mesh) or a chord ring (-mode chord) on 127.0.0.1. Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := checkModeFlags(fs, cfg.Mode); err != nil {
		return err
	}
	cfg.Procs = *procs
	cfg.Unsigned = !*sign
	cfg.Plaintext = !*useTLS
	cfg.ChildArgv, cfg.ChildEnv = childArgv, childEnvVars
	switch *progress {
	case "auto":
		cfg.Progress, cfg.ProgressTTY = stderr, tty
	case "on":
		cfg.Progress, cfg.ProgressTTY = stderr, true
	case "off":
	default:
		return fmt.Errorf("-progress must be auto, on or off, got %q", *progress)
	}
	if *from != "" {
		return replay(*from, *svg, *jsonOut, stdout)
	}
	if *svg != "" && *sweep == "" {
		return errors.New("-svg needs -sweep")
	}
	if *cpuprofile != "" {
		if cfg.Procs {
			cfg.CPUProfile = *cpuprofile
		} else {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				return err
			}
			defer f.Close()
			profiled := false
			cfg.BeforeLoad = func() {
				if !profiled && pprof.StartCPUProfile(f) == nil {
					profiled = true
				}
			}
			cfg.AfterLoad = func() {
				if profiled {
					pprof.StopCPUProfile()
				}
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	rep := &harness.Report{Command: "go run ./bench " + strings.Join(args, " ")}
	failed := false
	// one runs what c asks once: a chord run, or a mesh run and with
	// -baseline its raw-TCP flood.
	one := func(c harness.Config, row *harness.SweepRow) error {
		if c.Mode == harness.ModeChord {
			r, err := harness.RunChord(ctx, c)
			if err != nil {
				return err
			}
			failed = failed || !r.OK()
			row.Chord = r
			return nil
		}
		r, err := harness.Run(ctx, c, false)
		if err != nil {
			return err
		}
		failed = failed || !r.OK()
		row.Mesh = r
		if *baseline {
			c.BeforeLoad, c.AfterLoad = nil, nil
			runtime.GC()
			raw, err := harness.Run(ctx, c, true)
			if err != nil {
				return fmt.Errorf("raw baseline: %w", err)
			}
			failed = failed || !raw.OK()
			row.Raw = raw
		}
		return nil
	}
	if *sweep != "" {
		param, values, err := parseSweep(*sweep, cfg.Mode)
		if err != nil {
			return err
		}
		for _, v := range values {
			c := cfg
			setParam(&c, param, v)
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%s=%d: %w", param, v, err)
			}
			row := harness.SweepRow{Param: param, Value: v}
			if err := one(c, &row); err != nil {
				return fmt.Errorf("%s=%d: %w", param, v, err)
			}
			rep.Sweep = append(rep.Sweep, row)
			runtime.GC()
		}
		if *svg != "" {
			if err := writeSVGFile(*svg, rep.Sweep); err != nil {
				return err
			}
		}
	} else {
		var row harness.SweepRow
		if err := one(cfg, &row); err != nil {
			return err
		}
		rep.Mesh, rep.Raw, rep.Chord = row.Mesh, row.Raw, row.Chord
		if row.Raw != nil {
			rep.Comparison = harness.Compare(row.Mesh, row.Raw)
		}
	}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return err
		}
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}

	if *jsonOut {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		writeText(stdout, rep, *svg)
	}
	if failed {
		return errFailed
	}
	return nil
}

// replay prints (and plots) a report saved with -json.
func replay(name, svg string, jsonOut bool, stdout io.Writer) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	var rep harness.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if rep.Mesh == nil && rep.Chord == nil && len(rep.Sweep) == 0 {
		return fmt.Errorf("%s: no results in it", name)
	}
	if rep.Mesh != nil && rep.Raw != nil {
		rep.Comparison = harness.Compare(rep.Mesh, rep.Raw)
	}
	if svg != "" {
		if len(rep.Sweep) == 0 || rep.Sweep[0].Mesh == nil {
			return errors.New("-svg needs a mesh sweep")
		}
		if err := writeSVGFile(svg, rep.Sweep); err != nil {
			return err
		}
	}
	if jsonOut {
		return rep.WriteJSON(stdout)
	}
	writeText(stdout, &rep, svg)
	return nil
}

func writeText(w io.Writer, rep *harness.Report, svg string) {
	if rep.Sweep != nil {
		fmt.Fprintf(w, "sweep: %s\n", rep.Command)
		harness.WriteSweepTable(w, rep.Sweep)
		if svg != "" {
			fmt.Fprintf(w, "plot written to %s\n", svg)
		}
		return
	}
	if rep.Chord != nil {
		rep.Chord.WriteText(w)
		return
	}
	rep.Mesh.WriteText(w)
	if rep.Raw != nil {
		fmt.Fprintln(w)
		rep.Raw.WriteText(w)
		fmt.Fprintln(w)
		rep.Comparison.WriteText(w)
	}
}

// The parameters a sweep may vary, per mode.
var (
	sweepParams      = []string{"nodes", "degree", "size", "window", "senders", "messages", "rate", "sign", "tls"}
	chordSweepParams = []string{"nodes", "size", "senders", "messages", "requests", "sign", "tls"}
)

func parseSweep(s, mode string) (string, []int, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok {
		return "", nil, fmt.Errorf("-sweep %q: want name=v1,v2,...", s)
	}
	params := sweepParams
	if mode == harness.ModeChord {
		params = chordSweepParams
	}
	if !slices.Contains(params, name) {
		return "", nil, fmt.Errorf("-sweep: unknown parameter %q for -mode %s (one of %s)", name, mode, strings.Join(params, ", "))
	}
	var values []int
	for _, f := range strings.Split(list, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return "", nil, fmt.Errorf("-sweep %s: %w", name, err)
		}
		values = append(values, v)
	}
	return name, values, nil
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
	}
}

// checkModeFlags refuses the flags set on the command line that the other
// mode uses.
func checkModeFlags(fs *flag.FlagSet, mode string) error {
	other := chordFlags
	if mode == harness.ModeChord {
		other = meshFlags
	}
	var wrong []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(other, f.Name) {
			wrong = append(wrong, "-"+f.Name)
		}
	})
	if len(wrong) > 0 {
		return fmt.Errorf("%s not used by -mode %s", strings.Join(wrong, ", "), mode)
	}
	return nil
}

func writeSVGFile(name string, rows []harness.SweepRow) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := harness.WriteSVG(f, rows); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
