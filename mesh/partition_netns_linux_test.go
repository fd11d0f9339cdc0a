//go:build linux

package mesh

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// sysSetns is the setns(2) system call's number on each architecture
// (the syscall package does not define it everywhere).
var sysSetns = map[string]uintptr{
	"amd64": 308, "386": 346, "arm64": 268, "arm": 375, "riscv64": 268,
	"loong64": 268, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}

// netnsPair is two network namespaces made by the test, joined by a veth
// pair: 10.231.0.1 in the first, 10.231.0.2 in the second. Cutting sets
// both ends of the veth down (no route: dials fail at once, established
// connections go silent); restoring sets them up again.
type netnsPair struct {
	t     testing.TB
	names [2]string
	links [2]string
	ips   [2]string
}

// newNetnsPair makes the namespaces and removes them when the test ends.
// It skips the test when it does not run as root or `ip netns` does not
// work here.
func newNetnsPair(t testing.TB) *netnsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces needs root")
	}
	if _, ok := sysSetns[runtime.GOARCH]; !ok {
		t.Skipf("skipping: the setns system call's number on %s is not known to this test", runtime.GOARCH)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip command (iproute2) is not installed")
	}
	pid := os.Getpid()
	p := &netnsPair{
		t:     t,
		names: [2]string{fmt.Sprintf("msheal-a-%d", pid), fmt.Sprintf("msheal-b-%d", pid)},
		links: [2]string{fmt.Sprintf("msa%d", pid%1000000), fmt.Sprintf("msb%d", pid%1000000)},
		ips:   [2]string{"10.231.0.1", "10.231.0.2"},
	}
	if out, err := exec.Command("ip", "netns", "add", p.names[0]).CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns add does not work here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { p.ip("netns", "del", p.names[0]) })
	p.ip("netns", "add", p.names[1])
	t.Cleanup(func() { p.ip("netns", "del", p.names[1]) })
	// The veth pair is made in the test's namespace and moved at once;
	// deleting the namespaces deletes it.
	p.ip("link", "add", p.links[0], "type", "veth", "peer", "name", p.links[1])
	for i := range 2 {
		p.ip("link", "set", p.links[i], "netns", p.names[i])
		p.ip("-n", p.names[i], "addr", "add", p.ips[i]+"/24", "dev", p.links[i])
		p.ip("-n", p.names[i], "link", "set", "lo", "up")
		p.ip("-n", p.names[i], "link", "set", p.links[i], "up")
	}
	return p
}

// ip runs the ip command and fails the test if it fails.
func (p *netnsPair) ip(args ...string) {
	p.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		p.t.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// setCut sets both ends of the veth pair down (on) or up (off).
func (p *netnsPair) setCut(on bool) {
	state := "up"
	if on {
		state = "down"
	}
	for i := range 2 {
		p.ip("-n", p.names[i], "link", "set", p.links[i], state)
	}
}

// in runs fn on a new OS thread moved into namespace i; sockets fn opens
// belong to that namespace for good. The thread is never handed back to
// the Go scheduler: it ends with the goroutine.
func (p *netnsPair) in(i int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/run/netns/" + p.names[i])
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if _, _, errno := syscall.RawSyscall(sysSetns[runtime.GOARCH], f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
			errc <- fmt.Errorf("setns %s: %w", p.names[i], errno)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// split starts n nodes in each namespace, listening and dialling there,
// and closes them when the test ends.
func (p *netnsPair) split(t *testing.T, n int, opts ...Option) *splitNet {
	t.Helper()
	sn := &splitNet{n: n, setCut: p.setCut}
	logger := testnet.Logger(t)
	c := &cluster{t: t}
	t.Cleanup(c.closeAll) // before the namespaces are deleted
	for i := range 2 * n {
		h := i / n
		var ln net.Listener
		err := p.in(h, func() (err error) {
			ln, err = net.Listen("tcp", p.ips[h]+":0")
			return err
		})
		if err != nil {
			t.Fatalf("listening in %s: %v", p.names[h], err)
		}
		dial := func(ctx context.Context, network, addr string) (nc net.Conn, err error) {
			err = p.in(h, func() error {
				var d net.Dialer
				nc, err = d.DialContext(ctx, network, addr)
				return err
			})
			return nc, err
		}
		s, err := NewSocket("", append([]Option{
			WithLogger(logger.With("i", i)),
			WithAdvertiseAddr(ln.Addr().String()),
			WithBaseOptions(base.WithListener(ln), base.WithDialer(dial)),
		}, opts...)...)
		if err != nil {
			_ = ln.Close()
			t.Fatalf("NewSocket %d: %v", i, err)
		}
		c.nodes = append(c.nodes, s)
		sn.nodes = append(sn.nodes, s)
		sn.half = append(sn.half, h)
	}
	return sn
}

// TestPartitionHealsAcrossNamespaces is TestPartitionHeals over a real
// network cut: 12 + 12 nodes in two network namespaces joined by a veth
// pair, which is set down until every link across has been dropped and
// back-off has grown, then up again. Needs root and iproute2; skipped
// otherwise.
func TestPartitionHealsAcrossNamespaces(t *testing.T) {
	pair := newNetnsPair(t)
	p := healScenario{
		n: 12, maxOutgoing: 3,
		probeEvery: 500 * time.Millisecond, dialTimeout: 500 * time.Millisecond,
		backoffMax: 250 * time.Millisecond,
		keepalive:  150 * time.Millisecond, silence: 900 * time.Millisecond,
		cutHold: 3 * time.Second,
	}.underRace()
	p.run(t, pair.split(t, p.n, p.options()...))
}
