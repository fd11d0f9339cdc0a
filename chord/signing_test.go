package chord

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// TestRoutedMessagesSigned: chord's routed messages are originated signed
// (base.NewEnvelope signs anything whose hop limit is above 1), so the
// relays on the path verify and accept them, and the owner gets them with
// a proven sender.
func TestRoutedMessagesSigned(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 1))
	nodes := buildRing(t, 8, rng)
	waitRing(t, nodes, convergeWithin)
	ids := sortedIDs(nodes)
	owners := byID(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	remote := 0
	for i := 0; remote < 10 && i < 200; i++ {
		from := nodes[rng.IntN(len(nodes))]
		key := randomKey(rng)
		want, _ := Owner(ids, key)
		if want == from.ID() {
			continue
		}
		remote++
		if err := from.SendTo(ctx, key, []byte("signed")); err != nil {
			t.Fatal(err)
		}
		m, err := owners[want].Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Sender != from.ID() || !m.Proven {
			t.Fatalf("owner got a message from %s, Proven %v; want from %s, proven", m.Sender.Short(), m.Proven, from.ID().Short())
		}
	}
	var verified, bad uint64
	for _, s := range nodes {
		st := s.Base().Stats()
		verified += st.Verified
		bad += st.BadSignatures
	}
	if verified < uint64(remote) || bad != 0 {
		t.Fatalf("verified %d signatures for %d routed messages, %d bad", verified, remote, bad)
	}
}

// TestRoutedSpoofDropped: a routed message that names another node as its
// sender, unsigned, is dropped by the first node it reaches (and so never
// relayed).
func TestRoutedSpoofDropped(t *testing.T) {
	n := newNode(t)
	victim := newNode(t)
	raw := testnet.NewBase(t, "", base.WithProtocol(DefaultProtocol))
	conn, err := raw.Connect(context.Background(), n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	e := protocol.Envelope{Type: flags.Whisper, Sub: flags.Forward, Sender: victim.ID(), Seq: 1,
		Time: time.Now().UnixNano(), HopLimit: 16,
		Packets: [][]byte{encodeRouteHeader(routeHeader{key: n.ID(), origin: victim.ID()}), []byte("spoof")}}
	if err := conn.SendEnvelope(context.Background(), 0, e.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Base().Stats().BadSignatures == 1 })
	if m, ok := n.Base().TryRecv(); ok {
		t.Fatalf("the spoofed message was delivered: %q", m.Packets)
	}
}
