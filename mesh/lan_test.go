package mesh

import (
	"context"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meshsock/meshsock/discover"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// freeRange returns the first of n consecutive ports that are free for TCP
// and UDP on 127.0.0.1 (a moment ago), from a random start.
func freeRange(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		start := 20000 + rand.N(40000)
		ok := true
		for p := start; p < start+n && ok; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			pc, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(p))
			ln.Close()
			if err != nil {
				ok = false
				break
			}
			pc.Close()
		}
		if ok {
			return start
		}
	}
	t.Fatal("no free port range")
	return 0
}

func lanLists(s *Socket, id protocol.NodeID) bool {
	peers, _ := s.Discover(context.Background())
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}

// TestLANOnHostFindsFive: five nodes on a port range of 127.0.0.1, with
// on-host discovery and no address given, each list the four others, and
// form one mesh. The time to find them all is logged (docs/mesh.md).
func TestLANOnHostFindsFive(t *testing.T) {
	start := freeRange(t, 5)
	logger := testnet.Logger(t)
	c := &cluster{t: t}
	t.Cleanup(c.closeAll)
	began := time.Now()
	for i := range 5 {
		s, err := NewSocket("127.0.0.1", WithPortRange(start, 5), WithLAN(LANConfig{OnHost: true}),
			WithMembership(false), WithLogger(logger.With("i", i)))
		if err != nil {
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		if want := "127.0.0.1:" + strconv.Itoa(start+i); s.Addr().String() != want {
			t.Fatalf("node %d listens on %s, want %s (the first free port of the range)", i, s.Addr(), want)
		}
		c.nodes = append(c.nodes, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := testnet.WaitFor(ctx, func() bool {
		for _, s := range c.nodes {
			if s.lanStats().Peers < 4 {
				return false
			}
		}
		return true
	})
	found := time.Since(began)
	if err != nil {
		for i, s := range c.nodes {
			t.Logf("node %d: %+v", i, s.lanStats())
		}
		t.Fatalf("the five nodes did not all find each other: %v", err)
	}
	t.Logf("5 nodes started and found each other on the host in %v", found)
	for _, s := range c.nodes {
		for _, o := range c.nodes {
			if s != o && !lanLists(s, o.ID()) {
				t.Fatalf("%s does not list %s", s.ID().Short(), o.ID().Short())
			}
		}
	}
	// With nothing else given, they form one mesh.
	waitConnected(t, c.nodes, 10*time.Second)
}

// waitConnected waits until every node reaches every other over links.
func waitConnected(t testing.TB, nodes []*Socket, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := testnet.WaitFor(ctx, func() bool { return connected(nodes) })
	if err != nil {
		for i, s := range nodes {
			t.Logf("node %d: %d peers, %+v", i, len(s.Peers()), s.lanStats())
		}
		t.Fatalf("the nodes did not form one mesh: %v", err)
	}
}

// connected reports whether the links among nodes join them all.
func connected(nodes []*Socket) bool {
	index := make(map[protocol.NodeID]int)
	for i, s := range nodes {
		index[s.ID()] = i
	}
	seen := map[int]bool{0: true}
	queue := []int{0}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, p := range nodes[i].Peers() {
			if j, ok := index[p.ID]; ok && !seen[j] {
				seen[j] = true
				queue = append(queue, j)
			}
		}
	}
	return len(seen) == len(nodes)
}

// TestPortRangeFull: with every port of the range taken, NewSocket fails
// with ErrNoFreePort (and ErrListen); the next free port is skipped to.
func TestPortRangeFull(t *testing.T) {
	start := freeRange(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(start))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = NewSocket("127.0.0.1:0", WithPortRange(start, 1))
	if !errors.Is(err, ErrNoFreePort) || !errors.Is(err, ErrListen) {
		t.Fatalf("NewSocket on a taken range: %v", err)
	}
	s, err := NewSocket("127.0.0.1:0", WithPortRange(start, 2), WithMembership(false))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if got := s.Addr().(*net.TCPAddr).Port; got != start+1 {
		t.Fatalf("listening on port %d, want %d", got, start+1)
	}
	if _, err := s.Discover(context.Background()); !errors.Is(err, ErrNoLAN) {
		t.Fatalf("Discover without WithLAN: %v", err)
	}
}

func TestLANOptions(t *testing.T) {
	for _, opts := range [][]Option{
		{WithLAN(LANConfig{OnHost: true})}, // no range
		{WithPortRange(0, 5)},
		{WithPortRange(65535, 2)},
		{WithLAN(LANConfig{Port: 70000})},
		{WithLAN(LANConfig{Address: "not an ip"})},
		{WithLAN(LANConfig{Interval: -time.Second})},
	} {
		s, err := NewSocket("127.0.0.1:0", opts...)
		if err == nil {
			s.Close(context.Background())
		}
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("options %d: %v", len(opts), err)
		}
	}
	if _, err := NewSocket("127.0.0.1:5", WithPortRange(40000, 5)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("a port range with a listen port: %v", err)
	}
}

// TestLANKnownShare: members found by LAN discovery hold at most one
// source's share of the table of known peers, however many a stranger
// makes up; the table keeps the members neighbours introduced.
func TestLANKnownShare(t *testing.T) {
	k := newKnownPeers(16, 4)
	nb := protocol.NewNodeID()
	for range 3 {
		rec, _ := fakeRecord(t, "127.0.0.1:9")
		if k.store(rec, nb) != recordStored {
			t.Fatal("store")
		}
	}
	for i := range 40 {
		k.heardNearby(protocol.NewNodeID(), []string{"10.0.0.1:" + strconv.Itoa(1000+i)})
	}
	if got := k.source(lanSource); got != 4 {
		t.Fatalf("LAN members hold %d entries, want their share of 4", got)
	}
	if got := k.source(nb); got != 3 {
		t.Fatalf("the neighbour's members: %d left of 3", got)
	}
	// A LAN member is dialled at the address its datagram gave.
	id := protocol.NewNodeID()
	k.heardNearby(id, []string{"10.0.0.9:1"})
	if as := k.addrs(id); len(as) != 1 || as[0] != "10.0.0.9:1" {
		t.Fatalf("addresses %v", as)
	}
}

// TestLANForgedDatagram: a datagram that names another node's ID (signed
// by the sender's own key), sent to a node's on-host discovery port, is
// counted as a bad signature, and the named node gets no address in the
// table of known peers; one of another subnet is ignored likewise.
func TestLANForgedDatagram(t *testing.T) {
	start := freeRange(t, 1)
	s, err := NewSocket("127.0.0.1", WithPortRange(start, 1), WithLAN(LANConfig{OnHost: true}),
		WithMembership(false), WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	pub, priv, _ := ed25519.GenerateKey(nil)
	victim := protocol.NewNodeID()
	p := &discover.Packet{Kind: discover.KindAnswer, Protocol: s.Base().Protocol().ID(), Key: pub,
		Time: time.Now().UnixNano(), Addrs: []string{"127.0.0.1:1"}}
	b, err := p.Encode(func(m []byte) []byte { return ed25519.Sign(priv, m) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[24:40], victim[:]) // the victim's ID instead of the key's
	copy(b[len(b)-64:], ed25519.Sign(priv, append([]byte(discover.SignDomain), b[:len(b)-64]...)))
	other := *p
	other.Protocol = protocol.Protocol{Subnet: "other", Encryption: protocol.EncryptionTLS}.ID()
	ob, _ := other.Encode(func(m []byte) []byte { return ed25519.Sign(priv, m) }, nil)
	c, err := net.Dial("udp4", "127.0.0.1:"+strconv.Itoa(start))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(b)
	c.Write(ob)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testnet.WaitFor(ctx, func() bool {
		st := s.Stats().LAN
		return st.BadSignature == 1 && st.OtherProtocol == 1
	}); err != nil {
		t.Fatalf("drops not counted: %+v", s.Stats().LAN)
	}
	if as := s.known.addrs(victim); len(as) != 0 {
		t.Fatalf("the forged datagram gave the victim addresses %v", as)
	}
	if as := s.known.addrs(protocol.NodeIDFromKey(pub)); len(as) != 0 {
		t.Fatalf("the other subnet's node got addresses %v", as)
	}
	if st := s.Stats().LAN; st.Peers != 0 {
		t.Fatalf("%d peers listed", st.Peers)
	}
}

// TestDiscoverErrors: a context that ends during Discover's wait gives
// ErrTimeout; Close gives ErrClosed.
func TestDiscoverErrors(t *testing.T) {
	start := freeRange(t, 1)
	s, err := NewSocket("127.0.0.1", WithPortRange(start, 1), WithLAN(LANConfig{OnHost: true}), WithMembership(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Discover(ctx); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Discover with an ended context: %v", err)
	}
	s.Close(context.Background())
	if _, err := s.Discover(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Discover after Close: %v", err)
	}
}
