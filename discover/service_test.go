package discover

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

type keyring [][]byte

func (k keyring) Keys() [][]byte { return k }

// TestOnHostFindEachOther: three services probing each other's ports on
// 127.0.0.1 list each other, with the addresses they advertise, the
// unspecified host read as the sender's.
func TestOnHostFindEachOther(t *testing.T) {
	ports := freePorts(t, 3)
	var svcs []*Service
	var nodes []*node
	for i, p := range ports {
		n := newNode(t, testProto, "0.0.0.0:"+strconv.Itoa(4000+i))
		nodes = append(nodes, n)
		svcs = append(svcs, start(t, onHost(p, ports), n))
	}
	for i, s := range svcs {
		for j, n := range nodes {
			if i != j {
				waitFor(t, "service "+strconv.Itoa(i)+" lists "+strconv.Itoa(j), func() bool { return lists(s, n.ID()) })
			}
		}
	}
	peers, err := svcs[0].Discover(context.Background())
	if err != nil || len(peers) != 2 {
		t.Fatalf("Discover: %d peers, %v", len(peers), err)
	}
	for _, p := range peers {
		if len(p.Addrs) != 1 || protocol.NodeIDFromKey(p.Key) != p.ID {
			t.Fatalf("peer %+v", p)
		}
		if h, _, _ := net.SplitHostPort(p.Addrs[0]); h != "127.0.0.1" {
			t.Fatalf("unspecified host not replaced by the source: %v", p.Addrs)
		}
	}
	// Service 0 lists a prober before it answers it: wait for the answers.
	waitFor(t, "service 0 to answer the others' probes", func() bool { return svcs[0].Stats().AnswersSent > 0 })
	if st := svcs[0].Stats(); st.Self != 0 || st.ProbesSent == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestInvisible: an invisible service finds the others, but they never
// list it, though they hear (and answer) its probes.
func TestInvisible(t *testing.T) {
	ports := freePorts(t, 3)
	a, b, inv := newNode(t, testProto, "127.0.0.1:1"), newNode(t, testProto, "127.0.0.1:2"), newNode(t, testProto, "127.0.0.1:3")
	sa := start(t, onHost(ports[0], ports), a)
	sb := start(t, onHost(ports[1], ports), b)
	cfg := onHost(ports[2], ports)
	cfg.Invisible = true
	cfg.Interval = 200 * time.Millisecond
	si := start(t, cfg, inv)
	waitFor(t, "invisible lists a and b", func() bool { return lists(si, a.ID()) && lists(si, b.ID()) })
	// a and b answered several probes of the invisible node, each
	// verified: had they listed it, they would have by now.
	waitFor(t, "a and b answer the invisible node's probes", func() bool {
		return sa.Stats().AnswersSent >= 3 && sb.Stats().AnswersSent >= 3
	})
	if lists(sa, inv.ID()) || lists(sb, inv.ID()) {
		t.Fatal("an invisible node was listed")
	}
	if st := si.Stats(); st.AnswersSent != 0 {
		t.Fatalf("the invisible node answered %d probes", st.AnswersSent)
	}
}

// TestOtherNetworkAndProtocolIgnored: datagrams of another subnet, of
// another network key, or without a key where one is required, are
// dropped, counted, and never listed.
func TestOtherNetworkAndProtocolIgnored(t *testing.T) {
	ports := freePorts(t, 4)
	keyA, keyB := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	mk := func(i int, proto protocol.ProtocolID, kr Keyring) (*node, *Service) {
		n := newNode(t, proto, "127.0.0.1:"+strconv.Itoa(5000+i))
		n.id.Keyring = kr
		return n, start(t, onHost(ports[i], ports), n)
	}
	other := protocol.Protocol{Subnet: "elsewhere", Encryption: protocol.EncryptionTLS}.ID()
	a, sa := mk(0, testProto, keyring{keyA})
	b, sb := mk(1, testProto, keyring{keyB, keyA}) // proves B, accepts A too
	c, sc := mk(2, testProto, nil)
	d, _ := mk(3, other, keyring{keyA})
	waitFor(t, "b lists a", func() bool { return lists(sb, a.ID()) })
	waitFor(t, "drops counted at a", func() bool {
		st := sa.Stats()
		return st.OtherNetwork >= 2 && st.OtherProtocol >= 1 // b's and c's; d's
	})
	for _, n := range []*node{b, c, d} {
		if lists(sa, n.ID()) {
			t.Fatalf("a lists %s, of another network or protocol", n.ID().Short())
		}
	}
	if lists(sb, c.ID()) || lists(sb, d.ID()) {
		t.Fatal("b lists a node of another network or protocol")
	}
	// c, without a keyring, ignores the datagrams that carry a proof.
	waitFor(t, "drops counted at c", func() bool { return sc.Stats().OtherNetwork >= 2 })
	if lists(sc, a.ID()) || lists(sc, b.ID()) {
		t.Fatal("a node without a keyring lists nodes of a closed network")
	}
}

// sender is a raw UDP socket to inject datagrams with.
func sender(t testing.TB, ip string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestReplayAndStale: a datagram sent again is dropped as stale (its time
// is not newer than the peer's last), as is one whose time is off by
// more than MaxAge; a forged ID is a bad signature.
func TestReplayAndStale(t *testing.T) {
	port := freePorts(t, 1)[0]
	me := newNode(t, testProto)
	s := start(t, Config{Listen: "127.0.0.1:" + strconv.Itoa(port), Targets: []string{"127.0.0.1:9"}}, me)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	src := sender(t, "127.0.0.1")
	peer := newNode(t, testProto)
	p := &Packet{Kind: KindAnswer, Protocol: testProto, Key: peer.id.Key, Time: time.Now().UnixNano(), Addrs: []string{"127.0.0.1:7"}}
	b, _ := p.Encode(peer.id.Sign, nil)
	src.WriteTo(b, to)
	waitFor(t, "listed", func() bool { return lists(s, peer.ID()) })
	src.WriteTo(b, to)
	p.Time = time.Now().Add(-time.Hour).UnixNano()
	old, _ := p.Encode(peer.id.Sign, nil)
	src.WriteTo(old, to)
	waitFor(t, "replay and old datagram dropped", func() bool { return s.Stats().Stale == 2 })
	if st := s.Stats(); st.Verified != 1 {
		t.Fatalf("verified %d datagrams, want 1 (drops before the signature check)", st.Verified)
	}
}

// TestFloodBounded floods a service from 16 addresses with datagrams of
// every kind (valid ones from thousands of keys, forged, garbage,
// oversize, other protocols) and checks what it cost: signatures checked
// within the verification budget, peers and rate-limited sources within
// their caps, answers within theirs, heap growth small, and every
// datagram read counted as handled or as one drop.
func TestFloodBounded(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("skipping: needs 127.0.0.0/8 on loopback (Linux) for many source addresses")
	}
	port := freePorts(t, 1)[0]
	me := newNode(t, testProto)
	lim := Limits{Rate: 500, SourceRate: 5, MaxSources: 8, AnswerRate: 10, VerifyRate: 20}
	cfg := Config{Listen: "127.0.0.1:" + strconv.Itoa(port), Targets: []string{"127.0.0.1:9"}, MaxPeers: 8, Limits: lim}
	s := start(t, cfg, me)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}

	// The datagrams: 512 valid probes of distinct nodes, forged and
	// malformed ones.
	var valid [][]byte
	for i := range 512 {
		n := newNode(t, testProto, "127.0.0.1:"+strconv.Itoa(1000+i))
		p := &Packet{Kind: KindProbe, Protocol: testProto, Key: n.id.Key, Time: time.Now().UnixNano(), Addrs: []string{"127.0.0.1:1"}}
		b, err := p.Encode(n.id.Sign, nil)
		if err != nil {
			t.Fatal(err)
		}
		valid = append(valid, b)
	}
	forged := bytes.Clone(valid[0])
	forged[len(forged)-1] ^= 1
	otherProto := protocol.Protocol{Subnet: "x", Encryption: protocol.EncryptionTLS}.ID()
	po := &Packet{Kind: KindProbe, Protocol: otherProto, Key: me.id.Key, Time: time.Now().UnixNano()}
	other, _ := po.Encode(func(m []byte) []byte { return make([]byte, ed25519.SignatureSize) }, nil)
	junk := [][]byte{forged, other, []byte("hello"), make([]byte, MaxPacketSize+1), bytes.Repeat([]byte(Magic), 60)}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var srcs []net.PacketConn
	for i := range 16 {
		srcs = append(srcs, sender(t, "127.0.1."+strconv.Itoa(i+1)))
	}
	start := time.Now()
	sent := 0
	for round := range 40 {
		for i, b := range valid {
			src := srcs[(i+round)%len(srcs)]
			if _, err := src.WriteTo(b, to); err == nil {
				sent++
			}
			if i%8 == 0 {
				if _, err := src.WriteTo(junk[(i/8)%len(junk)], to); err == nil {
					sent++
				}
			}
		}
	}
	// Every datagram the kernel delivered is counted: wait until the
	// counts have not moved for 200 ms (handling one takes microseconds).
	var st Stats
	last, moved := uint64(0), time.Now()
	waitFor(t, "the flood to be read", func() bool {
		st = s.Stats()
		if st.Received != last {
			last, moved = st.Received, time.Now()
		}
		return time.Since(moved) > 200*time.Millisecond
	})
	elapsed := time.Since(start)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)

	drops := st.Oversize + st.RateLimited + st.SourcesFull + st.SourceLimited + st.Malformed + st.OtherProtocol +
		st.Self + st.Stale + st.OtherNetwork + st.VerifyBudget + st.BadSignature
	t.Logf("sent %d in %v; %+v", sent, elapsed, st)
	if st.Received == 0 || drops+st.Verified != st.Received {
		t.Fatalf("received %d = drops %d + verified %d does not hold", st.Received, drops, st.Verified)
	}
	budget := uint64(elapsed.Seconds()*float64(lim.VerifyRate)) + uint64(lim.VerifyRate) + 1
	if checked := st.Verified + st.BadSignature; checked > budget {
		t.Fatalf("%d signatures checked in %v, budget %d", checked, elapsed, budget)
	}
	if st.VerifyBudget == 0 || st.RateLimited == 0 || st.SourceLimited == 0 || st.SourcesFull == 0 {
		t.Fatalf("the flood did not hit every limit: %+v", st)
	}
	if st.Peers > cfg.MaxPeers || st.TableFull == 0 {
		t.Fatalf("%d peers listed (cap %d), table full %d", st.Peers, cfg.MaxPeers, st.TableFull)
	}
	answers := uint64(elapsed.Seconds()*float64(lim.AnswerRate)) + uint64(lim.AnswerRate) + 1
	if st.AnswersSent > answers {
		t.Fatalf("%d answers in %v, cap %d", st.AnswersSent, elapsed, answers)
	}
	s.mu.Lock()
	nsrc := len(s.srcs.m)
	s.mu.Unlock()
	if nsrc > lim.MaxSources {
		t.Fatalf("%d sources tracked, cap %d", nsrc, lim.MaxSources)
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 4<<20 {
		t.Fatalf("heap grew by %d bytes during the flood", grew)
	}
}

func TestConfigValidation(t *testing.T) {
	n := newNode(t, testProto)
	for _, cfg := range []Config{
		{Targets: []string{"nonsense"}},
		{Targets: []string{"10.0.0.1:0"}},
		{Targets: []string{"239.1.1.1:5", "10.0.0.1:5"}},
		{Interval: -1},
		{Limits: Limits{Rate: -1}},
	} {
		if _, err := New(cfg, n.id); err == nil || !errors.Is(err, optcheck.ErrInvalid) {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

// TestPeersExpire: a peer not heard from for 3 intervals is no longer
// listed (and its entry is freed).
func TestPeersExpire(t *testing.T) {
	port := freePorts(t, 1)[0]
	me := newNode(t, testProto)
	s := start(t, Config{Listen: "127.0.0.1:" + strconv.Itoa(port), Targets: []string{"127.0.0.1:9"}, Interval: 50 * time.Millisecond}, me)
	peer := newNode(t, testProto)
	p := &Packet{Kind: KindAnswer, Protocol: testProto, Key: peer.id.Key, Time: time.Now().UnixNano(), Addrs: []string{"127.0.0.1:7"}}
	b, _ := p.Encode(peer.id.Sign, nil)
	src := sender(t, "127.0.0.1")
	src.WriteTo(b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	waitFor(t, "listed", func() bool { return lists(s, peer.ID()) })
	heard := time.Now()
	waitFor(t, "expired", func() bool { return !lists(s, peer.ID()) })
	if d := time.Since(heard); d < 100*time.Millisecond {
		t.Fatalf("expired after %v, before 3 intervals (150 ms)", d)
	}
	s.mu.Lock()
	n := len(s.peers)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries kept", n)
	}
}

// TestDiscoverContext: Discover with nobody around probes, and returns
// ctx's error if ctx ends during the wait; ErrClosed after Close.
func TestDiscoverContext(t *testing.T) {
	port := freePorts(t, 1)[0]
	s, err := New(Config{Listen: "127.0.0.1:" + strconv.Itoa(port), Targets: []string{"127.0.0.1:9"}}, newNode(t, testProto).id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if peers, err := s.Discover(ctx); !errors.Is(err, context.Canceled) || len(peers) != 0 {
		t.Fatalf("Discover with an ended context: %v, %v", peers, err)
	}
	peers, err := s.Discover(context.Background())
	if err != nil || len(peers) != 0 {
		t.Fatalf("Discover alone: %v, %v", peers, err)
	}
	s.Close()
	if _, err := s.Discover(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Discover after Close: %v", err)
	}
}
