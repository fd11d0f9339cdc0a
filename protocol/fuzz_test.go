package protocol

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"

	"github.com/fxamacker/cbor/v2"

	"github.com/meshsock/meshsock/flags"
)

// Run each target with, for example:
//
//	go test ./protocol -run '^$' -fuzz '^FuzzDecodeEnvelope$' -fuzztime 120s
//
// Inputs that once failed are kept under testdata/fuzz/<Target>/ and run as
// ordinary tests.

// fuzzSeeds adds valid inputs, their truncations and some garbage.
func fuzzSeeds(f *testing.F, valid ...[]byte) {
	for _, v := range valid {
		f.Add(v)
		f.Add(v[:len(v)/2])
		if len(v) > 0 {
			f.Add(v[:len(v)-1])
			f.Add(append(bytes.Clone(v), 0x00))
		}
	}
	for _, g := range [][]byte{
		nil, {0x00}, {0xff}, {0x9f, 0xff}, {0x80}, {0x87}, {0x88},
		[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 0x00},
		{0x00, 0x00, 0x00, 0x00},
		{0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		f.Add(g)
	}
}

func seedEnvelopes() [][]byte {
	var out [][]byte
	for _, e := range []*Envelope{
		goldenBroadcast(),
		goldenControl(flags.Ping, goldenNonce),
		goldenControl(flags.Resend, goldenResendN),
		{},
		{Type: flags.Whisper, Sub: 0xff, Seq: 1 << 40, Time: -1, HopLimit: 255, Packets: [][]byte{nil, {}, make([]byte, 300)}},
	} {
		out = append(out, e.AppendTo(nil))
	}
	return append(out, goldenSignedBroadcast().AppendSigned(nil, goldenKey()))
}

func FuzzReadFrame(f *testing.F) {
	var seeds [][]byte
	for _, env := range seedEnvelopes() {
		seeds = append(seeds, AppendFrame(nil, flags.None, append([]byte{0}, env...)))
	}
	seeds = append(seeds, AppendFrame(AppendFrame(nil, flags.Snappy, []byte("abc")), flags.Zstd, nil))
	fuzzSeeds(f, seeds...)
	const limit = 512
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data), limit)
		var frames []testFrame
		var consumed []byte
		var err error
		buf := make([]byte, 0, 16)
		for {
			var codec flags.Method
			var body []byte
			codec, body, err = fr.ReadFrame(buf)
			if err != nil {
				break
			}
			if len(body) > limit {
				t.Fatalf("body of %d bytes over the limit", len(body))
			}
			frames = append(frames, testFrame{codec, bytes.Clone(body)})
			consumed = AppendFrame(consumed, codec, body)
		}
		switch {
		case err == io.EOF:
			if !bytes.Equal(consumed, data) {
				t.Fatalf("clean EOF but frames re-encode to %x, input %x", consumed, data)
			}
		case errors.Is(err, ErrTruncated), errors.Is(err, ErrMalformed), errors.Is(err, ErrFrameTooLarge):
			if !bytes.HasPrefix(data, consumed) {
				t.Fatalf("frames re-encode to %x, not a prefix of %x", consumed, data)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		// Byte-at-a-time delivery gives the same frames and the same error.
		frames2, err2 := readAll(iotest.OneByteReader(bytes.NewReader(data)), limit)
		if len(frames2) != len(frames) || (err == io.EOF) != (err2 == io.EOF) ||
			errors.Is(err, ErrTruncated) != errors.Is(err2, ErrTruncated) {
			t.Fatalf("one-byte reader: %d frames, %v; whole: %d frames, %v", len(frames2), err2, len(frames), err)
		}
		for i := range frames {
			if frames[i].codec != frames2[i].codec || !bytes.Equal(frames[i].body, frames2[i].body) {
				t.Fatalf("frame %d differs with the one-byte reader", i)
			}
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	fuzzSeeds(f, seedEnvelopes()...)
	f.Fuzz(func(t *testing.T, data []byte) {
		var env Envelope
		err := DecodeEnvelope(data, &env, DefaultLimits)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) &&
				!errors.Is(err, ErrTooManyPackets) && !errors.Is(err, ErrPacketTooLarge) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		// Canonical uniqueness: a decodable input is the one encoding of
		// its value.
		if enc := env.AppendTo(nil); !bytes.Equal(enc, data) {
			t.Fatalf("decoded %x, re-encodes to %x", data, enc)
		}
		if env.EncodedLen() != len(data) {
			t.Fatalf("EncodedLen %d, input %d", env.EncodedLen(), len(data))
		}
		// fxamacker agrees on the value.
		var ref refEnvelope
		if err := cbor.Unmarshal(data, &ref); err != nil {
			t.Fatalf("fxamacker rejects %x: %v", data, err)
		}
		if !envelopesEqual(&env, &Envelope{Type: flags.Flag(ref.Type), Sub: flags.Flag(ref.Sub), Sender: ref.Sender,
			Seq: ref.Seq, Time: ref.Time, HopLimit: ref.HopLimit, Packets: ref.Packets, Auth: ref.Auth}) {
			t.Fatalf("fxamacker decodes %+v, we decode %+v", ref, env)
		}
		// The signature check never panics and says yes only for the
		// seeds' genuine signatures: a fuzzer cannot forge one.
		if err := VerifyEnvelope(data, &env); err != nil {
			if !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifyEnvelope: unexpected error %v", err)
			}
		} else if len(env.Auth) != AuthSize || !KeyMatchesID(env.AuthKey(), env.Sender) {
			t.Fatalf("VerifyEnvelope accepted %x", data)
		}
	})
}

func FuzzUnmarshalHello(f *testing.F) {
	valid, _ := MarshalHello(goldenHello())
	listener, _ := MarshalHello(goldenListenerHello())
	empty, _ := MarshalHello(&Hello{})
	fuzzSeeds(f, valid, listener, empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := UnmarshalHello(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotMeshsock) {
				t.Fatalf("unexpected error %v", err)
			}
			if h != nil {
				t.Fatal("Hello returned with an error")
			}
			return
		}
		if len(h.Accept) > MaxAcceptMethods || len(h.Meta) > MaxMetaEntries {
			t.Fatalf("limits not enforced: %d methods, %d meta", len(h.Accept), len(h.Meta))
		}
		enc, err := MarshalHello(h)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", h, err)
		}
		h2, err := UnmarshalHello(enc)
		if err != nil {
			t.Fatalf("re-encoded hello does not decode: %v", err)
		}
		if h.Version == Version && len(h.Key) != 32 {
			t.Fatalf("a hello of this version decoded with a key of %d bytes", len(h.Key))
		}
		if h2.Version != h.Version || h2.Protocol != h.Protocol || h2.NodeID != h.NodeID || h2.Nonce != h.Nonce || h2.Time != h.Time ||
			!bytes.Equal(h2.Key, h.Key) ||
			h2.ListenAddr != h.ListenAddr || h2.Observed != h.Observed || !bytes.Equal(methodBytes(h2.Accept), methodBytes(h.Accept)) ||
			len(h2.Meta) != len(h.Meta) || (len(h.Meta) > 0 && !reflect.DeepEqual(h2.Meta, h.Meta)) {
			t.Fatalf("round trip changed the value: %+v -> %+v", h, h2)
		}
	})
}

// FuzzPreamble: any input decodes to a Preamble that re-encodes to the
// same value, or fails with ErrMalformed or ErrNotMeshsock; a Preamble of
// this version never carries an over-long encryption name.
func FuzzPreamble(f *testing.F) {
	tlsP, _ := MarshalPreamble(Preamble{Version: Version, Encryption: EncryptionTLS})
	plain, _ := MarshalPreamble(Preamble{Version: Version, Encryption: EncryptionPlaintext})
	v2Hello, _ := MarshalCBOR([]any{Magic, 2, make([]byte, 16), make([]byte, 16), "", []byte{}, map[string]string{}, 1, 2})
	future, _ := MarshalCBOR([]any{Magic, 4, "quantum", 1})
	fuzzSeeds(f, tlsP, plain, v2Hello, future)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := UnmarshalPreamble(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotMeshsock) {
				t.Fatalf("unexpected error %v", err)
			}
			if p != (Preamble{}) {
				t.Fatal("Preamble returned with an error")
			}
			return
		}
		if p.Version == Version && len(p.Encryption) > MaxEncryptionLen {
			t.Fatalf("encryption name of %d bytes accepted", len(p.Encryption))
		}
		if p.Version != Version && p.Encryption != "" && !startsWithMagic(data) {
			t.Fatalf("decoded %+v from input that does not start with the magic", p)
		}
		if len(p.Encryption) > MaxEncryptionLen {
			return // another version's, which this one only refuses
		}
		enc, err := MarshalPreamble(p)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", p, err)
		}
		if p2, err := UnmarshalPreamble(enc); err != nil || p2 != p {
			t.Fatalf("round trip: %+v -> %+v, %v", p, p2, err)
		}
	})
}

// FuzzAuth: any input decodes to an Auth whose signature is 64 bytes and
// whose proof is empty or 32 bytes, and which re-encodes to the same
// bytes, or fails with ErrMalformed.
func FuzzAuth(f *testing.F) {
	th := Transcript([]byte("d"), []byte("l"), nil)
	withProof, _ := MarshalAuth(Auth{Signature: SignAuth(goldenDialerKey, true, th), Proof: NetworkProof(goldenNetworkKey, true, th)})
	without, _ := MarshalAuth(Auth{Signature: make([]byte, SignatureSize)})
	fuzzSeeds(f, withProof, without)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := UnmarshalAuth(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(a.Signature) != SignatureSize || (len(a.Proof) != 0 && len(a.Proof) != ProofSize) {
			t.Fatalf("decoded sizes %d and %d", len(a.Signature), len(a.Proof))
		}
		enc, err := MarshalAuth(a)
		if err != nil {
			t.Fatalf("cannot re-encode: %v", err)
		}
		a2, err := UnmarshalAuth(enc)
		if err != nil || !bytes.Equal(a2.Signature, a.Signature) || !bytes.Equal(a2.Proof, a.Proof) {
			t.Fatalf("round trip: %x -> %x, %v", a, a2, err)
		}
	})
}

func methodBytes(ms []flags.Method) []byte {
	b := make([]byte, len(ms))
	for i, m := range ms {
		b[i] = byte(m)
	}
	return b
}

func FuzzUnmarshalVerdict(f *testing.F) {
	a, _ := MarshalVerdict(Verdict{})
	b, _ := MarshalVerdict(Verdict{Code: RejectProtocol, Reason: "protocol mismatch"})
	c, _ := MarshalVerdict(Verdict{Code: 255, Reason: string(make([]byte, 300))})
	fuzzSeeds(f, a, b, c)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := UnmarshalVerdict(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		enc, err := MarshalVerdict(v)
		if err != nil {
			t.Fatal(err)
		}
		if v2, err := UnmarshalVerdict(enc); err != nil || v2 != v {
			t.Fatalf("round trip: %+v -> %+v, %v", v, v2, err)
		}
	})
}

func FuzzUnmarshalCBOR(f *testing.F) {
	a, _ := MarshalCBOR(&controlMsg{Kind: 1, IDs: [][]byte{goldenNodeID[:]}, Addrs: []string{"192.0.2.1:4444"},
		Meta: map[string]string{"a": "b"}})
	b, _ := MarshalCBOR(&controlMsg{})
	fuzzSeeds(f, a, b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m controlMsg
		err := UnmarshalCBOR(data, &m)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(m.IDs) > MaxControlItems || len(m.Addrs) > MaxControlItems || len(m.Meta) > MaxControlItems {
			t.Fatal("limits not enforced")
		}
		enc, err := MarshalCBOR(&m)
		if err != nil {
			t.Fatalf("cannot re-encode %+v: %v", m, err)
		}
		var m2 controlMsg
		if err := UnmarshalCBOR(enc, &m2); err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the value: %+v -> %+v", m, m2)
		}
		// The deterministic encoding is a fixed point.
		if enc2, _ := MarshalCBOR(&m2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x vs %x", enc, enc2)
		}
	})
}

// FuzzUnmarshalRecord: the record decoder (member messages carry one, with
// the optional group and hub keys) never panics; what it accepts is within
// the limits, keeps the input's bytes, and decodes again to the same
// fields.
func FuzzUnmarshalRecord(f *testing.F) {
	golden := goldenRecord(f)
	key := recordGoldenKey()
	m := recordBodyMap(key)
	m[RecordKeyGroup], m[RecordKeyHub] = "eu", true
	body, err := MarshalCBOR(m)
	if err != nil {
		f.Fatal(err)
	}
	withGroup, err := MarshalCBOR(&recordWire{Body: body, Sig: make([]byte, 64)})
	if err != nil {
		f.Fatal(err)
	}
	fuzzSeeds(f, golden.Bytes(), withGroup)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalRecord(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(r.Bytes(), data) || len(r.Group) > MaxRecordGroupLen || len(r.Addrs) > MaxRecordAddrs {
			t.Fatalf("accepted %x as %+v", data, r)
		}
		again, err := UnmarshalRecord(r.Bytes())
		if err != nil || !recordsEqual(again, r) {
			t.Fatalf("decoded again: %+v, %v", again, err)
		}
	})
}
