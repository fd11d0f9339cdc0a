//go:build linux

package mesh

import (
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/netns"
	"github.com/meshsock/meshsock/internal/testnet"
)

// netnsPair is two network namespaces made by the test, joined by a veth
// pair: 10.231.0.1 in the first, 10.231.0.2 in the second. Cutting sets
// both ends of the veth down (no route: dials fail at once, established
// connections go silent); restoring sets them up again.
type netnsPair struct {
	hosts [2]*netns.Host
	links [2]string
	ips   [2]string
}

// newNetnsPair makes the namespaces, removed when the test ends. It skips
// the test when it does not run as root or namespaces do not work here.
func newNetnsPair(t testing.TB) *netnsPair {
	t.Helper()
	lab := netns.New(t)
	p := &netnsPair{ips: [2]string{"10.231.0.1", "10.231.0.2"}}
	p.hosts = [2]*netns.Host{lab.Host("heala"), lab.Host("healb")}
	p.links[0], p.links[1] = lab.Link(p.hosts[0], p.ips[0]+"/24", p.hosts[1], p.ips[1]+"/24")
	return p
}

// setCut sets both ends of the veth pair down (on) or up (off).
func (p *netnsPair) setCut(on bool) {
	state := "up"
	if on {
		state = "down"
	}
	for i := range 2 {
		p.hosts[i].IP("link", "set", p.links[i], state)
	}
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
		ln, err := p.hosts[h].Listen("tcp", p.ips[h]+":0")
		if err != nil {
			t.Fatalf("listening in %s: %v", p.hosts[h].Name, err)
		}
		dial := p.hosts[h].Dialer(nil)
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
