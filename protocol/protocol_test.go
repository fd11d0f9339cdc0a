package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

func TestProtocolIDDistinct(t *testing.T) {
	base := DefaultProtocol
	cases := map[string]ProtocolID{
		"default":          base.ID(),
		"other subnet":     Protocol{Subnet: "other", Encryption: base.Encryption}.ID(),
		"other encryption": Protocol{Subnet: base.Subnet, Encryption: "tls"}.ID(),
		"version 2":        base.idForVersion(Version + 1),
		"version 0":        base.idForVersion(0),
		"ab/c":             Protocol{Subnet: "ab", Encryption: "c"}.ID(),
		"a/bc":             Protocol{Subnet: "a", Encryption: "bc"}.ID(),
		"empty":            Protocol{}.ID(),
		"swapped":          Protocol{Subnet: base.Encryption, Encryption: base.Subnet}.ID(),
		"unsigned":         Protocol{Subnet: base.Subnet, Encryption: base.Encryption, Signing: SigningNone}.ID(),
		"c/":               Protocol{Subnet: "c"}.ID(),
		"/c":               Protocol{Encryption: "c"}.ID(),
		"encryption+sign":  Protocol{Subnet: "", Encryption: "cnone", Signing: ""}.ID(),
	}
	seen := map[ProtocolID]string{}
	for name, id := range cases {
		if prev, ok := seen[id]; ok {
			t.Errorf("%s and %s have the same ID %v", name, prev, id)
		}
		seen[id] = name
	}
	if base.ID() != base.ID() {
		t.Error("ID is not deterministic")
	}
	if base.ID() != base.idForVersion(Version) {
		t.Error("ID() is not idForVersion(Version)")
	}
	if got := base.String(); got != "meshsock/tls-1.3" {
		t.Errorf("String() = %q", got)
	}
	// An empty Signing is the default, ed25519.
	implicit := Protocol{Subnet: base.Subnet, Encryption: base.Encryption}
	if implicit.ID() != base.ID() || !implicit.Signs() || !base.Signs() {
		t.Error("an empty Signing is not the default ed25519")
	}
	unsigned := Protocol{Subnet: base.Subnet, Encryption: base.Encryption, Signing: SigningNone}
	if unsigned.Signs() || unsigned.String() != "meshsock/tls-1.3/unsigned" {
		t.Errorf("unsigned: Signs %v, String %q", unsigned.Signs(), unsigned.String())
	}
}

// TestProtocolIDConstruction recomputes the ID exactly as docs/protocol.md
// describes it, from one concatenated byte string.
func TestProtocolIDConstruction(t *testing.T) {
	for _, p := range []Protocol{DefaultProtocol, {Subnet: "ab", Encryption: "c"}, {}, {Subnet: "x", Signing: SigningNone}} {
		var in []byte
		in = append(in, "meshsock-protocol"...)
		in = binary.BigEndian.AppendUint16(in, Version)
		in = binary.BigEndian.AppendUint32(in, uint32(len(p.Subnet)))
		in = append(in, p.Subnet...)
		in = binary.BigEndian.AppendUint32(in, uint32(len(p.Encryption)))
		in = append(in, p.Encryption...)
		signing := p.Signing
		if signing == "" {
			signing = SigningEd25519
		}
		in = binary.BigEndian.AppendUint32(in, uint32(len(signing)))
		in = append(in, signing...)
		sum := sha256.Sum256(in)
		id := p.ID()
		if hex.EncodeToString(sum[:16]) != id.String() {
			t.Errorf("%v: ID %v, construction gives %x", p, id, sum[:16])
		}
		if len(id.String()) != 32 {
			t.Errorf("String() = %q", id.String())
		}
	}
}

func TestProtocolIDGolden(t *testing.T) {
	id := DefaultProtocol.ID()
	checkGolden(t, "protocol_id_default", id[:])
}
