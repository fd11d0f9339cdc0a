//go:build linux

// Package netns builds small networks of Linux network namespaces for
// tests: each Host is a namespace with its own interfaces, addresses,
// routes and firewall, so that what crosses a real network (broadcast
// datagrams, NAT, a cut link) can be tested on one machine.
//
// Creating namespaces needs root and iproute2; New skips the test with a
// clear message when either is missing. Everything a Lab makes is removed
// when the test ends.
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// sysSetns is the setns(2) system call's number on each architecture
// (the syscall package does not define it everywhere).
var sysSetns = map[string]uintptr{
	"amd64": 308, "386": 346, "arm64": 268, "arm": 375, "riscv64": 268,
	"loong64": 268, "ppc64": 350, "ppc64le": 350, "s390x": 339,
}

// labs numbers the Labs of this process, so that parallel tests get
// distinct namespace names.
var labs atomic.Int64

// Lab is a set of namespaces made by one test.
type Lab struct {
	t      testing.TB
	prefix string

	mu    sync.Mutex
	hosts []*Host
}

// New returns an empty Lab, or skips the test when it does not run as
// root, the architecture's setns number is unknown, or `ip netns` does not
// work here. The namespaces are deleted when the test ends.
func New(t testing.TB) *Lab {
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
	l := &Lab{t: t, prefix: fmt.Sprintf("ms%d-%d", os.Getpid(), labs.Add(1))}
	// Probe once: some sandboxes refuse namespaces even to root.
	probe := l.prefix + "-probe"
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("skipping: ip netns add does not work here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return l
}

// Host is one network namespace of a Lab.
type Host struct {
	// Name is the namespace's name (as `ip netns` knows it).
	Name string
	lab  *Lab
	nics atomic.Int64
}

// Host makes a new namespace with its loopback up. name is a short label
// (letters and digits) that makes the namespace's name readable.
func (l *Lab) Host(name string) *Host {
	l.t.Helper()
	h := &Host{Name: l.prefix + "-" + name, lab: l}
	if out, err := exec.Command("ip", "netns", "add", h.Name).CombinedOutput(); err != nil {
		l.t.Fatalf("ip netns add %s: %v: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	l.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", h.Name).Run() })
	h.IP("link", "set", "lo", "up")
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h
}

// Link joins hosts a and b with a veth pair and gives each end an address
// in CIDR form ("10.1.0.1/24"; "" for none). It returns the interfaces'
// names in a and in b.
func (l *Lab) Link(a *Host, aCIDR string, b *Host, bCIDR string) (aIf, bIf string) {
	l.t.Helper()
	aIf, bIf = a.nextNIC(), b.nextNIC()
	// Made directly inside the namespaces, so names never collide with
	// the machine's own interfaces.
	run(l.t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, e := range []struct {
		h     *Host
		iface string
		cidr  string
	}{{a, aIf, aCIDR}, {b, bIf, bCIDR}} {
		if e.cidr != "" {
			e.h.IP("addr", "add", e.cidr, "dev", e.iface)
		}
		e.h.IP("link", "set", e.iface, "up")
	}
	return aIf, bIf
}

// Bridge makes a switch: a namespace holding a bridge device, with one
// veth from each host plugged into it, that host's end addressed with the
// matching CIDR. Broadcast datagrams from one host reach all the others.
func (l *Lab) Bridge(name string, hosts []*Host, cidrs []string) *Host {
	l.t.Helper()
	if len(hosts) != len(cidrs) {
		l.t.Fatalf("Bridge: %d hosts but %d addresses", len(hosts), len(cidrs))
	}
	sw := l.Host(name)
	sw.IP("link", "add", "br0", "type", "bridge")
	sw.IP("link", "set", "br0", "up")
	for i, h := range hosts {
		_, port := l.Link(h, cidrs[i], sw, "")
		sw.IP("link", "set", port, "master", "br0")
	}
	return sw
}

func (h *Host) nextNIC() string { return fmt.Sprintf("eth%d", h.nics.Add(1)-1) }

// IP runs `ip -n <host> args...` and fails the test if it fails.
func (h *Host) IP(args ...string) {
	h.lab.t.Helper()
	run(h.lab.t, "ip", append([]string{"-n", h.Name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined
// output.
func (h *Host) Exec(name string, args ...string) ([]byte, error) {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...).CombinedOutput()
}

// MustExec is Exec that fails the test if the command fails.
func (h *Host) MustExec(name string, args ...string) {
	h.lab.t.Helper()
	if out, err := h.Exec(name, args...); err != nil {
		h.lab.t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h.Name, err, strings.TrimSpace(string(out)))
	}
}

// Forwarding turns IPv4 forwarding on, making the host a router.
func (h *Host) Forwarding() {
	h.lab.t.Helper()
	h.MustExec("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
}

// Do runs fn on a new OS thread moved into the namespace: sockets fn opens
// belong to it for good. The thread is never handed back to the Go
// scheduler; it ends with the goroutine.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/run/netns/" + h.Name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if _, _, errno := syscall.RawSyscall(sysSetns[runtime.GOARCH], f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
			errc <- fmt.Errorf("setns %s: %w", h.Name, errno)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a listener inside the namespace.
func (h *Host) Listen(network, addr string) (ln net.Listener, err error) {
	err = h.Do(func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the namespace; lc may set
// socket options (nil for none).
func (h *Host) ListenPacket(lc *net.ListenConfig, network, addr string) (pc net.PacketConn, err error) {
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	err = h.Do(func() error {
		pc, err = lc.ListenPacket(context.Background(), network, addr)
		return err
	})
	return pc, err
}

// Dialer returns a dial function whose connections start inside the
// namespace, for base.WithDialer and the like.
func (h *Host) Dialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	return func(ctx context.Context, network, addr string) (nc net.Conn, err error) {
		err = h.Do(func() error {
			nc, err = d.DialContext(ctx, network, addr)
			return err
		})
		return nc, err
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}
