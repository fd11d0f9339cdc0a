package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// A peer record is what a node says about itself: its key, where it
// listens and its metadata, with a sequence number, signed by its own key.
// Nodes pass records on unchanged (peer exchange, route searches), so a
// node that relays one cannot alter it, and a newer record (higher
// sequence number) replaces an older one. docs/protocol.md §12.1 gives the
// bytes.
//
// On the wire a record is the CBOR array [body bstr, signature bstr(64)].
// The body is the deterministic CBOR encoding of a map with unsigned
// integer keys ([RecordKeyID] …), so that later versions can add fields
// under new keys; a decoder ignores keys it does not know, and the
// signature, taken over the body's bytes as received, still covers them.
// The signature is Ed25519 by the record's key over [RecordDomain] || body.

// RecordDomain starts the input of every record signature, so that a
// record signature can never be taken for a signature of anything else.
const RecordDomain = "meshsock/3 record"

// Keys of the record body map. Keys this version does not define are
// ignored by decoders (and kept: they are signed, and relays pass the
// record's bytes on unchanged). Keys 7 and 8 are optional: a record
// without a group or that is not a hub's leaves them out, so records of
// nodes that set neither are byte for byte those of earlier releases.
const (
	RecordKeyID    = 1 // node ID, bstr(16): the first 16 bytes of SHA-256(key)
	RecordKeyKey   = 2 // Ed25519 public key, bstr(32)
	RecordKeySeq   = 3 // sequence number, uint
	RecordKeyTime  = 4 // when the node signed the record, Unix nanoseconds, int
	RecordKeyAddrs = 5 // listen addresses, array of tstr
	RecordKeyMeta  = 6 // metadata, map tstr → tstr
	RecordKeyGroup = 7 // mesh group, tstr of 1 to MaxRecordGroupLen bytes; absent: none
	RecordKeyHub   = 8 // hub flag, true; absent: not a hub
)

// Record limits. A record that exceeds one is refused by the encoder
// ([Record.Sign]) and the decoder alike.
const (
	// MaxRecordSize bounds a whole encoded record (body, signature and
	// the two heads around them), in bytes.
	MaxRecordSize = 2048
	// MaxRecordAddrs bounds the listen addresses of one record.
	MaxRecordAddrs = 8
	// MaxRecordAddrLen bounds one listen address, in bytes (1 at least).
	MaxRecordAddrLen = 255
	// MaxRecordGroupLen bounds the group name, in bytes.
	MaxRecordGroupLen = 64
	// maxRecordFields bounds the pairs of the body map, unknown keys
	// included.
	maxRecordFields = 32
)

// Record errors; match with errors.Is. Decoding errors match
// [ErrMalformed] instead.
var (
	// ErrBadRecord: a record is not valid. The two errors below match it.
	ErrBadRecord = errors.New("protocol: invalid peer record")
	// ErrRecordIdentity: a record's key does not hash to its node ID.
	ErrRecordIdentity = fmt.Errorf("%w: key does not match the node ID", ErrBadRecord)
	// ErrRecordSignature: a record's signature does not verify.
	ErrRecordSignature = fmt.Errorf("%w: bad signature", ErrBadRecord)
)

// Record is a peer record: what a node says about itself. [Record.Sign]
// encodes and signs one; [UnmarshalRecord] decodes one, which
// [Record.Verify] must accept before anything in it is trusted.
//
// The fields are what the signed body says; changing them does not change
// [Record.Bytes] (sign again for that).
type Record struct {
	// ID is the node's ID, derived from Key ([NodeIDFromKey]).
	ID NodeID
	// Key is the node's Ed25519 public key, which signs the record.
	Key ed25519.PublicKey
	// Seq orders the node's records: a higher one replaces a lower one.
	// A node draws it from its clock when it starts, and increments it at
	// least by one with every new record, so a restarted node goes on
	// above its earlier records.
	Seq uint64
	// Time is when the node signed the record, in Unix nanoseconds.
	Time int64
	// Addrs are the addresses ("host:port") the node accepts connections
	// on, most preferred first; none for a node that only dials.
	Addrs []string
	// Meta is the node's metadata.
	Meta map[string]string
	// Group is the node's mesh group ("": none), at most
	// MaxRecordGroupLen bytes (key 7).
	Group string
	// Hub says the node is a hub of its group (key 8).
	Hub bool

	body []byte // the signed body, as encoded or received
	sig  []byte // Ed25519 signature over RecordDomain || body
	raw  []byte // the whole record: [body, sig]
}

// recordWire is the outer array.
type recordWire struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

// recordBody is the body map as this version writes it.
type recordBody struct {
	ID    []byte            `cbor:"1,keyasint"`
	Key   []byte            `cbor:"2,keyasint"`
	Seq   uint64            `cbor:"3,keyasint"`
	Time  int64             `cbor:"4,keyasint"`
	Addrs []string          `cbor:"5,keyasint"`
	Meta  map[string]string `cbor:"6,keyasint"`
	Group string            `cbor:"7,keyasint,omitempty"`
	Hub   bool              `cbor:"8,keyasint,omitempty"`
}

// recordDecMode decodes record bodies and the records themselves: no
// indefinite lengths, no tags, no duplicate map keys, valid UTF-8, and
// bounds on nesting and sizes that MaxRecordSize makes generous.
var recordDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  4,
		MaxArrayElements: MaxRecordSize,
		MaxMapPairs:      MaxRecordSize,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// checkRecordFields checks the limits that do not depend on the encoding.
func checkRecordFields(addrs []string, meta map[string]string, group string) error {
	if len(group) > MaxRecordGroupLen {
		return fmt.Errorf("group of %d bytes, limit %d", len(group), MaxRecordGroupLen)
	}
	if len(addrs) > MaxRecordAddrs {
		return fmt.Errorf("%d addresses, limit %d", len(addrs), MaxRecordAddrs)
	}
	for _, a := range addrs {
		if len(a) == 0 || len(a) > MaxRecordAddrLen {
			return fmt.Errorf("address of %d bytes, want 1 to %d", len(a), MaxRecordAddrLen)
		}
	}
	if len(meta) > MaxMetaEntries {
		return fmt.Errorf("%d metadata entries, limit %d", len(meta), MaxMetaEntries)
	}
	return nil
}

// Sign encodes r's Key, Seq, Time, Addrs, Meta, Group and Hub (the last
// two only when set), sets r.ID from r.Key,
// and signs the body with sign, which must be Ed25519 with the private key
// of r.Key (base.Socket.Sign is such a function). An invalid Key, or
// fields over the limits, give an error matching [ErrBadRecord].
func (r *Record) Sign(sign func(msg []byte) []byte) error {
	if len(r.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes", ErrBadRecord, len(r.Key))
	}
	if err := checkRecordFields(r.Addrs, r.Meta, r.Group); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	r.ID = NodeIDFromKey(r.Key)
	b := recordBody{ID: r.ID[:], Key: r.Key, Seq: r.Seq, Time: r.Time, Addrs: r.Addrs, Meta: r.Meta,
		Group: r.Group, Hub: r.Hub}
	if b.Addrs == nil {
		b.Addrs = []string{}
	}
	if b.Meta == nil {
		b.Meta = map[string]string{}
	}
	body, err := encMode.Marshal(&b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	sig := sign(RecordSigningInput(body))
	raw, err := encMode.Marshal(&recordWire{Body: body, Sig: sig})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if len(raw) > MaxRecordSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrBadRecord, len(raw), MaxRecordSize)
	}
	r.body, r.sig, r.raw = body, sig, raw
	return nil
}

// RecordSigningInput returns what a record's signature covers:
// [RecordDomain] followed by the body's bytes.
func RecordSigningInput(body []byte) []byte {
	msg := make([]byte, 0, len(RecordDomain)+len(body))
	return append(append(msg, RecordDomain...), body...)
}

// Bytes returns the signed record as it goes on the wire (nil before Sign
// for a record that was not decoded). Relays pass these bytes on
// unchanged. The slice must not be modified.
func (r *Record) Bytes() []byte { return r.raw }

// Verify checks that r.Key hashes to r.ID ([ErrRecordIdentity]) and that
// the signature over the body is r.Key's ([ErrRecordSignature]), under
// the equation envelope signatures are checked by (docs/protocol.md §5.3:
// cofactored, canonical encodings, the key not of small order), which is
// what batch verification computes: [VerifyRecords] gives every record
// the same verdict.
func (r *Record) Verify() error {
	if err := r.checkKey(); err != nil {
		return err
	}
	if !voi.Verify(voi.PublicKey(r.Key), RecordSigningInput(r.body), r.sig) {
		return ErrRecordSignature
	}
	return nil
}

// checkKey is what Verify checks before the signature: the key hashes to
// the node ID, and there is a signature of the right size.
func (r *Record) checkKey() error {
	if !KeyMatchesID(r.Key, r.ID) {
		return ErrRecordIdentity
	}
	if len(r.sig) != ed25519.SignatureSize {
		return ErrRecordSignature
	}
	return nil
}

// recordBatches holds batch verifiers for VerifyRecords, each with room
// for a whole peer list.
var recordBatches = sync.Pool{New: func() any { return voi.NewBatchVerifierWithCapacity(64) }}

// VerifyRecords verifies recs at once and returns, for each, what
// [Record.Verify] returns for it (nil: valid). The signatures are checked
// in one Ed25519 batch (curve25519-voi), which costs about half as much
// per signature as checking them one by one when all of them are valid;
// when one is not, the batch fails and every signature is then checked on
// its own, so a batch with a bad signature costs about half as much again
// as one-by-one checks. Use it for records that are likely valid (those
// an honest neighbour passes on were verified by it).
func VerifyRecords(recs []*Record) []error {
	errs := make([]error, len(recs))
	idx := make([]int, 0, len(recs))
	for i, r := range recs {
		if errs[i] = r.checkKey(); errs[i] == nil {
			idx = append(idx, i)
		}
	}
	switch len(idx) {
	case 0:
		return errs
	case 1:
		errs[idx[0]] = recs[idx[0]].Verify()
		return errs
	}
	bv := recordBatches.Get().(*voi.BatchVerifier)
	defer recordBatches.Put(bv)
	bv.Reset()
	for _, i := range idx {
		r := recs[i]
		bv.Add(voi.PublicKey(r.Key), RecordSigningInput(r.body), r.sig)
	}
	if all, valid := bv.Verify(nil); !all {
		for j, i := range idx {
			if !valid[j] {
				errs[i] = ErrRecordSignature
			}
		}
	}
	bv.Reset() // let go of the records' inputs while it sits in the pool
	return errs
}

// UnmarshalRecord decodes a record strictly, without checking its
// signature (call [Record.Verify]): at most [MaxRecordSize] bytes, the
// deterministic encoding of the array and of every field this version
// knows, body keys in ascending order, each known field present with its
// type and within its limits, no trailing bytes. Errors match
// [ErrMalformed]. The record keeps its own copy of data.
func UnmarshalRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: record of %d bytes, limit %d", ErrMalformed, len(data), MaxRecordSize)
	}
	raw := bytes.Clone(data)
	var w recordWire
	if err := recordDecMode.Unmarshal(raw, &w); err != nil {
		return nil, fmt.Errorf("%w: record: %v", ErrMalformed, err)
	}
	if len(w.Sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: record signature of %d bytes", ErrMalformed, len(w.Sig))
	}
	if err := canonical(raw, &w); err != nil {
		return nil, err
	}
	var fields map[uint64]cbor.RawMessage
	if err := recordDecMode.Unmarshal(w.Body, &fields); err != nil {
		return nil, fmt.Errorf("%w: record body: %v", ErrMalformed, err)
	}
	if len(fields) > maxRecordFields {
		return nil, fmt.Errorf("%w: record body has %d fields, limit %d", ErrMalformed, len(fields), maxRecordFields)
	}
	// The map's own head and its keys: shortest forms, ascending order.
	if err := canonical(w.Body, fields); err != nil {
		return nil, err
	}
	// raw is [body, sig] in its one deterministic form: keep the body and
	// the signature as parts of it rather than as copies.
	end := len(raw) - 2 - ed25519.SignatureSize
	r := &Record{body: raw[end-len(w.Body) : end : end], sig: raw[len(raw)-ed25519.SignatureSize:], raw: raw}
	var id, key []byte
	for _, f := range []struct {
		key   uint64
		major byte
		into  any
	}{
		{RecordKeyID, majorBytes, &id},
		{RecordKeyKey, majorBytes, &key},
		{RecordKeySeq, majorUint, &r.Seq},
		{RecordKeyTime, 0xff, &r.Time}, // uint or nint
		{RecordKeyAddrs, majorArray, &r.Addrs},
		{RecordKeyMeta, recordMajorMap, &r.Meta},
	} {
		v, ok := fields[f.key]
		if !ok {
			return nil, fmt.Errorf("%w: record lacks field %d", ErrMalformed, f.key)
		}
		if err := decodeRecordField(v, f.major, f.into); err != nil {
			return nil, fmt.Errorf("%w: record field %d: %v", ErrMalformed, f.key, err)
		}
	}
	if v, ok := fields[RecordKeyGroup]; ok {
		if err := decodeRecordField(v, majorText, &r.Group); err != nil {
			return nil, fmt.Errorf("%w: record field %d: %v", ErrMalformed, RecordKeyGroup, err)
		}
		if r.Group == "" {
			return nil, fmt.Errorf("%w: record field %d: empty group (leave the key out)", ErrMalformed, RecordKeyGroup)
		}
	}
	if v, ok := fields[RecordKeyHub]; ok {
		if len(v) != 1 || v[0] != 0xf5 {
			return nil, fmt.Errorf("%w: record field %d: not true (leave the key out)", ErrMalformed, RecordKeyHub)
		}
		r.Hub = true
	}
	if len(id) != len(r.ID) {
		return nil, fmt.Errorf("%w: record node ID of %d bytes", ErrMalformed, len(id))
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: record key of %d bytes", ErrMalformed, len(key))
	}
	copy(r.ID[:], id)
	r.Key = ed25519.PublicKey(key)
	if err := checkRecordFields(r.Addrs, r.Meta, r.Group); err != nil {
		return nil, fmt.Errorf("%w: record: %v", ErrMalformed, err)
	}
	return r, nil
}

// CBOR's major types of text strings and maps.
const (
	majorText      = 3
	recordMajorMap = 5
)

// decodeRecordField decodes one field of the body into v, checking that
// its major type is major (0xff: an unsigned or negative integer) and that
// its encoding is the deterministic one.
func decodeRecordField(raw cbor.RawMessage, major byte, v any) error {
	got := raw[0] >> 5
	switch {
	case major == 0xff && got != majorUint && got != majorNegInt,
		major != 0xff && got != major:
		return fmt.Errorf("CBOR major type %d", got)
	}
	if err := recordDecMode.Unmarshal(raw, v); err != nil {
		return err
	}
	return canonical(raw, v)
}

// canonical checks that data is the deterministic encoding of v, the value
// decoded from it.
func canonical(data []byte, v any) error {
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, data) {
		return fmt.Errorf("%w: record is not in deterministic CBOR", ErrMalformed)
	}
	return nil
}
