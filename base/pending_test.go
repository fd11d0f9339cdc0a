package base

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// pdRawFirstFrame dials addr and returns the connection and the first
// frame the socket sends on it.
func pdRawFirstFrame(t *testing.T, addr string) (net.Conn, []byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, stTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(stTimeout))
	_, body, err := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize).ReadFrame(nil)
	if err != nil {
		t.Fatalf("reading the first frame: %v", err)
	}
	return nc, body
}

// TestPendingLimitRefusesWithVerdict: at the pending-handshake limit the
// listener answers a new connection with a connection-limit verdict and no
// Preamble, then closes it, so a dialer's Connect fails at once with
// ErrConnLimit (not a timeout, not a reset matching no sentinel). When the
// slot frees up, the dialer gets in.
func TestPendingLimitRefusesWithVerdict(t *testing.T) {
	l := stNew(t, WithMaxPendingHandshakes(1))
	// An idle raw connection holds the only slot: once it has the
	// listener's Preamble, its handshake is under way.
	idle, first := pdRawFirstFrame(t, l.Addr().String())
	if _, err := protocol.UnmarshalPreamble(first); err != nil {
		t.Fatalf("the idle connection's first frame is not a Preamble: %v", err)
	}

	// On the wire: a verdict (code 4) as the first frame, then the end.
	raw, first := pdRawFirstFrame(t, l.Addr().String())
	if v, err := protocol.UnmarshalVerdict(first); err != nil || v.Code != protocol.RejectLimit {
		t.Fatalf("first frame over the limit: verdict %+v, %v; want a connection-limit verdict", v, err)
	}
	if n, err := io.Copy(io.Discard, raw); err != nil || n != 0 {
		t.Fatalf("after the verdict: %d more bytes, %v; want the end of the stream", n, err)
	}

	// Connect reads that verdict. Its handshake timeout is 5 s: a
	// refusal seen only as a timeout would match ErrTimeout.
	d := stNewAt(t, "")
	_, err := d.Connect(stCtx(t), l.Addr().String())
	if !errors.Is(err, ErrConnLimit) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotMeshsock) {
		t.Fatalf("Connect over the pending limit = %v; want ErrConnLimit at once", err)
	}
	if st := l.Stats(); st.HandshakeFailures != 2 || st.Connects != 0 {
		t.Errorf("listener: %d handshake failures, %d connects; want 2 refusals counted, none connected",
			st.HandshakeFailures, st.Connects)
	}

	_ = idle.Close()
	ctx := stCtx(t)
	stWait(t, "the dialer to get in once the slot is free", func() bool {
		_, err := d.Connect(ctx, l.Addr().String())
		return err == nil
	})
}
