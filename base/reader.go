package base

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/lifecycle"
	"github.com/meshsock/meshsock/protocol"
)

func (c *Conn) readLoop() {
	c.readerID.Store(lifecycle.GoroutineID())
	err := c.read()
	close(c.readEnded)
	c.fail(err)
	<-c.writerDone
	c.sock.unregister(c)
	close(c.readerDone)
}

// Reader allocation: small frame bodies are carved from a slab and their
// Messages from a block, so the hot path allocates once per many messages.
// A message a user keeps holds its slab (at most slabSize) and its block
// alive. A body too large for a slab gets a buffer and a Message of its
// own: a block would keep the bodies of all its messages alive until the
// last of them is dropped, up to msgBlock large bodies long after their
// users let them go.
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
	// them whenever it is about to wait for the network, and under a
	// backlog every publishFrames frames or publishBytes bytes, so the
	// writer's keepalive sees frames arriving all along.
	frames, bytes, body uint64
}

// Publishing bounds under a steady backlog, when the read buffer never
// runs empty: a few atomic adds per many frames, often enough that the
// silence timeout measures what arrives (a frame of the largest size is
// published as soon as it has been handled).
const (
	publishFrames = 64
	publishBytes  = 1 << 20
)

// frameBuffered reports whether br holds a whole frame, so that reading it
// cannot wait for the network.
func frameBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 4 {
		return false
	}
	hdr, err := br.Peek(4)
	return err == nil && uint64(n) >= 4+uint64(binary.BigEndian.Uint32(hdr))
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
		if !frameBuffered(c.br) || r.frames >= publishFrames || r.body >= publishBytes {
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
			if inSlab {
				// Nothing refers to the compressed bytes any more: the
				// next frame reuses them, and the message lives in the
				// decompressed buffer, not in the slab.
				r.slab, inSlab = slab, false
			}
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
		kept, err := c.handleBody(&r, body, inSlab)
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

// handleBody decodes one message body and handles link control itself;
// everything else goes to the prefilters, then the socket's handler chain.
// kept is false when a prefilter dropped the message: nothing refers to
// body any more. inSlab says body lives in the reader's slab.
func (c *Conn) handleBody(r *reader, body []byte, inSlab bool) (kept bool, err error) {
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
	m.HopLimit = e.HopLimit
	m.Packets = e.Packets
	m.signed = len(e.Auth) > 0
	m.ID = c.sock.hasher.Sum(env)
	if hops >= e.HopLimit {
		// The hop byte counts the links crossed before this one, so a
		// message within its limit has hops+1 <= HopLimit. Anything else
		// was relayed past its limit or forged; dropping it here also
		// keeps hops+1 from wrapping (255 + 1 would read as 0).
		c.sock.ctr.hopDrops.Add(1)
		c.sock.noteDrop("message past its hop limit dropped", c)
		if f := c.sock.layer.Dropped; f != nil {
			m.Hops = hops // as received: hops+1 may not fit
			f(m, ErrHopLimit)
		}
		*m = Message{}
		return false, nil
	}
	m.Hops = hops + 1
	if f := c.sock.layer.Prefilter; f != nil && f(m) {
		return false, nil
	}
	var km *Message
	if inSlab {
		km = r.newMessage()
	} else {
		km = new(Message)
	}
	*km = *m
	km.slab = inSlab
	if len(m.Packets) <= len(m.inline) {
		// The packets live in the scratch message's inline array.
		km.Packets = km.inline[:len(m.Packets)]
	}
	*m = Message{} // holds nothing alive
	s := c.sock
	switch v := s.ver; {
	case v == nil: // the protocol does not sign
		km.Proven = km.Sender == c.peer.ID
		s.deliver(km)
	case mustVerify(&e, c.peer.ID):
		v.submit(c, km, true)
	case v.tryInline(c):
		// Nothing of this connection's is ahead of it in the pipeline.
		km.Proven = true // from the link's peer itself (mustVerify)
		s.deliver(km)
		v.endInline(c)
	default:
		km.Proven = true
		v.submit(c, km, false)
	}
	return true, nil
}

// deliver takes a message that passed the prefilter and, if the protocol
// signs, verification, through the layer's Handle (which relays) to the
// user handlers and Recv. It runs on the connection's reader or on a
// verification worker, one message of a connection at a time.
func (s *Socket) deliver(m *Message) {
	if f := s.layer.Handle; f != nil && f(m) {
		return
	}
	if len(m.Packets) == 0 {
		// Users read Packets[0]; nothing legitimate sends an empty message.
		s.ctr.malformed.Add(1)
		s.noteDrop("message without packets dropped", m.Conn)
		if f := s.layer.Dropped; f != nil {
			f(m, ErrNoPackets)
		}
		return
	}
	s.dispatch(m, m.Conn.worker)
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
		err := fmt.Errorf("%w: peer said bye: %s", ErrClosed, reason)
		if reason == duplicateReason {
			// Its word only: enough to wait a moment for the connection
			// it says it keeps, never to trust anything.
			err = fmt.Errorf("%w: %w: peer said bye", ErrClosed, ErrDuplicate)
		}
		// Flush what is queued, then close; the peer reads until then.
		c.shutdown(err, true)
	default:
		c.log.Debug("ignoring unknown link control message", "sub", e.Sub)
	}
	return nil
}
