package chord

import (
	"fmt"
	"unicode/utf8"

	"github.com/meshsock/meshsock/protocol"
)

// Wire formats of chord's control packets (docs/chord.md §4 is the
// byte-level specification). Each is a CBOR array encoded with
// protocol.MarshalCBOR (deterministic) and decoded with
// protocol.UnmarshalCBOR (strict limits); the decoders below then check
// every length and count, so a malformed packet is an error, never a panic.

// maxAddrLen bounds an address on the wire.
const maxAddrLen = 255

// maxReasonLen bounds the reason text of a failed response.
const maxReasonLen = 256

// Response status codes.
const (
	statusOK      uint8 = 0 // the owner answered; packets follow
	statusNoRoute uint8 = 1 // the request could not reach an owner; packet 1 is a reason
)

// nodeRefWire is a node on the wire: [id bstr(16), addr tstr]. The empty
// reference (no node) is an empty byte string and an empty text string.
type nodeRefWire struct {
	_    struct{} `cbor:",toarray"`
	ID   []byte
	Addr string
}

// routeHeaderWire is packet 0 of every routed message: forward (0x0e),
// request (0x08) and find-successor (0x28).
type routeHeaderWire struct {
	_       struct{} `cbor:",toarray"`
	Key     []byte   // the key the message goes to (16 bytes)
	ID      uint64   // request ID; 0 for a one-way message
	Origin  []byte   // the requester (16 bytes); answers go there
	Addr    string   // the requester's address, for a direct answer
	Prior   uint8    // links crossed before this leg (bounces)
	Bounces uint8    // times the request was bounced
	Flags   uint8    // flagDirect; other bits are ignored
}

// Route header flags.
const (
	// flagDirect: the requester has room for another link, so the node
	// that answers may dial it; without it the answer goes over an
	// existing link or along the ring.
	flagDirect uint8 = 1 << 0
)

// responseHeaderWire is packet 0 of a response (0x0a). The answering
// node names itself (From: for a lookup, the owner) and authenticates the
// answer: Auth is empty when it sends the response itself over its own
// link to the requester, otherwise its public key and its signature over
// the answer (answerSigningInput, docs/chord.md §4).
type responseHeaderWire struct {
	_       struct{}    `cbor:",toarray"`
	To      []byte      // the requester (16 bytes)
	ID      uint64      // the request ID it answers
	Status  uint8       // statusOK or statusNoRoute
	Hops    uint8       // links the request crossed to its owner, all legs
	Bounces uint8       // times the request was bounced before it was answered
	Key     []byte      // the key the request reached the answering node for (16 bytes)
	From    nodeRefWire // the answering node; for a lookup, the owner
	Auth    []byte      // empty, or public key (32) || Ed25519 signature (64)
}

// neighboursWire is the single packet of get-neighbours (0x29), both the
// question (Answer false, empty Pred and Succs) and the answer.
type neighboursWire struct {
	_      struct{} `cbor:",toarray"`
	ID     uint64
	Answer bool
	Pred   nodeRefWire
	Succs  []nodeRefWire
}

// leaveWire is the single packet of leave (0x2b): the leaving node's
// predecessor and successor list.
type leaveWire struct {
	_     struct{} `cbor:",toarray"`
	Pred  nodeRefWire
	Succs []nodeRefWire
}

// routeHeader is a decoded routeHeaderWire.
type routeHeader struct {
	key, origin protocol.NodeID
	id          uint64
	addr        string
	prior       uint8
	bounces     uint8
	direct      bool // flagDirect
}

// responseHeader is a decoded responseHeaderWire.
type responseHeader struct {
	to      protocol.NodeID
	id      uint64
	status  uint8
	hops    uint8
	bounces uint8
	key     protocol.NodeID
	from    PeerInfo
	auth    []byte // nil, or answerAuthLen bytes
}

type neighbours struct {
	id     uint64
	answer bool
	pred   PeerInfo
	succs  []PeerInfo
}

func refWire(p PeerInfo) nodeRefWire {
	if p.ID.IsZero() {
		return nodeRefWire{ID: []byte{}}
	}
	id := p.ID
	return nodeRefWire{ID: id[:], Addr: p.Addr}
}

func refsWire(ps []PeerInfo) []nodeRefWire {
	out := make([]nodeRefWire, 0, len(ps))
	for _, p := range ps {
		out = append(out, refWire(p))
	}
	return out
}

func nodeID(b []byte, what string) (protocol.NodeID, error) {
	var id protocol.NodeID
	if len(b) != len(id) {
		return id, fmt.Errorf("%w: %s of %d bytes, want 16", protocol.ErrMalformed, what, len(b))
	}
	copy(id[:], b)
	if id.IsZero() {
		return id, fmt.Errorf("%w: zero %s", protocol.ErrMalformed, what)
	}
	return id, nil
}

func checkAddr(a string) error {
	if len(a) > maxAddrLen {
		return fmt.Errorf("%w: address of %d bytes, limit %d", protocol.ErrMalformed, len(a), maxAddrLen)
	}
	return nil
}

// peerFromWire decodes a node reference; the empty reference gives the zero
// PeerInfo when allowEmpty is set. A node needs an address to be useful.
func peerFromWire(w nodeRefWire, allowEmpty bool) (PeerInfo, error) {
	if len(w.ID) == 0 && w.Addr == "" && allowEmpty {
		return PeerInfo{}, nil
	}
	id, err := nodeID(w.ID, "node ID")
	if err != nil {
		return PeerInfo{}, err
	}
	if w.Addr == "" {
		return PeerInfo{}, fmt.Errorf("%w: node %s without an address", protocol.ErrMalformed, id.Short())
	}
	if err := checkAddr(w.Addr); err != nil {
		return PeerInfo{}, err
	}
	return PeerInfo{ID: id, Addr: w.Addr}, nil
}

func peersFromWire(ws []nodeRefWire) ([]PeerInfo, error) {
	if len(ws) > MaxSuccessors {
		return nil, fmt.Errorf("%w: %d nodes in a list, limit %d", protocol.ErrMalformed, len(ws), MaxSuccessors)
	}
	out := make([]PeerInfo, 0, len(ws))
	for _, w := range ws {
		p, err := peerFromWire(w, false)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func encodeRouteHeader(h routeHeader) []byte {
	b, err := protocol.MarshalCBOR(&routeHeaderWire{
		Key: h.key[:], ID: h.id, Origin: h.origin[:], Addr: h.addr, Prior: h.prior, Bounces: h.bounces,
		Flags: flagBits(h.direct),
	})
	if err != nil { // cannot happen for these types
		panic(err)
	}
	return b
}

func decodeRouteHeader(b []byte) (routeHeader, error) {
	var w routeHeaderWire
	if err := protocol.UnmarshalCBOR(b, &w); err != nil {
		return routeHeader{}, fmt.Errorf("route header: %w", err)
	}
	var h routeHeader
	var err error
	if len(w.Key) != len(h.key) {
		return h, fmt.Errorf("%w: key of %d bytes, want 16", protocol.ErrMalformed, len(w.Key))
	}
	copy(h.key[:], w.Key)
	if h.origin, err = nodeID(w.Origin, "origin"); err != nil {
		return h, err
	}
	if err := checkAddr(w.Addr); err != nil {
		return h, err
	}
	if w.Bounces > MaxBounces {
		return h, fmt.Errorf("%w: %d bounces, limit %d", protocol.ErrMalformed, w.Bounces, MaxBounces)
	}
	h.id, h.addr, h.prior, h.bounces = w.ID, w.Addr, w.Prior, w.Bounces
	h.direct = w.Flags&flagDirect != 0
	return h, nil
}

func encodeResponseHeader(h responseHeader) []byte {
	auth := h.auth
	if auth == nil {
		auth = []byte{}
	}
	b, err := protocol.MarshalCBOR(&responseHeaderWire{
		To: h.to[:], ID: h.id, Status: h.status, Hops: h.hops, Bounces: h.bounces,
		Key: h.key[:], From: refWire(h.from), Auth: auth,
	})
	if err != nil {
		panic(err)
	}
	return b
}

func decodeResponseHeader(b []byte) (responseHeader, error) {
	var w responseHeaderWire
	if err := protocol.UnmarshalCBOR(b, &w); err != nil {
		return responseHeader{}, fmt.Errorf("response header: %w", err)
	}
	var h responseHeader
	var err error
	if h.to, err = nodeID(w.To, "requester"); err != nil {
		return h, err
	}
	if w.ID == 0 {
		return h, fmt.Errorf("%w: response to request ID 0", protocol.ErrMalformed)
	}
	if w.Status > statusNoRoute {
		return h, fmt.Errorf("%w: unknown response status %d", protocol.ErrMalformed, w.Status)
	}
	if w.Bounces > MaxBounces {
		return h, fmt.Errorf("%w: %d bounces, limit %d", protocol.ErrMalformed, w.Bounces, MaxBounces)
	}
	if len(w.Key) != len(h.key) {
		return h, fmt.Errorf("%w: key of %d bytes, want 16", protocol.ErrMalformed, len(w.Key))
	}
	copy(h.key[:], w.Key)
	if h.from, err = peerFromWire(w.From, false); err != nil {
		return h, err
	}
	switch len(w.Auth) {
	case 0:
	case answerAuthLen:
		h.auth = w.Auth
	default:
		return h, fmt.Errorf("%w: answer authentication of %d bytes, want 0 or %d", protocol.ErrMalformed, len(w.Auth), answerAuthLen)
	}
	h.id, h.status, h.hops, h.bounces = w.ID, w.Status, w.Hops, w.Bounces
	return h, nil
}

func encodeNeighbours(n neighbours) []byte {
	b, err := protocol.MarshalCBOR(&neighboursWire{ID: n.id, Answer: n.answer, Pred: refWire(n.pred), Succs: refsWire(n.succs)})
	if err != nil {
		panic(err)
	}
	return b
}

func decodeNeighbours(b []byte) (neighbours, error) {
	var w neighboursWire
	if err := protocol.UnmarshalCBOR(b, &w); err != nil {
		return neighbours{}, fmt.Errorf("neighbours: %w", err)
	}
	n := neighbours{id: w.ID, answer: w.Answer}
	var err error
	if n.pred, err = peerFromWire(w.Pred, true); err != nil {
		return n, err
	}
	if n.succs, err = peersFromWire(w.Succs); err != nil {
		return n, err
	}
	if !n.answer && (!n.pred.ID.IsZero() || len(n.succs) > 0) {
		return n, fmt.Errorf("%w: get-neighbours question with content", protocol.ErrMalformed)
	}
	return n, nil
}

func encodeLeave(pred PeerInfo, succs []PeerInfo) []byte {
	b, err := protocol.MarshalCBOR(&leaveWire{Pred: refWire(pred), Succs: refsWire(succs)})
	if err != nil {
		panic(err)
	}
	return b
}

func decodeLeave(b []byte) (pred PeerInfo, succs []PeerInfo, err error) {
	var w leaveWire
	if err := protocol.UnmarshalCBOR(b, &w); err != nil {
		return pred, nil, fmt.Errorf("leave: %w", err)
	}
	if pred, err = peerFromWire(w.Pred, true); err != nil {
		return pred, nil, err
	}
	succs, err = peersFromWire(w.Succs)
	return pred, succs, err
}

func flagBits(direct bool) uint8 {
	if direct {
		return flagDirect
	}
	return 0
}

// reasonText bounds a failure reason for the wire.
func reasonText(s string) []byte {
	if len(s) > maxReasonLen {
		s = s[:maxReasonLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return []byte(s)
}
