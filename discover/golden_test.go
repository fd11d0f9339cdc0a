package discover

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

	"github.com/meshsock/meshsock/protocol"
)

// The golden vectors of docs/protocol.md §17: testdata/golden/<name>.hex
// holds the bytes (as package protocol's golden files do), and the spec
// shows them annotated after "<!-- golden: <name> -->". Both are written
// from the Go code with
//
//	go test ./discover -run Golden -update
//
// (needed again whenever protocol.Version changes: the version byte and
// the protocol ID are in every datagram).
var update = flag.Bool("update", false, "rewrite the golden files and the spec's blocks")

const (
	goldenDir = "../testdata/golden"
	specPath  = "../docs/protocol.md"
)

// The example's values: the node whose Ed25519 seed is 00 01 … 1f, time
// 1700000000000000000, one address; the answer proves network key
// 40 41 … 5f.
var (
	goldenKey        = ed25519.NewKeyFromSeed(seqBytes(0x00, 32))
	goldenNetworkKey = seqBytes(0x40, 32)
)

func seqBytes(first byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = first + byte(i)
	}
	return b
}

type goldenPacket struct {
	name string
	kind Kind
	nk   []byte
}

var goldenPackets = []goldenPacket{
	{"discovery_probe", KindProbe, nil},
	{"discovery_answer", KindAnswer, goldenNetworkKey},
}

func (g goldenPacket) encode(t *testing.T) []byte {
	p := &Packet{Kind: g.kind, Protocol: protocol.DefaultProtocol.ID(), Key: goldenKey.Public().(ed25519.PublicKey),
		Time: 1700000000000000000, Addrs: []string{"192.0.2.1:4444"}}
	b, err := p.Encode(func(m []byte) []byte { return ed25519.Sign(goldenKey, m) }, g.nk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// annotate renders b as the spec's annotated block.
func annotate(b []byte, proof bool) string {
	var sb strings.Builder
	off := 0
	row := func(n int, first, rest string) {
		for i := 0; i < n; i += 8 {
			end := min(i+8, n)
			note := rest
			if i == 0 {
				note = first
			}
			fmt.Fprintf(&sb, "%04x  %-24s # %s\n", off+i, hexSpaced(b[off+i:off+end]), note)
		}
		off += n
	}
	row(4, `magic "MSDG"`, "")
	row(1, fmt.Sprintf("version %d", b[4]), "")
	row(1, "kind: "+Kind(b[5]).String(), "")
	row(1, fmt.Sprintf("flags %#02x (bit 0: proof, bit 1: hidden)", b[6]), "")
	row(1, fmt.Sprintf("%d address(es)", b[7]), "")
	row(16, "protocol ID (meshsock/tls-1.3, version "+fmt.Sprint(b[4])+")", "...")
	row(16, "node ID "+protocol.NodeID(b[24:40]).String(), "...")
	row(32, "Ed25519 public key (seed 00 01 … 1f)", "...")
	row(8, "time 1700000000000000000 (2023-11-14T22:13:20Z)", "")
	for range int(b[7]) {
		n := int(b[off])
		row(1, fmt.Sprintf("address length %d", n), "")
		row(n, fmt.Sprintf("%q", string(b[off:off+n])), "...")
	}
	if proof {
		row(ProofSize, "network-key proof: HMAC-SHA256(40 41 … 5f, ProofDomain || bytes 0000 to "+fmt.Sprintf("%04x", off-1)+")", "...")
	}
	row(ed25519.SignatureSize, fmt.Sprintf("Ed25519 signature over SignDomain || bytes 0000 to %04x", off-1), "...")
	return sb.String()
}

func hexSpaced(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = hex.EncodeToString([]byte{x})
	}
	return strings.Join(parts, " ")
}

func formatHex(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 16 {
		sb.WriteString(hexSpaced(b[i:min(i+16, len(b))]) + "\n")
	}
	return sb.String()
}

// specBlock returns the code block after the golden marker of name in the
// spec, and where it is.
func specBlock(spec, name string) (body string, start, end int, ok bool) {
	marker := "<!-- golden: " + name + " -->\n```text\n"
	i := strings.Index(spec, marker)
	if i < 0 {
		return "", 0, 0, false
	}
	start = i + len(marker)
	j := strings.Index(spec[start:], "```")
	if j < 0 {
		return "", 0, 0, false
	}
	return spec[start : start+j], start, start + j, true
}

func TestGoldenDiscovery(t *testing.T) {
	specBytes, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	spec := string(specBytes)
	for _, g := range goldenPackets {
		b := g.encode(t)
		file := filepath.Join(goldenDir, g.name+".hex")
		block := annotate(b, g.nk != nil)
		if *update {
			if err := os.WriteFile(file, []byte(formatHex(b)), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, s, e, ok := specBlock(spec, g.name); ok {
				spec = spec[:s] + block + spec[e:]
			} else {
				t.Errorf("%s has no block for %s to update", specPath, g.name)
			}
			continue
		}
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (go test ./discover -run Golden -update writes it)", err)
		}
		want, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: the Go code encodes\n%s\nthe golden file has\n%s", g.name, formatHex(b), text)
		}
		if got, _, _, ok := specBlock(spec, g.name); !ok || got != block {
			t.Errorf("%s: the spec's block for %s is\n%s\nthe Go code gives\n%s", specPath, g.name, got, block)
		}
		// The golden bytes decode and verify, and prove the network key.
		p, err := Decode(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(); err != nil {
			t.Fatal(err)
		}
		if p.VerifyProof([][]byte{goldenNetworkKey}) != (g.nk != nil) {
			t.Fatalf("%s: proof check disagrees", g.name)
		}
	}
	if *update {
		if err := os.WriteFile(specPath, []byte(spec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{SignDomain, ProofDomain, Magic, fmt.Sprint(MaxPacketSize)} {
		if !strings.Contains(spec, s) {
			t.Errorf("%s does not state %q", specPath, s)
		}
	}
}
