package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/meshsock/meshsock/flags"
)

func TestHelloRoundTrip(t *testing.T) {
	meta := map[string]string{"name": "alice", "role": "relay", "": "empty key", "ü": "ünïcödé"}
	for i := 0; i < MaxMetaEntries-len(meta); i++ {
		meta[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", i)
	}
	key := ed25519.PublicKey(seq(0x80, 32)) // any 32 bytes: the decoder checks the size only
	cases := []*Hello{
		goldenHello(),
		goldenListenerHello(),
		{Version: Version, Protocol: DefaultProtocol.ID(), NodeID: NewNodeID(), Time: -1, Key: key},
		{Version: Version, Protocol: DefaultProtocol.ID(), NodeID: NewNodeID(), Nonce: ^uint64(0), Time: math.MaxInt64, Key: key},
		{Version: Version, Protocol: DefaultProtocol.ID(), NodeID: NewNodeID(), Time: math.MinInt64, Key: key},
		{Version: Version, Protocol: Protocol{Subnet: "x"}.ID(), NodeID: NewNodeID(), ListenAddr: "[::1]:65535",
			Observed: "[2001:db8::1]:65535",
			Accept:   []flags.Method{flags.Zstd, flags.Snappy, flags.Zlib, flags.Gzip, flags.None, 0x7f}, Meta: meta, Key: key},
		{Version: Version, Accept: make([]flags.Method, MaxAcceptMethods), Meta: map[string]string{}, Key: key,
			Observed: strings.Repeat("o", MaxObservedLen)},
	}
	for i, h := range cases {
		data, err := MarshalHello(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalHello(data)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if got.Version != h.Version || got.Protocol != h.Protocol || got.NodeID != h.NodeID || got.ListenAddr != h.ListenAddr ||
			got.Nonce != h.Nonce || got.Time != h.Time || !got.Key.Equal(h.Key) || got.Observed != h.Observed {
			t.Fatalf("case %d: got %+v, want %+v", i, got, h)
		}
		if len(got.Accept) != len(h.Accept) || (len(h.Accept) > 0 && !reflect.DeepEqual(got.Accept, h.Accept)) {
			t.Fatalf("case %d: accept %v, want %v", i, got.Accept, h.Accept)
		}
		if len(got.Meta) != len(h.Meta) || (len(h.Meta) > 0 && !reflect.DeepEqual(got.Meta, h.Meta)) {
			t.Fatalf("case %d: meta %v, want %v", i, got.Meta, h.Meta)
		}
		// The encoding is deterministic: encoding the decoded value again
		// gives the same bytes (map keys sorted, shortest heads).
		again, err := MarshalHello(got)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("case %d: re-encoding differs:\n%x\n%x", i, data, again)
		}
		if len(data) > MaxHandshakeSize {
			t.Fatalf("case %d: hello of %d bytes exceeds the handshake limit", i, len(data))
		}
	}
}

// helloItems returns the items of a valid Hello, to be altered and encoded
// with fxamacker.
func helloItems() []any {
	h := goldenHello()
	return []any{Magic, uint64(Version), h.Protocol[:], h.NodeID[:], "192.0.2.1:4444", []byte{0x20, 0x21},
		map[string]string{"name": "alice"}, uint64(0x0102030405060708), goldenTime, []byte(h.Key), "192.0.2.2:5555"}
}

func encodeItems(t *testing.T, items any) []byte {
	t.Helper()
	b, err := encMode.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHelloItemsMatch(t *testing.T) {
	want, _ := MarshalHello(goldenHello())
	if got := encodeItems(t, helloItems()); !bytes.Equal(got, want) {
		t.Fatalf("helloItems encodes to\n%x\nMarshalHello gives\n%x", got, want)
	}
}

func TestHelloRejects(t *testing.T) {
	with := func(i int, v any) []any {
		items := helloItems()
		items[i] = v
		return items
	}
	bigMeta := map[string]string{}
	for i := 0; i <= MaxMetaEntries; i++ {
		bigMeta[fmt.Sprint(i)] = "x"
	}
	okMeta := map[string]string{}
	for i := 0; i < MaxMetaEntries; i++ {
		okMeta[fmt.Sprint(i)] = "x"
	}
	valid := encodeItems(t, helloItems())
	// Replace the meta map with raw bytes (as the last item: the items
	// after it are dropped).
	metaStart := bytes.LastIndex(valid, []byte{0xa1, 0x64, 'n', 'a', 'm', 'e'})
	rawMeta := func(m []byte) []byte {
		b := append(bytes.Clone(valid[:metaStart]), m...)
		b[0] = 0x87 // array(7)
		return b
	}

	cases := []struct {
		name string
		data []byte
		want error
	}{
		// Not rejected today (fxamacker is lenient about them; see
		// docs/protocol.md): an array of small uints where a bstr is
		// expected, and null for the meta map.
		{"extra item", encodeItems(t, append(helloItems(), "extra")), ErrMalformed},
		{"extra map item", encodeItems(t, append(helloItems(), map[string]string{})), ErrMalformed},
		{"missing item", encodeItems(t, helloItems()[:6]), ErrMalformed},
		{"magic only", encodeItems(t, []any{Magic}), ErrMalformed},
		{"version text", encodeItems(t, with(1, "1")), ErrMalformed},
		{"version negative", encodeItems(t, with(1, -1)), ErrMalformed},
		{"version 65536", encodeItems(t, with(1, 65536)), ErrMalformed},
		{"version float", encodeItems(t, with(1, 1.5)), ErrMalformed},
		{"protocol text", encodeItems(t, with(2, "0123456789abcdef")), ErrMalformed},
		{"protocol 15 bytes", encodeItems(t, with(2, make([]byte, 15))), ErrMalformed},
		{"protocol 17 bytes", encodeItems(t, with(2, make([]byte, 17))), ErrMalformed},
		{"protocol empty", encodeItems(t, with(2, []byte{})), ErrMalformed},
		{"node ID 15 bytes", encodeItems(t, with(3, make([]byte, 15))), ErrMalformed},
		{"node ID 32 bytes", encodeItems(t, with(3, make([]byte, 32))), ErrMalformed},
		{"node ID text", encodeItems(t, with(3, goldenNodeID.String())), ErrMalformed},
		{"listen address int", encodeItems(t, with(4, 4444)), ErrMalformed},
		{"listen address bytes", encodeItems(t, with(4, []byte("x"))), ErrMalformed},
		{"listen address bad UTF-8", encodeItems(t, with(4, cbor.RawMessage{0x62, 0xff, 0xfe})), ErrMalformed},
		{"accept text", encodeItems(t, with(5, "\x20\x21")), ErrMalformed},
		{"33 accept methods", encodeItems(t, with(5, make([]byte, MaxAcceptMethods+1))), ErrMalformed},
		{"meta array", encodeItems(t, with(6, []string{"name", "alice"})), ErrMalformed},
		{"meta int value", encodeItems(t, with(6, map[string]int{"name": 1})), ErrMalformed},
		{"meta int key", encodeItems(t, with(6, map[int]string{1: "x"})), ErrMalformed},
		{"meta bytes key", encodeItems(t, with(6, map[string]any{"x": []byte("y")})), ErrMalformed},
		{"meta nested map", encodeItems(t, with(6, map[string]any{"x": map[string]string{}})), ErrMalformed},
		{"65 meta entries", encodeItems(t, with(6, bigMeta)), ErrMalformed},
		{"key 31 bytes", encodeItems(t, with(9, make([]byte, 31))), ErrMalformed},
		{"key 33 bytes", encodeItems(t, with(9, make([]byte, 33))), ErrMalformed},
		{"key empty", encodeItems(t, with(9, []byte{})), ErrMalformed},
		{"key text", encodeItems(t, with(9, string(make([]byte, 32)))), ErrMalformed},
		{"no key (9 items)", encodeItems(t, helloItems()[:9]), ErrMalformed},
		{"no observed address (10 items)", encodeItems(t, helloItems()[:10]), ErrMalformed},
		{"observed address int", encodeItems(t, with(10, 5555)), ErrMalformed},
		{"observed address bytes", encodeItems(t, with(10, []byte("192.0.2.2:5555"))), ErrMalformed},
		{"observed address too long", encodeItems(t, with(10, strings.Repeat("x", MaxObservedLen+1))), ErrMalformed},
		{"duplicate meta key", rawMeta([]byte{0xa2, 0x61, 'a', 0x61, 'x', 0x61, 'a', 0x61, 'y'}), ErrMalformed},
		{"indefinite meta", rawMeta([]byte{0xbf, 0x61, 'a', 0x61, 'x', 0xff}), ErrMalformed},
		{"meta tag", rawMeta([]byte{0xc0, 0xa0}), ErrMalformed},
		{"meta truncated", rawMeta([]byte{0xa1, 0x61, 'a'}), ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0x00), ErrMalformed},
		{"trailing hello", append(bytes.Clone(valid), valid...), ErrMalformed},
		{"indefinite array", append(append([]byte{0x9f}, valid[1:]...), 0xff), ErrMalformed},
		{"truncated", valid[:len(valid)-1], ErrMalformed},
		// Not meshsock at all.
		{"empty", nil, ErrNotMeshsock},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), ErrNotMeshsock},
		{"TLS client hello", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03}, ErrNotMeshsock},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), ErrNotMeshsock},
		{"wrong magic", encodeItems(t, with(0, "meshsocK")), ErrNotMeshsock},
		{"magic as bytes", encodeItems(t, with(0, []byte(Magic))), ErrNotMeshsock},
		{"magic as int", encodeItems(t, with(0, 7)), ErrNotMeshsock},
		{"map instead of array", encodeItems(t, map[string]string{"magic": Magic}), ErrNotMeshsock},
		{"empty array", []byte{0x80}, ErrNotMeshsock},
		{"a verdict", encodeItems(t, []any{0, ""}), ErrNotMeshsock},
		{"an envelope", validEnvelope(), ErrNotMeshsock},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := UnmarshalHello(c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("UnmarshalHello(%x) = %v, want %v", c.data, err, c.want)
			}
			if h != nil {
				t.Fatal("non-nil Hello with an error")
			}
			other := ErrNotMeshsock
			if c.want == ErrNotMeshsock {
				other = ErrMalformed
			}
			if errors.Is(err, other) {
				t.Fatalf("error %v matches both sentinels", err)
			}
		})
	}
	if _, err := UnmarshalHello(encodeItems(t, with(6, okMeta))); err != nil {
		t.Fatalf("%d meta entries: %v", MaxMetaEntries, err)
	}
	if _, err := UnmarshalHello(encodeItems(t, with(5, make([]byte, MaxAcceptMethods)))); err != nil {
		t.Fatalf("%d accept methods: %v", MaxAcceptMethods, err)
	}
	// The version is the caller's business: a future version decodes,
	// with its version only, even if its later items would be malformed
	// in this version (a key of the wrong size).
	for _, items := range [][]any{with(1, Version+1), func() []any { i := with(1, Version+1); i[9] = []byte{1}; return i }()} {
		h, err := UnmarshalHello(encodeItems(t, items))
		if err != nil || h.Version != Version+1 || !h.NodeID.IsZero() {
			t.Fatalf("version %d: %v %v", Version+1, h, err)
		}
	}
}

// TestHelloOtherVersion: a Hello of another wire version decodes (Version
// only) whatever its items after the version are, so that the receiver
// answers it with a protocol mismatch rather than a bad hello; this
// version's Hello with the wrong items is still malformed.
func TestHelloOtherVersion(t *testing.T) {
	items := helloItems()
	version1 := slices.Clone(items[:8]) // the Hello of version 1 had no time item
	version1[1] = uint64(1)
	cases := map[string]struct {
		items   []any
		version uint16
	}{
		"version 1, 8 items":     {version1, 1},
		"version 2, 9 items":     {append([]any{Magic, 2}, helloItems()[2:9]...), 2},
		"future, 2 items":        {[]any{Magic, Version + 1}, Version + 1},
		"future, other layout":   {[]any{Magic, 65535, "anything", map[string]int{"x": 1}}, 65535},
		"version 0, 12 items":    {append([]any{Magic, 0}, append(helloItems()[2:], 1, 2, 3)...), 0},
		"future, 16 items (max)": {append([]any{Magic, 7}, make([]any, 14)...), 7},
	}
	for name, c := range cases {
		h, err := UnmarshalHello(encodeItems(t, c.items))
		if err != nil || h.Version != c.version {
			t.Errorf("%s: UnmarshalHello = %+v, %v; want version %d", name, h, err, c.version)
		}
	}
	for name, data := range map[string][]byte{
		"this version, 8 items":     encodeItems(t, append([]any{Magic, Version}, items[2:8]...)),
		"this version, 2 items":     encodeItems(t, []any{Magic, Version}),
		"future, version text":      encodeItems(t, []any{Magic, "3", 1}),
		"future, 17 items":          encodeItems(t, append([]any{Magic, 7}, make([]any, 15)...)),
		"future, version 65536":     encodeItems(t, []any{Magic, 65536}),
		"future, trailing byte":     append(encodeItems(t, []any{Magic, 7}), 0),
		"future, magic only":        encodeItems(t, []any{Magic}),
		"future, indefinite inside": {0x83, 0x68, 'm', 'e', 's', 'h', 's', 'o', 'c', 'k', 0x07, 0x9f, 0xff},
	} {
		if h, err := UnmarshalHello(data); !errors.Is(err, ErrMalformed) || h != nil {
			t.Errorf("%s: UnmarshalHello(%x) = %+v, %v; want ErrMalformed", name, data, h, err)
		}
	}
}

func TestHelloGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	valid, _ := MarshalHello(goldenHello())
	for i := 0; i < 20000; i++ {
		var data []byte
		switch i % 3 {
		case 0: // random bytes
			data = make([]byte, r.IntN(64))
			for j := range data {
				data[j] = byte(r.Uint32())
			}
		case 1: // a valid hello with bytes flipped
			data = bytes.Clone(valid)
			for k := 0; k < 1+r.IntN(3); k++ {
				data[r.IntN(len(data))] ^= byte(1 + r.IntN(255))
			}
		default: // a truncated valid hello
			data = valid[:r.IntN(len(valid))]
		}
		h, err := UnmarshalHello(data)
		if err == nil {
			// A flipped byte can land in a string and stay valid; then the
			// result must re-encode.
			if _, err := MarshalHello(h); err != nil {
				t.Fatalf("decoded %x but cannot encode it: %v", data, err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotMeshsock) {
			t.Fatalf("UnmarshalHello(%x) = %v", data, err)
		}
	}
}

func TestVerdictRoundTrip(t *testing.T) {
	for code := RejectCode(0); code < 255; code++ {
		for _, reason := range []string{"", "protocol mismatch", strings.Repeat("r", 300), "ünïcödé"} {
			v := Verdict{Code: code, Reason: reason}
			data, err := MarshalVerdict(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalVerdict(data)
			if err != nil || got != v {
				t.Fatalf("%+v: got %+v, %v", v, got, err)
			}
		}
	}
	names := map[RejectCode]string{Accept: "accepted", RejectProtocol: "protocol mismatch", RejectSelf: "self connection",
		RejectDuplicate: "duplicate connection", RejectLimit: "connection limit", RejectShutdown: "shutting down",
		RejectBadHello: "bad hello", RejectUnspecified: "unspecified", RejectClockSkew: "clock skew",
		RejectIdentity: "identity", RejectNotAuthz: "not authorised", 11: "reject(11)", 255: "reject(255)"}
	for code, want := range names {
		if got := code.String(); got != want {
			t.Errorf("RejectCode(%d).String() = %q, want %q", code, got, want)
		}
	}
	// The codes are part of the wire format.
	for code, want := range map[RejectCode]uint8{Accept: 0, RejectProtocol: 1, RejectSelf: 2, RejectDuplicate: 3,
		RejectLimit: 4, RejectShutdown: 5, RejectBadHello: 6, RejectUnspecified: 7, RejectClockSkew: 8,
		RejectIdentity: 9, RejectNotAuthz: 10} {
		if uint8(code) != want {
			t.Errorf("%v = %d, want %d", code, code, want)
		}
	}
}

func TestVerdictRejects(t *testing.T) {
	cases := map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("GET / HTTP/1.1\r\n\r\n"),
		"extra item":     encodeItems(t, []any{0, "", 1}),
		"missing item":   encodeItems(t, []any{0}),
		"code 256":       encodeItems(t, []any{256, ""}),
		"code negative":  encodeItems(t, []any{-1, ""}),
		"code text":      encodeItems(t, []any{"0", ""}),
		"reason bytes":   encodeItems(t, []any{0, []byte("x")}),
		"reason int":     encodeItems(t, []any{0, 1}),
		"reason bad utf": {0x82, 0x00, 0x61, 0xff},
		"map":            encodeItems(t, map[string]any{"code": 0}),
		"trailing":       append(encodeItems(t, []any{0, ""}), 0),
		"indefinite":     {0x9f, 0x00, 0x60, 0xff},
		"truncated":      {0x82, 0x00, 0x65, 'a'},
		"tagged":         {0xc0, 0x82, 0x00, 0x60},
		"a hello":        encodeItems(t, helloItems()),
	}
	for name, data := range cases {
		if v, err := UnmarshalVerdict(data); !errors.Is(err, ErrMalformed) || v != (Verdict{}) {
			t.Errorf("%s: UnmarshalVerdict(%x) = %+v, %v; want ErrMalformed", name, data, v, err)
		}
	}
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 10000; i++ {
		data := make([]byte, r.IntN(16))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if _, err := UnmarshalVerdict(data); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("UnmarshalVerdict(%x) = %v", data, err)
		}
	}
}

type controlMsg struct {
	_     struct{} `cbor:",toarray"`
	Kind  uint8
	IDs   [][]byte
	Addrs []string
	Meta  map[string]string
}

func TestControlCBOR(t *testing.T) {
	in := controlMsg{Kind: 7, IDs: [][]byte{goldenNodeID[:]}, Addrs: []string{"a", "b"}, Meta: map[string]string{"z": "1", "a": "2"}}
	data, err := MarshalCBOR(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out controlMsg
	if err := UnmarshalCBOR(data, &out); err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	// Deterministic: map keys in canonical order.
	if a, _ := MarshalCBOR(map[string]int{"b": 1, "a": 2, "cc": 3}); !bytes.Equal(a, []byte{0xa3, 0x61, 'a', 0x02, 0x61, 'b', 0x01, 0x62, 'c', 'c', 0x03}) {
		t.Fatalf("map order: %x", a)
	}
	nest := func(depth int) []byte {
		var b []byte
		for i := 0; i < depth; i++ {
			b = append(b, 0x81)
		}
		return append(b, 0x00)
	}
	var anyv any
	if err := UnmarshalCBOR(nest(8), &anyv); err != nil {
		t.Fatalf("nesting 8: %v", err)
	}
	long := make([]int, MaxControlItems)
	okData, _ := MarshalCBOR(long)
	var ints []int
	if err := UnmarshalCBOR(okData, &ints); err != nil || len(ints) != MaxControlItems {
		t.Fatalf("%d items: %v", MaxControlItems, err)
	}
	tooLong, _ := MarshalCBOR(make([]int, MaxControlItems+1))
	bigMap := map[int]int{}
	for i := 0; i <= MaxControlItems; i++ {
		bigMap[i] = i
	}
	tooBigMap, _ := MarshalCBOR(bigMap)
	bad := map[string][]byte{
		"nesting 9":     nest(9),
		"1025 items":    tooLong,
		"1025 pairs":    tooBigMap,
		"indefinite":    {0x9f, 0x00, 0xff},
		"tag":           {0xc1, 0x00},
		"duplicate key": {0xa2, 0x61, 'a', 0x00, 0x61, 'a', 0x01},
		"bad UTF-8":     {0x61, 0xff},
		"truncated":     {0x82, 0x00},
		"trailing":      {0x00, 0x00},
		"empty":         {},
	}
	for name, data := range bad {
		var v any
		if err := UnmarshalCBOR(data, &v); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// A NodeID inside a control packet is a 16-byte bstr, not its text form.
	type withID struct {
		_  struct{} `cbor:",toarray"`
		ID NodeID
	}
	idData, err := MarshalCBOR(&withID{ID: goldenNodeID})
	if err != nil || !bytes.Equal(idData, append([]byte{0x81, 0x50}, goldenNodeID[:]...)) {
		t.Fatalf("NodeID encodes as %x, %v", idData, err)
	}
	var backID withID
	if err := UnmarshalCBOR(idData, &backID); err != nil || backID.ID != goldenNodeID {
		t.Fatalf("NodeID decodes as %v, %v", backID.ID, err)
	}
	// Type mismatch with the target.
	if err := UnmarshalCBOR([]byte{0x61, 'x'}, &out); !errors.Is(err, ErrMalformed) {
		t.Errorf("text into struct: %v", err)
	}
}

// TestHelloObservedBound: the encoder refuses an observed address over
// MaxObservedLen, as the decoder does.
func TestHelloObservedBound(t *testing.T) {
	h := goldenHello()
	h.Observed = strings.Repeat("x", MaxObservedLen+1)
	if _, err := MarshalHello(h); !errors.Is(err, ErrMalformed) {
		t.Fatalf("MarshalHello with an observed address of %d bytes = %v; want ErrMalformed", len(h.Observed), err)
	}
}
