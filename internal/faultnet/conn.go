// Package faultnet injects network faults into net.Conn and net.Listener
// for tests: latency, a bandwidth cap, abrupt resets, black holes, bit
// corruption and a reader that stops reading.
//
// Every fault is a control on a [Conn] that can be changed at any time,
// from any goroutine, while the connection is in use. Faults act on the
// wrapped side only: a Conn's Write is what its peer receives late, slowly
// or corrupted, and a Conn's Read is what stops or vanishes. Deadlines keep
// working through the wrapper, including for a Read that the wrapper itself
// is holding back.
//
// A Conn owns at most one goroutine (the delayed-delivery pipeline, started
// the first time a latency applies); Close stops it and waits for it.
package faultnet

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Faults are the initial fault settings of a wrapped connection. The zero
// value injects nothing.
type Faults struct {
	// Latency delays every written byte by this much (one way), preserving
	// order.
	Latency time.Duration
	// Bandwidth caps writes at this many bytes per second; 0 is unlimited.
	Bandwidth int64
	// CorruptProb flips one bit in each written byte with this probability.
	CorruptProb float64
	// CorruptEvery flips one bit in every n-th written byte (0: never).
	// It takes precedence over CorruptProb.
	CorruptEvery int
	// Seed seeds the random choices (which bytes and bits are corrupted),
	// so that a run can be repeated.
	Seed uint64
	// Capture records the bytes the connection writes (as they go on the
	// wire, corrupted if so) and reads, from the first byte on, up to
	// MaxCapture bytes each way, for Captured: a test can look at what an
	// eavesdropper on the link would see.
	Capture bool
}

// MaxCapture bounds what a capturing Conn records, in bytes, each way.
const MaxCapture = 16 << 20

// MaxInFlight bounds the bytes a Conn holds in its latency pipeline; a
// Write that would exceed it waits (until the write deadline) like a full
// socket buffer.
const MaxInFlight = 4 << 20

// Stats counts what a Conn did.
type Stats struct {
	// BytesWritten reached the underlying connection; BytesRead came from it
	// and were returned to the caller.
	BytesWritten, BytesRead int64
	// WritesDiscarded and ReadsDiscarded are bytes swallowed by a black hole.
	WritesDiscarded, ReadsDiscarded int64
	// BitsFlipped counts corrupted bytes (one bit each).
	BitsFlipped int64
}

// Conn is a net.Conn with injectable faults. It is safe for concurrent use.
type Conn struct {
	nc      net.Conn
	onClose func(*Conn)

	mu        sync.Mutex
	latency   time.Duration
	rate      int64
	corruptP  float64
	corruptN  int
	sinceFlip int
	rng       *rand.Rand
	blackHole bool
	stopRead  bool
	cut       bool
	changed   chan struct{} // closed and replaced when a control changes

	// latency pipeline, guarded by mu
	pipe      []chunk
	pipeBytes int
	pipeSpace chan struct{} // closed and replaced when the pipeline drains a chunk
	pipeKick  chan struct{} // wakes the delivery goroutine; capacity 1
	pipeErr   error         // a failed delayed write; sticky
	pipeDone  chan struct{} // nil until the delivery goroutine starts

	wmu    sync.Mutex // serialises Write, so chunks keep their order
	freeAt time.Time  // bandwidth: when the simulated link is free again (wmu)

	rd, wd *deadline

	capMu               sync.Mutex
	capture             bool
	capWritten, capRead []byte

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error

	written, read, wDiscarded, rDiscarded, flipped atomic.Int64
}

type chunk struct {
	due time.Time
	b   []byte
}

// Wrap returns nc wrapped with the given initial faults.
func Wrap(nc net.Conn, f Faults) *Conn {
	c := &Conn{
		nc:        nc,
		latency:   max(f.Latency, 0),
		rate:      max(f.Bandwidth, 0),
		corruptP:  f.CorruptProb,
		corruptN:  max(f.CorruptEvery, 0),
		rng:       rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15)),
		changed:   make(chan struct{}),
		pipeSpace: make(chan struct{}),
		pipeKick:  make(chan struct{}, 1),
		rd:        newDeadline(),
		wd:        newDeadline(),
		closed:    make(chan struct{}),
		capture:   f.Capture,
	}
	return c
}

// Captured returns copies of the bytes recorded so far (Faults.Capture):
// what the connection wrote and what it read, each up to MaxCapture.
func (c *Conn) Captured() (written, read []byte) {
	c.capMu.Lock()
	defer c.capMu.Unlock()
	return bytes.Clone(c.capWritten), bytes.Clone(c.capRead)
}

// record appends b to a capture, within MaxCapture.
func (c *Conn) record(to *[]byte, b []byte) {
	if !c.capture || len(b) == 0 {
		return
	}
	c.capMu.Lock()
	defer c.capMu.Unlock()
	if room := MaxCapture - len(*to); room > 0 {
		*to = append(*to, b[:min(len(b), room)]...)
	}
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.nc }

// LocalAddr returns the underlying connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the underlying connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed when the connection is closed (or cut).
func (c *Conn) Done() <-chan struct{} { return c.closed }

// Stats returns what the connection has done so far.
func (c *Conn) Stats() Stats {
	return Stats{
		BytesWritten:    c.written.Load(),
		BytesRead:       c.read.Load(),
		WritesDiscarded: c.wDiscarded.Load(),
		ReadsDiscarded:  c.rDiscarded.Load(),
		BitsFlipped:     c.flipped.Load(),
	}
}

// control runs f under the lock and wakes everything waiting on a control.
func (c *Conn) control(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// SetLatency delays every byte written from now on by d (one way). Order is
// preserved: bytes written earlier are never overtaken. 0 removes the delay
// (bytes already in flight still arrive at their time).
func (c *Conn) SetLatency(d time.Duration) { c.control(func() { c.latency = max(d, 0) }) }

// SetBandwidth caps writes at bytesPerSec; 0 removes the cap.
func (c *Conn) SetBandwidth(bytesPerSec int64) { c.control(func() { c.rate = max(bytesPerSec, 0) }) }

// Corrupt flips one random bit in each written byte with probability prob
// (0 turns corruption off). It replaces a CorruptEvery setting.
func (c *Conn) Corrupt(prob float64) {
	c.control(func() { c.corruptP, c.corruptN, c.sinceFlip = prob, 0, 0 })
}

// CorruptEvery flips one random bit in every n-th written byte (0 turns
// corruption off). It replaces a Corrupt setting.
func (c *Conn) CorruptEvery(n int) {
	c.control(func() { c.corruptP, c.corruptN, c.sinceFlip = 0, max(n, 0), 0 })
}

// BlackHole makes the peer vanish without a FIN (on) or come back (off).
// While on, writes succeed and are discarded, and reads block until the
// connection is closed or the read deadline passes; bytes that arrive
// meanwhile are discarded.
func (c *Conn) BlackHole(on bool) { c.control(func() { c.blackHole = on }) }

// StopReading stops reading from the socket (on) or resumes (off). While
// on, Read blocks (until Close or the read deadline) and the kernel buffers
// fill until the peer's writes block; nothing is lost.
func (c *Conn) StopReading(on bool) { c.control(func() { c.stopRead = on }) }

// Cut closes the connection abruptly: the peer sees a reset (the TCP
// connection is closed with SO_LINGER 0, so unsent data is dropped), and
// local reads and writes fail with ECONNRESET.
func (c *Conn) Cut() error {
	c.control(func() { c.cut = true })
	if l, ok := c.nc.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	return c.Close()
}

// Close closes the connection, stops the delivery goroutine and waits for
// it. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = c.nc.Close()
		c.rd.stop()
		c.wd.stop()
		c.mu.Lock()
		done := c.pipeDone
		c.mu.Unlock()
		if done != nil {
			<-done
		}
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return c.closeErr
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return c.nc.SetDeadline(t)
}

// SetReadDeadline sets the read deadline; it also ends a Read that the
// wrapper is holding back (black hole, stopped reading).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return c.nc.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline; it also ends a Write waiting for
// bandwidth or pipeline room. Delayed bytes are written to the socket under
// the deadline in force when their time comes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return c.nc.SetWriteDeadline(t)
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.nc.LocalAddr().Network(), Source: c.nc.LocalAddr(), Addr: c.nc.RemoteAddr(), Err: err}
}

// closedError is what an operation on a closed Conn returns.
func (c *Conn) closedError(op string) error {
	c.mu.Lock()
	cut := c.cut
	c.mu.Unlock()
	if cut {
		return c.opError(op, syscall.ECONNRESET)
	}
	return c.opError(op, net.ErrClosed)
}

// Read reads from the connection, unless a black hole or StopReading holds
// it back.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if isClosed(c.closed) {
			return 0, c.closedError("read")
		}
		c.mu.Lock()
		hold := c.blackHole || c.stopRead
		changed := c.changed
		c.mu.Unlock()
		if hold {
			select {
			case <-changed:
				continue
			case <-c.closed:
				return 0, c.closedError("read")
			case <-c.rd.wait():
				return 0, c.opError("read", os.ErrDeadlineExceeded)
			}
		}
		n, err := c.nc.Read(p)
		if isClosed(c.closed) {
			return 0, c.closedError("read")
		}
		c.mu.Lock()
		bh := c.blackHole
		c.mu.Unlock()
		// A Read that was already in the socket when the black hole opened:
		// a vanished peer sends nothing, not even a FIN or a reset, so
		// swallow what came and hold the reader. Only a deadline gets out.
		if bh && !errors.Is(err, os.ErrDeadlineExceeded) {
			c.rDiscarded.Add(int64(n))
			continue
		}
		c.read.Add(int64(n))
		c.record(&c.capRead, p[:n])
		return n, err
	}
}

// Write writes p, subject to the black hole, corruption, the bandwidth cap
// and the latency, in that order.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if isClosed(c.closed) {
		return 0, c.closedError("write")
	}
	if c.wd.expired() {
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	c.mu.Lock()
	if err := c.pipeErr; err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if c.blackHole {
		c.mu.Unlock()
		c.wDiscarded.Add(int64(len(p)))
		return len(p), nil
	}
	buf := c.corruptLocked(p)
	c.mu.Unlock()
	c.record(&c.capWritten, buf)

	done := 0
	for done < len(buf) {
		piece := buf[done:]
		if rate := c.currentRate(); rate > 0 {
			// Pieces of about 20 ms each keep the pace smooth.
			piece = piece[:min(len(piece), int(max(rate/50, 1)), 64<<10)]
			if err := c.throttle(len(piece), rate); err != nil {
				return done, err
			}
		} else {
			c.freeAt = time.Time{}
		}
		n, err := c.send(piece)
		done += n
		if err != nil {
			return done, err
		}
	}
	return len(p), nil
}

func (c *Conn) currentRate() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rate
}

// corruptLocked returns p, or a corrupted copy of it; the caller's buffer is
// never modified.
func (c *Conn) corruptLocked(p []byte) []byte {
	if c.corruptN == 0 && c.corruptP <= 0 {
		return p
	}
	buf := bytes.Clone(p)
	for i := range buf {
		flip := false
		if c.corruptN > 0 {
			c.sinceFlip++
			if c.sinceFlip >= c.corruptN {
				c.sinceFlip = 0
				flip = true
			}
		} else {
			flip = c.corruptP >= 1 || c.rng.Float64() < c.corruptP
		}
		if flip {
			buf[i] ^= 1 << c.rng.IntN(8)
			c.flipped.Add(1)
		}
	}
	return buf
}

// throttle waits until the simulated link has sent n more bytes at rate.
func (c *Conn) throttle(n int, rate int64) error {
	now := time.Now()
	start := now
	if c.freeAt.After(now) {
		start = c.freeAt
	}
	c.freeAt = start.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
	wait := time.Until(c.freeAt)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-c.closed:
		return c.closedError("write")
	case <-c.wd.wait():
		c.freeAt = time.Now()
		return c.opError("write", os.ErrDeadlineExceeded)
	}
}

// send writes piece now, or queues it for delayed delivery when a latency
// applies or earlier bytes are still in flight.
func (c *Conn) send(piece []byte) (int, error) {
	c.mu.Lock()
	if c.latency == 0 && len(c.pipe) == 0 && c.pipeErr == nil {
		c.mu.Unlock()
		n, err := c.nc.Write(piece)
		c.written.Add(int64(n))
		if err != nil && isClosed(c.closed) {
			return n, c.closedError("write")
		}
		return n, err
	}
	for c.pipeBytes > 0 && c.pipeBytes+len(piece) > MaxInFlight && c.pipeErr == nil {
		space := c.pipeSpace
		c.mu.Unlock()
		select {
		case <-space:
		case <-c.closed:
			return 0, c.closedError("write")
		case <-c.wd.wait():
			return 0, c.opError("write", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
	}
	if err := c.pipeErr; err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if c.pipeDone == nil {
		if isClosed(c.closed) {
			c.mu.Unlock()
			return 0, c.closedError("write")
		}
		c.pipeDone = make(chan struct{})
		go c.deliver(c.pipeDone)
	}
	c.pipe = append(c.pipe, chunk{due: time.Now().Add(c.latency), b: bytes.Clone(piece)})
	c.pipeBytes += len(piece)
	c.mu.Unlock()
	select {
	case c.pipeKick <- struct{}{}:
	default:
	}
	return len(piece), nil
}

// deliver writes queued chunks to the socket when they are due. It is the
// Conn's only goroutine; Close stops it (closing the socket ends a blocked
// write) and waits for it.
func (c *Conn) deliver(done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.pipe) == 0 {
			c.mu.Unlock()
			select {
			case <-c.pipeKick:
				continue
			case <-c.closed:
				return
			}
		}
		ch := c.pipe[0]
		c.mu.Unlock()
		if d := time.Until(ch.due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-c.closed:
				return
			}
		}
		n, err := c.nc.Write(ch.b)
		c.written.Add(int64(n))
		c.mu.Lock()
		c.pipe[0] = chunk{}
		c.pipe = c.pipe[1:]
		c.pipeBytes -= len(ch.b)
		if err != nil {
			c.pipeErr = err
			c.pipe, c.pipeBytes = nil, 0
		}
		close(c.pipeSpace)
		c.pipeSpace = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}
