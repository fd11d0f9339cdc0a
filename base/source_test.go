package base_test

// Admission tests: connection limits in total and per source address.
// Every 127.x.y.z address is loopback on Linux, so a connection dialled
// from 127.0.0.7 comes from another source than one from 127.0.0.1. Helpers
// are prefixed "sl".

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// slDialer returns a dial function whose connections come from ip.
func slDialer(ip string) base.DialFunc {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.DialContext
}

// slRaw is a hand-driven dialer that runs the handshake step by step.
type slRaw struct {
	t  *testing.T
	nc net.Conn
	fr *protocol.FrameReader
	id protocol.NodeID
}

// slRawDial dials addr from ip and sends a Hello; it does not read yet.
func slRawDial(t *testing.T, ip string, addr net.Addr) *slRaw {
	t.Helper()
	nc, err := slDialer(ip)(ftCtx(t), "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(ftWait))
	r := &slRaw{t: t, nc: nc, fr: protocol.NewFrameReader(nc, protocol.MaxHandshakeSize), id: protocol.NewNodeID()}
	hello, err := protocol.MarshalHello(&protocol.Hello{
		Version:  protocol.Version,
		Protocol: protocol.DefaultProtocol.ID(),
		NodeID:   r.id,
		Time:     time.Now().UnixNano(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(nc, flags.None, hello); err != nil {
		t.Fatal(err)
	}
	return r
}

// frame reads the next handshake frame's body.
func (r *slRaw) frame() []byte {
	r.t.Helper()
	_, body, err := r.fr.ReadFrame(nil)
	if err != nil {
		r.t.Fatalf("reading a handshake frame: %v", err)
	}
	return body
}

// hello reads the listener's Hello.
func (r *slRaw) hello() {
	r.t.Helper()
	if _, err := protocol.UnmarshalHello(r.frame()); err != nil {
		r.t.Fatalf("the listener's first frame is not a Hello: %v", err)
	}
}

// accept sends an accepting verdict.
func (r *slRaw) accept() {
	r.t.Helper()
	b, err := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.Accept})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := protocol.WriteFrame(r.nc, flags.None, b); err != nil {
		r.t.Fatal(err)
	}
}

// verdict reads the listener's verdict.
func (r *slRaw) verdict() protocol.Verdict {
	r.t.Helper()
	v, err := protocol.UnmarshalVerdict(r.frame())
	if err != nil {
		r.t.Fatalf("the listener's frame is not a verdict: %v", err)
	}
	return v
}

// slRefusedInStatus waits until s's status shows a problem matching want.
func slRefusedInStatus(t *testing.T, s *base.Socket, want error) {
	t.Helper()
	testnet.Eventually(t, ftWait, func() bool {
		for _, p := range s.Status().Problems {
			if errors.Is(p.Err, want) {
				return true
			}
		}
		return false
	}, "the refusing side's status shows an error matching %v: %v", want, s.Status())
}

// TestAdmissionRefusalCountedOnce: a handshake that passed the verdict's
// room check but finds the socket full when it is admitted (another peer
// registered in between) is refused with a connection-limit verdict and
// counted once in HandshakeFailures (it was counted twice).
func TestAdmissionRefusalCountedOnce(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxConns(1))
	raw := slRawDial(t, "127.0.0.1", l.Addr())
	raw.hello() // l has judged the raw peer's Hello: there was room
	a := testnet.NewBase(t, "")
	ftConnect(t, a, l)
	raw.accept() // now l admits the raw peer, and is full
	if v := raw.verdict(); v.Code != protocol.RejectLimit {
		t.Fatalf("verdict %+v, want a connection-limit refusal", v)
	}
	slRefusedInStatus(t, l, base.ErrConnLimit)
	if st := l.Stats(); st.HandshakeFailures != 1 || st.Connections != 1 {
		t.Errorf("%d handshake failures, %d connections; want 1 refusal, 1 connection", st.HandshakeFailures, st.Connections)
	}
}
