package mesh

import (
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// csVerdict dials addr as a raw peer whose clock is ahead by skew, runs
// the handshake by hand (Hello out and in, an accepting verdict out) and
// returns the node's verdict.
func csVerdict(t *testing.T, addr string, skew time.Duration) protocol.Verdict {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	hello, err := protocol.MarshalHello(&protocol.Hello{Version: protocol.Version, Protocol: protocol.DefaultProtocol.ID(),
		NodeID: protocol.NewNodeID(), Time: time.Now().Add(skew).UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	accept, err := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.Accept})
	if err != nil {
		t.Fatal(err)
	}
	fr := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize)
	if err := protocol.WriteFrame(nc, flags.None, hello); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fr.ReadFrame(nil); err != nil {
		t.Fatalf("reading the node's hello: %v", err)
	}
	if err := protocol.WriteFrame(nc, flags.None, accept); err != nil {
		t.Fatal(err)
	}
	_, body, err := fr.ReadFrame(nil)
	if err != nil {
		t.Fatalf("reading the node's verdict: %v", err)
	}
	v, err := protocol.UnmarshalVerdict(body)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestClockSkewAtHandshake: WithClockSkew is also the handshake's
// allowance. A peer 10 s ahead is refused with "clock skew" by default
// (5 s) and accepted by a node given a minute.
func TestClockSkewAtHandshake(t *testing.T) {
	c := startCluster(t, 1)
	if v := csVerdict(t, c.nodes[0].Addr().String(), 10*time.Second); v.Code != protocol.RejectClockSkew {
		t.Errorf("default allowance: verdict %v (%q), want clock skew", v.Code, v.Reason)
	}
	wide := startCluster(t, 1, WithClockSkew(time.Minute))
	if v := csVerdict(t, wide.nodes[0].Addr().String(), 10*time.Second); v.Code != protocol.Accept {
		t.Errorf("WithClockSkew(time.Minute): verdict %v (%q), want accept", v.Code, v.Reason)
	}
}
