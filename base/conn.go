package base

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// PeerInfo describes the node at the other end of a connection.
type PeerInfo struct {
	// ID is the peer's node ID.
	ID protocol.NodeID
	// Addr is the address the peer accepts connections on, as it
	// advertised it (with an unspecified host replaced by the host it
	// connected from); "" if it does not listen.
	Addr string
	// RemoteAddr is the address of this connection's far end.
	RemoteAddr string
	// Outbound is true if this node dialled the connection.
	Outbound bool
	// Meta is the metadata the peer sent in its handshake.
	Meta map[string]string
	// Accept is the peer's accepted compression methods, most preferred first.
	Accept []flags.Method
	// Since is when the handshake completed.
	Since time.Time
}

// Conn is one established connection to a peer. It owns exactly two
// goroutines, a reader and a writer; Close waits for both.
type Conn struct {
	sock *Socket
	nc   net.Conn
	br   *bufio.Reader
	peer PeerInfo
	log  *slog.Logger

	q *sendQueue

	// Compression state. linkAccept is what this node accepts on this link
	// (shrunk after decompression failures); peerAccept is what the peer
	// accepts. sendCodec is derived from both and read by the writer.
	compMu     sync.Mutex
	linkAccept []flags.Method
	peerAccept []flags.Method
	sendCodec  atomic.Pointer[codecRef]

	// Resend bookkeeping, filled by the reader and drained by the writer at
	// its next batch, so that no request is lost to a full control lane.
	linkMu      sync.Mutex
	renegotiate bool     // our accepted list changed; tell the peer
	wantResend  []uint64 // frames we ask the peer to send again
	owedResend  []uint64 // frames the peer asked us to send again

	framesIn  atomic.Uint64 // published by the reader in batches
	stats     connCounters
	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error // set before closing is closed
	flushBy   atomic.Int64
	inHandler atomic.Bool

	writerDone chan struct{}
	readEnded  chan struct{} // the read loop returned (before unregistering)
	readerDone chan struct{}
}

type codecRef struct{ codec compress.Codec }

// connCounters are written by one goroutine each and read by Stats.
type connCounters struct {
	framesOut, bytesOut, bodyBytesOut atomic.Uint64
	bytesIn, bodyBytesIn              atomic.Uint64
	queueDrops, controlDrops          atomic.Uint64
	decodeErrors, decompressErrors    atomic.Uint64
	resendsSent, resendMisses         atomic.Uint64
	pings, pongs                      atomic.Uint64
}

// Peer returns what the handshake told about the peer.
func (c *Conn) Peer() PeerInfo { return c.peer }

// ID returns the peer's node ID.
func (c *Conn) ID() protocol.NodeID { return c.peer.ID }

// RemoteAddr returns the address of the connection's far end.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LocalAddr returns the address of this end of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Done is closed when the connection starts closing.
func (c *Conn) Done() <-chan struct{} { return c.closing }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	select {
	case <-c.closing:
		return c.closeErr
	default:
		return nil
	}
}

// SendMethod returns the compression method currently used to send large
// bodies to this peer.
func (c *Conn) SendMethod() flags.Method {
	if r := c.sendCodec.Load(); r != nil && r.codec != nil {
		return r.codec.Method()
	}
	return flags.None
}

// Send sends packets to this peer as a whisper. It blocks while the queue is
// full under the Block policy.
func (c *Conn) Send(ctx context.Context, packets ...[]byte) error {
	return c.SendMessage(ctx, flags.Whisper, flags.Whisper, packets...)
}

// SendMessage sends a message of the given main type and sub-flag to this
// peer only. It is not relayed further, whatever its type.
func (c *Conn) SendMessage(ctx context.Context, typ, sub flags.Flag, packets ...[]byte) error {
	env, err := c.sock.encode(typ, sub, 1, packets)
	if err != nil {
		return err
	}
	return c.SendEnvelope(ctx, 0, env)
}

// SendEnvelope queues an encoded envelope (see Socket.NewEnvelope) with the
// given hop count. env is shared, not copied: it must not change afterwards.
func (c *Conn) SendEnvelope(ctx context.Context, hops uint8, env []byte) error {
	err := c.q.push(ctx, outItem{env: env, hops: hops}, c.sock.cfg.queuePolicy == Block, c.closing)
	if errors.Is(err, ErrQueueFull) {
		c.stats.queueDrops.Add(1)
		c.sock.noteDrop("send queue full", c)
	}
	return err
}

// Forward queues an envelope without ever blocking: relays must not stall
// the connection they read from. A full queue drops it, counts it and
// returns ErrQueueFull.
func (c *Conn) Forward(hops uint8, env []byte) error {
	err := c.q.push(context.Background(), outItem{env: env, hops: hops}, false, c.closing)
	if errors.Is(err, ErrQueueFull) {
		c.stats.queueDrops.Add(1)
		c.sock.noteDrop("send queue full (relay)", c)
	}
	return err
}

// SendControl queues an envelope on the control lane, which user traffic
// cannot starve. It never blocks; a full lane drops and counts it.
func (c *Conn) SendControl(env []byte) error {
	if !c.q.pushControl(outItem{env: env}) {
		if c.Err() != nil {
			return ErrClosed
		}
		c.stats.controlDrops.Add(1)
		c.sock.noteDrop("control queue full", c)
		return ErrQueueFull
	}
	return nil
}

// Close sends what is queued (for at most the flush timeout), tells the peer
// goodbye, reads what the peer still had in flight, closes the connection
// and waits for its goroutines. It is idempotent. Called from a handler
// running on this connection, it waits for neither goroutine: the reader
// is the caller, and the writer finishes only once the reader has drained
// what the peer still sends, after the handler returns (the socket still
// waits for both on Close).
func (c *Conn) Close() error {
	c.closeWithBye("closed")
	if c.inHandler.Load() {
		return nil
	}
	<-c.writerDone
	<-c.readerDone
	return nil
}

// closeWithBye closes gracefully without waiting: the writer flushes the
// queue, sends a Bye with the reason and half-closes; the reader goes on
// until the peer, having read the Bye, closes its end, so nothing either
// side had in flight is lost (two ends that drop a duplicate connection
// rely on this).
func (c *Conn) closeWithBye(reason string) {
	env, _, err := c.sock.NewEnvelope(flags.Renegotiate, flags.Bye, 0, [][]byte{[]byte(reason)})
	if err == nil {
		c.q.pushControl(outItem{env: env, kind: kindBye})
	}
	c.shutdown(fmt.Errorf("%w: %s", ErrClosed, reason), true)
}

// shutdown starts closing: the writer flushes (if asked) and closes the
// socket, which ends the reader.
func (c *Conn) shutdown(reason error, flush bool) {
	c.closeOnce.Do(func() {
		deadline := time.Now()
		if flush {
			deadline = deadline.Add(c.sock.cfg.flushTimeout)
		}
		c.flushBy.Store(deadline.UnixNano())
		c.closeErr = reason
		c.q.close()
		close(c.closing)
		_ = c.nc.SetWriteDeadline(deadline)
	})
}

// fail closes the connection because of an error, without flushing.
func (c *Conn) fail(err error) { c.shutdown(err, false) }

// start launches the reader and writer.
func (c *Conn) start() {
	c.sock.wg.Add(2)
	go c.writeLoop()
	go c.readLoop()
}

// ---- writer ----

type writer struct {
	c        *Conn
	bw       *bufio.Writer
	frameNo  uint64
	scratch  []byte
	compBuf  []byte
	retained []retainedFrame // allocated at the first compressed frame
	lastPing time.Time
	lastIn   uint64
	lastInAt time.Time
	byeSent  bool
	// counters published once per batch
	framesOut, bytesOut, bodyOut uint64
	// hdr holds a frame header (and the hop byte): a local array would
	// escape through bufio.Writer.Write and cost an allocation per frame.
	hdr [protocol.FrameHeaderSize + 1]byte
	// armed is the write deadline last set (zero: set it again).
	armed time.Time
}

func (w *writer) publish() {
	s := &w.c.stats
	s.framesOut.Add(w.framesOut)
	s.bytesOut.Add(w.bytesOut)
	s.bodyBytesOut.Add(w.bodyOut)
	w.framesOut, w.bytesOut, w.bodyOut = 0, 0, 0
}

// retainedFrame is a compressed frame kept for a possible resend.
type retainedFrame struct {
	frameNo uint64
	item    outItem
	method  flags.Method
	valid   bool
}

func (c *Conn) writeLoop() {
	defer c.sock.wg.Done()
	w := &writer{
		c:        c,
		bw:       bufio.NewWriterSize(c.nc, c.sock.cfg.writeBuffer),
		lastInAt: time.Now(),
	}
	err := w.run()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The peer took no batch within the write timeout.
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		c.fail(err)
	}
	_ = c.nc.Close()
	close(c.writerDone)
}

// halfClose ends a graceful close after the Bye: it shuts the write side and
// lets the reader drain until the peer closes or the flush deadline passes.
func (w *writer) halfClose() {
	c := w.c
	if cw, ok := c.nc.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
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
	tick := time.NewTicker(cfg.keepalive / 2)
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
	if bye >= 0 {
		w.byeSent = true
	}
	return nil
}

func (w *writer) writeItem(it *outItem) error {
	if it.kind == kindResend {
		var r *retainedFrame
		if len(w.retained) > 0 {
			r = &w.retained[it.frameNo%uint64(len(w.retained))]
		}
		if r == nil || !r.valid || r.frameNo != it.frameNo {
			w.c.stats.resendMisses.Add(1)
			w.c.sock.noteDrop("resend asked for a frame no longer retained", w.c)
			return nil
		}
		w.c.stats.resendsSent.Add(1)
		again := r.item
		again.noComp = true
		r.valid = false
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
				if w.retained == nil {
					// Only links that compress keep frames for resends.
					w.retained = make([]retainedFrame, w.c.sock.cfg.resendWindow)
				}
				r := &w.retained[w.frameNo%uint64(len(w.retained))]
				*r = retainedFrame{frameNo: w.frameNo, item: *it, method: ref.codec.Method(), valid: true}
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
// writer, so a ping needs no queue.
func (w *writer) keepalive(now time.Time) error {
	c := w.c
	cfg := &c.sock.cfg
	if in := c.framesIn.Load(); in != w.lastIn {
		w.lastIn, w.lastInAt = in, now
	}
	quiet := now.Sub(w.lastInAt)
	if quiet >= cfg.silence {
		return fmt.Errorf("%w: peer silent for %v", ErrTimeout, quiet.Round(time.Millisecond))
	}
	if quiet >= cfg.keepalive && now.Sub(w.lastPing) >= cfg.keepalive {
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

// ---- reader ----

func (c *Conn) readLoop() {
	defer c.sock.wg.Done()
	err := c.read()
	close(c.readEnded)
	c.fail(err)
	<-c.writerDone
	c.sock.unregister(c)
	close(c.readerDone)
}

// Reader allocation: small frame bodies are carved from a slab and
// Messages from a block, so the hot path allocates once per many messages.
// A message a user keeps holds its slab (at most slabSize) alive.
const (
	slabSize     = 16 << 10
	slabMaxFrame = 2 << 10 // larger bodies get a buffer of their own
	msgBlock     = 32
)

// reader is the state of a connection's read loop.
type reader struct {
	slab []byte
	msgs []Message
	// scratch is where a message is decoded; it is copied into msgs only
	// if no prefilter drops it.
	scratch Message
	// counters not yet published to connCounters: the reader publishes
	// them whenever it is about to wait for the network.
	frames, bytes, body uint64
}

func (r *reader) publish(c *Conn) {
	if r.frames == 0 {
		return
	}
	c.framesIn.Add(r.frames)
	c.stats.bytesIn.Add(r.bytes)
	c.stats.bodyBytesIn.Add(r.body)
	r.frames, r.bytes, r.body = 0, 0, 0
}

func (r *reader) newMessage() *Message {
	if len(r.msgs) == 0 {
		r.msgs = make([]Message, msgBlock)
	}
	m := &r.msgs[0]
	r.msgs = r.msgs[1:]
	return m
}

func (c *Conn) read() error {
	cfg := &c.sock.cfg
	fr := protocol.NewFrameReader(c.br, cfg.maxFrameSize)
	var r reader
	defer r.publish(c)
	var frameNo uint64 // this side's count of frames read, for resends
	failures := 0
	for {
		if c.br.Buffered() == 0 {
			r.publish(c)
		}
		if cap(r.slab) < slabMaxFrame {
			r.slab = make([]byte, 0, slabSize)
		}
		codec, body, err := fr.ReadFrame(r.slab)
		if err != nil {
			select {
			case <-c.closing:
				return c.closeErr
			default:
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: peer closed the connection", ErrClosed)
			}
			if errors.Is(err, protocol.ErrFrameTooLarge) || errors.Is(err, protocol.ErrMalformed) {
				c.stats.decodeErrors.Add(1)
				c.log.Warn("closing connection: bad frame", "err", err)
				return err
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w: read: %w", ErrTimeout, err)
			}
			// Resets, broken pipes, truncation: the link is gone.
			return fmt.Errorf("%w: connection lost: %w", ErrClosed, err)
		}
		inSlab, slab := len(body) <= cap(r.slab), r.slab
		if inSlab {
			// The body was read into the slab: cap it so nothing can
			// append into the next one.
			body = body[:len(body):len(body)]
			r.slab = r.slab[len(body):len(body)]
		}
		n := frameNo
		frameNo++
		r.frames++
		r.bytes += uint64(protocol.FrameHeaderSize + len(body))
		if codec != flags.None {
			plain, derr := c.decompress(codec, body)
			if derr != nil {
				failures++
				if failures > maxPendingResends(cfg.resendWindow) || !c.decompressFailed(n, codec, derr) {
					return fmt.Errorf("%w: %d consecutive frames failed to decompress", protocol.ErrMalformed, failures)
				}
				continue
			}
			body = plain
		}
		failures = 0
		r.body += uint64(len(body))
		kept, err := c.handleBody(&r, body)
		if err != nil {
			c.stats.decodeErrors.Add(1)
			c.log.Warn("closing connection: bad message", "err", err)
			return err
		}
		if !kept && inSlab {
			// A prefilter dropped it and nothing holds its bytes: the
			// next frame reuses them.
			r.slab = slab
		}
	}
}

func (c *Conn) decompress(m flags.Method, body []byte) ([]byte, error) {
	codec, ok := c.sock.cfg.codecs.Get(m)
	if !ok {
		return nil, fmt.Errorf("%w: %s", compress.ErrUnknownMethod, m)
	}
	return codec.Decompress(nil, body, c.sock.cfg.maxFrameSize)
}

// decompressFailed stops accepting the method on this link and asks for the
// frame again, uncompressed: the message is not lost. It reports false when
// more frames are waiting for a resend than the link may keep.
func (c *Conn) decompressFailed(frameNo uint64, m flags.Method, err error) bool {
	c.stats.decompressErrors.Add(1)
	c.compMu.Lock()
	before := len(c.linkAccept)
	c.linkAccept = slices.DeleteFunc(slices.Clone(c.linkAccept), func(x flags.Method) bool { return x == m })
	changed := len(c.linkAccept) != before
	c.compMu.Unlock()
	if changed {
		c.log.Warn("frames fail to decompress; no longer accepting the method on this link, asking for them uncompressed",
			"method", m, "frame", frameNo, "err", err)
	}
	c.linkMu.Lock()
	ok := len(c.wantResend) < maxPendingResends(c.sock.cfg.resendWindow)
	if ok {
		c.wantResend = append(c.wantResend, frameNo)
		c.renegotiate = c.renegotiate || changed
	}
	c.linkMu.Unlock()
	c.q.wake()
	return ok
}

// maxPendingResends bounds the resend requests waiting on either side.
func maxPendingResends(window int) int { return 4 * window }

func (c *Conn) sendRenegotiate() {
	c.linkMu.Lock()
	c.renegotiate = true
	c.linkMu.Unlock()
	c.q.wake()
}

// resendsPerMessage bounds the frame numbers one Resend message carries.
const resendsPerMessage = 512

// appendLinkControl turns the pending renegotiation and resend requests
// into items for the writer's next batch (writer goroutine only).
func (w *writer) appendLinkControl(ctrl []outItem) []outItem {
	c := w.c
	c.linkMu.Lock()
	reneg, want, owed := c.renegotiate, c.wantResend, c.owedResend
	c.renegotiate, c.wantResend, c.owedResend = false, nil, nil
	c.linkMu.Unlock()
	if reneg {
		c.compMu.Lock()
		accept := methodBytes(c.linkAccept)
		c.compMu.Unlock()
		if env, _, err := c.sock.NewEnvelope(flags.Renegotiate, flags.Renegotiate, 0, [][]byte{accept}); err == nil {
			ctrl = append(ctrl, outItem{env: env})
		}
	}
	for len(want) > 0 {
		n := min(len(want), resendsPerMessage)
		nums := make([]byte, 0, 8*n)
		for _, f := range want[:n] {
			nums = binary.BigEndian.AppendUint64(nums, f)
		}
		want = want[n:]
		if env, _, err := c.sock.NewEnvelope(flags.Renegotiate, flags.Resend, 0, [][]byte{nums}); err == nil {
			ctrl = append(ctrl, outItem{env: env})
		}
	}
	for _, f := range owed {
		ctrl = append(ctrl, outItem{kind: kindResend, frameNo: f})
	}
	return ctrl
}

func methodBytes(ms []flags.Method) []byte {
	b := make([]byte, len(ms))
	for i, m := range ms {
		b[i] = byte(m)
	}
	return b
}

// dropPeerMethod stops sending with m on this link.
func (c *Conn) dropPeerMethod(m flags.Method) {
	c.compMu.Lock()
	if slices.Contains(c.peerAccept, m) {
		c.peerAccept = slices.DeleteFunc(slices.Clone(c.peerAccept), func(x flags.Method) bool { return x == m })
		c.updateSendCodecLocked()
	}
	c.compMu.Unlock()
}

// setPeerAccept records the peer's accepted list and recomputes the send codec.
func (c *Conn) setPeerAccept(accept []flags.Method) {
	c.compMu.Lock()
	c.peerAccept = accept
	c.updateSendCodecLocked()
	c.compMu.Unlock()
}

// setLocalAccept changes what this node accepts and prefers on this link
// and tells the peer.
func (c *Conn) setLocalAccept(accept []flags.Method) {
	c.compMu.Lock()
	c.linkAccept = slices.Clone(accept)
	c.updateSendCodecLocked()
	c.compMu.Unlock()
	c.sendRenegotiate()
}

func (c *Conn) updateSendCodecLocked() {
	m := compress.Negotiate(c.sock.compressionList(), c.peerAccept)
	ref := &codecRef{}
	if m != flags.None {
		if codec, ok := c.sock.cfg.codecs.Get(m); ok {
			ref.codec = codec
		}
	}
	c.sendCodec.Store(ref)
}

// handleBody decodes one message body and handles link control itself;
// everything else goes to the prefilters, then the socket's handler chain.
// kept is false when a prefilter dropped the message: nothing refers to
// body any more.
func (c *Conn) handleBody(r *reader, body []byte) (kept bool, err error) {
	hops, env, err := protocol.SplitMessage(body)
	if err != nil {
		return true, err
	}
	m := &r.scratch
	*m = Message{Conn: c, sock: c.sock, envelope: env}
	e := protocol.Envelope{Packets: m.inline[:0]}
	if err := protocol.DecodeEnvelope(env, &e, c.sock.cfg.limits); err != nil {
		return true, err
	}
	switch e.Type {
	case flags.Renegotiate:
		return true, c.handleLinkControl(&e)
	case flags.Ping:
		c.stats.pongs.Add(1)
		pong, _, err := c.sock.NewEnvelope(flags.Pong, flags.Pong, 0, e.Packets)
		if err == nil {
			_ = c.SendControl(pong)
		}
		return true, nil
	case flags.Pong:
		return true, nil
	}
	m.Type, m.Flag, m.Sender, m.Seq = e.Type, e.Sub, e.Sender, e.Seq
	m.Time = time.Unix(0, e.Time)
	m.Hops = hops + 1
	m.HopLimit = e.HopLimit
	m.Packets = e.Packets
	m.ID = c.sock.hasher.Sum(env)
	for _, drop := range c.sock.cfg.prefilters {
		if drop(m) {
			return false, nil
		}
	}
	km := r.newMessage()
	*km = *m
	if len(m.Packets) <= len(m.inline) {
		// The packets live in the scratch message's inline array.
		km.Packets = km.inline[:len(m.Packets)]
	}
	*m = Message{} // holds nothing alive
	c.inHandler.Store(true)
	c.sock.dispatch(km)
	c.inHandler.Store(false)
	return true, nil
}

func (c *Conn) handleLinkControl(e *protocol.Envelope) error {
	switch e.Sub {
	case flags.Renegotiate:
		if len(e.Packets) != 1 || len(e.Packets[0]) > protocol.MaxAcceptMethods {
			return fmt.Errorf("%w: renegotiate message", protocol.ErrMalformed)
		}
		accept := make([]flags.Method, len(e.Packets[0]))
		for i, b := range e.Packets[0] {
			accept[i] = flags.Method(b)
		}
		c.setPeerAccept(accept)
		c.log.Debug("peer renegotiated compression", "accept", accept, "send", c.SendMethod())
	case flags.Resend:
		if len(e.Packets) != 1 || len(e.Packets[0]) == 0 || len(e.Packets[0])%8 != 0 {
			return fmt.Errorf("%w: resend message", protocol.ErrMalformed)
		}
		c.linkMu.Lock()
		for b := e.Packets[0]; len(b) > 0; b = b[8:] {
			if len(c.owedResend) >= maxPendingResends(c.sock.cfg.resendWindow) {
				c.stats.resendMisses.Add(1)
				continue
			}
			c.owedResend = append(c.owedResend, binary.BigEndian.Uint64(b))
		}
		c.linkMu.Unlock()
		c.q.wake()
	case flags.Bye:
		reason := ""
		if len(e.Packets) > 0 {
			reason = string(e.Packets[0])
		}
		c.log.Debug("peer closed the link", "reason", reason)
		// Flush what is queued, then close; the peer reads until then.
		c.shutdown(fmt.Errorf("%w: peer said bye: %s", ErrClosed, reason), true)
	default:
		c.log.Debug("ignoring unknown link control message", "sub", e.Sub)
	}
	return nil
}
