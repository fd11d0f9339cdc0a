package base

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/wirepeer"
	"github.com/meshsock/meshsock/protocol"
)

// nmServe runs serve on the first connection to a fresh loopback listener
// (wirepeer.ServeOnce) and returns its address.
func nmServe(t *testing.T, serve func(nc net.Conn)) string {
	return wirepeer.ServeOnce(t, stTimeout, serve)
}

// nmSend returns a peer that writes data, then reads until the dialer
// closes the connection.
func nmSend(data []byte) func(net.Conn) {
	return func(nc net.Conn) {
		if _, err := nc.Write(data); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, nc)
	}
}

// nmRandom returns n bytes from a seeded generator.
func nmRandom(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// nmPreamble returns a valid Preamble body of this version, on TLS.
func nmPreamble(t *testing.T) []byte {
	t.Helper()
	b, err := protocol.MarshalPreamble(protocol.Preamble{Version: protocol.Version, Encryption: protocol.EncryptionTLS})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nmFrame returns a frame with the given codec byte and body.
func nmFrame(codec flags.Method, body []byte) []byte { return protocol.AppendFrame(nil, codec, body) }

// TestConnectNotMeshsock: whatever a peer that is not meshsock does, the
// dialer's Connect fails with an error matching ErrNotMeshsock within the
// handshake timeout. A peer that sends something fails at once (the error
// does not match ErrTimeout, although the handshake timeout is 5 s); one
// that says nothing fails at the timeout (ErrTimeout too); one that closes
// first matches ErrClosed too.
func TestConnectNotMeshsock(t *testing.T) {
	httpAddr := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: stTimeout}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
		t.Cleanup(func() {
			_ = srv.Close()
			<-done
		})
		return ln.Addr().String()
	}
	ping := protocol.Envelope{Type: flags.Ping, Sub: flags.Ping, Sender: protocol.NewNodeID(), Time: time.Now().UnixNano(),
		Packets: [][]byte{make([]byte, 8)}}
	accept, err := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.Accept})
	if err != nil {
		t.Fatal(err)
	}
	const short = 300 * time.Millisecond
	cases := []struct {
		name      string
		addr      func(t *testing.T) string
		hsTimeout time.Duration
		also      error // another sentinel the error must match, or nil
		timeout   bool  // whether it may take the handshake timeout
	}{
		{name: "ssh banner", addr: func(t *testing.T) string { return nmServe(t, nmSend([]byte("SSH-2.0-OpenSSH_9.6\r\n"))) }},
		{name: "random bytes", addr: func(t *testing.T) string { return nmServe(t, nmSend(nmRandom(300, 1))) }},
		{name: "preamble with codec byte snappy", addr: func(t *testing.T) string {
			return nmServe(t, nmSend(nmFrame(flags.Snappy, nmPreamble(t))))
		}},
		{name: "message frame, not a preamble", addr: func(t *testing.T) string {
			return nmServe(t, nmSend(nmFrame(flags.None, protocol.AppendMessage(nil, 0, &ping))))
		}},
		{name: "accepting verdict without a preamble", addr: func(t *testing.T) string {
			return nmServe(t, nmSend(nmFrame(flags.None, accept)))
		}},
		{name: "empty frame", addr: func(t *testing.T) string { return nmServe(t, nmSend(nmFrame(flags.None, nil))) }},
		{name: "closes at once", also: ErrClosed, addr: func(t *testing.T) string {
			return nmServe(t, func(net.Conn) {})
		}},
		{name: "says nothing", hsTimeout: short, also: ErrTimeout, timeout: true, addr: func(t *testing.T) string {
			return nmServe(t, nmSend(nil))
		}},
		// It waits for the end of a request line that our Hello may not
		// contain: at worst the handshake timeout, at best a 400 answer.
		{name: "http server", hsTimeout: short, timeout: true, addr: httpAddr},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := c.addr(t)
			var opts []Option
			if c.hsTimeout > 0 {
				opts = append(opts, WithHandshakeTimeout(c.hsTimeout))
			}
			d := stNewAt(t, "", opts...)
			start := time.Now()
			_, err := d.Connect(stCtx(t), addr)
			elapsed := time.Since(start)
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
			if !errors.Is(err, ErrNotMeshsock) {
				t.Fatalf("Connect error = %v; want ErrNotMeshsock", err)
			}
			if c.also != nil && !errors.Is(err, c.also) {
				t.Errorf("Connect error = %v; want it to match %v too", err, c.also)
			}
			if !c.timeout && errors.Is(err, ErrTimeout) {
				t.Errorf("Connect waited for the handshake timeout: %v", err)
			}
			if c.timeout && elapsed > c.hsTimeout+stTimeout/2 {
				t.Errorf("Connect took %v, handshake timeout %v", elapsed, c.hsTimeout)
			}
			if errors.Is(err, ErrRejected) || errors.Is(err, ErrProtocolMismatch) {
				t.Errorf("Connect error %v claims a meshsock refusal", err)
			}
		})
	}
}

// TestAcceptNotMeshsock: the listener judges a dialer's first frame the
// same way: a frame that is not a Preamble closes the connection at once
// without a verdict, a Preamble that starts with the magic but is broken
// gets verdict 6 first, and each is counted and recorded as ErrNotMeshsock.
func TestAcceptNotMeshsock(t *testing.T) {
	badPreamble := append(nmPreamble(t), 0x00) // a trailing byte: malformed, magic intact
	cases := []struct {
		name    string
		data    []byte
		verdict bool // whether the listener answers with verdict 6
	}{
		{"ssh banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), false},
		{"preamble with codec byte snappy", nmFrame(flags.Snappy, nmPreamble(t)), false},
		{"junk frame", nmFrame(flags.None, nmRandom(100, 2)), false},
		{"tls client hello", []byte{0x16, 0x03, 0x01, 0x00, 0x10, 0x01, 0x00, 0x00, 0x0c}, false},
		{"broken preamble", nmFrame(flags.None, badPreamble), true},
	}
	// A handshake timeout far beyond the reads' deadline: only a listener
	// that gives up at once lets them see the end of the stream.
	l := stNew(t, WithHandshakeTimeout(time.Minute))
	for i, c := range cases {
		nc, err := net.DialTimeout("tcp", l.Addr().String(), stTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(stTimeout))
		if _, err := nc.Write(c.data); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// The listener's Preamble, then its verdict if any, then the end.
		fr := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize)
		if _, body, err := fr.ReadFrame(nil); err != nil {
			t.Fatalf("%s: reading the listener's preamble: %v", c.name, err)
		} else if _, err := protocol.UnmarshalPreamble(body); err != nil {
			t.Fatalf("%s: the listener's first frame: %v", c.name, err)
		}
		_, body, err := fr.ReadFrame(nil)
		switch {
		case c.verdict && err == nil:
			if v, err := protocol.UnmarshalVerdict(body); err != nil || v.Code != protocol.RejectBadHello {
				t.Errorf("%s: verdict %+v, %v; want bad hello", c.name, v, err)
			}
			_, _, err = fr.ReadFrame(nil)
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s: after the verdict: %v; want the connection closed", c.name, err)
			}
		case c.verdict:
			t.Errorf("%s: no verdict: %v", c.name, err)
		case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
			t.Errorf("%s: after the preamble: %v; want the connection closed without a verdict", c.name, err)
		}
		_ = nc.Close()
		want := uint64(i + 1)
		stWait(t, "the failure counted", func() bool { return l.Stats().HandshakeFailures == want })
	}
	if !ckProblem(l, ErrNotMeshsock) {
		t.Errorf("no problem matching ErrNotMeshsock recorded: %v", l.Status())
	}
	for _, p := range l.Status().Problems {
		if !errors.Is(p.Err, ErrNotMeshsock) {
			t.Errorf("problem %q: %v; want ErrNotMeshsock", p.What, p.Err)
		}
	}
}
