// Package harness measures a meshsock flooding mesh: it starts a cluster of
// nodes on 127.0.0.1 (goroutines of one process, or one OS process per
// node), wires them into a fixed topology, floods numbered broadcasts
// through them under a bounded in-flight window, and records when each node
// got each broadcast. A raw-TCP flood over the same topology serves as the
// baseline the mesh is compared with.
//
// The harness keeps its own hot path cheap and allocation-free: a delivery
// sets one bit in a per-node bitset, decrements one per-message counter and,
// for the last node to get a message, stores its coverage latency in a
// preallocated slot.
package harness

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/meshsock/meshsock/chord"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// Modes of a run.
const (
	ModeMesh  = "mesh"       // mesh nodes as goroutines of this process
	ModeProcs = "mesh-procs" // one OS process per mesh node
	ModeRaw   = "raw-tcp"    // the hand-written raw-TCP flood
	ModeChord = "chord"      // a chord ring in this process (RunChord)
)

// Config describes one run.
type Config struct {
	// Mode is ModeMesh (also when empty: Run, with Procs and raw choosing
	// the variant) or ModeChord (RunChord). Nodes, Senders, Messages,
	// Size, Seed, Duration, Progress and the load hooks serve both; the
	// fields below Chord serve ModeChord only, the others the mesh only.
	Mode string

	Nodes    int    // cluster size
	Degree   int    // average degree of a random topology; also max outgoing
	Topology string // line, ring or random
	Messages int    // broadcasts to send (the run may stop earlier at Duration)
	Size     int    // payload bytes per broadcast (at least PayloadHeader)
	Senders  int    // goroutines sending concurrently
	Window   int    // broadcasts sent but not yet delivered everywhere, at most
	// Rate paces the senders to this many broadcasts per second in all
	// (0: as fast as the window allows). Latency is measured from the
	// actual Send, so a run that cannot keep up shows a lower rate, not a
	// higher latency.
	Rate int

	// Compression lists the accepted methods, most preferred first
	// (e.g. "none", "snappy", "zstd,snappy"). CompressMin is the smallest
	// body compressed (0: the library default).
	Compression string
	CompressMin int

	Seed     uint64
	Duration time.Duration // stop sending after this long (0: no limit)
	Drain    time.Duration // after sending stops, wait this long for stragglers
	SeenSize int           // mesh seen-state origins (0: the mesh default)
	// Flood, when positive, adds a hostile neighbour of node 0 that floods
	// this many made-up broadcasts per second while the load runs (mesh in
	// this process only); the report says what it sent and what got
	// through, and the coverage figures are the honest broadcasts'.
	Flood int
	// FloodBudget, when positive, sets every node's per-neighbour flood
	// budget in broadcasts per second (mesh.WithFloodBudget; 0: the mesh
	// default).
	FloodBudget int
	// Broadcast is the mesh's broadcast mode: "flood" ("" too) or "tree"
	// (BroadcastOptions).
	Broadcast string `json:",omitempty"`
	// Unsigned turns signatures off (mesh.WithSignedBroadcasts(false),
	// chord: base.WithSigning(false)); by default origins sign and every
	// node verifies, as the library does.
	Unsigned bool `json:",omitempty"`
	// Plaintext runs the links without TLS (protocol.EncryptionPlaintext);
	// by default they run TLS 1.3, as the library does.
	Plaintext bool `json:",omitempty"`

	// Procs runs each node as its own OS process: ChildArgv[0] is
	// executed with ChildArgv[1:] and ChildEnv added to the environment;
	// the child must call ChildMain.
	Procs     bool
	ChildArgv []string
	ChildEnv  []string

	// Progress, when set, receives a live status line at most every 250 ms
	// (overwritten in place when ProgressTTY) and a final line.
	Progress    io.Writer
	ProgressTTY bool

	// CPUProfile, when set, is written by each child (suffixed ".nodeN")
	// in procs mode; in-process runs are profiled by the caller, with
	// BeforeLoad and AfterLoad, which run around the measured load.
	CPUProfile            string
	BeforeLoad, AfterLoad func() `json:"-"`

	// Chord mode: Messages lookups, then Requests requests (0: as many
	// as Messages) of Size bytes, each phase by Senders workers.
	Requests   int
	Stabilize  time.Duration // stabilize interval of every node
	FixFingers time.Duration // fix-fingers interval of every node
	MaxLinks   int           // link cap of every node (0: the chord default)
	Converge   time.Duration // give up when the ring has not converged by then
}

// Default returns the configuration of `go run ./bench` without flags.
func Default() Config {
	return Config{
		Nodes:       16,
		Degree:      4,
		Topology:    "random",
		Messages:    100_000,
		Size:        256,
		Senders:     4,
		Window:      32,
		Compression: "none",
		Seed:        1,
		Duration:    40 * time.Second,
		Drain:       10 * time.Second,
		Stabilize:   chord.DefaultStabilizeInterval,
		FixFingers:  chord.DefaultFixFingersInterval,
		Converge:    2 * time.Minute,
	}
}

// PayloadHeader is the part of every payload the harness uses: the message
// number (4 bytes) and the send time in Unix nanoseconds (8 bytes, procs
// mode only), both little-endian.
const PayloadHeader = 12

// Validate checks the configuration for its mode.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Nodes < 2 {
		bad("nodes must be at least 2, got %d", c.Nodes)
	}
	if c.Nodes > 1<<15 {
		bad("nodes must be at most %d, got %d", 1<<15, c.Nodes)
	}
	if c.Messages < 1 || c.Messages > 1<<31-1 {
		bad("messages must be between 1 and 2^31-1, got %d", c.Messages)
	}
	if c.Size < PayloadHeader {
		bad("size must be at least %d bytes (the harness header), got %d", PayloadHeader, c.Size)
	}
	if c.Senders < 1 {
		bad("senders must be at least 1, got %d", c.Senders)
	}
	if c.Duration < 0 || c.Drain < 0 {
		bad("duration and drain must not be negative")
	}
	switch c.Mode {
	case ModeChord:
		c.validateChord(bad)
	case "", ModeMesh:
		c.validateMesh(bad, &errs)
	default:
		bad("mode must be %s or %s, got %q", ModeMesh, ModeChord, c.Mode)
	}
	return errors.Join(errs...)
}

func (c *Config) validateMesh(bad func(string, ...any), errs *[]error) {
	if c.Degree < 1 {
		bad("degree must be at least 1, got %d", c.Degree)
	}
	switch c.Topology {
	case "line", "ring", "random":
	default:
		bad("topology must be line, ring or random, got %q", c.Topology)
	}
	if c.Rate < 0 {
		bad("rate must not be negative, got %d", c.Rate)
	}
	if c.Window < 1 {
		bad("window must be at least 1, got %d", c.Window)
	}
	if _, err := c.Methods(); err != nil {
		*errs = append(*errs, err)
	}
	if c.Procs && len(c.ChildArgv) == 0 {
		bad("procs mode needs a child command")
	}
	if c.Flood < 0 || c.FloodBudget < 0 {
		bad("flood and flood budget must not be negative, got %d and %d", c.Flood, c.FloodBudget)
	}
	if c.Procs && c.Flood > 0 {
		bad("flood runs with the mesh in this process (no procs)")
	}
}

func (c *Config) validateChord(bad func(string, ...any)) {
	if c.Requests < 0 || c.Requests > 1<<31-1 {
		bad("requests must be between 0 (as many as messages) and 2^31-1, got %d", c.Requests)
	}
	if c.Stabilize <= 0 || c.FixFingers <= 0 || c.Converge <= 0 {
		bad("stabilize, fix-fingers and converge must be positive")
	}
	if least := 2*chord.DefaultSuccessors + 2; c.MaxLinks != 0 && c.MaxLinks < least {
		bad("max links must be 0 (the chord default) or at least %d, got %d", least, c.MaxLinks)
	}
	if c.Procs {
		bad("chord mode runs every node in this process (no procs)")
	}
	if c.Rate != 0 {
		bad("chord mode is not paced (no rate)")
	}
}

// Methods parses Compression.
func (c *Config) Methods() ([]flags.Method, error) {
	var out []flags.Method
	for _, name := range strings.Split(c.Compression, ",") {
		name = strings.TrimSpace(name)
		if name == "" || name == "none" {
			continue
		}
		m, err := flags.ParseMethod(name)
		if err != nil {
			return nil, fmt.Errorf("compression: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Topology is a fixed graph: Edges[i] = {from, to} is dialled by from.
type Topology struct {
	Nodes   int
	Edges   [][2]int
	Degrees []int
	MaxOut  int // most connections any node dials
	MaxDeg  int
}

// BuildTopology makes the configured graph. Edges are oriented so that
// dialling is spread evenly (each edge is dialled by the end that has
// dialled less so far), which keeps every node within its max outgoing.
func (c *Config) BuildTopology() Topology {
	var edges [][2]int
	switch c.Topology {
	case "line":
		edges = testnet.Line(c.Nodes)
	case "ring":
		edges = testnet.Ring(c.Nodes)
	default:
		edges = testnet.Random(c.Nodes, c.Degree, rand.New(rand.NewPCG(c.Seed, 0x6d657368)))
	}
	out := make([]int, c.Nodes)
	t := Topology{Nodes: c.Nodes, Edges: make([][2]int, len(edges))}
	for i, e := range edges {
		a, b := e[0], e[1]
		if out[b] < out[a] {
			a, b = b, a
		}
		out[a]++
		t.Edges[i] = [2]int{a, b}
		t.MaxOut = max(t.MaxOut, out[a])
	}
	t.Degrees = testnet.Degrees(c.Nodes, t.Edges)
	for _, d := range t.Degrees {
		t.MaxDeg = max(t.MaxDeg, d)
	}
	return t
}

// AvgDegree returns the average node degree.
func (t Topology) AvgDegree() float64 {
	if t.Nodes == 0 {
		return 0
	}
	return 2 * float64(len(t.Edges)) / float64(t.Nodes)
}

// FloodFrames returns the frames one flood costs under the mesh's rule
// (the origin sends to every neighbour; every other node relays once to
// every neighbour except the one it heard it from first) and the frames per
// delivery that makes: 2E-(N-1) frames for N-1 deliveries, about the
// average degree minus one. Copies that reach a node that already has the
// message are part of it; that redundancy is what the topology forces.
func (t Topology) FloodFrames() (perBroadcast, perDelivery float64) {
	if t.Nodes < 2 {
		return 0, 0
	}
	perBroadcast = float64(2*len(t.Edges) - (t.Nodes - 1))
	return perBroadcast, perBroadcast / float64(t.Nodes-1)
}

// Protocol is the mesh nodes' protocol: the default one, with plaintext
// links if Plaintext is set.
func (c *Config) Protocol() protocol.Protocol {
	p := protocol.DefaultProtocol
	if c.Plaintext {
		p.Encryption = protocol.EncryptionPlaintext
	}
	return p
}

// chordProtocol is Protocol for a chord ring.
func (c *Config) chordProtocol() protocol.Protocol {
	p := chord.DefaultProtocol
	if c.Plaintext {
		p.Encryption = protocol.EncryptionPlaintext
	}
	return p
}
