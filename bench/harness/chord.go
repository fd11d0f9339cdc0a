package harness

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/chord"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// Chord mode measures a chord ring: Nodes chord nodes in this process on
// 127.0.0.1, joined one by one through random members, measured once the
// ring has converged with lookups and then requests of random keys from
// random nodes. Every answer is checked against the oracle, the owner of
// the key among the sorted IDs of the nodes (chord.Owner).

// ChordResult is what a chord run measured.
type ChordResult struct {
	Mode                  string
	Nodes                 int
	Senders               int // workers per phase, one call in flight each
	Size                  int // request payload bytes (the answer echoes it)
	Seed                  uint64
	Stabilize, FixFingers Dur
	MaxLinks              int
	Procs, CPUs           int // GOMAXPROCS and CPUs of the process

	// Setup is starting the nodes and joining them one by one; Converge
	// the wait after it, until every successor, predecessor and finger
	// matched the oracle and Checked lookups from random nodes all agreed
	// with it.
	Setup, Converge Dur
	Checked         int

	Lookups, Requests *ChordPhase
	Links             int // open links at the end, summed over the nodes

	Problems []string `json:",omitempty"`
}

// ChordPhase is one measured phase: lookups or requests.
type ChordPhase struct {
	Requested int   // calls asked for
	Done      int64 // calls made (fewer when the phase stopped at Duration)
	Answered  int64 // calls that returned an answer, right or wrong
	Wrong     int64 // answers that disagree with the oracle
	Errors    int64 // calls that failed (timeout, no route)
	Elapsed   Dur   // first call until the last answer
	PerSec    float64
	Latency   Latency // call until answer, answered calls
	Hops      Hops

	// Wire and chord counters, deltas summed over the nodes (maintenance
	// traffic included).
	FramesOut, BytesOut     uint64
	FramesPerOp, BytesPerOp float64
	Timeouts, NoRoute       uint64
	LateAnswers             uint64
	ReplyDials              uint64 // answers for which the owner dialled the caller
	ReplyFallbacks          uint64 // answers sent along the ring instead
	ReplyFailures           uint64
	ReplyErrors             uint64 // the owner's msg.Reply failed (requests)

	// Whole process, maintenance included.
	Mallocs, AllocBytes          uint64
	AllocsPerOp, AllocBytesPerOp float64
	GCs                          uint32
	CPU, CPUPerOp                Dur
	PeakHeap                     uint64 // HeapInuse, peak (garbage not yet collected included)
	LiveHeap                     uint64 // live heap at the end of the phase, after a GC
	PeakGoroutines               int

	FirstProblem string `json:",omitempty"`
}

// Hops summarizes the hop counts of the answered calls: links crossed from
// the caller to the key's owner (0 when the caller owns it).
type Hops struct {
	P50, P90, P99, Max int
	Mean               float64
	Histogram          []int64 // Histogram[h]: answered calls of h hops
	// StatsAgree: the nodes' own hop histograms (chord Stats.Hops) grew
	// by exactly these counts.
	StatsAgree bool
}

// OK reports whether every call was answered, by the right node.
func (r *ChordResult) OK() bool {
	for _, p := range []*ChordPhase{r.Lookups, r.Requests} {
		if p != nil && (p.Wrong > 0 || p.Errors > 0 || p.ReplyErrors > 0 || !p.Hops.StatsAgree) {
			return false
		}
	}
	return true
}

// RunChord builds a chord ring as cfg says, waits for it to converge and
// measures the lookup phase, then the request phase. It fails if the ring
// cannot be built or does not converge within cfg.Converge.
func RunChord(ctx context.Context, cfg Config) (*ChordResult, error) {
	cfg.Mode = ModeChord
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	res := &ChordResult{
		Mode: ModeChord, Nodes: cfg.Nodes, Senders: cfg.Senders, Size: cfg.Size, Seed: cfg.Seed,
		Stabilize: Dur(cfg.Stabilize), FixFingers: Dur(cfg.FixFingers), MaxLinks: cmp.Or(cfg.MaxLinks, chord.DefaultMaxLinks),
		Procs: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU(),
	}
	start := time.Now()
	r, err := startChord(ctx, &cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: starting %d nodes: %w", ModeChord, cfg.Nodes, err)
	}
	res.Setup = Dur(time.Since(start))
	runErr := r.drive(ctx, &cfg, res)
	if err := r.close(); err != nil {
		res.Problems = append(res.Problems, "close: "+err.Error())
	}
	if runErr != nil {
		return nil, runErr
	}
	return res, nil
}

// chordRing is a running ring.
type chordRing struct {
	nodes []*chord.Socket
	ids   []protocol.NodeID // sorted: the oracle
	byID  map[protocol.NodeID]*chord.Socket
	// maxLinks is the nodes' link cap.
	maxLinks int
	// ctx bounds the owners' replies; it ends when the ring closes.
	ctx         context.Context
	cancel      context.CancelFunc
	replyErrors atomic.Uint64
}

func startChord(ctx context.Context, cfg *Config) (*chordRing, error) {
	r := &chordRing{byID: make(map[protocol.NodeID]*chord.Socket, cfg.Nodes), maxLinks: cmp.Or(cfg.MaxLinks, chord.DefaultMaxLinks)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	logger := benchLogger()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x63686f7264)) // IDs and join points follow the seed
	for i := range cfg.Nodes {
		opts := []chord.Option{
			chord.WithKey(seededKey(rng)),
			chord.WithLogger(logger.With("node", i)),
			chord.WithStabilizeInterval(cfg.Stabilize),
			chord.WithFixFingersInterval(cfg.FixFingers),
			chord.WithCheckPredecessorInterval(2 * cfg.Stabilize),
			chord.WithProtocol(cfg.chordProtocol()),
			chord.WithBaseOptions(base.WithSigning(!cfg.Unsigned)),
		}
		if cfg.MaxLinks > 0 {
			opts = append(opts, chord.WithMaxLinks(cfg.MaxLinks))
		}
		s, err := chord.NewSocket("127.0.0.1:0", opts...)
		if err != nil {
			_ = r.close()
			return nil, err
		}
		s.RegisterHandler(base.HandlerFunc(r.echo))
		if i > 0 {
			via := r.nodes[rng.IntN(len(r.nodes))]
			jctx, cancel := context.WithTimeout(ctx, wireTimeout)
			_, err = s.Join(jctx, via.Addr().String())
			cancel()
		}
		r.nodes = append(r.nodes, s)
		if err != nil {
			_ = r.close()
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		r.ids = append(r.ids, s.ID())
		r.byID[s.ID()] = s
	}
	slices.SortFunc(r.ids, protocol.NodeID.Compare)
	return r, nil
}

// echo answers a request at its owner with the request's own packets.
func (r *chordRing) echo(m *base.Message) bool {
	if !chord.IsRequest(m) {
		return false
	}
	if err := m.Reply(r.ctx, m.Packets...); err != nil {
		r.replyErrors.Add(1)
	}
	return true
}

func (r *chordRing) close() error {
	r.cancel()
	return closeEach(len(r.nodes), func(i int) error { return r.nodes[i].Close(context.Background()) })
}

// seededKey draws a node key from rng, so that node IDs (derived from the
// keys) follow the seed.
func seededKey(rng *rand.Rand) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := 0; i < len(seed); i += 8 {
		binary.BigEndian.PutUint64(seed[i:], rng.Uint64())
	}
	return ed25519.NewKeyFromSeed(seed)
}

// room reports whether s may open a link it does not need (under its cap).
func (r *chordRing) room(s *chord.Socket) bool {
	return s != nil && len(s.Base().Conns()) < r.maxLinks
}

// owner is the oracle: the node that owns key.
func (r *chordRing) owner(key protocol.NodeID) protocol.NodeID {
	id, _ := chord.Owner(r.ids, key)
	return id
}

// drive waits for the ring to converge, then measures both phases.
func (r *chordRing) drive(ctx context.Context, cfg *Config, res *ChordResult) error {
	start := time.Now()
	checked, err := r.converge(ctx, cfg)
	if err != nil {
		return err
	}
	res.Converge, res.Checked = Dur(time.Since(start)), checked
	if cfg.BeforeLoad != nil {
		cfg.BeforeLoad()
	}
	if cfg.AfterLoad != nil {
		defer cfg.AfterLoad()
	}
	label := fmt.Sprintf("%s %d nodes", ModeChord, cfg.Nodes)
	requests := cfg.Requests
	if requests == 0 {
		requests = cfg.Messages
	}
	if res.Lookups, err = r.phase(ctx, cfg, phaseSpec{name: "lookups", label: label, count: cfg.Messages, op: r.lookup, salt: 1, measure: true}); err != nil {
		return err
	}
	if res.Requests, err = r.phase(ctx, cfg, phaseSpec{name: "requests", label: label, count: requests, op: r.request, salt: 2, measure: true}); err != nil {
		return err
	}
	for _, s := range r.nodes {
		res.Links += s.Stats().Links
	}
	for _, p := range []struct {
		name string
		ph   *ChordPhase
	}{{"lookups", res.Lookups}, {"requests", res.Requests}} {
		if p.ph.FirstProblem != "" {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %d wrong, %d errors; first: %s", p.name, p.ph.Wrong, p.ph.Errors, p.ph.FirstProblem))
		}
		if p.ph.ReplyErrors > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %d replies failed at the owner", p.name, p.ph.ReplyErrors))
		}
		if !p.ph.Hops.StatsAgree {
			res.Problems = append(res.Problems, p.name+": the nodes' hop histograms (chord Stats) disagree with the hops the calls returned")
		}
	}
	return nil
}

// converge waits until problem finds nothing, then until a sample of
// lookups from random nodes all agree with the oracle, within
// cfg.Converge. It returns the size of the sample.
func (r *chordRing) converge(ctx context.Context, cfg *Config) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Converge)
	defer cancel()
	sample := min(max(8*len(r.nodes), 100), 1000)
	var last string
	for attempt := uint64(0); ; attempt++ {
		err := testnet.WaitFor(ctx, func() bool { last = r.problem(); return last == "" })
		if err == nil {
			var ph *ChordPhase
			ph, err = r.phase(ctx, cfg, phaseSpec{name: "oracle check", count: sample, op: r.lookup, salt: 100 + attempt})
			if err == nil && ph.Wrong == 0 && ph.Errors == 0 {
				return sample, nil
			}
			if ph != nil {
				last = "oracle check: " + ph.FirstProblem
			}
		}
		if err == nil {
			select {
			case <-time.After(cfg.Stabilize):
				continue
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		return 0, fmt.Errorf("%s: ring of %d did not converge within %v (%w): %s", ModeChord, len(r.nodes), cfg.Converge, err, last)
	}
}

// problem says how the ring differs from a converged one ("" when it does
// not): each node's successor list must be the next IDs after its own
// among the sorted IDs (as many as the list holds: stabilization lengthens
// it by about one a round, and routing finishes over it), its predecessor
// the ID before its own, and its finger i the owner of ID + 2^i (zero
// where that is the node itself); and since routing uses a node only over
// a live link, each node must have links to its successors and
// predecessor, and to its fingers as long as it has room under the link
// cap.
func (r *chordRing) problem() string {
	n := len(r.ids)
	wrong, first := 0, ""
	note := func(format string, args ...any) {
		if wrong++; first == "" {
			first = fmt.Sprintf(format, args...)
		}
	}
	linked := func(s *chord.Socket, p chord.PeerInfo, what string) {
		if _, ok := s.Base().Conn(p.ID); !ok {
			note("%s: no link to its %s %s", s.ID().Short(), what, p.ID.Short())
		}
	}
	for _, s := range r.nodes {
		id := s.ID()
		i, _ := slices.BinarySearchFunc(r.ids, id, protocol.NodeID.Compare)
		succs := s.Successors()
		if want := min(chord.DefaultSuccessors, n-1); len(succs) != want {
			note("%s: %d successors, want %d", id.Short(), len(succs), want)
		}
		for j, p := range succs {
			if want := r.ids[(i+1+j)%n]; p.ID != want {
				note("%s: successor %d %s, want %s", id.Short(), j, p.ID.Short(), want.Short())
				break
			}
		}
		pred, ok := s.Predecessor()
		if !ok || pred.ID != r.ids[(i+n-1)%n] {
			note("%s: predecessor %s, want %s", id.Short(), pred.ID.Short(), r.ids[(i+n-1)%n].Short())
		}
		if wrong > 0 {
			continue // the rest follows once the pointers are right
		}
		fingers := s.Fingers()
		for f := range fingers {
			want := r.owner(chord.FingerStart(id, f))
			if want == id {
				want = protocol.NodeID{}
			}
			if fingers[f].ID != want {
				note("%s: finger %d %s, want %s", id.Short(), f, fingers[f].ID.Short(), want.Short())
			}
		}
		linked(s, pred, "predecessor")
		for _, p := range succs {
			linked(s, p, "successor")
		}
		for f, p := range fingers {
			// Chord opens a link to a finger only while both ends are
			// under their caps.
			if distinct := f == 0 || p.ID != fingers[f-1].ID; distinct && !p.ID.IsZero() && r.room(s) && r.room(r.byID[p.ID]) {
				linked(s, p, "finger")
			}
		}
	}
	if wrong == 0 {
		return ""
	}
	return fmt.Sprintf("%d pointers or links missing or wrong; first: %s", wrong, first)
}

// chordOp makes one call from s for key; buf is the request payload, with
// the operation number in its header. It returns the hops the call
// crossed and, for an answer that disagrees with the oracle, what is
// wrong with it.
type chordOp func(ctx context.Context, s *chord.Socket, key protocol.NodeID, buf []byte) (hops int, wrong string, err error)

func (r *chordRing) lookup(ctx context.Context, s *chord.Socket, key protocol.NodeID, _ []byte) (int, string, error) {
	res, err := s.LookupDetail(ctx, key)
	if err != nil {
		return 0, "", err
	}
	if want := r.owner(key); res.Owner.ID != want {
		return res.Hops, fmt.Sprintf("lookup of %s from %s: %s, want %s", key, s.ID().Short(), res.Owner.ID.Short(), want.Short()), nil
	}
	return res.Hops, "", nil
}

func (r *chordRing) request(ctx context.Context, s *chord.Socket, key protocol.NodeID, buf []byte) (int, string, error) {
	m, err := s.Request(ctx, key, buf)
	if err != nil {
		return 0, "", err
	}
	hops := 0
	if rt, ok := chord.RouteOf(m); ok {
		hops = rt.Hops
	}
	switch want := r.owner(key); {
	case m.Sender != want:
		return hops, fmt.Sprintf("request for %s from %s: answered by %s, want %s", key, s.ID().Short(), m.Sender.Short(), want.Short()), nil
	case len(m.Packets) != 1 || !bytes.Equal(m.Packets[0], buf):
		return hops, fmt.Sprintf("request for %s from %s: the answer is not the request's payload", key, s.ID().Short()), nil
	}
	return hops, "", nil
}

// phaseSpec describes a phase: count calls of op, by cfg.Senders workers.
// Call k goes from node and for key hash(seed, salt, k), whichever worker
// makes it. Only a measured phase is metered, stopped at cfg.Duration and
// shown on the progress line.
type phaseSpec struct {
	name, label string
	count       int
	op          chordOp
	salt        uint64
	measure     bool
}

// Outcomes of a call.
const (
	callNotMade uint8 = iota
	callOK
	callWrong
	callFailed
)

func (r *chordRing) phase(ctx context.Context, cfg *Config, sp phaseSpec) (*ChordPhase, error) {
	lat := make([]int64, sp.count)
	hops := make([]uint8, sp.count)
	outcome := make([]uint8, sp.count)
	var (
		before       []chord.Stats
		replyErrors0 uint64
		met          *meter
	)
	if sp.measure {
		before, replyErrors0 = r.stats(), r.replyErrors.Load()
		met = startMeter(nil, nil)
		defer met.stop() // on the error path
	}
	opCtx, cancelOps := context.WithCancel(context.Background())
	defer cancelOps()
	var (
		next, done, bad atomic.Int64
		stop            atomic.Bool
		firstProblem    atomic.Pointer[string]
		wg              sync.WaitGroup
		elapsed         time.Duration
	)
	note := func(p string) { firstProblem.CompareAndSwap(nil, &p) }
	seed := mix(cfg.Seed, sp.salt)
	start := time.Now()
	for w := range cfg.Senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cfg.Size)
			fillPayload(buf, cfg.Seed+uint64(w))
			for !stop.Load() {
				k := int(next.Add(1) - 1)
				if k >= sp.count {
					return
				}
				x := mix(seed, uint64(k))
				var key protocol.NodeID
				binary.BigEndian.PutUint64(key[:8], x)
				binary.BigEndian.PutUint64(key[8:], mix(x, seed))
				s := r.nodes[x%uint64(len(r.nodes))]
				binary.LittleEndian.PutUint32(buf, uint32(k))
				t := time.Now()
				h, wrong, err := sp.op(opCtx, s, key, buf)
				lat[k], hops[k] = int64(time.Since(t)), uint8(min(h, 255))
				switch {
				case err != nil:
					outcome[k] = callFailed
					note(fmt.Sprintf("%s from %s for %s: %v", sp.name, s.ID().Short(), key, err))
				case wrong != "":
					outcome[k] = callWrong
					note(wrong)
				default:
					outcome[k] = callOK
				}
				if outcome[k] != callOK {
					bad.Add(1)
				}
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		elapsed = time.Since(start)
		close(finished)
	}()

	var prog *progress
	if sp.measure {
		prog = newProgress(cfg.Progress, cfg.ProgressTTY, sp.label)
	}
	status := func() string {
		el := time.Since(start)
		return fmt.Sprintf("%s: %s %d/%d, %d wrong or failed, %s/s, %v",
			sp.label, sp.name, done.Load(), sp.count, bad.Load(), human(float64(done.Load())/max(el.Seconds(), 1e-9)), el.Round(100*time.Millisecond))
	}
	var deadline <-chan time.Time
	if sp.measure && cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			stop.Store(true)
			cancelOps()
			<-finished
			return nil, ctx.Err()
		case <-deadline:
			stop.Store(true)
			deadline = nil
		case <-tick.C:
			if prog != nil {
				prog.update(status)
			}
		case <-finished:
			break wait
		}
	}

	ph := &ChordPhase{Requested: sp.count, Elapsed: Dur(elapsed)}
	var answered []int64
	var hist []int64
	for k, o := range outcome {
		switch o {
		case callNotMade:
			continue
		case callFailed:
			ph.Errors++
		case callWrong:
			ph.Wrong++
		}
		ph.Done++
		if o == callFailed {
			continue
		}
		answered = append(answered, lat[k])
		for int(hops[k]) >= len(hist) {
			hist = append(hist, 0)
		}
		hist[hops[k]]++
	}
	ph.Answered = int64(len(answered))
	slices.Sort(answered)
	ph.Latency = summarize(answered)
	ph.Hops = summarizeHops(hist)
	if p := firstProblem.Load(); p != nil {
		ph.FirstProblem = *p
	}
	if s := elapsed.Seconds(); s > 0 {
		ph.PerSec = float64(ph.Answered) / s
	}
	if !sp.measure {
		return ph, nil
	}
	u := met.stop()
	if prog != nil {
		prog.finish(status())
	}
	d := chordDelta(before, r.stats())
	ph.Hops.StatsAgree = d.hops == hopBuckets(hist)
	ph.FramesOut, ph.BytesOut = d.FramesOut, d.BytesOut
	ph.Timeouts, ph.NoRoute, ph.LateAnswers = d.Timeouts, d.NoRoute, d.LateAnswers
	ph.ReplyDials, ph.ReplyFallbacks, ph.ReplyFailures = d.ReplyDials, d.ReplyFallbacks, d.ReplyFailures
	ph.ReplyErrors = r.replyErrors.Load() - replyErrors0
	ph.Mallocs, ph.AllocBytes, ph.GCs = u.Mallocs, u.AllocBytes, u.GCs
	ph.CPU, ph.PeakHeap, ph.LiveHeap, ph.PeakGoroutines = Dur(u.CPU), u.PeakHeap, u.LiveHeap, u.PeakGoroutines
	if n := float64(ph.Done); n > 0 {
		ph.FramesPerOp, ph.BytesPerOp = float64(ph.FramesOut)/n, float64(ph.BytesOut)/n
		ph.AllocsPerOp, ph.AllocBytesPerOp = float64(ph.Mallocs)/n, float64(ph.AllocBytes)/n
		ph.CPUPerOp = Dur(float64(ph.CPU) / n)
	}
	return ph, nil
}

func (r *chordRing) stats() []chord.Stats {
	out := make([]chord.Stats, len(r.nodes))
	for i, s := range r.nodes {
		out[i] = s.Stats()
	}
	return out
}

// chordCounters are the counters a phase reports, summed over the nodes.
type chordCounters struct {
	FramesOut, BytesOut            uint64
	Timeouts, NoRoute, LateAnswers uint64
	ReplyDials, ReplyFallbacks     uint64
	ReplyFailures                  uint64
	hops                           [chord.HopBuckets]uint64
}

// chordDelta sums after minus before over the nodes.
func chordDelta(before, after []chord.Stats) chordCounters {
	var c chordCounters
	for i, a := range after {
		b := before[i]
		c.FramesOut += a.FramesOut - b.FramesOut
		c.BytesOut += a.BytesOut - b.BytesOut
		c.Timeouts += a.Timeouts - b.Timeouts
		c.NoRoute += a.NoRoute - b.NoRoute
		c.LateAnswers += a.LateAnswers - b.LateAnswers
		c.ReplyDials += a.ReplyDials - b.ReplyDials
		c.ReplyFallbacks += a.ReplyFallbacks - b.ReplyFallbacks
		c.ReplyFailures += a.ReplyFailures - b.ReplyFailures
		for h := range c.hops {
			c.hops[h] += a.Hops[h] - b.Hops[h]
		}
	}
	return c
}

// hopBuckets folds a histogram into chord's Stats.Hops buckets (the last
// one counts HopBuckets-1 hops or more).
func hopBuckets(hist []int64) [chord.HopBuckets]uint64 {
	var b [chord.HopBuckets]uint64
	for h, n := range hist {
		b[min(h, chord.HopBuckets-1)] += uint64(n)
	}
	return b
}

func summarizeHops(hist []int64) Hops {
	h := Hops{Histogram: hist}
	var n, sum int64
	for v, c := range hist {
		n += c
		sum += int64(v) * c
	}
	if n == 0 {
		return h
	}
	h.Mean = float64(sum) / float64(n)
	h.Max = len(hist) - 1
	// The same rank as summarize: the value at index p*(n-1) of the
	// sorted counts.
	q := func(p float64) int {
		rank := int64(p * float64(n-1))
		for v, c := range hist {
			if rank < c {
				return v
			}
			rank -= c
		}
		return h.Max
	}
	h.P50, h.P90, h.P99 = q(0.50), q(0.90), q(0.99)
	return h
}

// WriteText prints the result as a readable report, in the style of the
// mesh's.
func (r *ChordResult) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, args...)...)
	}
	fmt.Fprintf(tw, "%s: %d nodes, %d senders, %d B requests, stabilize %v, fix-fingers %v, link cap %d\n",
		r.Mode, r.Nodes, r.Senders, r.Size, r.Stabilize, r.FixFingers, r.MaxLinks)
	verdict := "OK: every lookup agreed with the oracle, every request was answered by its key's owner"
	if !r.OK() {
		verdict = "FAILED: " + strings.Join(r.Problems, "; ")
	}
	p("result", "%s", verdict)
	p("ring", "started and joined in %v, converged in %v (successor lists, predecessors, fingers and their links as the oracle says; %d lookups agreed)", r.Setup, r.Converge, r.Checked)
	for _, ph := range []struct {
		one, many string
		p         *ChordPhase
	}{{"lookup", "lookups", r.Lookups}, {"request", "requests", r.Requests}} {
		x := ph.p
		if x == nil {
			continue
		}
		p(ph.many, "%d of %d made, %d wrong, %d errors, in %v: %s%s/s", x.Done, x.Requested, x.Wrong, x.Errors, x.Elapsed, human(x.PerSec), ph.many)
		l := x.Latency
		p(ph.one+" latency", "p50 %v  p90 %v  p99 %v  max %v  (mean %v, min %v)", l.P50, l.P90, l.P99, l.Max, l.Mean, l.Min)
		agree := "chord Stats agree"
		if !x.Hops.StatsAgree {
			agree = "chord Stats DISAGREE"
		}
		p(ph.one+" hops", "p50 %d  p90 %d  p99 %d  max %d  (mean %.2f; %s)", x.Hops.P50, x.Hops.P90, x.Hops.P99, x.Hops.Max, x.Hops.Mean, agree)
		p(ph.one+" cost", "%.2f frames and %.0f B out per %s; %.1f allocs, %.0f B allocated, CPU %v per %s (whole process; %d GCs)",
			x.FramesPerOp, x.BytesPerOp, ph.one, x.AllocsPerOp, x.AllocBytesPerOp, x.CPUPerOp, ph.one, x.GCs)
		p(ph.one+" memory", "peak heap in use %s, live heap after GC %s, peak goroutines %d", bytesHuman(x.PeakHeap), bytesHuman(x.LiveHeap), x.PeakGoroutines)
		if x.Timeouts+x.NoRoute+x.LateAnswers+x.ReplyFailures+x.ReplyErrors > 0 {
			p(ph.one+" drops", "timeouts %d, no route %d, late answers %d, replies lost %d, failed %d", x.Timeouts, x.NoRoute, x.LateAnswers, x.ReplyFailures, x.ReplyErrors)
		}
		if ph.p == r.Requests {
			p("answers", "%d dialled the requester, %d went along the ring", x.ReplyDials, x.ReplyFallbacks)
		}
	}
	p("links", "%d open at the end (%.1f per node)", r.Links, float64(r.Links)/float64(max(r.Nodes, 1)))
	p("machine", "GOMAXPROCS %d, %d CPUs", r.Procs, r.CPUs)
	tw.Flush()
}

// writeChordSweep prints a chord sweep as a table.
func writeChordSweep(w io.Writer, rows []SweepRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tlookups/s\tp50\tp90\tp99\thops p50\tp99\tmean\trequests/s\tp50\tp90\tp99\thops p50\tp99\tallocs/lookup\tallocs/request\tpeak heap\tlive heap\tgoroutines\tconverge\twrong\terrors\t\n", rows[0].Param)
	for _, row := range rows {
		r := row.Chord
		l, q := r.Lookups, r.Requests
		fmt.Fprintf(tw, "%d\t%s\t%v\t%v\t%v\t%d\t%d\t%.2f\t%s\t%v\t%v\t%v\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%d\t%v\t%d\t%d\t\n",
			row.Value, human(l.PerSec), l.Latency.P50, l.Latency.P90, l.Latency.P99, l.Hops.P50, l.Hops.P99, l.Hops.Mean,
			human(q.PerSec), q.Latency.P50, q.Latency.P90, q.Latency.P99, q.Hops.P50, q.Hops.P99,
			l.AllocsPerOp, q.AllocsPerOp, bytesHuman(max(l.PeakHeap, q.PeakHeap)), bytesHuman(q.LiveHeap), max(l.PeakGoroutines, q.PeakGoroutines),
			r.Converge, l.Wrong+q.Wrong, l.Errors+q.Errors)
	}
	tw.Flush()
}
