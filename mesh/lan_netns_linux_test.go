//go:build linux

package mesh

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/netns"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// lanLab is hosts (network namespaces) on one bridge, 10.79.0.i/24, whose
// nodes find each other by broadcast: to 10.79.0.255, or with
// defaultRoute to the default address, 255.255.255.255 (which Linux
// sends only where a route covers it: each host gets a default route
// through the bridge).
type lanLab struct {
	t            *testing.T
	hosts        []*netns.Host
	c            *cluster
	defaultRoute bool
}

func newLANLab(t *testing.T, n int) *lanLab {
	lab := netns.New(t)
	l := &lanLab{t: t, c: &cluster{t: t}}
	var cidrs []string
	for i := range n {
		l.hosts = append(l.hosts, lab.Host(fmt.Sprintf("lan%d", i)))
		cidrs = append(cidrs, fmt.Sprintf("10.79.0.%d/24", i+1))
	}
	lab.Bridge("lansw", l.hosts, cidrs)
	t.Cleanup(l.c.closeAll) // before the namespaces are deleted
	return l
}

// useDefaultRoute gives each host a default route through the bridge, and
// leaves the nodes' discovery address at its default.
func (l *lanLab) useDefaultRoute() {
	for _, h := range l.hosts {
		h.IP("route", "add", "default", "dev", "eth0")
	}
	l.defaultRoute = true
}

// start starts a node on host i with LAN discovery (cfg, its address and
// hook filled in) and no address to connect to.
func (l *lanLab) start(i int, cfg LANConfig, opts ...Option) *Socket {
	l.t.Helper()
	h := l.hosts[i]
	ln, err := h.Listen("tcp", fmt.Sprintf("10.79.0.%d:0", i+1))
	if err != nil {
		l.t.Fatalf("listening in %s: %v", h.Name, err)
	}
	if !l.defaultRoute {
		cfg.Address = "10.79.0.255"
	}
	cfg.Port, cfg.ListenPacket = 47474, h.ListenPacket
	if cfg.Interval == 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	s, err := NewSocket("", append([]Option{
		WithLAN(cfg), WithMembership(false),
		WithLogger(testnet.Logger(l.t).With("i", i)),
		WithBaseOptions(base.WithListener(ln), base.WithDialer(h.Dialer(nil))),
	}, opts...)...)
	if err != nil {
		_ = ln.Close()
		l.t.Fatalf("NewSocket on %s: %v", h.Name, err)
	}
	l.c.nodes = append(l.c.nodes, s)
	return s
}

// TestLANNetnsFormsMesh: three hosts on one bridge, a node on each with
// LAN discovery on (default address, 255.255.255.255) and no address
// given: they find each other and form one mesh.
func TestLANNetnsFormsMesh(t *testing.T) {
	l := newLANLab(t, 3)
	l.useDefaultRoute()
	var nodes []*Socket
	for i := range 3 {
		nodes = append(nodes, l.start(i, LANConfig{}))
	}
	waitConnected(t, nodes, 15*time.Second)
	for _, s := range nodes {
		for _, o := range nodes {
			if s != o && !lanLists(s, o.ID()) {
				t.Fatalf("%s does not list %s", s.ID().Short(), o.ID().Short())
			}
		}
		if st := s.Stats().LAN; st.BadSignature+st.Malformed+st.OtherNetwork+st.OtherProtocol != 0 {
			t.Fatalf("unexpected drops: %+v", st)
		}
	}
	// A broadcast reaches every node over the links discovery made.
	if err := nodes[0].Send(context.Background(), []byte("hello lan")); err != nil {
		t.Fatal(err)
	}
	for _, s := range nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := s.Recv(ctx)
		cancel()
		if err != nil || !bytes.Equal(m.Packets[0], []byte("hello lan")) {
			t.Fatalf("broadcast over the discovered mesh: %v", err)
		}
	}
}

// TestLANNetnsInvisible: an invisible node finds the two others (and
// joins their mesh by dialling them) but neither lists it, though both
// answered its probes.
func TestLANNetnsInvisible(t *testing.T) {
	l := newLANLab(t, 3)
	a, b := l.start(0, LANConfig{}), l.start(1, LANConfig{})
	inv := l.start(2, LANConfig{Invisible: true})
	waitConnected(t, []*Socket{a, b, inv}, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := testnet.WaitFor(ctx, func() bool { return lanLists(inv, a.ID()) && lanLists(inv, b.ID()) }); err != nil {
		t.Fatalf("the invisible node did not find the others: %v", err)
	}
	// Both answered several probes of the invisible node (verified
	// before answering): had they listed it, they would have by then.
	if err := testnet.WaitFor(ctx, func() bool { return inv.Stats().LAN.Heard >= 6 }); err != nil {
		t.Fatalf("answers to the invisible node's probes: %v", err)
	}
	if lanLists(a, inv.ID()) || lanLists(b, inv.ID()) {
		t.Fatal("an invisible node was found")
	}
	if st := inv.Stats().LAN; st.AnswersSent != 0 {
		t.Fatalf("the invisible node answered %d probes", st.AnswersSent)
	}
}

// TestLANNetnsOtherNetworkIgnored: of four nodes on one bridge, two share
// a network key and protocol; the third has another network key and the
// fourth another subnet (protocol ID). The two find each other and link;
// neither lists nor links with the others, whose datagrams they count as
// drops.
func TestLANNetnsOtherNetworkIgnored(t *testing.T) {
	l := newLANLab(t, 4)
	k1, _ := base.NewKeyring(bytes.Repeat([]byte{1}, 32))
	k2, _ := base.NewKeyring(bytes.Repeat([]byte{2}, 32))
	other := protocol.DefaultProtocol
	other.Subnet = "elsewhere"
	a := l.start(0, LANConfig{}, WithNetworkKey(k1))
	b := l.start(1, LANConfig{}, WithNetworkKey(k1))
	c := l.start(2, LANConfig{}, WithNetworkKey(k2))
	d := l.start(3, LANConfig{}, WithNetworkKey(k1), WithProtocol(other))
	waitConnected(t, []*Socket{a, b}, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := testnet.WaitFor(ctx, func() bool {
		sa, sb := a.Stats().LAN, b.Stats().LAN
		return sa.OtherNetwork >= 2 && sa.OtherProtocol >= 2 && sb.OtherNetwork >= 2 && sb.OtherProtocol >= 2
	}); err != nil {
		t.Fatalf("the other nodes' datagrams were not seen and dropped: %v; a: %+v", err, a.Stats().LAN)
	}
	for _, s := range []*Socket{a, b} {
		for _, o := range []*Socket{c, d} {
			if lanLists(s, o.ID()) {
				t.Fatalf("%s lists %s, of another network", s.ID().Short(), o.ID().Short())
			}
			if _, linked := s.Base().Conn(o.ID()); linked {
				t.Fatalf("%s linked with %s, of another network", s.ID().Short(), o.ID().Short())
			}
		}
	}
	for _, s := range []*Socket{c, d} {
		if n := len(s.Peers()); n != 0 {
			t.Fatalf("%s has %d neighbours", s.ID().Short(), n)
		}
	}
}

// TestLANNetnsMulticast: with a multicast group as the address (joined on
// the interface of the default route), two hosts find each other and
// link.
func TestLANNetnsMulticast(t *testing.T) {
	l := newLANLab(t, 2)
	l.useDefaultRoute()
	a := l.start(0, LANConfig{Address: "239.255.47.47"})
	b := l.start(1, LANConfig{Address: "239.255.47.47"})
	waitConnected(t, []*Socket{a, b}, 15*time.Second)
	if !lanLists(a, b.ID()) || !lanLists(b, a.ID()) {
		t.Fatal("the nodes do not list each other")
	}
}

// TestLANNetnsSharedPort: two nodes of one host share the discovery port
// (SO_REUSEADDR); with a node on another host, all three list each other.
func TestLANNetnsSharedPort(t *testing.T) {
	l := newLANLab(t, 2)
	a1, a2 := l.start(0, LANConfig{}), l.start(0, LANConfig{})
	b := l.start(1, LANConfig{})
	nodes := []*Socket{a1, a2, b}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := testnet.WaitFor(ctx, func() bool {
		for _, s := range nodes {
			if s.Stats().LAN.Peers < 2 {
				return false
			}
		}
		return true
	})
	if err != nil {
		for i, s := range nodes {
			t.Logf("node %d: %+v", i, s.Stats().LAN)
		}
		t.Fatalf("the nodes did not all list each other: %v", err)
	}
	waitConnected(t, nodes, 15*time.Second)
}
