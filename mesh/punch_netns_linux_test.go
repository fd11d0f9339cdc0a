//go:build linux

package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/netns"
	"github.com/meshsock/meshsock/internal/testnet"
)

// natLab is two private hosts, A (10.1.0.2) and B (10.2.0.2), each behind
// its own NAT router (public 203.0.113.1 and .2), and a public host R
// (203.0.113.3) on the routers' shared segment. Each router masquerades
// what its private host sends out and, as home routers do, drops new
// connections from outside (nothing is forwarded in unless it answers
// something sent out).
type natLab struct {
	a, b, r    *netns.Host
	natA, natB *netns.Host
	// natErr says why the routers could not be set up to NAT (nftables
	// missing, or the kernel refused the rules); nil when they NAT.
	natErr error
}

const (
	natPublicA = "203.0.113.1"
	natPublicB = "203.0.113.2"
	natPublicR = "203.0.113.3"
)

// newNATLab builds the lab; random makes the routers symmetric NATs (a
// random port for every new connection) instead of port-preserving ones.
func newNATLab(t *testing.T, random bool) *natLab {
	t.Helper()
	lab := netns.New(t)
	l := &natLab{a: lab.Host("a"), b: lab.Host("b"), r: lab.Host("r"), natA: lab.Host("nata"), natB: lab.Host("natb")}
	_, insideA := lab.Link(l.a, "10.1.0.2/24", l.natA, "10.1.0.1/24")
	_, insideB := lab.Link(l.b, "10.2.0.2/24", l.natB, "10.2.0.1/24")
	lab.Bridge("pub", []*netns.Host{l.natA, l.natB, l.r},
		[]string{natPublicA + "/24", natPublicB + "/24", natPublicR + "/24"})
	l.a.IP("route", "add", "default", "via", "10.1.0.1")
	l.b.IP("route", "add", "default", "via", "10.2.0.1")
	l.natErr = l.masquerade(l.natA, "10.1.0.0/24", insideA, random)
	if l.natErr == nil {
		l.natErr = l.masquerade(l.natB, "10.2.0.0/24", insideB, random)
	}
	return l
}

// masquerade makes h a NAT router for subnet, whose hosts are on interface
// inside, with nftables.
func (l *natLab) masquerade(h *netns.Host, subnet, inside string, random bool) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("nftables is not installed (.ci/scripts/install-test-tools installs it as root): %w", err)
	}
	if out, err := h.Exec("sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		return fmt.Errorf("ip_forward: %v: %s", err, out)
	}
	flag := ""
	if random {
		flag = " random"
	}
	ruleset := fmt.Sprintf(`
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[1]s oifname != "%[2]s" masquerade%[3]s
	}
}
table ip filter {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname != "%[2]s" iifname != "lo" ct state new drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname != "%[2]s" ct state new drop
	}
}
`, subnet, inside, flag)
	cmd := exec.Command("ip", "netns", "exec", h.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %v: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// node starts a mesh node in h, listening on ip (port chosen by the
// system) and dialling from there (WithPunch sets SO_REUSEPORT on the
// listener), closed when the test ends.
func (l *natLab) node(t *testing.T, c *cluster, h *netns.Host, ip string, opts ...Option) *Socket {
	t.Helper()
	ln, err := h.Listen("tcp", ip+":0") // base shares its port with the dials
	if err != nil {
		t.Fatalf("listening in %s: %v", h.Name, err)
	}
	dial := func(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
		return h.Dialer(d)(ctx, network, addr)
	}
	s, err := NewSocket("", append([]Option{
		WithLogger(testnet.Logger(t).With("host", h.Name)),
		WithDiscovery(false), WithMembership(true),
		WithDialTimeout(2 * time.Second),
		WithBaseOptions(base.WithListener(ln), base.WithNetDialer(dial)),
	}, opts...)...)
	if err != nil {
		_ = ln.Close()
		t.Fatalf("NewSocket in %s: %v", h.Name, err)
	}
	c.nodes = append(c.nodes, s)
	return s
}

// natNodes starts R, A and B, links A and B to R and waits until A and B
// know each other as members (through R).
func (l *natLab) natNodes(t *testing.T, opts ...Option) (r, a, b *Socket) {
	t.Helper()
	c := &cluster{t: t}
	t.Cleanup(c.closeAll) // before the namespaces go
	r = l.node(t, c, l.r, natPublicR, opts...)
	a = l.node(t, c, l.a, "10.1.0.2", opts...)
	b = l.node(t, c, l.b, "10.2.0.2", opts...)
	ctx := ctxT(t, 30*time.Second)
	for _, n := range []*Socket{a, b} {
		if err := n.Connect(ctx, r.Addr().String()); err != nil {
			t.Fatalf("connect to R: %v", err)
		}
	}
	testnet.Eventually(t, 20*time.Second, func() bool {
		_, ab := a.Member(b.ID())
		_, ba := b.Member(a.ID())
		return ab && ba && len(r.Peers()) == 2
	}, "A and B to know each other through R")
	return r, a, b
}

// whisperArrives sends a whisper from a to b and waits for b's handler to
// get it.
func whisperArrives(t *testing.T, a, b *Socket, text string) {
	t.Helper()
	got := make(chan struct{})
	var once bool
	b.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if m.Sender == a.ID() && len(m.Packets) == 1 && string(m.Packets[0]) == text {
			if !once {
				once = true
				close(got)
			}
			return true
		}
		return false
	}))
	if err := a.Whisper(ctxT(t, 20*time.Second), b.ID(), []byte(text)); err != nil {
		t.Fatalf("whisper %q: %v", text, err)
	}
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("whisper %q did not arrive", text)
	}
}

// TestPunchThroughNAT: A and B, each behind its own port-preserving
// masquerading NAT that drops unsolicited connections, are linked to R
// only. A cannot dial B (B's address is private); a whisper still reaches
// B through R. After A punches through R's introduction, A and B hold a
// direct link, each seeing the other at its NAT's public address and
// listening port. Without NAT in this kernel (or without nftables) the
// test shows the routed fallback and skips the punch, saying why.
func TestPunchThroughNAT(t *testing.T) {
	l := newNATLab(t, false)
	if l.natErr == nil {
		// The routers NAT: R sees A at A's router's public address.
		r, a, b := l.natNodes(t)
		ra, ok := r.Base().Conn(a.ID())
		if !ok {
			t.Fatal("R has no link to A")
		}
		if host, _, _ := net.SplitHostPort(ra.RemoteAddr().String()); host != natPublicA {
			t.Fatalf("R sees A at %s, want the NAT's %s: the routers do not masquerade", ra.RemoteAddr(), natPublicA)
		}
		checkPunch(t, r, a, b)
		return
	}
	_, a, b := l.natNodes(t)
	whisperArrives(t, a, b, "routed")
	t.Skipf("skipping the punch: this kernel cannot NAT here (%v); the routed fallback works", l.natErr)
}

// checkPunch runs the punch of TestPunchThroughNAT on the lab's nodes.
func checkPunch(t *testing.T, r, a, b *Socket) {
	// A direct dial fails: B's advertised address is private.
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := a.Connect(dctx, b.Addr().String())
	cancel()
	if err == nil {
		t.Fatal("A dialled B's private address through the NATs")
	}
	whisperArrives(t, a, b, "through R")
	if _, ok := a.Base().Conn(b.ID()); ok {
		t.Fatal("a direct link before the punch")
	}
	if err := a.Punch(ctxT(t, 20*time.Second), b.ID()); err != nil {
		t.Fatalf("Punch through two NATs: %v (A %+v, B %+v, R %+v)", err, a.Stats(), b.Stats(), r.Stats())
	}
	ab, ok := a.Base().Conn(b.ID())
	if !ok {
		t.Fatal("no link from A to B after the punch")
	}
	var ba *base.Conn
	testnet.Eventually(t, 10*time.Second, func() bool { ba, ok = b.Base().Conn(a.ID()); return ok }, "B's end of the link")
	_, portA, _ := net.SplitHostPort(a.Addr().String())
	_, portB, _ := net.SplitHostPort(b.Addr().String())
	if got, want := ab.RemoteAddr().String(), net.JoinHostPort(natPublicB, portB); got != want {
		t.Fatalf("A's link to B comes from %s, want B's NAT's public address %s", got, want)
	}
	if got, want := ba.RemoteAddr().String(), net.JoinHostPort(natPublicA, portA); got != want {
		t.Fatalf("B's link to A comes from %s, want A's NAT's public address %s", got, want)
	}
	whisperArrives(t, a, b, "direct")
	if s := r.Stats(); s.PunchIntroductions != 1 {
		t.Fatalf("R introduced %d times, want 1", s.PunchIntroductions)
	}
}

// TestPunchSymmetricNATFallsBack: behind NATs that map every connection
// to a random port (symmetric NAT), the address R sees is not the one a
// punch reaches: Punch fails with ErrPunchFailed, no direct link forms,
// and whispers keep reaching B through R.
func TestPunchSymmetricNATFallsBack(t *testing.T) {
	l := newNATLab(t, true)
	if l.natErr != nil {
		t.Skipf("skipping: this kernel cannot NAT here: %v", l.natErr)
	}
	r, a, b := l.natNodes(t)
	err := a.Punch(ctxT(t, 20*time.Second), b.ID())
	if !errors.Is(err, ErrPunchFailed) {
		t.Fatalf("Punch through symmetric NATs: %v, want ErrPunchFailed", err)
	}
	if _, ok := a.Base().Conn(b.ID()); ok {
		t.Fatal("a direct link through symmetric NATs")
	}
	if s := r.Stats(); s.PunchIntroductions != 1 {
		t.Fatalf("R introduced %d times, want 1", s.PunchIntroductions)
	}
	whisperArrives(t, a, b, "still routed")
}

// TestPunchAutomaticThroughNAT: with discovery on, a whisper from A to B
// behind the NATs finds no direct link and cannot make one by dialling; it
// goes through R, and A punches in the background: a direct link to B, at
// its NAT's public address, follows without anyone asking.
func TestPunchAutomaticThroughNAT(t *testing.T) {
	l := newNATLab(t, false)
	if l.natErr != nil {
		t.Skipf("skipping: this kernel cannot NAT here: %v", l.natErr)
	}
	_, a, b := l.natNodes(t, WithDiscovery(true))
	whisperArrives(t, a, b, "first")
	_, portB, _ := net.SplitHostPort(b.Addr().String())
	want := net.JoinHostPort(natPublicB, portB)
	testnet.Eventually(t, 20*time.Second, func() bool {
		c, ok := a.Base().Conn(b.ID())
		return ok && c.RemoteAddr().String() == want
	}, "A's automatic punch to link it to B directly")
	whisperArrives(t, a, b, "second")
}
