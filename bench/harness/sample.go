package harness

import (
	"fmt"
	"io"
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

func (p *progress) line(done int64, attempted, total int, tr *tracker, sendStart int64) string {
	el := time.Duration(tr.now() - sendStart)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(done) * float64(tr.n-1) / s
	}
	inflight := int64(attempted) - done - tr.sendErrors.Load()
	return fmt.Sprintf("%s: %d/%d broadcasts covered, %d in flight, %sdeliveries/s, %v",
		p.label, done, total, inflight, human(rate), el.Round(100*time.Millisecond))
}

func (p *progress) update(done int64, attempted, total int, tr *tracker, sendStart int64) {
	if p.w == nil || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	l := p.line(done, attempted, total, tr, sendStart)
	if p.tty {
		pad := ""
		if n := p.width - len(l); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		p.width = len(l)
		fmt.Fprintf(p.w, "\r%s%s", l, pad)
		return
	}
	fmt.Fprintln(p.w, l)
}

func (p *progress) finish(done int64, attempted, total int, tr *tracker, sendStart int64) {
	if p.w == nil {
		return
	}
	l := p.line(done, attempted, total, tr, sendStart) + " (done)"
	if p.tty {
		pad := ""
		if n := p.width - len(l); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s\n", l, pad)
		return
	}
	fmt.Fprintln(p.w, l)
}
