package base

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/lifecycle"
	"github.com/meshsock/meshsock/protocol"
)

// PeerInfo describes the node at the other end of a connection.
type PeerInfo struct {
	// ID is the peer's node ID, derived from Key; the handshake proved
	// that the peer holds the private key.
	ID protocol.NodeID
	// Key is the peer's Ed25519 public key.
	Key ed25519.PublicKey
	// Addr is the address the peer accepts connections on, as it
	// advertised it (with an unspecified host replaced by the host it
	// connected from); "" if it does not listen. It is the peer's claim,
	// not checked: only dialling it shows who answers there.
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
	nc   net.Conn // the link: the TLS session, or raw on a plaintext link
	raw  net.Conn // the TCP connection under nc
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

	framesIn atomic.Uint64 // published by the reader in batches
	stats    connCounters
	// dispatched and dispatchedBytes count this connection's messages in
	// the socket's dispatch queue, against its fair share.
	dispatched, dispatchedBytes atomic.Int64
	closing                     chan struct{}
	closeOnce                   sync.Once
	closeErr                    error // set before closing is closed
	flushBy                     atomic.Int64
	worker                      int           // the dispatcher worker that serves this connection
	readerID                    atomic.Uint64 // the reader goroutine's runtime ID

	layerState atomic.Value // the routing layer's per-connection state (LayerState)

	lane    lane         // messages on their way through signature verification (verify.go)
	strikes atomic.Int32 // messages with bad signatures received (WithSignatureStrikes)

	dialNonce  uint64       // the dialer's link nonce, to order duplicate connections
	observed   string       // where the peer says it sees this node (Observed)
	src        netip.Prefix // the peer's source, for per-source limits (admission.go)
	srcCounted bool         // inbound, and src is not exempt
	admitted   uint64       // registration order (Socket.admitted), guarded by Socket.mu
	writerDone chan struct{}
	readEnded  chan struct{} // the read loop returned (before unregistering)
	readerDone chan struct{}
}

// newConn makes the Conn for an established connection; start launches it.
func newConn(s *Socket, nc, raw net.Conn, br *bufio.Reader, info PeerInfo) *Conn {
	cfg := &s.cfg
	c := &Conn{
		sock:       s,
		nc:         nc,
		raw:        raw,
		br:         br,
		peer:       info,
		q:          newSendQueue(cfg.sendQueueLen, cfg.sendQueueBytes, cfg.controlQueueLen),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		readEnded:  make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	if cfg.fairShare < 100 {
		c.q.shareData = max(cfg.sendQueueLen*cfg.fairShare/100, 1)
		c.q.shareBytes = max(cfg.sendQueueBytes*cfg.fairShare/100, 1)
	}
	c.log = cfg.logger.With("peer", info.ID.Short(), "remote", info.RemoteAddr)
	c.linkAccept = s.compressionList()
	c.worker = int(s.connSeq.Add(1))
	return c
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
	retainedBytes                     atomic.Int64 // a gauge: the resend window's bytes now
}

// Peer returns what the handshake told about the peer.
func (c *Conn) Peer() PeerInfo { return c.peer }

// ID returns the peer's node ID.
func (c *Conn) ID() protocol.NodeID { return c.peer.ID }

// RemoteAddr returns the address of the connection's far end.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LocalAddr returns the address of this end of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// LayerState returns the state a routing layer stored with SetLayerState,
// or nil.
func (c *Conn) LayerState() any { return c.layerState.Load() }

// SetLayerState stores a routing layer's per-connection state (mesh keeps
// each neighbour's budget there), unless some is stored already, and
// returns the state stored. Every call must store the same type.
func (c *Conn) SetLayerState(v any) any {
	if c.layerState.CompareAndSwap(nil, v) {
		return v
	}
	return c.layerState.Load()
}

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
	if len(packets) == 0 {
		return ErrNoPackets
	}
	return c.SendMessage(ctx, flags.Whisper, flags.Whisper, packets...)
}

// SendMessage sends a message of the given main type and sub-flag to this
// peer only. It is not relayed further, whatever its type. It is the raw
// path routing layers use for their control messages, so it accepts a
// message without packets (which a receiver does not pass to its user).
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

// TrySendEnvelope queues an encoded envelope if the data lane has room,
// and returns ErrQueueFull at once otherwise, without counting a drop:
// the caller decides whether to wait (SendEnvelope) or give the copy up.
func (c *Conn) TrySendEnvelope(hops uint8, env []byte) error {
	return c.q.push(context.Background(), outItem{env: env, hops: hops}, false, c.closing)
}

// RoomFor returns a channel that is closed once the data lane may have
// room for env, so that a sender can wait for room on several connections
// at once: it is closed already if the lane has room now or the
// connection is closing, and otherwise when the writer next takes what is
// queued. The room is not reserved: offer env with TrySendEnvelope once
// the channel is closed, and ask again if another sender took it first.
// Under the Drop policy, where sends do not wait for room, it returns nil.
func (c *Conn) RoomFor(env []byte) <-chan struct{} {
	if c.sock.cfg.queuePolicy != Block {
		return nil
	}
	return c.q.room(len(env) + 1)
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

// ForwardFrom is Forward for a message relayed from connection src: on top
// of Forward's rule, when relays to this connection may come from more
// than one other connection, relays from one source may hold at most their
// fair share of its queue (WithFairShare), so that one neighbour flooding
// the node cannot fill every other neighbour's queue with its traffic. Beyond it the copy is dropped, counted (QueueDrops and
// ShareDrops) and ErrRelayShare, which matches ErrQueueFull, returned.
func (c *Conn) ForwardFrom(src *Conn, hops uint8, env []byte) error {
	// Relays to c come from the other connections: the share matters
	// once there are two of them.
	err := c.q.pushFrom(outItem{env: env, hops: hops}, src, c.sock.nconns.Load() > 2)
	if errors.Is(err, ErrQueueFull) {
		c.stats.queueDrops.Add(1)
		if errors.Is(err, ErrRelayShare) {
			c.sock.ctr.shareDrops.Add(1)
			c.sock.noteDrop("relay share of a send queue used up (relay)", c)
		} else {
			c.sock.noteDrop("send queue full (relay)", c)
		}
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
// and waits for its reader and writer. It is idempotent, and may be called
// from a handler (handlers run on dispatcher goroutines, never on the
// reader). Called on the connection's own reader (from a layer hook or a
// tracer), it returns without waiting for it.
func (c *Conn) Close() error {
	c.closeWithBye("closed")
	if lifecycle.GoroutineID() == c.readerID.Load() {
		return nil
	}
	<-c.writerDone
	<-c.readerDone
	return nil
}

// Abort closes the connection at once, for reason (which Err then
// returns): what is queued is not sent, and Abort does not wait for the
// connection's goroutines (the socket's Close does). A routing layer uses
// it to drop a neighbour that is too slow or abusive, from a goroutine
// that must not wait for it.
func (c *Conn) Abort(reason error) { c.fail(reason) }

// closeWithBye closes gracefully without waiting: the writer flushes the
// queue, sends a Bye with the reason and half-closes; the reader goes on
// until the peer, having read the Bye, closes its end, so nothing either
// side had in flight is lost (two ends that drop a duplicate connection
// rely on this).
func (c *Conn) closeWithBye(reason string) { c.closeWithByeErr(reason, nil) }

// closeWithByeErr is closeWithBye whose error (Err) also matches cause,
// if not nil.
func (c *Conn) closeWithByeErr(reason string, cause error) {
	closeErr := fmt.Errorf("%w: %s", ErrClosed, reason)
	if cause != nil {
		closeErr = fmt.Errorf("%w: %w: %s", ErrClosed, cause, reason)
	}
	c.closeWithByeAs(reason, closeErr)
}

// closeDuplicate closes gracefully the one of two connections to the same
// node that both ends drop (its Err matches ErrDuplicate and ErrClosed).
func (c *Conn) closeDuplicate() {
	c.closeWithByeAs(duplicateReason, fmt.Errorf("%w: %w", ErrClosed, ErrDuplicate))
}

// closeWithByeAs is closeWithBye with closeErr as the link's error.
func (c *Conn) closeWithByeAs(reason string, closeErr error) {
	// The Bye is queued inside the close, after this side's error is
	// chosen: queued before, the peer could answer it by closing, and the
	// reader's "peer closed" would become the link's error instead.
	c.shutdownWith(closeErr, true, func() {
		env, _, err := c.sock.NewEnvelope(flags.Renegotiate, flags.Bye, 0, [][]byte{[]byte(reason)})
		if err == nil {
			c.q.pushControl(outItem{env: env, kind: kindBye})
		}
	})
}

// shutdown starts closing: the writer flushes (if asked) and closes the
// socket, which ends the reader.
func (c *Conn) shutdown(reason error, flush bool) { c.shutdownWith(reason, flush, nil) }

// shutdownWith is shutdown that runs last, if it is the first close, just
// before the send queue closes (to queue a final message).
func (c *Conn) shutdownWith(reason error, flush bool, last func()) {
	c.closeOnce.Do(func() {
		if last != nil {
			last()
		}
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

// start launches the reader and writer. A socket that began closing since
// the connection was registered starts neither: the connection is ended
// on the spot as if both had run.
func (c *Conn) start() {
	if c.sock.lc.Go(c.writeLoop, c.readLoop) {
		return
	}
	c.fail(ErrClosed)
	_ = c.raw.Close()
	close(c.writerDone)
	close(c.readEnded)
	c.sock.unregister(c)
	close(c.readerDone)
}
