package chord

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// Golden vectors of the answer authentication (docs/protocol.md §13). As
// for package protocol's vectors, testdata/golden/<name>.hex at the
// repository root holds the bytes and docs/protocol.md shows them,
// annotated, after "<!-- golden: <name> -->" (protocol's
// TestGoldenSpecMatches checks that the spec shows what the files hold);
// this test checks that the Go code produces what the files hold.
//
// Rewrite the files from the Go code with: go test ./chord -run Golden -update
var updateGolden = flag.Bool("update", false, "rewrite the golden files of chord's vectors")

const (
	goldenDir = "../testdata/golden"
	specPath  = "../docs/protocol.md"
)

// goldenAnswerSeed is the owner's Ed25519 seed in the example: the bytes
// 0x00, 0x01, ..., 0x1f.
func goldenAnswerSeed() []byte {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return seed
}

// goldenAnswer is the example: the owner answers a lookup of key
// 00112233-4455-6677-8899-aabbccddeeff, request ID 0x0102030405060708, for
// requester 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, after 2 hops, and signs
// it because the answer goes along the ring.
func goldenAnswer() (responseHeader, ed25519.PrivateKey) {
	key := ed25519.NewKeyFromSeed(goldenAnswerSeed())
	h := responseHeader{
		to:     protocol.MustParseNodeID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
		id:     0x0102030405060708,
		status: statusOK,
		hops:   2,
		key:    protocol.MustParseNodeID("00112233-4455-6677-8899-aabbccddeeff"),
		from:   PeerInfo{ID: protocol.NodeIDFromKey(key.Public().(ed25519.PublicKey)), Addr: "192.0.2.7:4444"},
	}
	return h, key
}

func TestAnswerGolden(t *testing.T) {
	h, key := goldenAnswer()
	// A node with the example's key signs exactly the example.
	s := newNode(t, WithKey(key))
	if s.ID() != h.from.ID {
		t.Fatalf("node ID %s, want %s", s.ID(), h.from.ID)
	}
	input := answerSigningInput(nil, &h, nil)
	signed := h
	signed.from = PeerInfo{ID: s.ID(), Addr: h.from.Addr}
	s.signAnswer(&signed, nil)
	header := encodeResponseHeader(signed)
	checkGoldenFile(t, "chord_answer_input", input)
	checkGoldenFile(t, "chord_answer_header", header)

	// The golden header decodes to the example and is accepted by the
	// requester's pending lookup.
	got, err := decodeResponseHeader(readGoldenFile(t, "chord_answer_header"))
	if err != nil || !responseHeadersEqual(got, signed) {
		t.Fatalf("decoded %+v, %v; want %+v", got, err, signed)
	}
	c := &call{id: h.id, kind: kindLookup, key: h.key}
	if err := checkAnswer(c, &got, nil, &base.Message{}); err != nil {
		t.Fatalf("golden answer refused: %v", err)
	}

	// The spec shows both vectors and states the values it derives.
	text, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	hiHash := answerPayloadHash([][]byte{[]byte("hi")})
	for what, s := range map[string]string{
		"input vector":                      "<!-- golden: chord_answer_input -->",
		"header vector":                     "<!-- golden: chord_answer_header -->",
		"domain string":                     `"` + answerDomain + `"`,
		"example's public key":              hex.EncodeToString(pub),
		"example's owner ID":                h.from.ID.String(),
		"payload hash of the packet \"hi\"": hex.EncodeToString(hiHash[:]),
	} {
		if !bytes.Contains(text, []byte(s)) {
			t.Errorf("%s does not show the %s %s", specPath, what, s)
		}
	}
}

func readGoldenFile(t *testing.T, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(goldenDir, name+".hex"))
	if err != nil {
		t.Fatalf("%v (run go test ./chord -run Golden -update to create it)", err)
	}
	var digits strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s.hex: %v", name, err)
	}
	return b
}

// checkGoldenFile compares got with testdata/golden/<name>.hex, or
// rewrites the file with -update (16 bytes a line, as package protocol
// writes its own).
func checkGoldenFile(t *testing.T, name string, got []byte) {
	t.Helper()
	if *updateGolden {
		var sb strings.Builder
		for i := 0; i < len(got); i += 16 {
			line := got[i:min(i+16, len(got))]
			for j, b := range line {
				if j > 0 {
					sb.WriteByte(' ')
				}
				fmt.Fprintf(&sb, "%02x", b)
			}
			sb.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(goldenDir, name+".hex"), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want := readGoldenFile(t, name); !bytes.Equal(got, want) {
		t.Fatalf("%s: the Go code produces\n%x\nthe golden file has\n%x", name, got, want)
	}
}
