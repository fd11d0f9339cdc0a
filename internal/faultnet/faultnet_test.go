package faultnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/bits"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/internal/testnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pair returns a wrapped client conn and the plain server end of a
// loopback TCP connection; both are closed when the test ends.
func pair(t *testing.T, f Faults) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- nc
	}()
	d := NewDialer(f)
	nc, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	c := nc.(*Conn)
	t.Cleanup(func() {
		_ = c.Close()
		_ = server.Close()
	})
	return c, server
}

// readN reads exactly n bytes from r within timeout.
func readN(t *testing.T, nc net.Conn, n int, timeout time.Duration) []byte {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	defer nc.SetReadDeadline(time.Time{})
	buf := make([]byte, n)
	if _, err := io.ReadFull(nc, buf); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return buf
}

// expectNothing checks that nothing arrives on nc within d.
func expectNothing(t *testing.T, nc net.Conn, d time.Duration) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(d))
	defer nc.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := nc.Read(b[:])
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, err %v; want nothing (a timeout)", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestPassThrough(t *testing.T) {
	c, s := pair(t, Faults{})
	msg := []byte("hello, world")
	if n, err := c.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := readN(t, s, len(msg), 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatalf("server read %q", got)
	}
	if _, err := s.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, c, 4, 5*time.Second); string(got) != "back" {
		t.Fatalf("client read %q", got)
	}
	st := c.Stats()
	if st.BytesWritten != int64(len(msg)) || st.BytesRead != 4 {
		t.Errorf("stats %+v", st)
	}
	// A read deadline passes through to a plain read.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("read past the deadline: %v", err)
	}
}

// TestCapture: a capturing Conn records what it wrote (corrupted as sent)
// and what it read, in order; one that does not capture records nothing.
func TestCapture(t *testing.T) {
	c, s := pair(t, Faults{Capture: true})
	for _, part := range []string{"hello, ", "world"} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	readN(t, s, 12, 5*time.Second)
	if _, err := s.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 4, 5*time.Second)
	w, r := c.Captured()
	if string(w) != "hello, world" || string(r) != "back" {
		t.Fatalf("captured %q written, %q read", w, r)
	}
	c.CorruptEvery(1)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	sent := readN(t, s, 1, 5*time.Second)
	if w, _ := c.Captured(); !bytes.Equal(w[len(w)-1:], sent) || sent[0] == 'x' {
		t.Errorf("captured %q, the peer got %q: want the corrupted byte as sent", w[len(w)-1:], sent)
	}
	plain, ps := pair(t, Faults{})
	if _, err := plain.Write([]byte("secret")); err != nil {
		t.Fatal(err)
	}
	readN(t, ps, 6, 5*time.Second)
	if w, r := plain.Captured(); len(w)+len(r) != 0 {
		t.Errorf("a Conn without Capture recorded %q and %q", w, r)
	}
}

func TestLatency(t *testing.T) {
	const lat = 300 * time.Millisecond
	c, s := pair(t, Faults{Latency: lat})
	start := time.Now()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= lat {
		t.Errorf("Write blocked for %v; latency must not hold the writer", d)
	}
	// Removing the latency must not let later bytes overtake earlier ones.
	c.SetLatency(0)
	for _, b := range []string{"b", "c"} {
		if _, err := c.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	got := readN(t, s, 3, 5*time.Second)
	if elapsed := time.Since(start); elapsed < lat {
		t.Errorf("bytes arrived after %v, want at least %v", elapsed, lat)
	}
	if string(got) != "abc" {
		t.Errorf("got %q, want %q (order preserved)", got, "abc")
	}
	// Many writes under changing latency stay in order.
	var want bytes.Buffer
	for i := range 200 {
		c.SetLatency(time.Duration(i%5) * time.Millisecond)
		b := []byte{byte(i)}
		want.Write(b)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if got := readN(t, s, want.Len(), 5*time.Second); !bytes.Equal(got, want.Bytes()) {
		t.Error("bytes reordered under changing latency")
	}
}

func TestLatencyPipelineBoundAndDeadline(t *testing.T) {
	c, _ := pair(t, Faults{Latency: time.Hour})
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	chunk := make([]byte, 256<<10)
	total := 0
	var err error
	for total < 4*MaxInFlight {
		var n int
		n, err = c.Write(chunk)
		total += n
		if err != nil {
			break
		}
	}
	if !isTimeout(err) {
		t.Fatalf("writing into a full pipeline: %v after %d bytes, want a timeout", err, total)
	}
	if total > MaxInFlight+len(chunk) {
		t.Errorf("pipeline took %d bytes, bound %d", total, MaxInFlight)
	}
	// Close stops the delivery goroutine although bytes are still due.
	done := make(chan struct{})
	go func() {
		_ = c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung with bytes in flight")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
}

func TestBandwidth(t *testing.T) {
	const rate = 200_000 // bytes/s
	c, s := pair(t, Faults{Bandwidth: rate})
	data := make([]byte, 100_000)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	readN(t, s, len(data), 10*time.Second)
	elapsed := time.Since(start)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if want := 400 * time.Millisecond; elapsed < want {
		t.Errorf("100 kB at 200 kB/s took %v, want at least %v", elapsed, want)
	}
	// Lifting the cap makes writes fast again: 2 MB that the cap would
	// have spread over 10 s.
	c.SetBandwidth(0)
	big := make([]byte, 2_000_000)
	start = time.Now()
	go func() {
		_, err := c.Write(big)
		errc <- err
	}()
	readN(t, s, len(big), 10*time.Second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("uncapped write of 2 MB took %v", elapsed)
	}
	// A write deadline ends a throttled write.
	c.SetBandwidth(1000)
	_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Write(data)
	if !isTimeout(err) || n >= len(data) {
		t.Errorf("throttled write past its deadline = %d, %v", n, err)
	}
}

func TestCut(t *testing.T) {
	c, s := pair(t, Faults{})
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	readN(t, s, 6, 5*time.Second)
	if err := c.Cut(); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := s.Read(make([]byte, 16))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer read after Cut: %v, want ECONNRESET", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("local read after Cut: %v, want ECONNRESET", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("local write after Cut: %v, want ECONNRESET", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after Cut")
	}
}

func TestBlackHole(t *testing.T) {
	c, s := pair(t, Faults{})
	c.BlackHole(true)
	if n, err := c.Write([]byte("lost")); n != 4 || err != nil {
		t.Fatalf("black-holed Write = %d, %v; want it accepted", n, err)
	}
	expectNothing(t, s, 50*time.Millisecond)
	if _, err := s.Write([]byte("unheard")); err != nil {
		t.Fatal(err)
	}

	// A blocked Read ends when a deadline is set from another goroutine.
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("black-holed Read returned %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Errorf("black-holed Read after its deadline: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetReadDeadline did not end a black-holed Read")
	}
	// A deadline in the past fails at once; clearing it blocks again.
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("Read with an expired deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// Turning the black hole off lets new bytes through.
	c.BlackHole(false)
	if _, err := c.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 4, 5*time.Second); string(got) != "back" {
		t.Errorf("server read %q after the black hole", got)
	}
	if st := c.Stats(); st.WritesDiscarded != 4 {
		t.Errorf("WritesDiscarded = %d, want 4", st.WritesDiscarded)
	}

	// Close ends a blocked Read.
	c.BlackHole(true)
	go func() {
		_, err := c.Read(make([]byte, 16))
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("black-holed Read returned %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	_ = c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("black-holed Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a black-holed Read")
	}
}

// TestBlackHoleHidesFIN: a Read already waiting in the socket when the
// black hole opens must not report the peer's close: a vanished peer sends
// nothing at all.
func TestBlackHoleHidesFIN(t *testing.T) {
	c, s := pair(t, Faults{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		errc <- err
	}()
	c.BlackHole(true)
	if _, err := s.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	select {
	case err := <-errc:
		t.Fatalf("black-holed Read returned %v after the peer closed", err)
	case <-time.After(50 * time.Millisecond):
	}
	_ = c.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Errorf("black-holed Read after its deadline: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetReadDeadline did not end the Read")
	}
}

func TestCorruptEvery(t *testing.T) {
	c, s := pair(t, Faults{CorruptEvery: 10})
	data := make([]byte, 1000)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, make([]byte, 1000)) {
		t.Fatal("Write corrupted the caller's buffer")
	}
	got := readN(t, s, len(data), 5*time.Second)
	for i, b := range got {
		wantFlip := (i+1)%10 == 0
		if wantFlip && bits.OnesCount8(b) != 1 {
			t.Fatalf("byte %d = %08b, want one flipped bit", i, b)
		}
		if !wantFlip && b != 0 {
			t.Fatalf("byte %d = %08b, want untouched", i, b)
		}
	}
	if st := c.Stats(); st.BitsFlipped != 100 {
		t.Errorf("BitsFlipped = %d, want 100", st.BitsFlipped)
	}

	c.Corrupt(1)
	if _, err := c.Write(data[:100]); err != nil {
		t.Fatal(err)
	}
	for i, b := range readN(t, s, 100, 5*time.Second) {
		if bits.OnesCount8(b) != 1 {
			t.Fatalf("Corrupt(1): byte %d = %08b", i, b)
		}
	}
	c.Corrupt(0)
	if _, err := c.Write(data[:100]); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 100, 5*time.Second); !bytes.Equal(got, data[:100]) {
		t.Error("Corrupt(0) still corrupts")
	}
}

func TestCorruptProbDeterministic(t *testing.T) {
	run := func() []byte {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		c := Wrap(a, Faults{CorruptProb: 0.1, Seed: 42})
		defer c.Close()
		data := make([]byte, 4096)
		go func() { _, _ = c.Write(data) }()
		got := make([]byte, len(data))
		if _, err := io.ReadFull(b, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	first, second := run(), run()
	if !bytes.Equal(first, second) {
		t.Error("the same seed corrupted different bytes")
	}
	flipped := 0
	for _, b := range first {
		if b != 0 {
			flipped++
		}
	}
	if flipped < 200 || flipped > 650 {
		t.Errorf("%d of 4096 bytes corrupted at p=0.1", flipped)
	}
}

func TestStopReading(t *testing.T) {
	c, s := pair(t, Faults{})
	c.StopReading(true)
	chunk := bytes.Repeat([]byte{0xA5}, 64<<10)
	total := 0
	var err error
	for total < 512<<20 {
		_ = s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		var n int
		n, err = s.Write(chunk)
		total += n
		if err != nil {
			break
		}
	}
	if !isTimeout(err) {
		t.Fatalf("peer wrote %d bytes to a conn that stopped reading; err %v, want a timeout", total, err)
	}
	t.Logf("the peer's writes blocked after %d bytes", total)

	// A held Read ends at its deadline.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("held Read past its deadline: %v", err)
	}
	// Resuming delivers everything: nothing was lost.
	c.StopReading(false)
	got := readN(t, c, total, 10*time.Second)
	if !bytes.Equal(got, bytes.Repeat([]byte{0xA5}, total)) {
		t.Error("bytes changed while reading was stopped")
	}
}

func TestListenerAndDialer(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", Faults{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := NewDialer(Faults{})
	var wg sync.WaitGroup
	accepted := make(chan net.Conn, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 3 {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- nc
		}
	}()
	var dialled []net.Conn
	for range 3 {
		nc, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		dialled = append(dialled, nc)
	}
	wg.Wait()
	if got := len(ln.Conns()); got != 3 {
		t.Fatalf("listener tracks %d conns, want 3", got)
	}
	if got := len(d.Conns()); got != 3 {
		t.Fatalf("dialer tracks %d conns, want 3", got)
	}
	acc := []net.Conn{<-accepted, <-accepted, <-accepted}
	first := acc[0]
	if _, ok := first.(*Conn); !ok {
		t.Fatalf("accepted %T, want *Conn", first)
	}
	if ln.Conns()[0] != first {
		t.Error("Conns is not in accept order")
	}
	_ = first.Close()
	_ = dialled[0].Close()
	if got := len(ln.Conns()); got != 2 {
		t.Errorf("after Close the listener tracks %d conns, want 2", got)
	}
	if got := len(d.Conns()); got != 2 {
		t.Errorf("after Close the dialer tracks %d conns, want 2", got)
	}
	if ln.Count() != 3 || d.Count() != 3 {
		t.Errorf("counts %d, %d; want 3, 3", ln.Count(), d.Count())
	}
	// Faults set on the listener apply to connections accepted later.
	ln.SetFaults(Faults{CorruptEvery: 1})
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err == nil {
			accepted <- nc
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wg.Wait()
	srv := <-accepted
	if _, err := srv.Write([]byte{0, 0}); err != nil {
		t.Fatal(err)
	}
	for i, b := range readN(t, nc, 2, 5*time.Second) {
		if b == 0 {
			t.Errorf("byte %d not corrupted by the listener's new faults", i)
		}
	}
	for _, x := range append(append(dialled[1:], srv), acc[1:]...) {
		_ = x.Close()
	}
	if got := len(ln.Conns()) + len(d.Conns()); got != 0 {
		t.Errorf("%d conns still tracked after closing all", got)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:1"); err == nil {
		t.Error("dialling a closed port succeeded")
	}
}

// TestConcurrentControls toggles every fault while data flows both ways;
// run it under -race.
func TestConcurrentControls(t *testing.T) {
	c, s := pair(t, Faults{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { // writer
		defer wg.Done()
		buf := make([]byte, 512)
		for ctx.Err() == nil {
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
			_, _ = c.Write(buf)
		}
	}()
	go func() { // reader
		defer wg.Done()
		buf := make([]byte, 4096)
		for ctx.Err() == nil {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, _ = c.Read(buf)
		}
	}()
	go func() { // the peer drains and chatters
		defer wg.Done()
		buf := make([]byte, 4096)
		for ctx.Err() == nil {
			_ = s.SetDeadline(time.Now().Add(10 * time.Millisecond))
			_, _ = s.Read(buf)
			_, _ = s.Write(buf[:64])
		}
	}()
	go func() { // the chaos monkey
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			c.BlackHole(i%3 == 0)
			c.StopReading(i%4 == 0)
			c.SetLatency(time.Duration(i%3) * time.Millisecond)
			c.SetBandwidth(int64(i%2) * 1 << 20)
			c.Corrupt(float64(i%2) / 10)
			_ = c.Stats()
			time.Sleep(time.Millisecond) // pacing the toggles, not synchronisation
		}
	}()
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	testnet.Eventually(t, time.Second, func() bool {
		select {
		case <-c.Done():
			return true
		default:
			return false
		}
	}, "conn closed")
}
