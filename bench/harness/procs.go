package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/mesh"
)

// Procs mode runs every node in its own OS process. The coordinator (this
// process) starts each child by re-executing a binary that calls ChildMain,
// and talks to it over the child's stdin and stdout with frames of one type
// byte, a 4-byte little-endian length and a payload:
//
//	coordinator -> child                    child -> coordinator
//	'I' init    JSON childInit              'A' JSON {Addr}: listening
//	'C' connect JSON childConnect           'R' connected to every neighbour
//	'G' go: start measuring                 'g' measuring
//	'S' send    uint32 message numbers      'D' deliveries: {uint32 k, int64 ns}...
//	'Q' stats                               'T' JSON childStats
//	'X' exit                                'E' error text (fatal)
//
// A child builds each payload itself and stamps it with its wall clock
// (Unix ns) just before Send; the receiving child computes the delivery
// latency from that stamp with its own wall clock (one machine, one clock)
// and reports it; the coordinator takes the largest of a broadcast's
// delivery latencies as its coverage latency. Deliveries are batched:
// a child writes whatever accumulated while its previous write was going
// out, so batches grow with the load and a lone delivery goes at once.
// A child whose stdin closes exits, so no child outlives the coordinator.

const (
	msgInit    = 'I'
	msgConnect = 'C'
	msgGo      = 'G'
	msgSend    = 'S'
	msgStats   = 'Q'
	msgExit    = 'X'

	msgAddr    = 'A'
	msgReady   = 'R'
	msgGoing   = 'g'
	msgDeliver = 'D'
	msgResult  = 'T'
	msgError   = 'E'

	deliveryRecord = 12
	maxControl     = 64 << 20
)

type childInit struct {
	Index    int
	Config   Config
	Topology Topology
}

type childConnect struct {
	Dial   []string
	Expect int
}

type childStats struct {
	FramesOut, BytesOut, FramesIn uint64
	Duplicates, RelayDrops        uint64
	PullsSent, Repairs            uint64
	Grafts, Prunes                uint64
	RepairsGivenUp                uint64
	QueueDrops, RecvDrops         uint64
	SeenRefused                   uint64
	SeenCacheSize                 int
	Mallocs, AllocBytes           uint64
	PeakHeap                      uint64
	PeakGoroutines                int
	CPU                           time.Duration
	GCs                           uint32
	Timeline                      []uint64
	Live                          []uint64
	SendErrors                    int
	Profile                       string
}

func writeMsg(w io.Writer, typ byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.LittleEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

func readMsg(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[1:])
	if n > maxControl {
		return 0, nil, fmt.Errorf("control message of %d bytes", n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return hdr[0], buf, nil
}

// ---- coordinator ----

type procCluster struct {
	tr   *tracker
	kids []*kid
}

type kid struct {
	idx     int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	wmu     sync.Mutex
	w       *bufio.Writer
	replies chan ctlMsg
	done    chan struct{} // the stdout reader ended
	err     error         // why the reader ended (after done)
	sendBuf [4]byte
}

type ctlMsg struct {
	typ     byte
	payload []byte
}

func startProcs(ctx context.Context, cfg *Config, topo Topology, tr *tracker) (*procCluster, error) {
	c := &procCluster{tr: tr}
	fail := func(err error) (*procCluster, error) {
		_ = c.close()
		return nil, err
	}
	for i := 0; i < cfg.Nodes; i++ {
		k, err := startKid(i, cfg, tr)
		if err != nil {
			return fail(fmt.Errorf("starting node process %d: %w", i, err))
		}
		c.kids = append(c.kids, k)
	}
	ctx, cancel := context.WithTimeout(ctx, wireTimeout)
	defer cancel()
	addrs := make([]string, cfg.Nodes)
	for i, k := range c.kids {
		b, _ := json.Marshal(childInit{Index: i, Config: childConfig(cfg), Topology: topo})
		if err := k.control(msgInit, b); err != nil {
			return fail(err)
		}
	}
	for i, k := range c.kids {
		p, err := k.await(ctx, msgAddr)
		if err != nil {
			return fail(fmt.Errorf("node process %d: %w", i, err))
		}
		var a struct{ Addr string }
		if err := json.Unmarshal(p, &a); err != nil {
			return fail(err)
		}
		addrs[i] = a.Addr
	}
	dials := make([][]string, cfg.Nodes)
	for _, e := range topo.Edges {
		dials[e[0]] = append(dials[e[0]], addrs[e[1]])
	}
	for i, k := range c.kids {
		b, _ := json.Marshal(childConnect{Dial: dials[i], Expect: topo.Degrees[i]})
		if err := k.control(msgConnect, b); err != nil {
			return fail(err)
		}
	}
	for i, k := range c.kids {
		if _, err := k.await(ctx, msgReady); err != nil {
			return fail(fmt.Errorf("node process %d: %w", i, err))
		}
	}
	return c, nil
}

// begin tells every child to start measuring (memory, CPU, profile).
func (c *procCluster) begin() error {
	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	for _, k := range c.kids {
		if err := k.control(msgGo, nil); err != nil {
			return err
		}
	}
	for i, k := range c.kids {
		if _, err := k.await(ctx, msgGoing); err != nil {
			return fmt.Errorf("node process %d: %w", i, err)
		}
	}
	return nil
}

// childConfig is the part of the configuration a child needs.
func childConfig(cfg *Config) Config {
	return Config{
		Nodes: cfg.Nodes, Degree: cfg.Degree, Topology: cfg.Topology, Messages: cfg.Messages,
		Size: cfg.Size, Senders: cfg.Senders, Window: cfg.Window, Compression: cfg.Compression,
		CompressMin: cfg.CompressMin, Seed: cfg.Seed, SeenSize: cfg.SeenSize, FloodBudget: cfg.FloodBudget, CPUProfile: cfg.CPUProfile,
		Unsigned: cfg.Unsigned, Plaintext: cfg.Plaintext, Broadcast: cfg.Broadcast, SendQueue: cfg.SendQueue,
	}
}

func startKid(i int, cfg *Config, tr *tracker) (*kid, error) {
	cmd := exec.Command(cfg.ChildArgv[0], cfg.ChildArgv[1:]...)
	cmd.Env = append(os.Environ(), cfg.ChildEnv...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	k := &kid{
		idx: i, cmd: cmd, stdin: stdin,
		w:       bufio.NewWriterSize(stdin, 64<<10),
		replies: make(chan ctlMsg, 8),
		done:    make(chan struct{}),
	}
	go k.readLoop(bufio.NewReaderSize(stdout, 256<<10), tr)
	return k, nil
}

// readLoop feeds deliveries to the tracker and passes the rest on.
func (k *kid) readLoop(r io.Reader, tr *tracker) {
	defer close(k.done)
	defer close(k.replies)
	var buf []byte
	for {
		typ, p, err := readMsg(r, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				k.err = err
			}
			return
		}
		if typ == msgDeliver {
			buf = p
			for len(p) >= deliveryRecord {
				msg := int(binary.LittleEndian.Uint32(p))
				lat := int64(binary.LittleEndian.Uint64(p[4:]))
				tr.deliverLatency(k.idx, msg, lat)
				p = p[deliveryRecord:]
			}
			continue
		}
		k.replies <- ctlMsg{typ, append([]byte(nil), p...)}
	}
}

func (k *kid) control(typ byte, payload []byte) error {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	if err := writeMsg(k.w, typ, payload); err != nil {
		return fmt.Errorf("node process %d: %w", k.idx, err)
	}
	if err := k.w.Flush(); err != nil {
		return fmt.Errorf("node process %d: %w", k.idx, err)
	}
	return nil
}

// await waits for a reply of the given type; an 'E' reply is an error.
func (k *kid) await(ctx context.Context, typ byte) ([]byte, error) {
	select {
	case m, ok := <-k.replies:
		if !ok {
			if k.err != nil {
				return nil, fmt.Errorf("process ended: %w", k.err)
			}
			return nil, errors.New("process ended")
		}
		if m.typ == msgError {
			return nil, errors.New(string(m.payload))
		}
		if m.typ != typ {
			return nil, fmt.Errorf("got reply %q, want %q", m.typ, typ)
		}
		return m.payload, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *procCluster) send(_ context.Context, origin, k int, _ []byte) error {
	kd := c.kids[origin]
	kd.wmu.Lock()
	defer kd.wmu.Unlock()
	binary.LittleEndian.PutUint32(kd.sendBuf[:], uint32(k))
	if err := writeMsg(kd.w, msgSend, kd.sendBuf[:]); err != nil {
		return err
	}
	return kd.w.Flush()
}

func (c *procCluster) counters() (wireCounters, error) {
	var w wireCounters
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range c.kids {
		if err := k.control(msgStats, nil); err != nil {
			return w, err
		}
	}
	for i, k := range c.kids {
		p, err := k.await(ctx, msgResult)
		if err != nil {
			return w, fmt.Errorf("node process %d: %w", i, err)
		}
		var st childStats
		if err := json.Unmarshal(p, &st); err != nil {
			return w, err
		}
		w.FramesOut += st.FramesOut
		w.BytesOut += st.BytesOut
		w.FramesIn += st.FramesIn
		w.FloodDuplicates += st.Duplicates
		w.RelayDrops += st.RelayDrops
		w.QueueDrops += st.QueueDrops
		w.RecvDrops += st.RecvDrops
		w.SeenRefused += st.SeenRefused
		w.SeenCacheSize += st.SeenCacheSize
		w.PullsSent += st.PullsSent
		w.Repairs += st.Repairs
		w.RepairsGivenUp += st.RepairsGivenUp
		w.Grafts += st.Grafts
		w.Prunes += st.Prunes
		w.Mallocs += st.Mallocs
		w.AllocBytes += st.AllocBytes
		w.PeakHeap += st.PeakHeap
		w.PeakGoroutines += st.PeakGoroutines
		w.CPU += st.CPU
		w.GCs += st.GCs
		if st.SendErrors > 0 {
			w.ChildErrors = append(w.ChildErrors, fmt.Sprintf("node %d: %d sends failed", i, st.SendErrors))
		}
		if st.Profile != "" {
			w.ProfileFiles = append(w.ProfileFiles, st.Profile)
		}
		w.ChildSampleTimeline = addTimeline(w.ChildSampleTimeline, st.Timeline)
		w.ChildLiveTimeline = addTimeline(w.ChildLiveTimeline, st.Live)
	}
	return w, nil
}

// addTimeline adds b into a element by element, growing a as needed.
func addTimeline(a, b []uint64) []uint64 {
	for j, v := range b {
		if j >= len(a) {
			a = append(a, 0)
		}
		a[j] += v
	}
	return a
}

func (c *procCluster) close() error {
	var errs []error
	for _, k := range c.kids {
		_ = k.control(msgExit, nil)
		_ = k.stdin.Close()
	}
	for i, k := range c.kids {
		exited := make(chan error, 1)
		go func() { exited <- k.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				errs = append(errs, fmt.Errorf("node process %d: %w", i, err))
			}
		case <-time.After(15 * time.Second):
			_ = k.cmd.Process.Kill()
			<-exited
			errs = append(errs, fmt.Errorf("node process %d did not exit; killed", i))
		}
		<-k.done
	}
	return errors.Join(errs...)
}

// ---- child ----

// ChildMain runs one node of a procs-mode cluster, driven over in and out
// by the coordinator. It returns the process exit code.
func ChildMain(in io.Reader, out io.Writer) int {
	ch := &child{out: bufio.NewWriterSize(out, 256<<10), notify: make(chan struct{}, 1), quit: make(chan struct{})}
	err := ch.run(bufio.NewReaderSize(in, 64<<10))
	if err != nil {
		ch.reply(msgError, []byte(err.Error()))
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 1
	}
	return 0
}

type child struct {
	idx  int
	cfg  Config
	node *mesh.Socket

	omu sync.Mutex
	out *bufio.Writer

	dmu     sync.Mutex
	pending []byte // delivery records not yet written
	notify  chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup

	sends      chan int
	sendErrors int
	smu        sync.Mutex

	met     *meter // from go until the stats are read
	profile *os.File
}

func (ch *child) reply(typ byte, payload []byte) {
	ch.omu.Lock()
	defer ch.omu.Unlock()
	_ = writeMsg(ch.out, typ, payload)
	_ = ch.out.Flush()
}

func (ch *child) replyJSON(typ byte, v any) {
	b, _ := json.Marshal(v)
	ch.reply(typ, b)
}

func (ch *child) run(in io.Reader) error {
	defer ch.shutdown()
	var buf []byte
	for {
		typ, p, err := readMsg(in, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		buf = p
		switch typ {
		case msgInit:
			var ini childInit
			if err := json.Unmarshal(p, &ini); err != nil {
				return err
			}
			if err := ch.init(ini); err != nil {
				return err
			}
			ch.replyJSON(msgAddr, struct{ Addr string }{ch.node.Addr().String()})
		case msgConnect:
			var cc childConnect
			if err := json.Unmarshal(p, &cc); err != nil {
				return err
			}
			if err := ch.connect(cc); err != nil {
				return err
			}
			ch.reply(msgReady, nil)
		case msgGo:
			ch.start()
			ch.reply(msgGoing, nil)
		case msgSend:
			for len(p) >= 4 {
				ch.sends <- int(binary.LittleEndian.Uint32(p))
				p = p[4:]
			}
		case msgStats:
			ch.replyJSON(msgResult, ch.stats())
		case msgExit:
			return nil
		default:
			return fmt.Errorf("unknown control message %q", typ)
		}
	}
}

func (ch *child) init(ini childInit) error {
	if ch.node != nil {
		return errors.New("init twice")
	}
	ch.idx, ch.cfg = ini.Index, ini.Config
	node, err := newMeshNode(&ch.cfg, ini.Topology, benchLogger().With("node", ch.idx), ch.deliver, new(atomic.Uint64))
	if err != nil {
		return err
	}
	ch.node = node
	ch.wg.Add(1)
	go ch.flushLoop()
	ch.sends = make(chan int, max(ch.cfg.Window, 1))
	for i := 0; i < max(ch.cfg.Senders, 1); i++ {
		ch.wg.Add(1)
		go ch.sender(i)
	}
	return nil
}

func (ch *child) connect(cc childConnect) error {
	ctx, cancel := context.WithTimeout(context.Background(), wireTimeout)
	defer cancel()
	for _, addr := range cc.Dial {
		if err := ch.node.Connect(ctx, addr); err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
	}
	return waitNeighbours(ctx, ch.node, cc.Expect)
}

func (ch *child) start() {
	if ch.cfg.CPUProfile != "" {
		name := fmt.Sprintf("%s.node%d", ch.cfg.CPUProfile, ch.idx)
		if f, err := os.Create(name); err == nil && pprof.StartCPUProfile(f) == nil {
			ch.profile = f
		}
	}
	ch.met = startMeter(nil, nil)
}

func (ch *child) stats() childStats {
	var st childStats
	if ch.met != nil {
		u := ch.met.stop()
		st.PeakHeap, st.PeakGoroutines, st.Timeline, st.Live = u.PeakHeap, u.PeakGoroutines, u.Timeline, u.Live
		st.CPU, st.Mallocs, st.AllocBytes, st.GCs = u.CPU, u.Mallocs, u.AllocBytes, u.GCs
		ch.met = nil
	}
	if ch.profile != nil {
		pprof.StopCPUProfile()
		st.Profile = ch.profile.Name()
		_ = ch.profile.Close()
		ch.profile = nil
	}
	if ch.node != nil {
		ms := ch.node.Stats()
		st.FramesOut, st.BytesOut, st.FramesIn = ms.FramesOut, ms.BytesOut, ms.FramesIn
		st.Duplicates, st.RelayDrops, st.QueueDrops, st.RecvDrops = ms.Duplicates, ms.RelayDrops, ms.QueueDrops, ms.RecvDrops
		st.SeenRefused, st.SeenCacheSize = ms.SeenRefused, ms.SeenCacheSize
		st.PullsSent, st.Repairs, st.RepairsGivenUp = ms.PullsSent, ms.Repairs, ms.RepairsGivenUp
		st.Grafts, st.Prunes = ms.Grafts, ms.Prunes
	}
	ch.smu.Lock()
	st.SendErrors = ch.sendErrors
	ch.smu.Unlock()
	return st
}

// sender sends the broadcasts the coordinator assigns to this node.
func (ch *child) sender(i int) {
	defer ch.wg.Done()
	buf := make([]byte, ch.cfg.Size)
	fillPayload(buf, ch.cfg.Seed+uint64(i))
	ctx := context.Background()
	for {
		select {
		case k := <-ch.sends:
			binary.LittleEndian.PutUint32(buf, uint32(k))
			binary.LittleEndian.PutUint64(buf[4:], uint64(time.Now().UnixNano()))
			if err := ch.node.Send(ctx, buf); err != nil {
				ch.smu.Lock()
				ch.sendErrors++
				ch.smu.Unlock()
			}
		case <-ch.quit:
			return
		}
	}
}

// deliver runs on the node's reader goroutines: it appends a record and
// wakes the flusher if it was idle.
func (ch *child) deliver(p []byte) {
	if len(p) < PayloadHeader {
		return
	}
	lat := time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(p[4:]))
	ch.dmu.Lock()
	wasEmpty := len(ch.pending) == 0
	ch.pending = binary.LittleEndian.AppendUint32(ch.pending, binary.LittleEndian.Uint32(p))
	ch.pending = binary.LittleEndian.AppendUint64(ch.pending, uint64(lat))
	ch.dmu.Unlock()
	if wasEmpty {
		select {
		case ch.notify <- struct{}{}:
		default:
		}
	}
}

// flushLoop writes accumulated deliveries; while one write is going out,
// the next batch accumulates.
func (ch *child) flushLoop() {
	defer ch.wg.Done()
	var batch []byte
	for {
		select {
		case <-ch.notify:
		case <-ch.quit:
			return
		}
		ch.dmu.Lock()
		batch, ch.pending = ch.pending, batch[:0]
		ch.dmu.Unlock()
		if len(batch) > 0 {
			ch.reply(msgDeliver, batch)
		}
	}
}

func (ch *child) shutdown() {
	if ch.node != nil {
		_ = ch.node.Close(context.Background())
	}
	close(ch.quit)
	ch.wg.Wait()
}
