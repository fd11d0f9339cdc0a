package discover

import (
	"context"
	"crypto/ed25519"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// node is a key and what a Service needs to speak for it.
type node struct {
	priv ed25519.PrivateKey
	id   Identity
}

func newNode(t testing.TB, proto protocol.ProtocolID, addrs ...string) *node {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &node{priv: priv, id: Identity{
		Key: pub, Protocol: proto,
		Sign:  func(m []byte) []byte { return ed25519.Sign(priv, m) },
		Addrs: func() []string { return addrs },
	}}
}

func (n *node) ID() protocol.NodeID { return protocol.NodeIDFromKey(n.id.Key) }

// freePorts returns n UDP ports on 127.0.0.1 that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var conns []net.PacketConn
	var ports []int
	for range n {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, pc)
		ports = append(ports, pc.LocalAddr().(*net.UDPAddr).Port)
	}
	for _, pc := range conns {
		pc.Close()
	}
	return ports
}

// onHost returns a Config listening on 127.0.0.1:port and probing every
// port of ports.
func onHost(port int, ports []int) Config {
	cfg := Config{Listen: "127.0.0.1:" + strconv.Itoa(port)}
	for _, p := range ports {
		cfg.Targets = append(cfg.Targets, "127.0.0.1:"+strconv.Itoa(p))
	}
	return cfg
}

func start(t testing.TB, cfg Config, n *node) *Service {
	t.Helper()
	s, err := New(cfg, n.id)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func lists(s *Service, id protocol.NodeID) bool {
	for _, p := range s.Peers() {
		if p.ID == id {
			return true
		}
	}
	return false
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testnet.WaitFor(ctx, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var testProto = protocol.DefaultProtocol.ID()
