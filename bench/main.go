// Command bench measures a meshsock flooding mesh on this machine: it starts
// a cluster of mesh nodes on 127.0.0.1, wires them into a fixed topology,
// floods numbered broadcasts from random nodes and reports throughput,
// coverage latency (Send until the last node has the broadcast), flood
// redundancy, losses, duplicates, allocations, setup time and memory per
// node.
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
//	go run ./bench -sweep nodes=16,64,256,1024  # scale: plot to bench-sweep-nodes.svg (-svg PATH|off)
//	go run ./bench -sweep nodes=16,64 -sweep mode=flood,tree  # every size in every broadcast mode
//	go run ./bench -mode flood                  # the broadcast mode (flood, the default; see harness.ModeOptions)
//	go run ./bench -burst                       # send queues of 16 messages: relays drop, the report counts it
//	go run ./bench -heapprofile heap.prof       # heap in use at the end of the load, nodes still up
//	go run ./bench -setupprofile setup.prof     # CPU profile of starting and wiring the nodes
//	go run ./bench -mode chord                  # a 16-node chord ring
//	go run ./bench -mode chord -sweep nodes=8,16,32,64
//
// See docs/performance.md, sections "Mesh cluster (bench)", "Scale" and
// "Chord ring (bench -mode chord)", and docs/chord.md §11.
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
	"strings"
	"sync"
	"time"

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
	meshFlags  = []string{"degree", "topology", "window", "rate", "compression", "compress-min", "drain", "seen", "flood", "flood-budget", "procs", "baseline", "svg", "send-queue", "burst"}
	chordFlags = []string{"requests", "stabilize", "fix-fingers", "max-links", "converge"}
)

// run parses args, runs what they ask and writes the report to stdout.
// childArgv and childEnv say how to start a procs-mode node.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool, childArgv, childEnvVars []string) error {
	cfg := harness.Default()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", harness.BroadcastFlood, "what to measure: the mesh with a broadcast mode ("+strings.Join(harness.BroadcastModes(), ", ")+"; mesh is flood), or chord (the chord ring router)")
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
	useTLS := fs.Bool("tls", true, "links run TLS 1.3 (the library default); -tls=false measures plaintext links")
	sign := fs.Bool("sign", true, "origins sign and every node verifies (the library default); -sign=false measures without signatures")
	jsonOut := fs.Bool("json", false, "print one JSON record on stdout instead of the text report")
	var sweep sweepList
	fs.Var(&sweep, "sweep", "run once per value, e.g. nodes=8,16,32,64 (also degree, size, window, senders, messages, rate, send-queue, sign and tls (0: off, 1: on); chord: nodes, size, senders, messages, requests, sign, tls); a mesh sweep may add mode=flood,... (in the same flag after a space or ';', or in a second -sweep): every value in every mode")
	procs := fs.Bool("procs", false, "run each node as its own OS process")
	baseline := fs.Bool("baseline", false, "also run the raw-TCP flood and print mesh/raw ratios")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measured load to this file (procs: one per node, suffixed .nodeN)")
	memprofile := fs.String("memprofile", "", "write an allocation profile to this file at the end")
	setupprofile := fs.String("setupprofile", "", "write a CPU profile of the setup (starting the nodes and wiring the topology) to this file (in-process runs; a sweep keeps the last point's)")
	heapprofile := fs.String("heapprofile", "", "write a heap profile (in use, after a GC) to this file at the end of the measured load, with the nodes still up (in-process runs; a sweep keeps the last point's)")
	svg := fs.String("svg", svgAuto, "with -sweep: write a plot of the sweep to this SVG file; auto: a mesh sweep of more than one value goes to bench-sweep-PARAM[-MODES].svg; off: no plot")
	fs.IntVar(&cfg.SendQueue, "send-queue", 0, "every connection's send queue, in messages (0: the library default, 4096)")
	burst := fs.Bool("burst", false, "burst workload: send queues of 16 messages and a window of 1024 broadcasts (unless -send-queue or -window say otherwise), so that relays drop copies; reports the drops")
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
	switch *mode {
	case harness.ModeChord:
		cfg.Mode = harness.ModeChord
	case harness.ModeMesh: // the name before broadcast modes
		cfg.Mode = harness.ModeMesh
	default:
		if _, err := harness.ModeOptions(*mode); err != nil {
			return fmt.Errorf("-mode: %w, or chord", err)
		}
		cfg.Mode, cfg.Broadcast = harness.ModeMesh, *mode
	}
	if err := checkModeFlags(fs, cfg.Mode); err != nil {
		return err
	}
	if *burst {
		applyBurst(fs, &cfg)
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
	spec, err := parseSweep(sweep, cfg.Mode)
	if err != nil {
		return err
	}
	if *svg != svgAuto && *svg != svgOff && spec.empty() {
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
	var startSetupProfile func() (stop func())
	if *setupprofile != "" {
		if cfg.Procs {
			return errors.New("-setupprofile profiles this process: not with -procs")
		}
		startSetupProfile = func() func() { return cpuProfileUntil(*setupprofile, stderr) }
	}
	if *heapprofile != "" {
		if cfg.Procs {
			return errors.New("-heapprofile profiles this process: not with -procs")
		}
		cfg.AfterLoad = chainHooks(cfg.AfterLoad, func() { writeHeapProfile(*heapprofile, stderr) })
	}
	if err := cfg.Validate(); err != nil {
		return err
	}

	rep := &harness.Report{Command: "go run ./bench " + strings.Join(args, " ")}
	failed := false
	// one runs what c asks once: a chord run, or a mesh run and with
	// -baseline its raw-TCP flood.
	one := func(c harness.Config, row *harness.SweepRow) error {
		if startSetupProfile != nil {
			// The setup ends where the load begins (and its own profile,
			// if any, starts), or with the run if the setup failed.
			stop := startSetupProfile()
			defer stop()
			c.BeforeLoad = chainHooks(stop, c.BeforeLoad)
		}
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
	plot := ""
	if !spec.empty() {
		for _, row := range spec.points() {
			c := cfg
			if row.Param != sweepModeParam {
				setParam(&c, row.Param, row.Value)
			}
			if row.Broadcast != "" {
				c.Broadcast = row.Broadcast
			}
			if err := c.Validate(); err != nil {
				return fmt.Errorf("%s=%s: %w", row.Param, row.Label(), err)
			}
			if err := one(c, &row); err != nil {
				return fmt.Errorf("%s=%s: %w", row.Param, row.Label(), err)
			}
			rep.Sweep = append(rep.Sweep, row)
			runtime.GC()
		}
		if plot = plotPath(*svg, rep.Sweep); plot != "" {
			if err := writeSVGFile(plot, rep.Sweep); err != nil {
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
		if plot != "" {
			fmt.Fprintf(stderr, "plot written to %s\n", plot)
		}
	} else {
		writeText(stdout, rep, plot)
	}
	if failed {
		return errFailed
	}
	return nil
}

// replay prints (and plots) a report saved with -json.
func replay(name, svg string, jsonOut bool, stdout io.Writer) error {
	if svg == svgAuto || svg == svgOff { // replays plot only where told
		svg = ""
	}
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
	defer fmt.Fprint(w, legend)
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

// legend explains the report's terms; printed after every text report.
const legend = `
terms:
  delivery          one node handing one broadcast to its application; a broadcast
                    is covered once every node but its sender delivered it
  coverage latency  from Send until the last node delivered the broadcast
  frames/delivery   message frames sent per delivery. A flood sends each broadcast
                    over every link but the one it came on, so a topology with E
                    links among N nodes forces (2E - N + 1) / (N - 1) at most; the
                    copies beyond the first at each node are the "redundant" ones
  repairs           loss repair: a node that hears of a broadcast it lacks (an
                    announcement) pulls it from the announcer's message cache;
                    "drops" are copies a relay could not queue, repaired so
  idle cluster      memory and goroutines right after setup, before any load
  memory, heap      the seen-state (duplicate suppression, one window per origin)
                    fills up to its bound in the first seconds of a run: the heap
                    grows while it fills, then stays flat. That is not a leak;
                    "live heap" after GC shows it levelling off
  seen-state        origins remembered; "refused" counts broadcasts dropped because
                    no room was left for a new origin (WithSeenCache)
  chord terms       hops: links a lookup crossed; answers "dialled" went straight to
                    the requester, the others back along the ring
What the figures mean, and how they were measured: docs/performance.md
`

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

// chainHooks returns a hook that runs a, then b (either may be nil).
func chainHooks(a, b func()) func() {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func() { a(); b() }
}

// cpuProfileUntil starts a CPU profile into the named file and returns
// what stops it (at most once); a failure is reported on stderr.
func cpuProfileUntil(name string, stderr io.Writer) (stop func()) {
	f, err := os.Create(name)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench: setup profile:", err)
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintln(stderr, "bench: setup profile:", err)
			}
		})
	}
}

// writeHeapProfile writes the in-use heap after a GC; a failure is reported
// on stderr, as the run itself is still good.
func writeHeapProfile(name string, stderr io.Writer) {
	runtime.GC()
	f, err := os.Create(name)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench: heap profile:", err)
	}
}

// Burst workload defaults (-burst).
const (
	burstSendQueue = 16   // messages per connection send queue
	burstWindow    = 1024 // broadcasts in flight
	burstDrain     = 3 * time.Second
)

// applyBurst sets the burst workload's send queue, window and drain, except
// where the command line set them.
func applyBurst(fs *flag.FlagSet, cfg *harness.Config) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["send-queue"] {
		cfg.SendQueue = burstSendQueue
	}
	if !set["window"] {
		cfg.Window = burstWindow
	}
	if !set["drain"] {
		cfg.Drain = burstDrain
	}
}
