package chord

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// Answer authentication (docs/chord.md §4, docs/protocol.md §13).
//
// Every relay on a request's path sees its request ID, so the ID alone
// proves nothing about who answers. A response therefore names the node
// that answered it (for a lookup, the owner) and is authenticated by that
// node: either it travels over the answering node's own link to the
// requester, sent by that node itself (base authenticates the node ID of
// every link in the handshake), or it carries the node's public key and its
// Ed25519 signature over the answer, bound to the request ID, the
// requester, the key and the answer's packets. The requester completes a
// pending call only with an answer that matches the call and is
// authenticated so; anything else is a counted drop (Stats.BadAnswers).
// An answering node signs only what goes along the ring (answer).

// answerDomain starts the input of every answer signature, so that a
// signature made for another use of the node key can never pass as one.
const answerDomain = "meshsock/3 chord answer"

// answerAuthLen is the size of a signed answer's authentication field:
// the signer's Ed25519 public key, then its signature.
const answerAuthLen = ed25519.PublicKeySize + ed25519.SignatureSize

// errBadAnswer is the reason behind every answer dropped by checkAnswer.
var errBadAnswer = errors.New("chord: answer not accepted")

// answerPayloadHash is SHA-256 over the answer's packets (those after the
// response header), each as a 4-byte big-endian length and its bytes.
func answerPayloadHash(packets [][]byte) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, p := range packets {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// answerSigningInput appends to dst the bytes an answering node signs:
//
//	"meshsock/3 chord answer" (23 bytes, ASCII)
//	status (1) || request ID (8, big-endian) || requester ID (16) || key (16)
//	|| owner ID (16) || owner address length (1) || owner address
//	|| hops (1) || bounces (1) || payload hash (32, answerPayloadHash)
//
// where the owner is the answering node (h.from). Every field of the
// response header but the authentication itself is covered.
func answerSigningInput(dst []byte, h *responseHeader, packets [][]byte) []byte {
	dst = append(dst, answerDomain...)
	dst = append(dst, h.status)
	dst = binary.BigEndian.AppendUint64(dst, h.id)
	dst = append(dst, h.to[:]...)
	dst = append(dst, h.key[:]...)
	dst = append(dst, h.from.ID[:]...)
	dst = append(dst, byte(len(h.from.Addr)))
	dst = append(dst, h.from.Addr...)
	dst = append(dst, h.hops, h.bounces)
	sum := answerPayloadHash(packets)
	return append(dst, sum[:]...)
}

// signAnswer sets h.auth: this node's public key and its signature over
// the answer. h.from must be this node.
func (s *Socket) signAnswer(h *responseHeader, packets [][]byte) {
	sig := s.base.Sign(answerSigningInput(make([]byte, 0, 160+len(h.from.Addr)), h, packets))
	h.auth = append(append(make([]byte, 0, answerAuthLen), s.base.PublicKey()...), sig...)
}

// checkAnswer reports why the response m, with header h and answer
// packets, may not complete the pending call c (nil if it may): it must be
// the kind of answer the call waits for, for the key the call asked about
// (a request that was bounced is answered for another key), and
// authenticated by the node it names — unsigned only over that node's own
// link, in one hop, sent by that node; otherwise signed with a key that
// hashes to the node's ID. The caller has checked that h.to is this node.
func checkAnswer(c *call, h *responseHeader, packets [][]byte, m *base.Message) error {
	switch {
	case c.kind != kindLookup && c.kind != kindRequest:
		return fmt.Errorf("%w: a response to a maintenance call", errBadAnswer)
	case h.key != c.key && (c.kind == kindLookup || h.bounces == 0):
		return fmt.Errorf("%w: answers key %s, the call asked about %s", errBadAnswer, h.key, c.key)
	case c.kind == kindLookup && h.status == statusOK && len(packets) != 0:
		return fmt.Errorf("%w: lookup answer with %d packets", errBadAnswer, len(packets))
	}
	if h.auth == nil {
		if m.Conn == nil || m.Conn.ID() != h.from.ID || m.Sender != h.from.ID || m.Hops != 1 {
			return fmt.Errorf("%w: unsigned, and not sent by %s over its own link", errBadAnswer, h.from.ID.Short())
		}
		return nil
	}
	pub := h.auth[:ed25519.PublicKeySize]
	if !protocol.KeyMatchesID(pub, h.from.ID) {
		return fmt.Errorf("%w: signed with a key that is not %s's", errBadAnswer, h.from.ID.Short())
	}
	if !ed25519.Verify(pub, answerSigningInput(nil, h, packets), h.auth[ed25519.PublicKeySize:]) {
		return fmt.Errorf("%w: bad signature of %s", errBadAnswer, h.from.ID.Short())
	}
	return nil
}
