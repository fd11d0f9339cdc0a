package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/wirepeer"
	"github.com/meshsock/meshsock/protocol"
)

// csVerdict dials addr as a raw peer whose clock is ahead by skew, runs
// the handshake by hand (internal/wirepeer: Preambles, TLS, Hellos, Auth
// frames, an accepting verdict out) and returns the node's verdict.
func csVerdict(t *testing.T, addr string, skew time.Duration) protocol.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := wirepeer.Dial(ctx, addr, nil, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	v, err := p.Handshake(protocol.Hello{Time: time.Now().Add(skew).UnixNano()})
	if err != nil {
		t.Fatalf("handshake: %v", err)
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
