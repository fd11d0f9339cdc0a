package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// recordGoldenKey is the key of the record example in docs/protocol.md:
// the Ed25519 key whose seed is the bytes 0x00, 0x01, …, 0x1f.
func recordGoldenKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// goldenRecord is the record example: sequence number and time
// 1700000000000000000, one address, metadata {"name": "alice"}.
func goldenRecord(t testing.TB) *Record {
	t.Helper()
	key := recordGoldenKey()
	r := &Record{Key: key.Public().(ed25519.PublicKey), Seq: uint64(goldenTime), Time: goldenTime,
		Addrs: []string{"192.0.2.1:4444"}, Meta: map[string]string{"name": "alice"}}
	if err := r.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
		t.Fatal(err)
	}
	return r
}

// signedRecord wraps body in a record signed by key, as a peer written from
// the spec would.
func signedRecord(t testing.TB, key ed25519.PrivateKey, body []byte) []byte {
	t.Helper()
	b, err := MarshalCBOR(&recordWire{Body: body, Sig: ed25519.Sign(key, RecordSigningInput(body))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordBodyMap is the golden record's body as a plain map, for tests that
// change it.
func recordBodyMap(key ed25519.PrivateKey) map[uint64]any {
	pub := key.Public().(ed25519.PublicKey)
	id := NodeIDFromKey(pub)
	return map[uint64]any{
		RecordKeyID: id[:], RecordKeyKey: []byte(pub), RecordKeySeq: uint64(goldenTime), RecordKeyTime: goldenTime,
		RecordKeyAddrs: []string{"192.0.2.1:4444"}, RecordKeyMeta: map[string]string{"name": "alice"},
	}
}

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := MarshalCBOR(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func recordsEqual(a, b *Record) bool {
	return a.ID == b.ID && bytes.Equal(a.Key, b.Key) && a.Seq == b.Seq && a.Time == b.Time &&
		reflect.DeepEqual(a.Addrs, b.Addrs) && reflect.DeepEqual(a.Meta, b.Meta) &&
		a.Group == b.Group && a.Hub == b.Hub
}

// TestGoldenRecordGroup: the example record with group "eu" and the hub
// flag (keys 7 and 8) signs to the bytes of record_group.hex, which decode,
// verify and match a body map built by the spec's rules; a false hub flag
// or an empty group written out, or a group over its limit, are refused.
func TestGoldenRecordGroup(t *testing.T) {
	key := recordGoldenKey()
	sign := func(msg []byte) []byte { return ed25519.Sign(key, msg) }
	r := &Record{Key: key.Public().(ed25519.PublicKey), Seq: uint64(goldenTime), Time: goldenTime,
		Addrs: []string{"192.0.2.1:4444"}, Meta: map[string]string{"name": "alice"}, Group: "eu", Hub: true}
	if err := r.Sign(sign); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "record_group", r.Bytes())
	data := readGolden(t, "record_group")
	got, err := UnmarshalRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	if !recordsEqual(got, r) || got.Group != "eu" || !got.Hub {
		t.Fatalf("decoded %+v, want %+v", got, r)
	}
	m := recordBodyMap(key)
	m[RecordKeyGroup], m[RecordKeyHub] = "eu", true
	if by := signedRecord(t, key, mustCBOR(t, m)); !bytes.Equal(by, data) {
		t.Fatalf("the record built from the spec's rules is\n%s\nwant\n%s", formatHex(by), formatHex(data))
	}
	for name, change := range map[string]func(map[uint64]any){
		"hub false":   func(m map[uint64]any) { m[RecordKeyHub] = false },
		"hub uint":    func(m map[uint64]any) { m[RecordKeyHub] = uint64(1) },
		"empty group": func(m map[uint64]any) { m[RecordKeyGroup] = "" },
		"group bstr":  func(m map[uint64]any) { m[RecordKeyGroup] = []byte("eu") },
		"long group":  func(m map[uint64]any) { m[RecordKeyGroup] = strings.Repeat("g", MaxRecordGroupLen+1) },
	} {
		m := recordBodyMap(key)
		change(m)
		if _, err := UnmarshalRecord(signedRecord(t, key, mustCBOR(t, m))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	r.Group = strings.Repeat("g", MaxRecordGroupLen+1)
	if err := r.Sign(sign); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Sign with a long group: %v", err)
	}
}

// TestGoldenRecord: the Go code signs the example record to exactly the
// bytes of testdata/golden/record.hex (Ed25519 signatures are
// deterministic), those bytes decode and verify, a peer that encodes the
// body map by the spec's rules gets the same bytes, and docs/protocol.md
// shows them.
func TestGoldenRecord(t *testing.T) {
	r := goldenRecord(t)
	checkGolden(t, "record", r.Bytes())
	data := readGolden(t, "record")
	got, err := UnmarshalRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	if !recordsEqual(got, r) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("decoded %+v, want %+v", got, r)
	}
	if by := signedRecord(t, recordGoldenKey(), mustCBOR(t, recordBodyMap(recordGoldenKey()))); !bytes.Equal(by, data) {
		t.Fatalf("the record built from the spec's rules is\n%s\nwant\n%s", formatHex(by), formatHex(data))
	}
	text, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseSpecBlocks(string(text))
	if err != nil {
		t.Fatal(err)
	}
	shown := false
	for _, b := range blocks {
		shown = shown || b.name == "record"
	}
	if !shown {
		t.Errorf("%s shows no annotated example \"record\"", specPath)
	}
	for _, s := range []string{RecordDomain, "2048", "255"} {
		if !strings.Contains(string(text), s) {
			t.Errorf("%s does not mention %q", specPath, s)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	key := recordGoldenKey()
	sign := func(msg []byte) []byte { return ed25519.Sign(key, msg) }
	for _, r := range []*Record{
		{Seq: 0, Time: 0},
		{Seq: 1<<64 - 1, Time: -1, Addrs: []string{"a:1", "[2001:db8::1]:4444"}, Meta: map[string]string{"": "", "z": "1", "a": "2"}},
		{Seq: 7, Time: 1 << 62, Addrs: make8Addrs()},
	} {
		r.Key = key.Public().(ed25519.PublicKey)
		if err := r.Sign(sign); err != nil {
			t.Fatal(err)
		}
		if r.ID != NodeIDFromKey(r.Key) {
			t.Fatal("Sign did not set the ID from the key")
		}
		got, err := UnmarshalRecord(r.Bytes())
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if err := got.Verify(); err != nil {
			t.Fatal(err)
		}
		// Sign writes no addresses and no metadata as an empty array and
		// an empty map.
		want := *r
		if want.Addrs == nil {
			want.Addrs = []string{}
		}
		if want.Meta == nil {
			want.Meta = map[string]string{}
		}
		if !recordsEqual(got, &want) {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
	}
}

// make8Addrs returns MaxRecordAddrs addresses of 200 bytes each (the
// limits on their count and length hold separately; all eight at the
// longest would not fit in MaxRecordSize).
func make8Addrs() []string {
	out := make([]string, MaxRecordAddrs)
	for i := range out {
		out[i] = strings.Repeat("x", 198) + ":" + string(rune('0'+i))
	}
	return out
}

// TestRecordLimits: Sign refuses what the decoder would refuse.
func TestRecordLimits(t *testing.T) {
	key := recordGoldenKey()
	sign := func(msg []byte) []byte { return ed25519.Sign(key, msg) }
	pub := key.Public().(ed25519.PublicKey)
	bigMeta := map[string]string{}
	for i := range MaxMetaEntries + 1 {
		bigMeta[string(rune('A'+i))] = "v"
	}
	for name, r := range map[string]*Record{
		"no key":         {},
		"short key":      {Key: pub[:31]},
		"too many addrs": {Key: pub, Addrs: append(make8Addrs(), "a:1")},
		"empty addr":     {Key: pub, Addrs: []string{""}},
		"long addr":      {Key: pub, Addrs: []string{strings.Repeat("a", MaxRecordAddrLen+1)}},
		"8 long addrs": {Key: pub, Addrs: []string{
			strings.Repeat("a", MaxRecordAddrLen), strings.Repeat("b", MaxRecordAddrLen),
			strings.Repeat("c", MaxRecordAddrLen), strings.Repeat("d", MaxRecordAddrLen),
			strings.Repeat("e", MaxRecordAddrLen), strings.Repeat("f", MaxRecordAddrLen),
			strings.Repeat("g", MaxRecordAddrLen), strings.Repeat("h", MaxRecordAddrLen)}},
		"too many entries": {Key: pub, Meta: bigMeta},
		"too large":        {Key: pub, Meta: map[string]string{"big": strings.Repeat("x", MaxRecordSize)}},
	} {
		if err := r.Sign(sign); !errors.Is(err, ErrBadRecord) {
			t.Errorf("%s: Sign: %v, want ErrBadRecord", name, err)
		}
	}
	// The largest record Sign makes decodes.
	r := &Record{Key: pub, Seq: 1<<64 - 1, Time: -1 << 63, Addrs: make8Addrs()}
	if err := r.Sign(sign); err != nil {
		t.Fatal(err)
	}
	if _, err := UnmarshalRecord(r.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// TestRecordStrictDecoder: every way of bending the encoding is refused
// with ErrMalformed; a signature made over the bent bytes does not help.
func TestRecordStrictDecoder(t *testing.T) {
	key := recordGoldenKey()
	good := goldenRecord(t).Bytes()
	body := func(change func(m map[uint64]any)) []byte {
		m := recordBodyMap(key)
		change(m)
		return signedRecord(t, key, mustCBOR(t, m))
	}
	goodBody := mustCBOR(t, recordBodyMap(key))
	// The same body with its map head written in a longer form (0xb8 06
	// instead of 0xa6).
	longHead := append([]byte{0xb8, 0x06}, goodBody[1:]...)
	// The body with keys 1 and 2 swapped.
	swapped := swapFirstTwoFields(t, goodBody)
	cases := map[string][]byte{
		"empty":             nil,
		"not an array":      {0xa0},
		"three items":       append([]byte{0x83}, append(good[1:], 0x00)...),
		"trailing byte":     append(bytes.Clone(good), 0x00),
		"truncated":         good[:len(good)-1],
		"short signature":   mustCBOR(t, &recordWire{Body: goodBody, Sig: make([]byte, 63)}),
		"long map head":     signedRecord(t, key, longHead),
		"keys out of order": signedRecord(t, key, swapped),
		"missing seq":       body(func(m map[uint64]any) { delete(m, RecordKeySeq) }),
		"missing meta":      body(func(m map[uint64]any) { delete(m, RecordKeyMeta) }),
		"text key":          signedRecord(t, key, mustCBOR(t, map[any]any{"1": []byte{1}})),
		"id as text":        body(func(m map[uint64]any) { m[RecordKeyID] = strings.Repeat("a", 16) }),
		"short id":          body(func(m map[uint64]any) { m[RecordKeyID] = make([]byte, 15) }),
		"short key":         body(func(m map[uint64]any) { m[RecordKeyKey] = make([]byte, 31) }),
		"negative seq":      body(func(m map[uint64]any) { m[RecordKeySeq] = -1 }),
		"time as bytes":     body(func(m map[uint64]any) { m[RecordKeyTime] = []byte{1} }),
		"addrs null":        body(func(m map[uint64]any) { m[RecordKeyAddrs] = nil }),
		"addr not text":     body(func(m map[uint64]any) { m[RecordKeyAddrs] = [][]byte{{'a'}} }),
		"empty addr":        body(func(m map[uint64]any) { m[RecordKeyAddrs] = []string{""} }),
		"nine addrs":        body(func(m map[uint64]any) { m[RecordKeyAddrs] = append(make8Addrs()[:8:8], "a:1") }),
		"meta null":         body(func(m map[uint64]any) { m[RecordKeyMeta] = nil }),
		"meta int values":   body(func(m map[uint64]any) { m[RecordKeyMeta] = map[string]int{"a": 1} }),
		"too large":         body(func(m map[uint64]any) { m[9] = make([]byte, MaxRecordSize) }),
		"indefinite array":  signedRecord(t, key, replaceOnce(t, goodBody, []byte{0x05, 0x81}, []byte{0x05, 0x9f}, 0xff)),
		"tagged key":        signedRecord(t, key, replaceOnce(t, goodBody, []byte{0x02, 0x58, 0x20}, []byte{0x02, 0xc2, 0x58, 0x20})),
	}
	// A negative key: the body map with one more pair -1: 0.
	neg := append([]byte{0xa7}, goodBody[1:]...)
	cases["negative key"] = signedRecord(t, key, append(neg, 0x20, 0x00))
	for name, data := range cases {
		if _, err := UnmarshalRecord(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func swapFirstTwoFields(t *testing.T, body []byte) []byte {
	t.Helper()
	// a6 | 01 50 <16 bytes> | 02 58 20 <32 bytes> | ...
	if body[1] != 0x01 || body[2] != 0x50 || body[19] != 0x02 {
		t.Fatalf("unexpected body layout % x", body[:20])
	}
	first, second := body[1:19], body[19:19+3+32]
	out := []byte{body[0]}
	out = append(out, second...)
	out = append(out, first...)
	return append(out, body[19+3+32:]...)
}

// replaceOnce replaces the only occurrence of old in b by new, and appends
// the tail bytes.
func replaceOnce(t *testing.T, b, old, new []byte, tail ...byte) []byte {
	t.Helper()
	if bytes.Count(b, old) != 1 {
		t.Fatalf("% x occurs %d times", old, bytes.Count(b, old))
	}
	out := bytes.Replace(b, old, new, 1)
	if len(tail) == 0 {
		return out
	}
	// Insert the tail right after the array's single item (the address).
	i := bytes.Index(out, new) + len(new)
	item := 1 + int(out[i]&0x1f)
	return append(append(append([]byte{}, out[:i+item]...), tail...), out[i+item:]...)
}

// TestRecordUnknownFields: a field this version does not know (a later
// version's, say) is ignored, and stays covered by the signature: the
// record verifies, and its bytes are passed on unchanged.
func TestRecordUnknownFields(t *testing.T) {
	key := recordGoldenKey()
	m := recordBodyMap(key)
	m[9] = "group-a"
	m[1000] = map[string][]int{"x": {1, 2}}
	data := signedRecord(t, key, mustCBOR(t, m))
	r, err := UnmarshalRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Bytes(), data) || !recordsEqual(r, goldenRecord(t)) {
		t.Fatalf("decoded %+v", r)
	}
	// Changing the unknown field breaks the signature.
	tampered := bytes.Replace(data, []byte("group-a"), []byte("group-b"), 1)
	r, err = UnmarshalRecord(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrRecordSignature) {
		t.Fatalf("tampered unknown field: %v, want ErrRecordSignature", err)
	}
}

// TestRecordVerify: a changed byte anywhere in the body fails the
// signature; a record signed by a key that does not hash to its node ID
// fails the identity check, however well it is signed.
func TestRecordVerify(t *testing.T) {
	good := goldenRecord(t).Bytes()
	addr := bytes.Index(good, []byte("192.0.2.1:4444"))
	tampered := bytes.Clone(good)
	tampered[addr] = '9' // "992.0.2.1:4444"
	r, err := UnmarshalRecord(tampered)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrRecordSignature) || !errors.Is(err, ErrBadRecord) {
		t.Fatalf("tampered address: %v, want ErrRecordSignature", err)
	}
	sig := bytes.Clone(good)
	sig[len(sig)-1] ^= 1
	if r, err = UnmarshalRecord(sig); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrRecordSignature) {
		t.Fatalf("flipped signature bit: %v, want ErrRecordSignature", err)
	}
	// Another key claims the golden node's ID and signs that claim.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	m := recordBodyMap(recordGoldenKey())
	m[RecordKeyKey] = []byte(other.Public().(ed25519.PublicKey))
	if r, err = UnmarshalRecord(signedRecord(t, other, mustCBOR(t, m))); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); !errors.Is(err, ErrRecordIdentity) || !errors.Is(err, ErrBadRecord) {
		t.Fatalf("key of another node: %v, want ErrRecordIdentity", err)
	}
}

// FuzzRecord: the decoder never panics, refuses with ErrMalformed only,
// and whatever it accepts is within the limits, verifies exactly when its
// signature is right, and survives re-signing with the same fields.
func FuzzRecord(f *testing.F) {
	key := recordGoldenKey()
	m := recordBodyMap(key)
	m[7] = "x"
	fuzzSeeds(f, goldenRecord(f).Bytes(), signedRecord(f, key, mustCBOR(f, m)))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalRecord(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(r.Addrs) > MaxRecordAddrs || len(r.Meta) > MaxMetaEntries || len(r.Bytes()) > MaxRecordSize {
			t.Fatal("limits not enforced")
		}
		if !bytes.Equal(r.Bytes(), data) {
			t.Fatal("Bytes differ from the input")
		}
		_ = r.Verify() // must not panic
		if !bytes.Equal(r.Key, key.Public().(ed25519.PublicKey)) {
			return
		}
		// Re-sign the decoded fields with the golden key: the result is a
		// valid record with the same fields.
		again := &Record{Key: r.Key, Seq: r.Seq, Time: r.Time, Addrs: r.Addrs, Meta: r.Meta}
		if err := again.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
			return // unknown fields took room that the re-signed record may not need; or the ID differed
		}
		got, err := UnmarshalRecord(again.Bytes())
		if err != nil || got.Verify() != nil || got.Seq != r.Seq || got.Time != r.Time {
			t.Fatalf("re-signed record: %+v, %v", got, err)
		}
	})
}

// freshRecords returns n decoded records, each of a node with a key of
// its own (as in a peer list), made from seeded keys so that runs repeat.
func freshRecords(t testing.TB, n int) []*Record {
	t.Helper()
	out := make([]*Record, n)
	for i := range out {
		seed := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a, 0xc3}, ed25519.SeedSize/4)
		key := ed25519.NewKeyFromSeed(seed)
		r := &Record{Key: key.Public().(ed25519.PublicKey), Seq: uint64(i + 1), Time: goldenTime,
			Addrs: []string{"192.0.2.1:4444"}}
		if err := r.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalRecord(r.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		out[i] = got
	}
	return out
}

// TestVerifyRecords: a batch gives each record the verdict Verify gives
// it, whether the batch is all valid, holds bad signatures or identities,
// or is of one record.
func TestVerifyRecords(t *testing.T) {
	recs := freshRecords(t, 20)
	check := func(name string, rs []*Record) {
		t.Helper()
		errs := VerifyRecords(rs)
		if len(errs) != len(rs) {
			t.Fatalf("%s: %d verdicts for %d records", name, len(errs), len(rs))
		}
		for i, r := range rs {
			if want := r.Verify(); !errors.Is(errs[i], want) || (want == nil) != (errs[i] == nil) {
				t.Fatalf("%s: record %d: batch says %v, Verify %v", name, i, errs[i], want)
			}
		}
	}
	check("all valid", recs)
	check("none", nil)
	check("one", recs[:1])
	bad := slices.Clone(recs)
	for _, i := range []int{3, 11} {
		b := bytes.Clone(recs[i].Bytes())
		b[len(b)-1] ^= 1 // the signature's last byte
		r, err := UnmarshalRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		bad[i] = r
	}
	// Another key signs a record that claims recs[5]'s node ID.
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	m := recordBodyMap(other)
	m[RecordKeyID] = recs[5].ID[:]
	r, err := UnmarshalRecord(signedRecord(t, other, mustCBOR(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	bad[5] = r
	check("two bad signatures and a borrowed ID", bad)
	errs := VerifyRecords(bad)
	for i, err := range errs {
		switch i {
		case 3, 11:
			if !errors.Is(err, ErrRecordSignature) {
				t.Fatalf("record %d: %v, want ErrRecordSignature", i, err)
			}
		case 5:
			if !errors.Is(err, ErrRecordIdentity) {
				t.Fatalf("record %d: %v, want ErrRecordIdentity", i, err)
			}
		default:
			if err != nil {
				t.Fatalf("record %d: %v, want valid", i, err)
			}
		}
	}
	check("one bad", bad[3:4])
}

// BenchmarkRecord measures what a node spends on one record of a peer
// list: decoding it, and verifying it (only records newer than the one
// held are verified).
func BenchmarkRecord(b *testing.B) {
	data := goldenRecord(b).Bytes()
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := UnmarshalRecord(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	r, _ := UnmarshalRecord(data)
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if err := r.Verify(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRecordList measures what verifying a peer list of 64 records,
// each of another node (the worst case: every record new), costs: one by
// one with Verify, or in one batch with VerifyRecords, and, for
// comparison, one by one with crypto/ed25519 (the equation of earlier
// versions). ns/op is per list; ns/record per record.
func BenchmarkRecordList(b *testing.B) {
	recs := freshRecords(b, 64)
	perRecord := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			for _, r := range recs {
				if _, err := UnmarshalRecord(r.Bytes()); err != nil {
					b.Fatal(err)
				}
			}
		}
		perRecord(b)
	})
	b.Run("one-by-one", func(b *testing.B) {
		for b.Loop() {
			for _, r := range recs {
				if err := r.Verify(); err != nil {
					b.Fatal(err)
				}
			}
		}
		perRecord(b)
	})
	b.Run("one-by-one-stdlib", func(b *testing.B) {
		for b.Loop() {
			for _, r := range recs {
				if !ed25519.Verify(r.Key, RecordSigningInput(r.body), r.sig) {
					b.Fatal("invalid")
				}
			}
		}
		perRecord(b)
	})
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			for _, err := range VerifyRecords(recs) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		perRecord(b)
	})
	// A batch with one bad signature fails, and every record is then
	// checked on its own.
	bad := slices.Clone(recs)
	raw := bytes.Clone(recs[0].Bytes())
	raw[len(raw)-1] ^= 1
	bad[0], _ = UnmarshalRecord(raw)
	b.Run("batch-one-bad", func(b *testing.B) {
		for b.Loop() {
			VerifyRecords(bad)
		}
		perRecord(b)
	})
}
