//go:build linux

package netns

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/internal/sockopt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLinkCarriesTCP: a listener in one namespace is reached from the
// other over the veth pair, and not from the test's own namespace.
func TestLinkCarriesTCP(t *testing.T) {
	lab := New(t)
	a, b := lab.Host("a"), lab.Host("b")
	lab.Link(a, "10.77.0.1/24", b, "10.77.0.2/24")
	ln, err := b.Listen("tcp", "10.77.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = c.Write([]byte("hi"))
			c.Close()
		}
		accepted <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dialer(nil)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial across the link: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	// The test's own namespace has no route to 10.77.0.0/24 through the
	// lab: the dial must not reach b.
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the lab's address was reachable from outside the lab")
	}
}

// TestBridgeCarriesBroadcast: a datagram to the subnet's broadcast address
// from one host of a bridge reaches the others.
func TestBridgeCarriesBroadcast(t *testing.T) {
	lab := New(t)
	hosts := []*Host{lab.Host("a"), lab.Host("b"), lab.Host("c")}
	lab.Bridge("sw", hosts, []string{"10.78.0.1/24", "10.78.0.2/24", "10.78.0.3/24"})
	var conns []net.PacketConn
	for _, h := range hosts[1:] {
		pc, err := h.ListenPacket(nil, "udp4", ":47001")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		conns = append(conns, pc)
	}
	lc := &net.ListenConfig{Control: sockopt.Broadcast}
	src, err := hosts[0].ListenPacket(lc, "udp4", "10.78.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := &net.UDPAddr{IP: net.IPv4(10, 78, 0, 255), Port: 47001}
	for i, pc := range conns {
		got := make(chan string, 1)
		go func() {
			buf := make([]byte, 16)
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- err.Error()
				return
			}
			got <- string(buf[:n])
		}()
		// Send until the reader has it: the first datagram may race the
		// bridge's ports coming up.
		deadline := time.Now().Add(5 * time.Second)
		var s string
		for s == "" && time.Now().Before(deadline) {
			if _, err := src.WriteTo([]byte("ping"), dst); err != nil {
				t.Fatalf("broadcast: %v", err)
			}
			select {
			case s = <-got:
			case <-time.After(100 * time.Millisecond):
			}
		}
		if s != "ping" {
			t.Fatalf("host %d got %q, want the broadcast", i+1, s)
		}
	}
}
