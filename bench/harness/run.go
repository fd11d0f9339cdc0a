package harness

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// cluster is a running set of nodes wired into a topology.
type cluster interface {
	// send broadcasts message k from node origin; buf is a payload the
	// caller owns, with k already in its header (unused in procs mode).
	send(ctx context.Context, origin, k int, buf []byte) error
	// begin starts the measurement, after the counters were read once.
	begin() error
	// counters sums the nodes' counters.
	counters() (wireCounters, error)
	close() error
}

// wireCounters are summed over a cluster's nodes.
type wireCounters struct {
	FramesOut, BytesOut, FramesIn uint64
	FloodDuplicates               uint64 // copies a node dropped as already seen
	RelayDrops, QueueDrops        uint64
	RecvDrops, SeenRefused        uint64
	BudgetWaits                   uint64 // broadcasts held back over a neighbour's flood budget
	SlowDrops, DispatchDrops      uint64 // origin copies for slow neighbours; messages for handlers
	FloodSent, FloodDelivered     uint64 // the flooder's broadcasts, and their deliveries (Config.Flood)
	Verified, VerifyBatches       uint64 // signatures checked, and in how many batches
	PullsSent, Repairs            uint64 // loss repair: broadcasts pulled, and delivered after a pull
	RepairsGivenUp                uint64 // heard of, never delivered within the repair window
	Grafts, Prunes                uint64 // tree mode: GRAFT and PRUNE messages sent
	// Filled by procs children only (in-process runs measure the whole
	// process instead).
	Mallocs, AllocBytes uint64
	PeakHeap            uint64
	PeakGoroutines      int
	CPU                 time.Duration
	GCs                 uint32
	SeenCacheSize       int
	ChildErrors         []string
	ProfileFiles        []string
	ChildSampleTimeline []uint64
	ChildLiveTimeline   []uint64
}

func (a *wireCounters) sub(b wireCounters) {
	a.FramesOut -= b.FramesOut
	a.BytesOut -= b.BytesOut
	a.FramesIn -= b.FramesIn
	a.FloodDuplicates -= b.FloodDuplicates
	a.RelayDrops -= b.RelayDrops
	a.QueueDrops -= b.QueueDrops
	a.RecvDrops -= b.RecvDrops
	a.SeenRefused -= b.SeenRefused
	a.BudgetWaits -= b.BudgetWaits
	a.Verified -= b.Verified
	a.VerifyBatches -= b.VerifyBatches
	a.PullsSent -= b.PullsSent
	a.Repairs -= b.Repairs
	a.RepairsGivenUp -= b.RepairsGivenUp
	a.Grafts -= b.Grafts
	a.Prunes -= b.Prunes
	a.SlowDrops -= b.SlowDrops
	a.DispatchDrops -= b.DispatchDrops
	a.FloodSent -= b.FloodSent
	a.FloodDelivered -= b.FloodDelivered
}

// Run performs one run in the configured mode (mesh in-process, mesh in
// procs, or raw with raw set) and returns its result.
func Run(ctx context.Context, cfg Config, raw bool) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	topo := cfg.BuildTopology()
	mode := ModeMesh
	switch {
	case raw:
		mode = ModeRaw
	case cfg.Procs:
		mode = ModeProcs
	}
	tr := newTracker(cfg.Nodes, cfg.Messages, cfg.Window, cfg.Seed)
	idle0 := idleFootprint()
	setupStart := time.Now()
	var (
		cl  cluster
		err error
	)
	switch mode {
	case ModeRaw:
		cl, err = startRaw(ctx, &cfg, topo, tr)
	case ModeProcs:
		cl, err = startProcs(ctx, &cfg, topo, tr)
	default:
		cl, err = startMesh(ctx, &cfg, topo, tr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: starting %d nodes: %w", mode, cfg.Nodes, err)
	}
	setup := time.Since(setupStart)
	idle := idleFootprint().minus(idle0)
	res, runErr := drive(ctx, &cfg, mode, topo, tr, cl)
	closeErr := cl.close()
	if runErr != nil {
		return nil, runErr
	}
	if res != nil {
		res.Setup = Dur(setup)
		if mode != ModeProcs { // the children's memory is not this process's
			res.SetupHeap, res.SetupStacks, res.SetupGoroutines = idle.heap, idle.stacks, idle.goroutines
		}
		res.derive()
	}
	if closeErr != nil && res != nil {
		res.Problems = append(res.Problems, "close: "+closeErr.Error())
	}
	return res, nil
}

// footprint is this process's live heap (after a GC) and goroutine count.
type footprint struct {
	heap, stacks uint64
	goroutines   int
}

// idleFootprint measures the process between runs or with a cluster idle:
// what a cluster holds without load is the difference of two of them.
func idleFootprint() footprint {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return footprint{heap: ms.HeapAlloc, stacks: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

func (f footprint) minus(g footprint) footprint {
	d := footprint{goroutines: f.goroutines - g.goroutines}
	if f.heap > g.heap {
		d.heap = f.heap - g.heap
	}
	if f.stacks > g.stacks {
		d.stacks = f.stacks - g.stacks
	}
	return d
}

// drive sends the load through a started cluster and measures it.
func drive(ctx context.Context, cfg *Config, mode string, topo Topology, tr *tracker, cl cluster) (*Result, error) {
	before, err := cl.counters()
	if err != nil {
		return nil, err
	}
	inProcess := mode != ModeProcs
	if err := cl.begin(); err != nil {
		return nil, err
	}
	// In procs mode the children measure themselves; the coordinator's
	// own CPU is still reported.
	met := startMeter(cfg.BeforeLoad, cfg.AfterLoad)
	defer met.stop() // on the error paths

	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(sendCtx, cfg.Duration)
		defer cancel()
	}
	// Sends themselves may block on a full queue; they get their own
	// context so that the end of the sending phase does not fail them.
	opCtx, stopOps := context.WithCancel(context.Background())
	defer stopOps()

	var (
		next      atomic.Int64
		wg        sync.WaitGroup
		firstErr  atomic.Pointer[error]
		sendStart = tr.now()
	)
	for i := 0; i < cfg.Senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cfg.Size)
			fillPayload(buf, cfg.Seed+uint64(i))
			for {
				select {
				case tr.window <- struct{}{}:
				case <-sendCtx.Done():
					return
				}
				k := int(next.Add(1) - 1)
				if k >= cfg.Messages {
					<-tr.window
					return
				}
				if cfg.Rate > 0 {
					// Open-loop pacing: message k is due k/rate after the start.
					due := sendStart + int64(float64(k)*float64(time.Second)/float64(cfg.Rate))
					if d := due - tr.now(); d > 0 {
						time.Sleep(time.Duration(d))
					}
				}
				binary.LittleEndian.PutUint32(buf, uint32(k))
				tr.sending(k, inProcess)
				if err := cl.send(opCtx, tr.origin(k), k, buf); err != nil {
					tr.sendFailed()
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				tr.sent.Add(1)
			}
		}()
	}
	sendersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(sendersDone)
	}()

	attempted := func() int { return int(min(next.Load(), int64(cfg.Messages))) }
	prog := newProgress(cfg.Progress, cfg.ProgressTTY, fmt.Sprintf("%s %d nodes", mode, cfg.Nodes))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	lastCompleted, lastChange := int64(-1), time.Now()
	stalled, sendersFinished := false, false
	for {
		select {
		case <-ctx.Done():
			stopSending()
			stopOps()
			<-sendersDone
			return nil, ctx.Err()
		case <-sendersDone:
			sendersFinished = true
			sendersDone = nil
		case <-tick.C:
		}
		done := tr.completed.Load()
		prog.update(func() string { return prog.floodLine(done, attempted(), cfg.Messages, tr, sendStart) })
		if sendersFinished && done+tr.sendErrors.Load() >= int64(attempted()) {
			break
		}
		if done != lastCompleted {
			lastCompleted, lastChange = done, time.Now()
		} else if time.Since(lastChange) > max(cfg.Drain, time.Second) {
			// Nothing completes any more: some broadcasts are lost.
			stalled = true
			stopSending()
			if sendersFinished {
				break
			}
		}
	}
	endAt := tr.now()
	stopOps()
	use := met.stop()
	after, err := cl.counters()
	if err != nil {
		return nil, err
	}
	prog.finish(prog.floodLine(tr.completed.Load(), attempted(), cfg.Messages, tr, sendStart))

	sent := attempted()
	res := &Result{
		Mode:        mode,
		Broadcast:   cfg.BroadcastMode(),
		Nodes:       cfg.Nodes,
		Topology:    cfg.Topology,
		Degree:      cfg.Degree,
		Edges:       len(topo.Edges),
		AvgDegree:   topo.AvgDegree(),
		MaxDegree:   topo.MaxDeg,
		Size:        cfg.Size,
		Senders:     cfg.Senders,
		Window:      cfg.Window,
		Rate:        cfg.Rate,
		Compression: cfg.Compression,
		Unsigned:    cfg.Unsigned,
		Plaintext:   cfg.Plaintext,
		Seed:        cfg.Seed,
		SendQueue:   cfg.SendQueue,
		Requested:   cfg.Messages,
		Sent:        int(tr.sent.Load()),
		SendErrors:  tr.sendErrors.Load(),
		Covered:     tr.completed.Load(),
		Duplicates:  tr.duplicates.Load(),
		Bogus:       tr.bogus.Load(),
		Stalled:     stalled,
		Procs:       runtime.GOMAXPROCS(0),
		CPUs:        runtime.NumCPU(),
	}
	if p := firstErr.Load(); p != nil {
		res.Problems = append(res.Problems, "send: "+(*p).Error())
	}
	res.Deliveries = tr.arrivals(sent)
	res.Expected = int64(sent) * int64(cfg.Nodes-1)
	res.LostBroadcasts, res.Lost = tr.missing(sent)
	last := tr.lastDone.Load()
	if last <= sendStart || tr.completed.Load() < int64(sent) {
		last = endAt
	}
	elapsed := time.Duration(last - sendStart)
	res.Elapsed = Dur(elapsed)
	if s := elapsed.Seconds(); s > 0 {
		res.BroadcastsPerSec = float64(res.Covered) / s
		res.DeliveriesPerSec = float64(res.Deliveries) / s
	}
	res.Latency = summarize(tr.latencies(sent))

	after.sub(before)
	res.FramesOut, res.BytesOut = after.FramesOut, after.BytesOut
	res.FloodDuplicates, res.RelayDrops, res.QueueDrops = after.FloodDuplicates, after.RelayDrops, after.QueueDrops
	res.RecvDrops, res.SeenRefused = after.RecvDrops, after.SeenRefused
	res.SlowDrops, res.DispatchDrops = after.SlowDrops, after.DispatchDrops
	res.Flood, res.BudgetWaits, res.FloodSent, res.FloodDelivered = cfg.Flood, after.BudgetWaits, after.FloodSent, after.FloodDelivered
	res.Verified, res.VerifyBatches = after.Verified, after.VerifyBatches
	res.PullsSent, res.Repairs, res.RepairsGivenUp = after.PullsSent, after.Repairs, after.RepairsGivenUp
	res.Grafts, res.Prunes = after.Grafts, after.Prunes
	_, res.FloodBound = topo.FloodFrames()
	if inProcess {
		res.Mallocs, res.AllocBytes, res.GCs = use.Mallocs, use.AllocBytes, use.GCs
		res.PeakHeap, res.PeakGoroutines = use.PeakHeap, use.PeakGoroutines
		res.CPU = Dur(use.CPU)
		res.HeapTimeline, res.LiveHeapTimeline = use.Timeline, use.Live
	} else {
		res.Mallocs, res.AllocBytes = after.Mallocs, after.AllocBytes
		res.PeakHeap, res.PeakGoroutines = after.PeakHeap, after.PeakGoroutines
		res.CPU = Dur(after.CPU)
		res.CoordinatorCPU = Dur(use.CPU)
		res.GCs = after.GCs
		res.HeapTimeline, res.LiveHeapTimeline = after.ChildSampleTimeline, after.ChildLiveTimeline
		res.Problems = append(res.Problems, after.ChildErrors...)
		res.ProfileFiles = after.ProfileFiles
	}
	res.SeenCacheSize = after.SeenCacheSize
	res.derive()
	if res.Lost > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d broadcasts never reached every node (%d arrivals missing)", res.LostBroadcasts, res.Lost))
	}
	if res.Duplicates > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d duplicate deliveries", res.Duplicates))
	}
	if res.Bogus > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d payloads the harness did not send", res.Bogus))
	}
	return res, nil
}

// fillPayload fills buf after the header with text-like filler: words
// drawn with a skewed frequency from a small vocabulary, so that it
// compresses about as well as prose and compression runs mean something.
func fillPayload(buf []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 + 1
	next := func() uint64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	const letters = "etaoinshrdlucmfwypvbgkjqxz"
	vocab := make([][]byte, 200)
	for i := range vocab {
		w := make([]byte, 2+next()%8)
		for j := range w {
			r := next() % 100
			w[j] = letters[int(r*r/400)%len(letters)]
		}
		vocab[i] = w
	}
	i := PayloadHeader
	for i < len(buf) {
		r := next() % 200
		w := vocab[r*r/200] // frequent words come up more often
		i += copy(buf[i:], w)
		if i < len(buf) {
			buf[i] = ' '
			i++
		}
	}
	for j := 0; j < PayloadHeader && j < len(buf); j++ {
		buf[j] = 0
	}
}
