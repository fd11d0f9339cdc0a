package protocol

import (
	"bytes"
	"crypto/ed25519"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/meshsock/meshsock/flags"
)

// Magic is the first item of every Preamble and Hello, so that a peer
// speaking another protocol is recognised at once.
const Magic = "meshsock"

// Preamble is the first frame each side of a connection sends, in plaintext
// and at once, before any encryption starts: the wire version and the link
// encryption the sender runs. Its first two items are those of every
// version's first frame (magic and version), so a node of another version
// recognises it and refuses it with a protocol-mismatch verdict.
type Preamble struct {
	// Version is the sender's wire version ([Version]).
	Version uint16
	// Encryption is the link encryption the sender runs
	// ([EncryptionTLS] or [EncryptionPlaintext]); both sides must agree.
	Encryption string
}

// Hello is the first frame each side sends on the secured channel (the TLS
// session, or the TCP stream after the preambles on a plaintext link),
// uncompressed. Both sides send it at once, without waiting for the other.
type Hello struct {
	// Version is the sender's wire version ([Version]).
	Version uint16
	// Protocol is the sender's protocol ID; different IDs refuse each other.
	Protocol ProtocolID
	// NodeID is the sender's node ID.
	NodeID NodeID
	// ListenAddr is the address the sender accepts connections on
	// ("host:port"), or "" if it does not listen.
	ListenAddr string
	// Accept lists the compression methods the sender can decompress, most
	// preferred first. None is always accepted and need not be listed.
	Accept []flags.Method
	// Meta is free-form peer metadata (name, role, ...).
	Meta map[string]string
	// Nonce is a random number drawn for this connection. When one node
	// dialled two connections to the same peer, both ends keep the one
	// whose dialer's nonce is smaller, whatever order they saw them in.
	Nonce uint64
	// Time is the sender's wall clock when it built the Hello, in Unix
	// nanoseconds. The receiver compares it with its own clock and refuses
	// a peer whose clock is too far off ([RejectClockSkew]).
	Time int64
	// Key is the sender's Ed25519 public key; NodeID must be derived from
	// it ([NodeIDFromKey]), and the sender proves that it holds the
	// private key in its [Auth] frame.
	Key ed25519.PublicKey
	// Observed is the address ("ip:port") at which the sender sees the
	// receiver: for the dialer the address it dialled, for the acceptor the
	// accepted connection's remote address; "" if it does not say. It is
	// the sender's claim, at most [MaxObservedLen] bytes: a receiver
	// learns its outside address only from several independent peers that
	// agree (docs/protocol.md §9.4).
	Observed string
}

// RejectCode says why a handshake was refused. Zero accepts.
type RejectCode uint8

// Verdict codes.
const (
	Accept            RejectCode = 0  // the connection is accepted
	RejectProtocol    RejectCode = 1  // different protocol ID (subnet, encryption or version)
	RejectSelf        RejectCode = 2  // the peer is this node
	RejectDuplicate   RejectCode = 3  // a connection to this node already exists
	RejectLimit       RejectCode = 4  // the node has no room for more connections
	RejectShutdown    RejectCode = 5  // the node is closing
	RejectBadHello    RejectCode = 6  // the Hello could not be decoded
	RejectUnspecified RejectCode = 7  // any other reason; see the text
	RejectClockSkew   RejectCode = 8  // the peer's clock is too far from the receiver's
	RejectIdentity    RejectCode = 9  // the peer did not prove the node ID it claims
	RejectNotAuthz    RejectCode = 10 // the peer may not join: no network key, banned, or refused by a hook
)

var rejectNames = [...]string{"accepted", "protocol mismatch", "self connection", "duplicate connection",
	"connection limit", "shutting down", "bad hello", "unspecified", "clock skew", "identity", "not authorised"}

// String names the code.
func (c RejectCode) String() string {
	if int(c) < len(rejectNames) {
		return rejectNames[c]
	}
	return fmt.Sprintf("reject(%d)", uint8(c))
}

// Verdict is the second frame each side sends: whether it accepts the
// peer's Hello, and if not, why.
type Verdict struct {
	Code   RejectCode
	Reason string
}

// Auth is the frame each side sends after reading the peer's Hello: its
// proof of the key in its Hello and, on a network with a network key, of
// that key, both bound to this handshake's transcript (see [Transcript]).
type Auth struct {
	// Signature is the sender's Ed25519 signature of its role's signing
	// input ([AuthSignInput]); [SignatureSize] bytes.
	Signature []byte
	// Proof is the network-key proof ([NetworkProof]): [ProofSize] bytes,
	// or empty from a node that has no network key.
	Proof []byte
}

// Handshake limits on decoding.
const (
	// MaxMetaEntries bounds Hello.Meta.
	MaxMetaEntries = 64
	// MaxAcceptMethods bounds Hello.Accept.
	MaxAcceptMethods = 32
	// MaxEncryptionLen bounds Preamble.Encryption, in bytes.
	MaxEncryptionLen = 64
	// SignatureSize is the size of Auth.Signature.
	SignatureSize = ed25519.SignatureSize
	// ProofSize is the size of a non-empty Auth.Proof (HMAC-SHA256).
	ProofSize = 32
	// MaxObservedLen bounds Hello.Observed, in bytes.
	MaxObservedLen = 255
)

// preambleWire, helloWire, authWire and verdictWire are the CBOR forms
// (arrays, fixed order).
type preambleWire struct {
	_          struct{} `cbor:",toarray"`
	Magic      string
	Version    uint16
	Encryption string
}

type authWire struct {
	_         struct{} `cbor:",toarray"`
	Signature []byte
	Proof     []byte
}

type helloWire struct {
	_          struct{} `cbor:",toarray"`
	Magic      string
	Version    uint16
	Protocol   []byte
	NodeID     []byte
	ListenAddr string
	Accept     []byte
	Meta       map[string]string
	Nonce      uint64
	Time       int64
	Key        []byte
	Observed   string
}

type verdictWire struct {
	_      struct{} `cbor:",toarray"`
	Code   uint8
	Reason string
}

var (
	encMode     cbor.EncMode
	decMode     cbor.DecMode
	ctrlDecMode cbor.DecMode
)

// MaxControlItems bounds arrays and maps inside control packets decoded with
// [UnmarshalCBOR] (for example a peer list).
const MaxControlItems = 1024

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       MaxMetaEntries,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	ctrlDecMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: MaxControlItems,
		MaxMapPairs:      MaxControlItems,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// MarshalHello returns the CBOR encoding of h.
func MarshalHello(h *Hello) ([]byte, error) {
	w := helloWire{
		Magic:      Magic,
		Version:    h.Version,
		Protocol:   h.Protocol[:],
		NodeID:     h.NodeID[:],
		ListenAddr: h.ListenAddr,
		Accept:     make([]byte, len(h.Accept)),
		Meta:       h.Meta,
		Nonce:      h.Nonce,
		Time:       h.Time,
		Key:        h.Key,
		Observed:   h.Observed,
	}
	if len(w.Observed) > MaxObservedLen {
		return nil, fmt.Errorf("%w: hello: observed address of %d bytes, limit %d", ErrMalformed, len(w.Observed), MaxObservedLen)
	}
	if w.Key == nil {
		w.Key = []byte{}
	}
	for i, m := range h.Accept {
		w.Accept[i] = byte(m)
	}
	if w.Meta == nil {
		w.Meta = map[string]string{}
	}
	return encMode.Marshal(&w)
}

// UnmarshalHello decodes a Hello. A wrong magic matches [ErrNotMeshsock];
// other bad input matches [ErrMalformed]. The version is not checked here:
// the caller answers a version it cannot speak with a Verdict. A Hello of
// another version (a well-formed array with the magic first) decodes with
// only Version set, whatever its later items, so that the caller can
// answer it so.
func UnmarshalHello(data []byte) (*Hello, error) {
	var w helloWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		// Answer "not meshsock" for anything that does not even start like
		// our Hello (an array whose first item is the magic), "malformed"
		// for a Hello that is broken (extra or missing items included).
		if !startsWithMagic(data) {
			return nil, fmt.Errorf("%w: %v", ErrNotMeshsock, err)
		}
		if v, ok := otherVersion(data); ok {
			return &Hello{Version: v}, nil
		}
		return nil, fmt.Errorf("%w: hello: %v", ErrMalformed, err)
	}
	if w.Magic != Magic {
		return nil, fmt.Errorf("%w: magic %q", ErrNotMeshsock, w.Magic)
	}
	if w.Version != Version {
		// Another version's Hello that happens to fit this layout: its
		// items need not mean what they mean here.
		return &Hello{Version: w.Version}, nil
	}
	h := &Hello{Version: w.Version, ListenAddr: w.ListenAddr, Meta: w.Meta, Nonce: w.Nonce, Time: w.Time, Observed: w.Observed}
	if len(w.Protocol) != len(h.Protocol) {
		return nil, fmt.Errorf("%w: hello: protocol ID of %d bytes", ErrMalformed, len(w.Protocol))
	}
	if len(w.NodeID) != len(h.NodeID) {
		return nil, fmt.Errorf("%w: hello: node ID of %d bytes", ErrMalformed, len(w.NodeID))
	}
	if len(w.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: hello: public key of %d bytes, want %d", ErrMalformed, len(w.Key), ed25519.PublicKeySize)
	}
	if len(w.Accept) > MaxAcceptMethods {
		return nil, fmt.Errorf("%w: hello: %d compression methods, limit %d", ErrMalformed, len(w.Accept), MaxAcceptMethods)
	}
	if len(w.Observed) > MaxObservedLen {
		return nil, fmt.Errorf("%w: hello: observed address of %d bytes, limit %d", ErrMalformed, len(w.Observed), MaxObservedLen)
	}
	copy(h.Protocol[:], w.Protocol)
	copy(h.NodeID[:], w.NodeID)
	h.Key = ed25519.PublicKey(w.Key)
	h.Accept = make([]flags.Method, len(w.Accept))
	for i, b := range w.Accept {
		h.Accept[i] = flags.Method(b)
	}
	return h, nil
}

// MarshalPreamble returns the CBOR encoding of p, with the magic first.
func MarshalPreamble(p Preamble) ([]byte, error) {
	if len(p.Encryption) > MaxEncryptionLen {
		return nil, fmt.Errorf("%w: preamble: encryption name of %d bytes, limit %d", ErrMalformed, len(p.Encryption), MaxEncryptionLen)
	}
	return encMode.Marshal(&preambleWire{Magic: Magic, Version: p.Version, Encryption: p.Encryption})
}

// UnmarshalPreamble decodes a Preamble. Input that does not start like one
// (a CBOR array whose first item is the magic) matches [ErrNotMeshsock];
// other bad input matches [ErrMalformed]. The first frame of another wire
// version (a version 2 Hello, say) decodes with only Version set, so that
// the caller can refuse it with a protocol-mismatch verdict.
func UnmarshalPreamble(data []byte) (Preamble, error) {
	var w preambleWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		if !startsWithMagic(data) {
			return Preamble{}, fmt.Errorf("%w: %v", ErrNotMeshsock, err)
		}
		if v, ok := otherVersion(data); ok {
			return Preamble{Version: v}, nil
		}
		return Preamble{}, fmt.Errorf("%w: preamble: %v", ErrMalformed, err)
	}
	if w.Magic != Magic {
		return Preamble{}, fmt.Errorf("%w: magic %q", ErrNotMeshsock, w.Magic)
	}
	if w.Version == Version && len(w.Encryption) > MaxEncryptionLen {
		return Preamble{}, fmt.Errorf("%w: preamble: encryption name of %d bytes, limit %d",
			ErrMalformed, len(w.Encryption), MaxEncryptionLen)
	}
	return Preamble{Version: w.Version, Encryption: w.Encryption}, nil
}

// MarshalAuth returns the CBOR encoding of a. The signature must be
// [SignatureSize] bytes and the proof empty or [ProofSize] bytes.
func MarshalAuth(a Auth) ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	w := authWire{Signature: a.Signature, Proof: a.Proof}
	if w.Proof == nil {
		w.Proof = []byte{}
	}
	return encMode.Marshal(&w)
}

// UnmarshalAuth decodes an Auth frame; bad input (including a signature or
// proof of the wrong size) matches [ErrMalformed]. It checks the form only:
// whether the signature and proof are valid is the handshake's judgement.
func UnmarshalAuth(data []byte) (Auth, error) {
	var w authWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		return Auth{}, fmt.Errorf("%w: auth: %v", ErrMalformed, err)
	}
	a := Auth{Signature: w.Signature, Proof: w.Proof}
	if err := a.check(); err != nil {
		return Auth{}, err
	}
	if len(a.Proof) == 0 {
		a.Proof = nil
	}
	return a, nil
}

func (a Auth) check() error {
	if len(a.Signature) != SignatureSize {
		return fmt.Errorf("%w: auth: signature of %d bytes, want %d", ErrMalformed, len(a.Signature), SignatureSize)
	}
	if len(a.Proof) != 0 && len(a.Proof) != ProofSize {
		return fmt.Errorf("%w: auth: network proof of %d bytes, want 0 or %d", ErrMalformed, len(a.Proof), ProofSize)
	}
	return nil
}

// otherVersion reports the version of a Hello from another wire version:
// a well-formed CBOR array (within the handshake limits) whose first two
// items are the magic and a version other than [Version]. Only those two
// items are the same in every version.
func otherVersion(data []byte) (uint16, bool) {
	var items []cbor.RawMessage
	if err := decMode.Unmarshal(data, &items); err != nil || len(items) < 2 {
		return 0, false
	}
	var magic string
	var version uint16
	if decMode.Unmarshal(items[0], &magic) != nil || magic != Magic ||
		decMode.Unmarshal(items[1], &version) != nil || version == Version {
		return 0, false
	}
	return version, true
}

// startsWithMagic reports whether data starts with a CBOR array head
// (definite or not) followed by the text string [Magic].
func startsWithMagic(data []byte) bool {
	d := decoder{buf: data}
	if len(data) > 0 && data[0] == majorArray<<5|31 {
		d.off = 1
	} else if _, err := d.head(majorArray); err != nil {
		return false
	}
	return bytes.HasPrefix(data[d.off:], []byte("\x68"+Magic))
}

// MarshalVerdict returns the CBOR encoding of v.
func MarshalVerdict(v Verdict) ([]byte, error) {
	return encMode.Marshal(&verdictWire{Code: uint8(v.Code), Reason: v.Reason})
}

// UnmarshalVerdict decodes a Verdict; bad input matches [ErrMalformed].
func UnmarshalVerdict(data []byte) (Verdict, error) {
	var w verdictWire
	if err := decMode.Unmarshal(data, &w); err != nil {
		return Verdict{}, fmt.Errorf("%w: verdict: %v", ErrMalformed, err)
	}
	return Verdict{Code: RejectCode(w.Code), Reason: w.Reason}, nil
}

// MarshalCBOR encodes v with the library's deterministic CBOR mode. The
// control messages of the upper layers (peer lists, route requests, ...)
// use it for their packets.
func MarshalCBOR(v any) ([]byte, error) { return encMode.Marshal(v) }

// UnmarshalCBOR decodes a control packet into v with strict limits: no
// indefinite lengths, no tags, no duplicate map keys, nesting of at most 8
// and at most [MaxControlItems] elements per array or map. Errors match
// [ErrMalformed].
func UnmarshalCBOR(data []byte, v any) error {
	if err := ctrlDecMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
