package base

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
)

// Per-link compression: the send codec negotiated from both ends' lists,
// renegotiation, and the resend requests that save a frame that failed to
// decompress.

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
