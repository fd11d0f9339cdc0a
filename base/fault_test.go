package base_test

// Fault tests: hostile or broken peers and links, over real loopback TCP.
// Each test checks that the damage stays on the connection it touched, is
// counted in Stats, and that the socket goes on serving good peers. Waits
// are conditions with deadlines, never bare sleeps. Helpers are prefixed
// "ft" so they cannot clash with other test files of package base_test.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/internal/wirepeer"
	"github.com/meshsock/meshsock/protocol"
)

// ftWait bounds every wait for something that should happen promptly.
const ftWait = 10 * time.Second

// ftLeakCheck fails the test if it leaves goroutines behind. Call it first:
// its cleanup then runs last, after the sockets' cleanups closed them.
func ftLeakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// ftCtx returns a context that ends with the test or after ftWait.
func ftCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), ftWait)
	t.Cleanup(cancel)
	return ctx
}

// ftConnect connects a to b and waits until b has registered the link.
func ftConnect(t *testing.T, a, b *base.Socket) *base.Conn {
	t.Helper()
	c, err := a.Connect(ftCtx(t), b.Addr().String())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	testnet.Eventually(t, ftWait, func() bool {
		_, ok := b.Conn(a.ID())
		return ok
	}, "the listener registers the connection")
	return c
}

// ftExchange sends text over c and checks that it arrives at to.
func ftExchange(t *testing.T, c *base.Conn, to *base.Socket, text string) {
	t.Helper()
	ctx := ftCtx(t)
	if err := c.Send(ctx, []byte(text)); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	m, err := to.Recv(ctx)
	if err != nil {
		t.Fatalf("recv %q: %v", text, err)
	}
	if got := string(m.Packets[0]); got != text {
		t.Fatalf("received %q, want %q", got, text)
	}
}

// ftDial opens a raw TCP connection, closed when the test ends.
func ftDial(t *testing.T, addr net.Addr) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr.String(), ftWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

func ftIsTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// ftExpectClosed reads nc until the far end closes it (EOF or reset) and
// fails if that takes longer than within. It returns the bytes read and how
// long it took.
func ftExpectClosed(t *testing.T, nc net.Conn, within time.Duration) (int64, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(within))
	n, err := io.Copy(io.Discard, nc)
	elapsed := time.Since(start)
	if ftIsTimeout(err) {
		t.Fatalf("connection still open after %v (read %d bytes)", within, n)
	}
	return n, elapsed
}

// ftDisconnects subscribes to s and returns a channel of its disconnect
// events.
func ftDisconnects(t *testing.T, s *base.Socket) <-chan base.Event {
	ch := make(chan base.Event, 16)
	cancel := s.Subscribe(func(e base.Event) {
		if e.Kind == base.EventDisconnect {
			select {
			case ch <- e:
			default:
			}
		}
	})
	t.Cleanup(cancel)
	return ch
}

func ftNextEvent(t *testing.T, ch <-chan base.Event) base.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(ftWait):
		t.Fatal("no disconnect event")
		return base.Event{}
	}
}

// ftRaw is a hand-driven peer that has completed the handshake.
type ftRaw struct {
	nc   net.Conn // the link: the TLS session over the TCP connection
	id   protocol.NodeID
	key  ed25519.PrivateKey // id's key, for signing
	peer *protocol.Hello
}

// ftRawHandshake dials addr and runs the handshake by hand with package
// protocol (internal/wirepeer): Preambles, TLS, Hellos, Auth frames, an
// accepting Verdict out and the socket's in.
func ftRawHandshake(t *testing.T, addr net.Addr) *ftRaw {
	t.Helper()
	p, err := wirepeer.Dial(ftCtx(t), addr.String(), nil, "", ftWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	v, err := p.Handshake(protocol.Hello{})
	if err != nil || v.Code != protocol.Accept {
		t.Fatalf("verdict %+v, %v; want accept", v, err)
	}
	_ = p.Raw.SetDeadline(time.Time{})
	return &ftRaw{nc: p.Conn, id: p.ID(), key: p.Key, peer: p.PeerHello}
}

// frame returns a complete whisper frame from the raw peer.
func (r *ftRaw) frame(seq uint64, payload []byte) []byte {
	env := protocol.Envelope{
		Type: flags.Whisper, Sub: flags.Whisper, Sender: r.id, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: [][]byte{payload},
	}
	return protocol.AppendFrame(nil, flags.None, protocol.AppendMessage(nil, 0, &env))
}

// ftRandom returns n bytes from a seeded generator.
func ftRandom(n int, seed uint64) []byte {
	b := make([]byte, n)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

// TestFaultGarbageHandshake sends things that are not a handshake. Each is
// closed within the handshake timeout and counted, and the socket then
// serves a good peer.
func TestFaultGarbageHandshake(t *testing.T) {
	ftLeakCheck(t)
	const hsTimeout = 300 * time.Millisecond
	socks := testnet.StartBase(t, 2, base.WithHandshakeTimeout(hsTimeout))
	a, b := socks[0], socks[1]

	inputs := []struct {
		name string
		data []byte
	}{
		{"random bytes", ftRandom(300, 1)},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test\r\n\r\n")},
		// A frame whose body is not a Preamble: closed at once.
		{"junk frame", protocol.AppendFrame(nil, flags.None, ftRandom(100, 2))},
		// A plausible length prefix and then too few bytes: only the
		// handshake timeout ends it.
		{"short frame", []byte{0, 0, 0, 100, 0, 1, 2, 3}},
	}
	for _, in := range inputs {
		nc := ftDial(t, b.Addr())
		if _, err := nc.Write(in.data); err != nil {
			t.Fatalf("%s: write: %v", in.name, err)
		}
		_, elapsed := ftExpectClosed(t, nc, hsTimeout+5*time.Second)
		t.Logf("%s: closed after %v", in.name, elapsed.Round(time.Millisecond))
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().HandshakeFailures == uint64(len(inputs)) },
		"every bad handshake counted (have %d)", b.Stats().HandshakeFailures)
	if st := b.Stats(); st.Connections != 0 || st.Connects != 0 {
		t.Errorf("garbage peers registered: %+v", st)
	}

	ab := ftConnect(t, a, b)
	ftExchange(t, ab, b, "still serving")
	if got := b.Stats().Connections; got != 1 {
		t.Errorf("b has %d connections, want 1", got)
	}
}

// TestFaultOversizedFrame claims a 1 GiB frame after a good handshake: the
// connection is closed and counted, nothing near that size is allocated,
// and another connection is unaffected.
func TestFaultOversizedFrame(t *testing.T) {
	ftLeakCheck(t)
	socks := testnet.StartBase(t, 2)
	a, b := socks[0], socks[1]
	ab := ftConnect(t, a, b)

	raw := ftRawHandshake(t, b.Addr())
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().Connections == 2 }, "b registers the raw peer")

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var hdr [protocol.FrameHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[:4], 1<<30)
	hdr[4] = byte(flags.None)
	if _, err := raw.nc.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	ftExpectClosed(t, raw.nc, ftWait)
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().DecodeErrors == 1 }, "the bad frame counted as a decode error")
	runtime.ReadMemStats(&after)
	if delta := after.TotalAlloc - before.TotalAlloc; delta > 32<<20 {
		t.Errorf("allocated %d MiB after a 1 GiB length prefix; the length must be checked before allocating", delta>>20)
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().Connections == 1 }, "b drops the bad connection")

	if err := ab.Err(); err != nil {
		t.Fatalf("the good connection closed: %v", err)
	}
	ftExchange(t, ab, b, "a to b")
	ba, _ := b.Conn(a.ID())
	ftExchange(t, ba, a, "b to a")
}

// TestFaultTruncatedFrame sends a frame cut off mid-body, then closes: the
// connection ends cleanly, the partial message is not delivered, and other
// connections are fine.
func TestFaultTruncatedFrame(t *testing.T) {
	ftLeakCheck(t)
	socks := testnet.StartBase(t, 2)
	a, b := socks[0], socks[1]
	ab := ftConnect(t, a, b)
	downs := ftDisconnects(t, b)

	raw := ftRawHandshake(t, b.Addr())
	// A whole message first, to show the hand-made frames are valid.
	if _, err := raw.nc.Write(raw.frame(1, []byte("complete"))); err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv(ftCtx(t))
	if err != nil || string(m.Packets[0]) != "complete" || m.Sender != raw.id {
		t.Fatalf("recv = %v, %v; want the raw peer's complete message", m, err)
	}
	cut := raw.frame(2, ftRandom(1000, 3))
	if _, err := raw.nc.Write(cut[:len(cut)/2]); err != nil {
		t.Fatal(err)
	}
	_ = raw.nc.Close()

	e := ftNextEvent(t, downs)
	if e.Peer.ID != raw.id {
		t.Fatalf("disconnect of %s, want the raw peer %s", e.Peer.ID.Short(), raw.id.Short())
	}
	if !errors.Is(e.Err, protocol.ErrTruncated) {
		t.Errorf("disconnect reason %v, want ErrTruncated", e.Err)
	}
	if _, ok := b.TryRecv(); ok {
		t.Error("a message was delivered from the truncated frame")
	}
	st := b.Stats()
	if st.Delivered != 1 || st.Disconnects != 1 || st.Connections != 1 {
		t.Errorf("stats %+v; want 1 delivered, 1 disconnect, 1 connection left", st)
	}
	ftExchange(t, ab, b, "unaffected")
}

// TestFaultSilentBeforeHandshake connects and sends nothing: the socket
// closes the connection after the handshake timeout.
func TestFaultSilentBeforeHandshake(t *testing.T) {
	ftLeakCheck(t)
	const hsTimeout = 200 * time.Millisecond
	b := testnet.StartBase(t, 1, base.WithHandshakeTimeout(hsTimeout))[0]
	nc := ftDial(t, b.Addr())
	n, elapsed := ftExpectClosed(t, nc, hsTimeout+5*time.Second)
	if n == 0 {
		t.Error("the socket sent no preamble")
	}
	if elapsed < hsTimeout*3/4 {
		t.Errorf("closed after %v, before the %v handshake timeout", elapsed, hsTimeout)
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().HandshakeFailures == 1 }, "the timeout counted")
}

// TestFaultSilentAfterHandshake completes the handshake, then the peer
// vanishes without a FIN (a black hole): both ends close the link after the
// silence timeout with ErrTimeout. Until then, keepalive pings hold an idle
// link open well past that timeout.
func TestFaultSilentAfterHandshake(t *testing.T) {
	ftLeakCheck(t)
	// Generous timings: both sockets share this process, so a stall of the
	// whole process (a loaded machine, -race) looks like silence to
	// whichever end checks first.
	const interval, silence = 100 * time.Millisecond, time.Second
	dialer := faultnet.NewDialer(faultnet.Faults{})
	// a is the peer that vanishes. Its own silence timeout is longer: were
	// it to give up first, closing its socket with b's pings unread would
	// reset the connection, and b would see a reset instead of silence.
	a := testnet.NewBase(t, "", base.WithKeepalive(interval, 2*silence), base.WithDialer(dialer.DialContext))
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithKeepalive(interval, silence))
	downs := ftDisconnects(t, b)
	ab := ftConnect(t, a, b)
	ba, _ := b.Conn(a.ID())
	ftExchange(t, ab, b, "hello")

	// Idle but alive: pings are answered for longer than the silence
	// timeout and nobody disconnects. (Usually only one end pings: the
	// pings it receives keep the other end from feeling idle.)
	ctx, cancel := context.WithTimeout(context.Background(), ftWait)
	defer cancel()
	if err := testnet.WaitFor(ctx, func() bool {
		return ab.Stats().Pongs+ba.Stats().Pongs >= uint64(silence/interval)
	}); err != nil {
		t.Fatalf("keepalive pings not answered for longer than the silence timeout: a: %+v %v; b: %+v %v",
			ab.Stats(), ab.Err(), ba.Stats(), ba.Err())
	}
	if ab.Err() != nil || ba.Err() != nil {
		t.Fatalf("an idle, healthy link closed: %v / %v", ab.Err(), ba.Err())
	}

	fc := dialer.Conns()
	if len(fc) != 1 {
		t.Fatalf("dialer tracks %d conns, want 1", len(fc))
	}
	start := time.Now()
	fc[0].BlackHole(true)
	e := ftNextEvent(t, downs)
	elapsed := time.Since(start)
	if !errors.Is(e.Err, base.ErrTimeout) || !errors.Is(ba.Err(), base.ErrTimeout) {
		t.Errorf("b closed with %v (conn: %v), want ErrTimeout", e.Err, ba.Err())
	}
	if elapsed < silence/2 || elapsed > silence+2*time.Second {
		t.Errorf("b gave up after %v; silence timeout %v", elapsed, silence)
	}
	testnet.Eventually(t, ftWait, func() bool { return ab.Err() != nil }, "a gives up too")
	if !errors.Is(ab.Err(), base.ErrTimeout) {
		t.Errorf("a closed with %v, want ErrTimeout", ab.Err())
	}
	if st := b.Stats(); st.Disconnects != 1 || st.Connections != 0 {
		t.Errorf("b stats %+v", st)
	}
}

// TestFaultPeerStopsReading sends 100 MB to a peer that stopped reading.
// With the Block policy Send fails (the write timeout closes the link)
// rather than hanging; with Drop it reports ErrQueueFull and counts drops.
// Either way the heap stays far below what was sent.
func TestFaultPeerStopsReading(t *testing.T) {
	const (
		msgSize  = 64 << 10
		messages = 1600 // 100 MiB
		heapCap  = 48 << 20
	)
	payload := ftRandom(msgSize, 4) // incompressible
	for _, policy := range []base.QueuePolicy{base.Block, base.Drop} {
		t.Run(policy.String(), func(t *testing.T) {
			ftLeakCheck(t)
			ln, err := faultnet.Listen("127.0.0.1:0", faultnet.Faults{})
			if err != nil {
				t.Fatal(err)
			}
			b := testnet.NewBase(t, "", base.WithListener(ln))
			// Block relies on the write timeout to end the Send; Drop gets
			// a longer one, so that the queue fills (and drops) before the
			// link is given up even on a loaded machine.
			writeTimeout := 300 * time.Millisecond
			if policy == base.Drop {
				writeTimeout = 3 * time.Second
			}
			a := testnet.NewBase(t, "", base.WithCompression(), base.WithQueuePolicy(policy),
				base.WithWriteTimeout(writeTimeout), base.WithSendQueue(16, 1<<20),
				base.WithFlushTimeout(100*time.Millisecond))
			ab := ftConnect(t, a, b)
			conns := ln.Conns()
			if len(conns) != 1 {
				t.Fatalf("listener tracks %d conns, want 1", len(conns))
			}
			conns[0].StopReading(true)

			var peak uint64
			sample := func() {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			sent, full := 0, 0
			var stop error
			for i := 0; i < messages && stop == nil; i++ {
				if i%100 == 0 {
					sample()
				}
				switch err := ab.Send(ctx, payload); {
				case err == nil:
					sent++
				case errors.Is(err, base.ErrQueueFull) && policy == base.Drop:
					full++
				default:
					stop = err
				}
			}
			sample()
			elapsed := time.Since(start)
			t.Logf("%s: %d sent, %d refused as full, stopped by %v after %v; peak heap in use %d MiB",
				policy, sent, full, stop, elapsed.Round(time.Millisecond), peak>>20)
			if peak > heapCap {
				t.Errorf("heap in use peaked at %d MiB, want under %d MiB", peak>>20, heapCap>>20)
			}
			switch policy {
			case base.Block:
				if !errors.Is(stop, base.ErrClosed) && !errors.Is(stop, base.ErrTimeout) {
					t.Fatalf("Send to a stalled peer returned %v, want ErrClosed or ErrTimeout", stop)
				}
				if ctx.Err() != nil {
					t.Errorf("Send only returned when its context ended (after %v)", elapsed)
				}
				testnet.Eventually(t, ftWait, func() bool { return ab.Err() != nil }, "the write timeout closes the link")
				if !errors.Is(ab.Err(), base.ErrTimeout) {
					t.Errorf("link closed with %v, want ErrTimeout", ab.Err())
				}
			case base.Drop:
				if stop != nil && !errors.Is(stop, base.ErrClosed) {
					t.Fatalf("Send returned %v, want nil, ErrQueueFull or ErrClosed", stop)
				}
				if full == 0 {
					t.Fatal("Send never reported ErrQueueFull")
				}
				if got := a.Stats().QueueDrops; got != uint64(full) {
					t.Errorf("QueueDrops = %d, want %d", got, full)
				}
			}
		})
	}
}

// ftBadSnappy claims the Snappy method but sends only the first half of
// each compressed body, so that every frame it compresses fails to
// decompress.
type ftBadSnappy struct{ real compress.Codec }

func (c ftBadSnappy) Method() flags.Method { return flags.Snappy }

func (c ftBadSnappy) Compress(dst, src []byte) ([]byte, error) {
	out, err := c.real.Compress(nil, src)
	if err != nil {
		return dst, err
	}
	return append(dst, out[:len(out)/2]...), nil
}

func (c ftBadSnappy) Decompress(dst, src []byte, max int) ([]byte, error) {
	return c.real.Decompress(dst, src, max)
}

// TestFaultDecompressFailure uses a codec whose output never decompresses:
// every message still arrives intact (the receiver renegotiates and the
// frames are resent uncompressed), and the sender stops compressing.
func TestFaultDecompressFailure(t *testing.T) {
	ftLeakCheck(t)
	snappy, err := compress.Builtin(flags.Snappy)
	if err != nil {
		t.Fatal(err)
	}
	set, err := compress.NewSet(ftBadSnappy{real: snappy})
	if err != nil {
		t.Fatal(err)
	}
	socks := testnet.StartBase(t, 2, base.WithCodecs(set), base.WithCompression(flags.Snappy),
		base.WithCompressThreshold(512))
	a, b := socks[0], socks[1]
	ab := ftConnect(t, a, b)
	if m := ab.SendMethod(); m != flags.Snappy {
		t.Fatalf("negotiated %s, want snappy", m)
	}

	// A burst far larger than the control lane: resend requests are
	// batched by the writer, not queued one per failure, so none is lost.
	const n = 1000
	payload := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("message %03d; ", i)), 300) }
	ctx := ftCtx(t)
	for i := range n {
		if err := ab.Send(ctx, payload(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	got := make(map[int]bool)
	for len(got) < n {
		m, err := b.Recv(ctx)
		if err != nil {
			t.Fatalf("received %d of %d messages: %v", len(got), n, err)
		}
		var i int
		if _, err := fmt.Sscanf(string(m.Packets[0]), "message %d;", &i); err != nil || i < 0 || i >= n {
			t.Fatalf("unexpected message %.40q", m.Packets[0])
		}
		if !bytes.Equal(m.Packets[0], payload(i)) {
			t.Fatalf("message %d arrived damaged", i)
		}
		if got[i] {
			t.Fatalf("message %d arrived twice", i)
		}
		got[i] = true
	}
	if _, ok := b.TryRecv(); ok {
		t.Error("more messages than were sent")
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("sender: %d resends, %d misses; receiver: %d decompress errors", sa.ResendsSent, sa.ResendMisses, sb.DecompressErrors)
	if sb.DecompressErrors < 1 {
		t.Error("DecompressErrors = 0; the frames were not compressed at all?")
	}
	if sa.ResendsSent < 1 || sa.ResendsSent != sb.DecompressErrors || sa.ResendMisses != 0 {
		t.Errorf("ResendsSent = %d, ResendMisses = %d; want one resend per decompress error (%d)",
			sa.ResendsSent, sa.ResendMisses, sb.DecompressErrors)
	}
	if m := ab.SendMethod(); m != flags.None {
		t.Errorf("sender still compresses with %s after the renegotiation", m)
	}
	if ab.Err() != nil || sb.Connections != 1 {
		t.Errorf("the link closed: %v", ab.Err())
	}
	ftExchange(t, ab, b, string(payload(99)))
}

// TestFaultHandlerPanic: a panicking handler is recovered and counted, and
// the connection goes on.
func TestFaultHandlerPanic(t *testing.T) {
	ftLeakCheck(t)
	socks := testnet.StartBase(t, 2)
	a, b := socks[0], socks[1]
	b.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if string(m.Packets[0]) == "panic" {
			panic("handler bug")
		}
		return false
	}))
	ab := ftConnect(t, a, b)
	if err := ab.Send(ftCtx(t), []byte("panic")); err != nil {
		t.Fatal(err)
	}
	ftExchange(t, ab, b, "after the panic")
	st := b.Stats()
	if st.HandlerPanics != 1 {
		t.Errorf("HandlerPanics = %d, want 1", st.HandlerPanics)
	}
	if st.Connections != 1 || st.Disconnects != 0 || ab.Err() != nil {
		t.Errorf("the connection did not survive the panic: %+v, %v", st, ab.Err())
	}
	ftExchange(t, ab, b, "and again")
}

// TestFaultProtocolMismatch: sockets of different subnets refuse each other
// with ErrProtocolMismatch, count it on both sides and register nothing.
func TestFaultProtocolMismatch(t *testing.T) {
	ftLeakCheck(t)
	a := testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(protocol.Protocol{Subnet: "alpha", Encryption: "plaintext"}))
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(protocol.Protocol{Subnet: "beta", Encryption: "plaintext"}))
	c, err := a.Connect(ftCtx(t), b.Addr().String())
	if !errors.Is(err, base.ErrProtocolMismatch) {
		t.Fatalf("Connect across subnets = %v, %v; want ErrProtocolMismatch", c, err)
	}
	for name, s := range map[string]*base.Socket{"dialer": a, "listener": b} {
		testnet.Eventually(t, ftWait, func() bool {
			st := s.Stats()
			return st.ProtocolMismatches == 1 && st.HandshakeFailures == 1
		}, "%s counts the mismatch", name)
		if st := s.Stats(); st.Connections != 0 || st.Connects != 0 || len(s.Conns()) != 0 {
			t.Errorf("%s registered a connection: %+v", name, st)
		}
	}
}

// TestFaultSelfConnect: dialling this node is refused with ErrSelfConnect,
// whether the address is its own or an alias that leads back to it.
func TestFaultSelfConnect(t *testing.T) {
	ftLeakCheck(t)
	var self string
	// The dialer sends every address to this socket, as a DNS alias would.
	alias := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, self)
	}
	a := testnet.NewBase(t, "127.0.0.1:0", base.WithDialer(alias))
	self = a.Addr().String()
	ctx := ftCtx(t)
	if _, err := a.Connect(ctx, self); !errors.Is(err, base.ErrSelfConnect) {
		t.Errorf("Connect(own address) = %v, want ErrSelfConnect", err)
	}
	if _, err := a.Connect(ctx, "alias.invalid:4242"); !errors.Is(err, base.ErrSelfConnect) {
		t.Errorf("Connect(alias of self) = %v, want ErrSelfConnect", err)
	}
	if st := a.Stats(); st.Connections != 0 || st.Connects != 0 {
		t.Errorf("a connection to self was registered: %+v", st)
	}
}

// TestFaultConnLimit: with room for one connection, a second peer is
// refused with ErrConnLimit; once the first leaves, it gets in.
func TestFaultConnLimit(t *testing.T) {
	ftLeakCheck(t)
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxConns(1))
	downs := ftDisconnects(t, b)
	peers := testnet.StartBase(t, 2)
	first := ftConnect(t, peers[0], b)
	if _, err := peers[1].Connect(ftCtx(t), b.Addr().String()); !errors.Is(err, base.ErrConnLimit) {
		t.Fatalf("second Connect = %v, want ErrConnLimit", err)
	}
	if st := b.Stats(); st.Connections != 1 {
		t.Errorf("b has %d connections, limit 1", st.Connections)
	}
	ftExchange(t, first, b, "first still connected")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The slot is free once b has removed the connection, which it
	// announces with the disconnect event. (Stats().Connections drops to 0
	// a little earlier, while the closed connection still holds its slot.)
	if e := ftNextEvent(t, downs); e.Peer.ID != peers[0].ID() {
		t.Fatalf("disconnect of %s, want %s", e.Peer.ID.Short(), peers[0].ID().Short())
	}
	second := ftConnect(t, peers[1], b)
	ftExchange(t, second, b, "second gets in")
}

// TestFaultPendingHandshakeLimit opens more silent connections than the
// socket lets wait in the handshake: the excess is refused at once (a
// connection-limit verdict without a hello), the rest closed at the
// handshake timeout, and then a good peer connects.
func TestFaultPendingHandshakeLimit(t *testing.T) {
	ftLeakCheck(t)
	const (
		maxPending = 2
		silent     = 5
		hsTimeout  = 400 * time.Millisecond
	)
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxPendingHandshakes(maxPending), base.WithHandshakeTimeout(hsTimeout))
	type result struct {
		first   []byte // body of the first frame
		elapsed time.Duration
		err     error
	}
	results := make([]result, silent)
	var wg sync.WaitGroup
	for i := range silent {
		nc := ftDial(t, b.Addr())
		start := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetReadDeadline(start.Add(hsTimeout + ftWait))
			_, first, err := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize).ReadFrame(nil)
			if err == nil {
				_, err = io.Copy(io.Discard, nc)
			}
			results[i] = result{first, time.Since(start), err}
		}()
	}
	wg.Wait()
	held, refused := 0, 0
	var lastRefused, firstHeld time.Duration = 0, time.Hour
	for i, r := range results {
		if ftIsTimeout(r.err) {
			t.Fatalf("connection %d still open after %v", i, r.elapsed)
		}
		if _, err := protocol.UnmarshalPreamble(r.first); err == nil { // in the handshake
			held++
			firstHeld = min(firstHeld, r.elapsed)
		} else if v, err := protocol.UnmarshalVerdict(r.first); err == nil && v.Code == protocol.RejectLimit {
			refused++
			lastRefused = max(lastRefused, r.elapsed)
		} else {
			t.Fatalf("connection %d: first frame %x (%v) is neither a preamble nor a connection-limit verdict", i, r.first, r.err)
		}
	}
	t.Logf("%d held (first closed after %v), %d refused (last closed after %v)", held, firstHeld, refused, lastRefused)
	if held > maxPending || held+refused != silent {
		t.Errorf("%d connections held in the handshake, limit %d", held, maxPending)
	}
	if refused > 0 && held > 0 && lastRefused >= firstHeld {
		t.Errorf("refused connections were not closed at once (%v, held ones after %v)", lastRefused, firstHeld)
	}
	if held > 0 && firstHeld < hsTimeout*3/4 {
		t.Errorf("held connection closed after %v, before the handshake timeout %v", firstHeld, hsTimeout)
	}
	testnet.Eventually(t, ftWait, func() bool { return b.Stats().HandshakeFailures == silent }, "every silent connection counted")

	// The slots free up as the handshake goroutines finish; a good peer
	// gets in once they have.
	a := testnet.NewBase(t, "")
	ctx := ftCtx(t)
	var ab *base.Conn
	testnet.Eventually(t, ftWait, func() bool {
		c, err := a.Connect(ctx, b.Addr().String())
		ab = c
		return err == nil
	}, "a good peer connects after the silent ones are gone")
	ftExchange(t, ab, b, "welcome")
}

// TestFaultCorruptStream flips bits in everything one peer sends on an
// established link: that link closes, another link to the same socket keeps
// working, and nothing panics. On a plaintext link the damage reaches the
// frame decoder (decode or decompression errors are counted); on a TLS
// link no corrupted byte gets past the record authentication, and not one
// message arrives after the corruption starts.
func TestFaultCorruptStream(t *testing.T) {
	for _, enc := range []string{protocol.EncryptionPlaintext, protocol.EncryptionTLS} {
		t.Run(enc, func(t *testing.T) { ftCorruptStream(t, enc) })
	}
}

func ftCorruptStream(t *testing.T, encryption string) {
	ftLeakCheck(t)
	proto := base.WithProtocol(protocol.Protocol{Subnet: "meshsock", Encryption: encryption})
	dialer := faultnet.NewDialer(faultnet.Faults{Seed: 7})
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxFrameSize(64<<10), proto)
	a := testnet.NewBase(t, "", base.WithDialer(dialer.DialContext), proto)
	c := testnet.NewBase(t, "", proto)
	ab := ftConnect(t, a, b)
	cb := ftConnect(t, c, b)
	ftExchange(t, ab, b, "before")
	ftExchange(t, cb, b, "before")

	dialer.Conns()[0].CorruptEvery(7)
	payloads := [][]byte{ftRandom(1500, 5), bytes.Repeat([]byte("compressible "), 200), []byte("short")}
	ctx := ftCtx(t)
	got := 0
	for i := 0; ab.Err() == nil && ctx.Err() == nil; i++ {
		sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := ab.Send(sctx, payloads[i%len(payloads)])
		cancel()
		if err != nil && !errors.Is(err, base.ErrTimeout) {
			break
		}
		// Payloads carry no checksum of their own: on plaintext a flipped
		// bit inside one can get through. Discard whatever arrives.
		if m, ok := b.TryRecv(); ok && m.Sender == a.ID() {
			got++
		}
	}
	testnet.Eventually(t, ftWait, func() bool {
		_, ok := b.Conn(a.ID())
		return ab.Err() != nil && !ok
	}, "the corrupted link closes on both ends")
	st := b.Stats()
	t.Logf("a's link closed with %v; b: %d decode errors, %d decompress errors, %d messages after the corruption began",
		ab.Err(), st.DecodeErrors, st.DecompressErrors, got)
	for {
		m, ok := b.TryRecv()
		if !ok {
			break
		}
		if m.Sender == a.ID() {
			got++
		}
	}
	if encryption == protocol.EncryptionPlaintext && st.DecodeErrors+st.DecompressErrors == 0 {
		t.Error("no decode or decompression error counted")
	}
	if encryption == protocol.EncryptionTLS && got > 0 {
		t.Errorf("%d messages from a arrived over a corrupted TLS link", got)
	}
	if cb.Err() != nil || st.Connections != 1 {
		t.Fatalf("the other link was affected: %v, %d connections", cb.Err(), st.Connections)
	}
	ftExchange(t, cb, b, "after")
}
