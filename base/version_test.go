package base_test

import (
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestPreviousVersionRefused: a node of the previous wire version sends a
// Preamble of the same layout with its own version; the listener answers
// with a protocol-mismatch verdict in plaintext, before any TLS, naming
// both versions, and counts it.
func TestPreviousVersionRefused(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0")
	nc := ftDial(t, l.Addr())
	_ = nc.SetDeadline(time.Now().Add(ftWait))
	old := uint16(protocol.Version - 1)
	b, err := protocol.MarshalPreamble(protocol.Preamble{Version: old, Encryption: protocol.EncryptionTLS})
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, b); err != nil {
		t.Fatal(err)
	}
	fr := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize)
	_, first, err := fr.ReadFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := protocol.UnmarshalPreamble(first); err != nil || p.Version != protocol.Version {
		t.Fatalf("first frame: %+v, %v; want the listener's Preamble of version %d", p, err, protocol.Version)
	}
	_, body, err := fr.ReadFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.UnmarshalVerdict(body)
	if err != nil || v.Code != protocol.RejectProtocol {
		t.Fatalf("verdict %+v, %v; want a protocol mismatch", v, err)
	}
	testnet.Eventually(t, ftWait, func() bool { return l.Stats().ProtocolMismatches == 1 }, "counted")
}
