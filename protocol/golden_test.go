package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
)

// The golden vectors live at the repository root, next to the spec that
// shows them: testdata/golden/<name>.hex holds the exact bytes as hex text
// (whitespace and '#' comments allowed), and docs/protocol.md shows the same
// bytes, annotated, in a code block introduced by "<!-- golden: <name> -->".
//
// Rewrite the files from the Go code with: go test ./protocol -run Golden -update
const (
	goldenDir = "../testdata/golden"
	specPath  = "../docs/protocol.md"
)

// Fixed values of the worked examples in docs/protocol.md.
var (
	goldenNodeID = MustParseNodeID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
	goldenTime   = int64(1700000000000000000)
	goldenTarget = MustParseNodeID("00112233-4455-6677-8899-aabbccddeeff")
)

// The handshake examples' keys: Ed25519 seeds 00 01 ... 1f (the dialer)
// and 20 21 ... 3f (the listener), a channel binding b0 ... cf as if
// exported from a TLS session, and a network key 40 41 ... 5f.
var (
	goldenDialerKey   = ed25519.NewKeyFromSeed(seq(0x00, 32))
	goldenListenerKey = ed25519.NewKeyFromSeed(seq(0x20, 32))
	goldenBinding     = seq(0xb0, BindingSize)
	goldenNetworkKey  = seq(0x40, 32)
)

// seq returns n bytes counting up from first.
func seq(first byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = first + byte(i)
	}
	return b
}

func publicOf(key ed25519.PrivateKey) ed25519.PublicKey { return key.Public().(ed25519.PublicKey) }

func goldenHello() *Hello {
	pub := publicOf(goldenDialerKey)
	return &Hello{
		Version:    Version,
		Protocol:   DefaultProtocol.ID(),
		NodeID:     NodeIDFromKey(pub),
		ListenAddr: "192.0.2.1:4444",
		Accept:     []flags.Method{flags.Snappy, flags.Zstd},
		Meta:       map[string]string{"name": "alice"},
		Nonce:      0x0102030405060708,
		Time:       goldenTime,
		Key:        pub,
		Observed:   "192.0.2.2:5555",
	}
}

// goldenListenerHello is the listener's Hello of the same handshake.
func goldenListenerHello() *Hello {
	pub := publicOf(goldenListenerKey)
	return &Hello{
		Version:    Version,
		Protocol:   DefaultProtocol.ID(),
		NodeID:     NodeIDFromKey(pub),
		ListenAddr: "192.0.2.2:5555",
		Accept:     []flags.Method{flags.Zstd},
		Nonce:      0x1112131415161718,
		Time:       goldenTime,
		Key:        pub,
		Observed:   "198.51.100.7:49152",
	}
}

// goldenTranscript is the transcript hash of the example handshake.
func goldenTranscript(t *testing.T) [32]byte {
	d, err := MarshalHello(goldenHello())
	if err != nil {
		t.Fatal(err)
	}
	l, err := MarshalHello(goldenListenerHello())
	if err != nil {
		t.Fatal(err)
	}
	return Transcript(d, l, goldenBinding)
}

// goldenAuth is the Auth frame of the dialer (or the listener) of the
// example handshake, with a network-key proof.
func goldenAuth(t *testing.T, dialer bool) Auth {
	th := goldenTranscript(t)
	key := goldenListenerKey
	if dialer {
		key = goldenDialerKey
	}
	return Auth{Signature: SignAuth(key, dialer, th), Proof: NetworkProof(goldenNetworkKey, dialer, th)}
}

func checkHello(want *Hello) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		h, err := UnmarshalHello(body)
		if err != nil || codec != flags.None {
			t.Fatalf("codec %v err %v", codec, err)
		}
		if h.Version != want.Version || h.Protocol != want.Protocol || h.NodeID != want.NodeID ||
			h.ListenAddr != want.ListenAddr || fmt.Sprint(h.Accept) != fmt.Sprint(want.Accept) ||
			len(h.Meta) != len(want.Meta) || (len(want.Meta) > 0 && fmt.Sprint(h.Meta) != fmt.Sprint(want.Meta)) ||
			h.Nonce != want.Nonce || h.Time != want.Time || !h.Key.Equal(want.Key) || h.Observed != want.Observed {
			t.Fatalf("decoded %+v, want %+v", *h, *want)
		}
		if !KeyMatchesID(h.Key, h.NodeID) {
			t.Fatal("the example's node ID is not derived from its key")
		}
	}
}

func checkPreamble(want Preamble) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		p, err := UnmarshalPreamble(body)
		if err != nil || codec != flags.None || p != want {
			t.Fatalf("preamble %+v, codec %v, err %v; want %+v", p, codec, err, want)
		}
	}
}

func checkAuth(dialer bool) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		a, err := UnmarshalAuth(body)
		if err != nil || codec != flags.None {
			t.Fatalf("codec %v err %v", codec, err)
		}
		want := goldenAuth(t, dialer)
		if !bytes.Equal(a.Signature, want.Signature) || !bytes.Equal(a.Proof, want.Proof) {
			t.Fatalf("decoded %x, want %x", a, want)
		}
		h := goldenListenerHello()
		if dialer {
			h = goldenHello()
		}
		th := goldenTranscript(t)
		if !VerifyAuth(h.Key, dialer, th, a.Signature) || VerifyAuth(h.Key, !dialer, th, a.Signature) {
			t.Fatal("the example's signature does not verify in its role only")
		}
		if !VerifyNetworkProof(goldenNetworkKey, dialer, th, a.Proof) || VerifyNetworkProof(goldenNetworkKey, !dialer, th, a.Proof) {
			t.Fatal("the example's proof does not verify in its role only")
		}
	}
}

// goldenKey is the node key of the signed example: the Ed25519 key whose
// RFC 8032 seed is the bytes 00 01 02 ... 1f.
func goldenKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// goldenSignedBroadcast is the broadcast example sent by the node of
// goldenKey, signed (AppendSigned makes its auth item).
func goldenSignedBroadcast() *Envelope {
	e := goldenBroadcast()
	e.Sender = NodeIDFromKey(goldenKey().Public().(ed25519.PublicKey))
	return e
}

func goldenBroadcast() *Envelope {
	return &Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: goldenNodeID, Seq: 1, Time: goldenTime,
		HopLimit: 32, Packets: [][]byte{[]byte("hello"), []byte("world")}}
}

// goldenForward is a mesh forward: a whisper to goldenTarget flooded
// through the mesh, packets [target, "hi"].
func goldenForward() *Envelope {
	return &Envelope{Type: flags.Broadcast, Sub: flags.Forward, Sender: goldenNodeID, Seq: 2, Time: goldenTime,
		HopLimit: 32, Packets: [][]byte{goldenTarget[:], []byte("hi")}}
}

// goldenPublish is a mesh topic message: topic "news", one packet "hi",
// from the node of goldenKey, signed.
func goldenPublish() *Envelope {
	return &Envelope{Type: flags.Broadcast, Sub: flags.Publish,
		Sender: NodeIDFromKey(goldenKey().Public().(ed25519.PublicKey)), Seq: 3, Time: goldenTime,
		HopLimit: 32, Packets: [][]byte{[]byte("news"), []byte("hi")}}
}

// goldenRouted is a mesh routed message (§12.5): a whisper "hi" for
// goldenTarget, carried hop by hop, from the node of goldenKey, signed.
func goldenRouted() *Envelope {
	return &Envelope{Type: flags.Whisper, Sub: flags.Routed,
		Sender: NodeIDFromKey(goldenKey().Public().(ed25519.PublicKey)), Seq: 4, Time: goldenTime,
		HopLimit: 32, Packets: [][]byte{goldenTarget[:], {byte(flags.Whisper)}, []byte("hi")}}
}

// goldenRefs are the broadcasts the announcement examples name: seq 1
// and 2 of the example node.
var goldenRefs = []BroadcastRef{{Origin: goldenNodeID, Seq: 1}, {Origin: goldenNodeID, Seq: 2}}

// goldenTreeMessage is a one-hop broadcast control message (§12.7) from
// goldenTarget: an IHAVE or a tree control message, sequence number 0.
func goldenTreeMessage(sub flags.Flag, packet []byte) *Envelope {
	return &Envelope{Type: flags.Whisper, Sub: sub, Sender: goldenTarget, Seq: 0, Time: goldenTime, HopLimit: 1,
		Packets: [][]byte{packet}}
}

func goldenControl(sub flags.Flag, packet []byte) *Envelope {
	typ := flags.Renegotiate
	if sub == flags.Ping || sub == flags.Pong {
		typ = sub
	}
	return &Envelope{Type: typ, Sub: sub, Sender: goldenNodeID, Seq: 0, Time: goldenTime, HopLimit: 0,
		Packets: [][]byte{packet}}
}

// goldenPunchRequest is a punch request (docs/protocol.md §12.6) from the
// node of goldenKey, asking goldenNodeID to introduce it to goldenTarget;
// goldenPunchIntroduce is goldenNodeID's introduction of it to the target.
func goldenPunchRequest() *Envelope {
	key := goldenKey()
	requester := NodeIDFromKey(key.Public().(ed25519.PublicKey))
	sig := ed25519.Sign(key, PunchSigningInput(requester, goldenTarget, goldenNodeID, 0x0102030405060708, goldenTime))
	p := Punch{Kind: PunchRequest, Peer: goldenTarget, Nonce: 0x0102030405060708, Time: goldenTime, Signature: sig}
	return &Envelope{Type: flags.Whisper, Sub: flags.Punch, Sender: requester, Seq: 4, Time: goldenTime,
		HopLimit: 1, Packets: p.Packets()}
}

func goldenPunchIntroduce() *Envelope {
	req := goldenPunchRequest()
	p := Punch{Kind: PunchIntroduce, Key: goldenKey().Public().(ed25519.PublicKey), Addr: "198.51.100.7:4444",
		Nonce: 0x0102030405060708, Time: goldenTime, Signature: req.Packets[4], Delay: 100 * time.Millisecond}
	return &Envelope{Type: flags.Whisper, Sub: flags.Punch, Sender: goldenNodeID, Seq: 5, Time: goldenTime,
		HopLimit: 1, Packets: p.Packets()}
}

var (
	goldenNonce   = []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	goldenResendN = binary.BigEndian.AppendUint64(nil, 7)
)

type goldenFrame struct {
	name  string
	frame func(t *testing.T) []byte
	check func(t *testing.T, codec flags.Method, body []byte)
}

func handshakeFrame(t *testing.T, body []byte, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return AppendFrame(nil, flags.None, body)
}

func messageFrame(e *Envelope) []byte { return AppendFrame(nil, flags.None, AppendMessage(nil, 0, e)) }

func checkVerdict(want Verdict) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		v, err := UnmarshalVerdict(body)
		if err != nil || codec != flags.None || v != want {
			t.Fatalf("verdict %+v, codec %v, err %v; want %+v", v, codec, err, want)
		}
	}
}

func checkMessage(want *Envelope) func(t *testing.T, codec flags.Method, body []byte) {
	return func(t *testing.T, codec flags.Method, body []byte) {
		hops, raw, err := SplitMessage(body)
		if err != nil || hops != 0 || codec != flags.None {
			t.Fatalf("hops %d codec %v err %v", hops, codec, err)
		}
		var got Envelope
		if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
			t.Fatal(err)
		}
		if !envelopesEqual(&got, want) {
			t.Fatalf("decoded %+v, want %+v", got, *want)
		}
	}
}

var goldenFrames = []goldenFrame{
	{
		name: "preamble_tls",
		frame: func(t *testing.T) []byte {
			b, err := MarshalPreamble(Preamble{Version: Version, Encryption: EncryptionTLS})
			return handshakeFrame(t, b, err)
		},
		check: checkPreamble(Preamble{Version: Version, Encryption: EncryptionTLS}),
	},
	{
		name: "preamble_plaintext",
		frame: func(t *testing.T) []byte {
			b, err := MarshalPreamble(Preamble{Version: Version, Encryption: EncryptionPlaintext})
			return handshakeFrame(t, b, err)
		},
		check: checkPreamble(Preamble{Version: Version, Encryption: EncryptionPlaintext}),
	},
	{
		name: "hello",
		frame: func(t *testing.T) []byte {
			b, err := MarshalHello(goldenHello())
			return handshakeFrame(t, b, err)
		},
		check: checkHello(goldenHello()),
	},
	{
		name: "hello_listener",
		frame: func(t *testing.T) []byte {
			b, err := MarshalHello(goldenListenerHello())
			return handshakeFrame(t, b, err)
		},
		check: checkHello(goldenListenerHello()),
	},
	{
		name: "auth_dialer",
		frame: func(t *testing.T) []byte {
			b, err := MarshalAuth(goldenAuth(t, true))
			return handshakeFrame(t, b, err)
		},
		check: checkAuth(true),
	},
	{
		name: "auth_listener",
		frame: func(t *testing.T) []byte {
			b, err := MarshalAuth(goldenAuth(t, false))
			return handshakeFrame(t, b, err)
		},
		check: checkAuth(false),
	},
	{
		name: "verdict_accept",
		frame: func(t *testing.T) []byte {
			b, err := MarshalVerdict(Verdict{Code: Accept})
			return handshakeFrame(t, b, err)
		},
		check: checkVerdict(Verdict{Code: Accept}),
	},
	{
		name: "verdict_protocol",
		frame: func(t *testing.T) []byte {
			b, err := MarshalVerdict(Verdict{Code: RejectProtocol, Reason: "protocol mismatch"})
			return handshakeFrame(t, b, err)
		},
		check: checkVerdict(Verdict{Code: RejectProtocol, Reason: "protocol mismatch"}),
	},
	{
		name:  "broadcast",
		frame: func(*testing.T) []byte { return messageFrame(goldenBroadcast()) },
		check: checkMessage(goldenBroadcast()),
	},
	{
		name: "broadcast_signed",
		frame: func(*testing.T) []byte {
			return AppendFrame(nil, flags.None, append([]byte{0}, goldenSignedBroadcast().AppendSigned(nil, goldenKey())...))
		},
		check: func(t *testing.T, codec flags.Method, body []byte) {
			_, raw, err := SplitMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			want := goldenSignedBroadcast()
			want.Auth = raw[len(raw)-AuthSize:]
			checkMessage(want)(t, codec, body)
			var got Envelope
			if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
				t.Fatal(err)
			}
			if err := VerifyEnvelope(raw, &got); err != nil {
				t.Fatalf("the golden signed broadcast does not verify: %v", err)
			}
			if !bytes.Equal(got.AuthKey(), goldenKey()[32:]) {
				t.Fatal("auth key is not the golden key")
			}
		},
	},
	{
		name:  "forward",
		frame: func(*testing.T) []byte { return messageFrame(goldenForward()) },
		check: checkMessage(goldenForward()),
	},
	{
		name: "publish",
		frame: func(*testing.T) []byte {
			return AppendFrame(nil, flags.None, append([]byte{0}, goldenPublish().AppendSigned(nil, goldenKey())...))
		},
		check: func(t *testing.T, codec flags.Method, body []byte) {
			_, raw, err := SplitMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			want := goldenPublish()
			want.Auth = raw[len(raw)-AuthSize:]
			checkMessage(want)(t, codec, body)
			var got Envelope
			if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
				t.Fatal(err)
			}
			if err := VerifyEnvelope(raw, &got); err != nil {
				t.Fatalf("the golden publish does not verify: %v", err)
			}
		},
	},
	{
		name:  "punch_request",
		frame: func(*testing.T) []byte { return messageFrame(goldenPunchRequest()) },
		check: checkPunch(goldenPunchRequest()),
	},
	{
		name:  "punch_introduce",
		frame: func(*testing.T) []byte { return messageFrame(goldenPunchIntroduce()) },
		check: checkPunch(goldenPunchIntroduce()),
	},
	{
		name: "routed",
		frame: func(*testing.T) []byte {
			return AppendFrame(nil, flags.None, append([]byte{0}, goldenRouted().AppendSigned(nil, goldenKey())...))
		},
		check: func(t *testing.T, codec flags.Method, body []byte) {
			_, raw, err := SplitMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			want := goldenRouted()
			want.Auth = raw[len(raw)-AuthSize:]
			checkMessage(want)(t, codec, body)
			var got Envelope
			if err := DecodeEnvelope(raw, &got, DefaultLimits); err != nil {
				t.Fatal(err)
			}
			if err := VerifyEnvelope(raw, &got); err != nil {
				t.Fatalf("the golden routed message does not verify: %v", err)
			}
		},
	},
	{
		name: "ihave",
		frame: func(*testing.T) []byte {
			return messageFrame(goldenTreeMessage(flags.IHave, AppendBroadcastRefs(nil, goldenRefs)))
		},
		check: checkMessage(goldenTreeMessage(flags.IHave, AppendBroadcastRefs(nil, goldenRefs))),
	},
	{
		name: "tree_iwant",
		frame: func(*testing.T) []byte {
			return messageFrame(goldenTreeMessage(flags.Tree, AppendTreeControl(nil, TreeWant, goldenRefs[1:])))
		},
		check: checkMessage(goldenTreeMessage(flags.Tree, AppendTreeControl(nil, TreeWant, goldenRefs[1:]))),
	},
	{
		name: "tree_prune",
		frame: func(*testing.T) []byte {
			return messageFrame(goldenTreeMessage(flags.Tree, AppendTreeControl(nil, TreePrune, nil)))
		},
		check: checkMessage(goldenTreeMessage(flags.Tree, AppendTreeControl(nil, TreePrune, nil))),
	},
	{
		name:  "ping",
		frame: func(*testing.T) []byte { return messageFrame(goldenControl(flags.Ping, goldenNonce)) },
		check: checkMessage(goldenControl(flags.Ping, goldenNonce)),
	},
	{
		name:  "pong",
		frame: func(*testing.T) []byte { return messageFrame(goldenControl(flags.Pong, goldenNonce)) },
		check: checkMessage(goldenControl(flags.Pong, goldenNonce)),
	},
	{
		name: "renegotiate",
		frame: func(*testing.T) []byte {
			return messageFrame(goldenControl(flags.Renegotiate, []byte{byte(flags.Zstd)}))
		},
		check: checkMessage(goldenControl(flags.Renegotiate, []byte{byte(flags.Zstd)})),
	},
	{
		name:  "resend",
		frame: func(*testing.T) []byte { return messageFrame(goldenControl(flags.Resend, goldenResendN)) },
		check: checkMessage(goldenControl(flags.Resend, goldenResendN)),
	},
}

// formatHex renders b as hex text, 16 bytes per line.
func formatHex(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		for j := i; j < end; j++ {
			if j > i {
				sb.WriteByte(' ')
			}
			fmt.Fprintf(&sb, "%02x", b[j])
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// parseHex reads hex text: whitespace is ignored, '#' starts a comment.
func parseHex(text string) ([]byte, error) {
	var digits strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(goldenDir, name+".hex"))
	if err != nil {
		t.Fatalf("%v (run go test ./protocol -run Golden -update to create it)", err)
	}
	b, err := parseHex(string(text))
	if err != nil {
		t.Fatalf("%s.hex: %v", name, err)
	}
	return b
}

// checkGolden compares got with testdata/golden/<name>.hex, or rewrites the
// file with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(goldenDir, name+".hex"), []byte(formatHex(got)), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want := readGolden(t, name); !bytes.Equal(got, want) {
		t.Fatalf("%s: the Go code encodes\n%s\nthe golden file has\n%s", name, formatHex(got), formatHex(want))
	}
}

func TestGoldenFrames(t *testing.T) {
	for _, g := range goldenFrames {
		t.Run(g.name, func(t *testing.T) {
			// (a) The Go code encodes exactly the golden bytes.
			checkGolden(t, g.name, g.frame(t))
			// (b) The golden bytes decode to the example's values, through
			// the frame reader with the limit that applies to them.
			data := readGolden(t, g.name)
			limit := DefaultMaxFrameSize
			if strings.HasPrefix(g.name, "hello") || strings.HasPrefix(g.name, "verdict") ||
				strings.HasPrefix(g.name, "preamble") || strings.HasPrefix(g.name, "auth") {
				limit = MaxHandshakeSize
			}
			fr := NewFrameReader(bytes.NewReader(data), limit)
			codec, body, err := fr.ReadFrame(nil)
			if err != nil {
				t.Fatal(err)
			}
			g.check(t, codec, body)
			if _, _, err := fr.ReadFrame(nil); err == nil {
				t.Fatal("golden file holds more than one frame")
			}
		})
	}
}

// goldenBroadcastID is the message ID of the broadcast example for seed 0,
// as 8 big-endian bytes.
func goldenBroadcastID() []byte {
	_, raw, _ := SplitMessage(AppendMessage(nil, 0, goldenBroadcast()))
	return binary.BigEndian.AppendUint64(nil, uint64(NewHasherWithSeed(0).Sum(raw)))
}

// goldenSigningInput is the signing input of the signed example: the
// domain string, then the SHA-256 of its items.
func goldenSigningInput() []byte {
	raw := goldenSignedBroadcast().AppendSigned(nil, goldenKey())
	var e Envelope
	if err := DecodeEnvelope(raw, &e, DefaultLimits); err != nil {
		panic(err)
	}
	in := EnvelopeSigningInput(SignedItems(raw, &e))
	return in[:]
}

func TestGoldenSigningInput(t *testing.T) {
	checkGolden(t, "broadcast_signed_input", goldenSigningInput())
	// The signature in the golden frame is crypto/ed25519's over that input
	// (Ed25519 is deterministic, so any implementation agrees).
	frame := readGolden(t, "broadcast_signed")
	sig := frame[len(frame)-ed25519.SignatureSize:]
	if want := ed25519.Sign(goldenKey(), goldenSigningInput()); !bytes.Equal(sig, want) {
		t.Fatalf("signature %x, crypto/ed25519 gives %x", sig, want)
	}
}

func TestGoldenMessageID(t *testing.T) {
	checkGolden(t, "broadcast_msgid_seed0", goldenBroadcastID())
	// The ID covers the envelope only: the hop byte does not change it.
	h := NewHasherWithSeed(0)
	_, a, _ := SplitMessage(AppendMessage(nil, 0, goldenBroadcast()))
	_, b, _ := SplitMessage(AppendMessage(nil, 5, goldenBroadcast()))
	if h.Sum(a) != h.Sum(b) {
		t.Fatal("hop byte changes the message ID")
	}
}

// specBlock is one annotated hex block of docs/protocol.md.
type specBlock struct {
	name  string
	line  int // line of the marker, 1-based
	bytes []byte
}

var goldenMarker = regexp.MustCompile(`^<!--\s*golden:\s*([a-z0-9_]+)\s*-->\s*$`)

// parseSpecBlocks extracts the golden blocks of the spec. Inside a block
// every line is blank, a comment starting with '#', or
//
//	OFFSET  XX XX XX ...   # meaning
//
// where OFFSET is the hexadecimal offset of the line's first byte; the
// offsets are checked too, so the annotations cannot drift either.
func parseSpecBlocks(text string) ([]specBlock, error) {
	lines := strings.Split(text, "\n")
	var blocks []specBlock
	for i := 0; i < len(lines); i++ {
		m := goldenMarker.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		blk := specBlock{name: m[1], line: i + 1}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[j]), "```") {
			return nil, fmt.Errorf("line %d: golden marker %q is not followed by a code block", i+1, blk.name)
		}
		closed := false
		for j++; j < len(lines); j++ {
			line := strings.TrimSpace(lines[j])
			if strings.HasPrefix(line, "```") {
				closed = true
				break
			}
			if k := strings.IndexByte(line, '#'); k >= 0 {
				line = line[:k]
			}
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			off, err := strconv.ParseUint(fields[0], 16, 32)
			if err != nil || len(fields[0]) != 4 {
				return nil, fmt.Errorf("line %d: %q does not start with a 4-digit hex offset", j+1, lines[j])
			}
			if int(off) != len(blk.bytes) {
				return nil, fmt.Errorf("line %d: offset %04x, but %d (0x%04x) bytes precede it", j+1, off, len(blk.bytes), len(blk.bytes))
			}
			if len(fields) == 1 {
				return nil, fmt.Errorf("line %d: no bytes after the offset", j+1)
			}
			for _, f := range fields[1:] {
				b, err := hex.DecodeString(f)
				if err != nil || len(b) != 1 {
					return nil, fmt.Errorf("line %d: %q is not one hex byte (put annotations after '#')", j+1, f)
				}
				blk.bytes = append(blk.bytes, b[0])
			}
		}
		if !closed {
			return nil, fmt.Errorf("line %d: code block of %q is not closed", i+1, blk.name)
		}
		blocks = append(blocks, blk)
		i = j
	}
	return blocks, nil
}

func TestGoldenSpecMatches(t *testing.T) {
	text, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseSpecBlocks(string(text))
	if err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	shown := map[string]bool{}
	for _, blk := range blocks {
		want := readGolden(t, blk.name)
		if !bytes.Equal(blk.bytes, want) {
			t.Errorf("%s:%d: example %q shows\n%s\nbut testdata/golden/%s.hex (the Go encoding) is\n%s",
				specPath, blk.line, blk.name, formatHex(blk.bytes), blk.name, formatHex(want))
		}
		shown[blk.name] = true
	}
	for _, g := range goldenFrames {
		if !shown[g.name] {
			t.Errorf("%s shows no annotated example %q", specPath, g.name)
		}
	}
	// Values the spec states in prose.
	pid := DefaultProtocol.ID()
	th := goldenTranscript(t)
	plainID := Protocol{Subnet: DefaultProtocol.Subnet, Encryption: EncryptionPlaintext}.ID()
	for what, s := range map[string]string{
		"default protocol ID":            pid.String(),
		"plaintext protocol ID":          plainID.String(),
		"envelope signing domain":        `"` + EnvelopeDomain + `"`,
		"broadcast example's message ID": hex.EncodeToString(goldenBroadcastID()),
		"dialer's public key":            hex.EncodeToString(publicOf(goldenDialerKey)),
		"dialer's node ID":               goldenHello().NodeID.String(),
		"listener's public key":          hex.EncodeToString(publicOf(goldenListenerKey)),
		"listener's node ID":             goldenListenerHello().NodeID.String(),
		"transcript hash":                hex.EncodeToString(th[:]),
		"exporter label":                 ExporterLabel,
		"ALPN":                           ALPN,
		"transcript domain":              TranscriptDomain,
		"dialer's auth domain":           AuthDomainDialer,
		"listener's auth domain":         AuthDomainListener,
		"dialer's proof domain":          ProofDomainDialer,
		"listener's proof domain":        ProofDomainListener,
	} {
		if !bytes.Contains(text, []byte(s)) {
			t.Errorf("%s does not state the %s %s", specPath, what, s)
		}
	}
	// The spec's own statements of sizes and flag values.
	for _, s := range []string{
		fmt.Sprintf("%d", DefaultMaxFrameSize), fmt.Sprintf("%d", MaxHandshakeSize),
		fmt.Sprintf("%d", MaxMetaEntries), fmt.Sprintf("%d", MaxAcceptMethods), fmt.Sprintf("%d", MaxControlItems),
	} {
		if !bytes.Contains(text, []byte(s)) {
			t.Errorf("%s does not mention the limit %s", specPath, s)
		}
	}
}

func TestParseSpecBlocks(t *testing.T) {
	good := "text\n<!-- golden: x -->\n```text\n# heading\n0000  01 02   # one two\n\n0002  03      # three\n```\n"
	blocks, err := parseSpecBlocks(good)
	if err != nil || len(blocks) != 1 || blocks[0].name != "x" || !bytes.Equal(blocks[0].bytes, []byte{1, 2, 3}) {
		t.Fatalf("%+v %v", blocks, err)
	}
	for _, bad := range []string{
		"<!-- golden: x -->\nno block\n",
		"<!-- golden: x -->\n```\n0000 01\n",
		"<!-- golden: x -->\n```\n0001 01\n```\n",
		"<!-- golden: x -->\n```\n0000 01 zz\n```\n",
		"<!-- golden: x -->\n```\n0000 01 length\n```\n",
		"<!-- golden: x -->\n```\n0 01\n```\n",
	} {
		if _, err := parseSpecBlocks(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
