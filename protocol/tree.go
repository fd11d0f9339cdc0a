package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/meshsock/meshsock/flags"
)

// Broadcast announcements and pulls (docs/protocol.md §12.7). An IHAVE
// (sub-flag flags.IHave) is a one-hop whisper whose single packet is a list
// of broadcast references; a tree control message (sub-flag flags.Tree) is
// a one-hop whisper whose single packet is a kind byte followed by such a
// list. A broadcast is named on the wire by its origin and sequence number,
// as the seen-state names it (§11), never by a message ID, which is local to
// each node (§6).

const nodeIDSize = len(NodeID{})

// BroadcastRefSize is the encoded size of one BroadcastRef: the 16-byte
// origin, then the sequence number as 8 bytes, big-endian.
const BroadcastRefSize = nodeIDSize + 8

// MaxBroadcastRefs bounds the references in one IHAVE or tree control
// message.
const MaxBroadcastRefs = 1024

// BroadcastRef names a broadcast: the node that created it and its
// sequence number.
type BroadcastRef struct {
	Origin NodeID
	Seq    uint64
}

// TreeKind is the first byte of a tree control message.
type TreeKind uint8

// Tree control kinds.
const (
	// TreeGraft asks the receiver to send every broadcast over this link
	// again (eager), and to send the referenced ones now. Without
	// references it says the sender floods: it sends every broadcast over
	// the link whatever it is told, so the receiver keeps the link eager.
	TreeGraft TreeKind = 1
	// TreePrune asks the receiver to send only announcements over this
	// link (lazy). It carries no references.
	TreePrune TreeKind = 2
	// TreeWant asks for the referenced broadcasts (IWANT), without
	// changing the link.
	TreeWant TreeKind = 3
)

func (k TreeKind) String() string {
	switch k {
	case TreeGraft:
		return "graft"
	case TreePrune:
		return "prune"
	case TreeWant:
		return "iwant"
	}
	return fmt.Sprintf("tree(%d)", uint8(k))
}

// ErrBadTreeMessage: an IHAVE or tree control packet does not decode by
// §12.7. It matches ErrMalformed.
var ErrBadTreeMessage = fmt.Errorf("%w: announcement or tree control", ErrMalformed)

// AppendBroadcastRefs appends the encoding of refs to dst.
func AppendBroadcastRefs(dst []byte, refs []BroadcastRef) []byte {
	for _, r := range refs {
		dst = append(dst, r.Origin[:]...)
		dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	}
	return dst
}

// ParseBroadcastRefs decodes a list of references into dst (reused) and
// returns it. The list must hold 1 to MaxBroadcastRefs whole references.
func ParseBroadcastRefs(dst []BroadcastRef, b []byte) ([]BroadcastRef, error) {
	dst = dst[:0]
	if len(b) == 0 || len(b)%BroadcastRefSize != 0 {
		return dst, fmt.Errorf("%w: %d bytes is not a list of %d-byte references", ErrBadTreeMessage, len(b), BroadcastRefSize)
	}
	n := len(b) / BroadcastRefSize
	if n > MaxBroadcastRefs {
		return dst, fmt.Errorf("%w: %d references, limit %d", ErrBadTreeMessage, n, MaxBroadcastRefs)
	}
	for i := 0; i < n; i++ {
		var r BroadcastRef
		copy(r.Origin[:], b[:nodeIDSize])
		r.Seq = binary.BigEndian.Uint64(b[nodeIDSize:BroadcastRefSize])
		dst = append(dst, r)
		b = b[BroadcastRefSize:]
	}
	return dst, nil
}

// AppendTreeControl appends a tree control packet: kind, then refs.
func AppendTreeControl(dst []byte, kind TreeKind, refs []BroadcastRef) []byte {
	return AppendBroadcastRefs(append(dst, byte(kind)), refs)
}

// ParseTreeControl decodes a tree control packet into dst (reused): a
// GRAFT carries 0 to MaxBroadcastRefs references, a PRUNE none, an IWANT
// 1 to MaxBroadcastRefs. Any other kind is malformed.
func ParseTreeControl(dst []BroadcastRef, b []byte) (TreeKind, []BroadcastRef, error) {
	dst = dst[:0]
	if len(b) == 0 {
		return 0, dst, fmt.Errorf("%w: empty tree control", ErrBadTreeMessage)
	}
	kind, rest := TreeKind(b[0]), b[1:]
	switch kind {
	case TreePrune:
		if len(rest) != 0 {
			return kind, dst, fmt.Errorf("%w: prune with %d bytes after the kind", ErrBadTreeMessage, len(rest))
		}
		return kind, dst, nil
	case TreeGraft:
		if len(rest) == 0 {
			return kind, dst, nil
		}
	case TreeWant:
	default:
		return kind, dst, fmt.Errorf("%w: unknown kind %d", ErrBadTreeMessage, uint8(kind))
	}
	refs, err := ParseBroadcastRefs(dst, rest)
	return kind, refs, err
}

// EnvelopeRef returns the type, origin and sequence number of an encoded
// envelope, reading only its first four items (it does not check the
// rest).
func EnvelopeRef(env []byte) (flags.Flag, BroadcastRef, error) {
	d := decoder{buf: env}
	var r BroadcastRef
	n, err := d.head(majorArray)
	if err != nil || n != envelopeItems {
		return 0, r, errors.Join(ErrMalformed, err)
	}
	typ, err := d.small("type")
	if err != nil {
		return 0, r, err
	}
	if _, err := d.small("sub"); err != nil {
		return 0, r, err
	}
	id, err := d.bytes(uint64(nodeIDSize))
	if err != nil || len(id) != nodeIDSize {
		return 0, r, errors.Join(ErrMalformed, err)
	}
	copy(r.Origin[:], id)
	if r.Seq, err = d.head(majorUint); err != nil {
		return 0, r, err
	}
	return flags.Flag(typ), r, nil
}
