package base

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// writer is the state of a connection's write loop, which owns everything
// sent on the connection: queued batches, compression, the resend window
// and keepalive pings.
type writer struct {
	c *Conn
	// bw is the buffer frames are written into, borrowed from bufs for
	// the length of a batch (nil between batches).
	bw       *bufio.Writer
	bufs     *sync.Pool
	frameNo  uint64
	scratch  []byte
	compBuf  []byte
	resend   resendWindow
	lastPing time.Time
	lastIn   uint64
	lastInAt time.Time
	lastOut  time.Time // when the last batch was written
	byeSent  bool
	// counters published once per batch
	framesOut, bytesOut, bodyOut uint64
	// hdr holds a frame header (and the hop byte): a local array would
	// escape through bufio.Writer.Write and cost an allocation per frame.
	hdr [protocol.FrameHeaderSize + 1]byte
	// armed is the write deadline last set (zero: set it again).
	armed time.Time
	// now is when the current batch started (set by armDeadline).
	now time.Time
	// retainedPub is the resend window's size last published.
	retainedPub int
}

func (w *writer) publish() {
	s := &w.c.stats
	s.framesOut.Add(w.framesOut)
	s.bytesOut.Add(w.bytesOut)
	s.bodyBytesOut.Add(w.bodyOut)
	w.framesOut, w.bytesOut, w.bodyOut = 0, 0, 0
	w.publishRetained()
}

// publishRetained updates the RetainedBytes gauge when it changed.
func (w *writer) publishRetained() {
	if w.resend.bytes != w.retainedPub {
		w.retainedPub = w.resend.bytes
		w.c.stats.retainedBytes.Store(int64(w.retainedPub))
	}
}

func (c *Conn) writeLoop() {
	w := &writer{
		c:        c,
		bufs:     writeBuffers(c.sock.cfg.writeBuffer),
		lastInAt: time.Now(),
		lastOut:  time.Now(),
	}
	err := w.run()
	w.resend = resendWindow{}
	w.publishRetained()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The peer took no batch within the write timeout.
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		c.fail(err)
	}
	// The TCP connection, not the TLS session: tls.Conn.Close would try to
	// send a close_notify alert, for up to 5 s, to a peer that may have
	// stopped reading. A graceful close has half-closed already.
	_ = c.raw.Close()
	close(c.writerDone)
}

// halfClose ends a graceful close after the Bye: it shuts the write side and
// lets the reader drain until the peer closes or the flush deadline passes.
// On a TLS link it half-closes the TCP connection under the session, after
// the last record: the Bye has said that the link ends, and a close_notify
// alert could wait up to 5 s, beyond the flush deadline, for a peer that
// stopped reading (docs/protocol.md §9.3).
func (w *writer) halfClose() {
	c := w.c
	if cw, ok := c.raw.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		return
	}
	by := time.Unix(0, c.flushBy.Load())
	_ = c.nc.SetReadDeadline(by)
	// The reader may be inside a slow handler: wait for it no longer than
	// the flush deadline either.
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case <-c.readEnded:
	case <-t.C:
	}
}

func (w *writer) run() error {
	c := w.c
	cfg := &c.sock.cfg
	// The tick also ages the resend window.
	tick := time.NewTicker(max(min(cfg.keepalive, cfg.resendAge)/2, time.Millisecond))
	defer tick.Stop()
	var ctrl, data []outItem
	for {
		select {
		case <-c.q.notify:
		case now := <-tick.C:
			if err := w.keepalive(now); err != nil {
				return err
			}
			continue
		case <-c.closing:
			if time.Now().UnixNano() >= c.flushBy.Load() {
				return nil
			}
			ctrl, data = c.q.take(ctrl, data)
			if err := w.writeBatch(ctrl, data); err != nil {
				return nil // the peer is gone or too slow; we are closing anyway
			}
			if w.byeSent {
				w.halfClose()
			}
			return nil
		}
		ctrl, data = c.q.take(ctrl, data)
		ctrl = w.appendLinkControl(ctrl)
		if err := w.writeBatch(ctrl, data); err != nil {
			return err
		}
		clear(ctrl)
		clear(data)
	}
}

// armDeadline bounds the next batch write. Setting a deadline updates a
// runtime timer, which costs more than a small batch, so the deadline is
// set an eighth of the write timeout further ahead than needed and left
// alone while at least the write timeout remains: a peer that stops
// reading is given up after between 1 and 9/8 write timeouts. While
// closing, the flush deadline applies exactly.
func (w *writer) armDeadline() {
	now := time.Now()
	w.now = now
	timeout := w.c.sock.cfg.writeTimeout
	if by := w.c.flushBy.Load(); by != 0 {
		d := now.Add(timeout)
		if by < d.UnixNano() {
			d = time.Unix(0, by)
		}
		w.armed = time.Time{}
		_ = w.c.nc.SetWriteDeadline(d)
		return
	}
	if !w.armed.IsZero() && w.armed.Sub(now) >= timeout {
		return
	}
	w.armed = now.Add(timeout + timeout/8)
	_ = w.c.nc.SetWriteDeadline(w.armed)
}

// writeBatch writes control items, then data, then any Bye, and flushes once.
func (w *writer) writeBatch(ctrl, data []outItem) error {
	if len(ctrl) == 0 && len(data) == 0 {
		return nil
	}
	w.bw = w.bufs.Get().(*bufio.Writer)
	w.bw.Reset(w.c.nc)
	defer w.giveBack()
	w.armDeadline()
	bye := -1
	for i := range ctrl {
		if ctrl[i].kind == kindBye {
			bye = i
			continue
		}
		if err := w.writeItem(&ctrl[i]); err != nil {
			return err
		}
	}
	for i := range data {
		if err := w.writeItem(&data[i]); err != nil {
			return err
		}
	}
	if bye >= 0 {
		if err := w.writeItem(&ctrl[bye]); err != nil {
			return err
		}
	}
	// Counted before the flush, so a peer never sees a frame that its
	// sender has not counted yet.
	w.publish()
	err := w.bw.Flush()
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	w.lastOut = w.now
	if bye >= 0 {
		w.byeSent = true
	}
	return nil
}

// writeBuffers returns the pool of write buffers of the given size. A link
// holds one only while it writes a batch: idle links, most of a large
// mesh's, hold none (two 64 KiB buffers per link by default, a write and
// a read buffer, were most of an idle node's memory).
func writeBuffers(size int) *sync.Pool {
	if p, ok := writeBufferPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := writeBufferPools.LoadOrStore(size, &sync.Pool{New: func() any { return bufio.NewWriterSize(nil, size) }})
	return p.(*sync.Pool)
}

// writeBufferPools holds a *sync.Pool of *bufio.Writer per buffer size.
var writeBufferPools sync.Map

// giveBack returns the batch's write buffer, emptied (whatever a failed
// write left in it is dropped with the link).
func (w *writer) giveBack() {
	w.bw.Reset(nil)
	w.bufs.Put(w.bw)
	w.bw = nil
}

func (w *writer) writeItem(it *outItem) error {
	if it.kind == kindResend {
		r, ok := w.resend.take(it.frameNo)
		if !ok {
			w.c.stats.resendMisses.Add(1)
			w.c.sock.noteDrop("resend asked for a frame no longer retained (resend window full or expired)", w.c)
			return nil
		}
		w.c.stats.resendsSent.Add(1)
		again := outItem{env: r.env, hops: r.hops, noComp: true}
		// The peer could not decompress it: stop using that method on this
		// link now rather than when its renegotiation arrives.
		w.c.dropPeerMethod(r.method)
		return w.writeItem(&again)
	}
	bodyLen := 1 + len(it.env)
	w.bodyOut += uint64(bodyLen)
	if !it.noComp && bodyLen >= w.c.sock.cfg.compressThreshold {
		if ref := w.c.sendCodec.Load(); ref != nil && ref.codec != nil {
			w.scratch = append(append(w.scratch[:0], it.hops), it.env...)
			comp, err := ref.codec.Compress(w.compBuf[:0], w.scratch)
			if err == nil && len(comp) < bodyLen {
				w.compBuf = comp
				protocol.PutFrameHeader(w.hdr[:], ref.codec.Method(), len(comp))
				if _, err := w.bw.Write(w.hdr[:protocol.FrameHeaderSize]); err != nil {
					return fmt.Errorf("write: %w", err)
				}
				if _, err := w.bw.Write(comp); err != nil {
					return fmt.Errorf("write: %w", err)
				}
				// Only compressed frames are kept for resends.
				cfg := &w.c.sock.cfg
				w.resend.expire(w.now.Add(-cfg.resendAge).UnixNano())
				w.resend.add(retainedFrame{frameNo: w.frameNo, env: it.env, at: w.now.UnixNano(), hops: it.hops, method: ref.codec.Method()},
					cfg.resendWindow, cfg.resendBytes)
				w.frameNo++
				w.framesOut++
				w.bytesOut += uint64(protocol.FrameHeaderSize + len(comp))
				return nil
			}
		}
	}
	protocol.PutFrameHeader(w.hdr[:], flags.None, bodyLen)
	w.hdr[protocol.FrameHeaderSize] = it.hops
	if _, err := w.bw.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := w.bw.Write(it.env); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	w.frameNo++
	w.framesOut++
	w.bytesOut += uint64(protocol.FrameHeaderSize + bodyLen)
	return nil
}

// keepalive pings a quiet peer and gives up on a silent one. It runs on the
// writer, so a ping needs no queue. It also pings when this end has sent
// nothing for the keepalive interval, whatever arrives: a peer whose
// reader is working through a backlog answers pings late, and what keeps
// it from calling this end silent is a frame from this end now and then.
func (w *writer) keepalive(now time.Time) error {
	c := w.c
	cfg := &c.sock.cfg
	w.resend.expire(now.Add(-cfg.resendAge).UnixNano())
	w.publishRetained()
	// The compression buffers grow to the largest frame compressed (up to
	// the frame limit, per link): keep no more than a write buffer's worth
	// between ticks. A link that keeps sending large frames reallocates
	// them once a tick.
	if cap(w.scratch) > cfg.writeBuffer {
		w.scratch = nil
	}
	if cap(w.compBuf) > cfg.writeBuffer {
		w.compBuf = nil
	}
	if in := c.framesIn.Load(); in != w.lastIn {
		w.lastIn, w.lastInAt = in, now
	}
	quiet := now.Sub(w.lastInAt)
	if quiet >= cfg.silence {
		return fmt.Errorf("%w: peer silent for %v", ErrTimeout, quiet.Round(time.Millisecond))
	}
	idle := now.Sub(w.lastOut)
	if (quiet >= cfg.keepalive || idle >= cfg.keepalive) && now.Sub(w.lastPing) >= cfg.keepalive {
		w.lastPing = now
		var nonce [8]byte
		binary.BigEndian.PutUint64(nonce[:], uint64(now.UnixNano()))
		env, _, err := c.sock.NewEnvelope(flags.Ping, flags.Ping, 0, [][]byte{nonce[:]})
		if err != nil {
			return err
		}
		c.stats.pings.Add(1)
		return w.writeBatch([]outItem{{env: env}}, nil)
	}
	return nil
}
