package harness

import (
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"time"
)

// sampler watches the heap and the goroutine count without stopping the
// world (runtime/metrics), keeping the peaks and a coarse timeline.
type sampler struct {
	stopCh   chan struct{}
	wg       sync.WaitGroup
	peakHeap uint64
	peakG    int
	timeline []uint64 // heap in use, once per timelineEvery
	live     []uint64 // live heap as of the last GC, once per timelineEvery
}

var sampleNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/sched/goroutines:goroutines",
	"/gc/heap/live:bytes",
}

// heapInUse returns the heap in use (the runtime's HeapInuse) and the
// goroutine count.
func readSamples(s []metrics.Sample) (heap uint64, goroutines int) {
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64(), int(s[2].Value.Uint64())
}

func newSamples() []metrics.Sample {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	return s
}

func startSampler(every, timelineEvery time.Duration) *sampler {
	sm := &sampler{stopCh: make(chan struct{})}
	s := newSamples()
	sm.peakHeap, sm.peakG = readSamples(s)
	sm.timeline = append(sm.timeline, sm.peakHeap)
	sm.wg.Add(1)
	go func() {
		defer sm.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		lastMark := time.Now()
		for {
			select {
			case <-sm.stopCh:
				h, _ := readSamples(s)
				sm.timeline = append(sm.timeline, h)
				return
			case <-t.C:
			}
			h, g := readSamples(s)
			sm.peakHeap = max(sm.peakHeap, h)
			sm.peakG = max(sm.peakG, g)
			if time.Since(lastMark) >= timelineEvery {
				lastMark = time.Now()
				sm.timeline = append(sm.timeline, h)
				sm.live = append(sm.live, s[3].Value.Uint64())
			}
		}
	}()
	return sm
}

func (sm *sampler) stop() {
	close(sm.stopCh)
	sm.wg.Wait()
}

// meter measures what a stretch of load costs this process: allocations
// and collections (runtime.MemStats deltas, each read after a GC), CPU
// time, and the peaks and a timeline of the heap and goroutine count.
type meter struct {
	ms0   runtime.MemStats
	cpu0  time.Duration
	smp   *sampler
	after func()
	u     usage
	done  bool
}

// usage is what a meter measured.
type usage struct {
	Mallocs, AllocBytes uint64
	GCs                 uint32
	CPU                 time.Duration
	PeakHeap            uint64
	PeakGoroutines      int
	Timeline, Live      []uint64 // heap in use, live heap after GC; once a second
	LiveHeap            uint64   // live heap at the end (after a GC)
}

// startMeter starts measuring, then calls before (if set); stop calls
// after (if set) first.
func startMeter(before, after func()) *meter {
	m := &meter{after: after}
	runtime.GC()
	runtime.ReadMemStats(&m.ms0)
	m.cpu0 = processCPU()
	m.smp = startSampler(100*time.Millisecond, time.Second)
	if before != nil {
		before()
	}
	return m
}

// stop ends the measurement and returns it; later calls return the same.
func (m *meter) stop() usage {
	if m.done {
		return m.u
	}
	m.done = true
	if m.after != nil {
		m.after()
	}
	m.smp.stop()
	m.u.CPU = processCPU() - m.cpu0
	// A collection flushes the per-P allocation caches, without which
	// MemStats undercounts tiny allocations.
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	m.u.Mallocs, m.u.AllocBytes = ms.Mallocs-m.ms0.Mallocs, ms.TotalAlloc-m.ms0.TotalAlloc
	m.u.GCs = ms.NumGC - m.ms0.NumGC - 1 // not the one above
	m.u.LiveHeap = ms.HeapAlloc
	m.u.PeakHeap, m.u.PeakGoroutines = m.smp.peakHeap, m.smp.peakG
	m.u.Timeline, m.u.Live = m.smp.timeline, m.smp.live
	return m.u
}

// progress prints a live status line.
type progress struct {
	w     io.Writer
	tty   bool
	label string
	last  time.Time
	every time.Duration
	width int
}

func newProgress(w io.Writer, tty bool, label string) *progress {
	every := 250 * time.Millisecond
	if !tty {
		every = 10 * time.Second // keep CI logs short
	}
	return &progress{w: w, tty: tty, label: label, last: time.Now(), every: every}
}

// floodLine is the status of a flood run.
func (p *progress) floodLine(done int64, attempted, total int, tr *tracker, sendStart int64) string {
	el := time.Duration(tr.now() - sendStart)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(done) * float64(tr.n-1) / s
	}
	inflight := int64(attempted) - done - tr.sendErrors.Load()
	return fmt.Sprintf("%s: %d/%d broadcasts covered, %d in flight, %sdeliveries/s, %v",
		p.label, done, total, inflight, human(rate), el.Round(100*time.Millisecond))
}

// update prints the line status returns, if it is time for one.
func (p *progress) update(status func() string) {
	if p.w == nil || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	p.print(status(), false)
}

// finish prints the final line.
func (p *progress) finish(status string) {
	if p.w == nil {
		return
	}
	p.print(status+" (done)", true)
}

func (p *progress) print(l string, final bool) {
	if !p.tty {
		fmt.Fprintln(p.w, l)
		return
	}
	pad := ""
	if n := p.width - len(l); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	p.width = len(l)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r%s%s%s", l, pad, end)
}
