package flags

import (
	"errors"
	"fmt"
	"testing"
)

func TestFlagValues(t *testing.T) {
	// The byte values are the wire format (py2p's where it has them).
	want := map[Flag]uint8{
		Broadcast: 0x00, Renegotiate: 0x01, Whisper: 0x02, Ping: 0x03, Pong: 0x04,
		Handshake: 0x05, Notify: 0x06, Peers: 0x07, Request: 0x08, Resend: 0x09, Response: 0x0a,
		Store: 0x0b, Retrieve: 0x0c, Retrieved: 0x0d, Forward: 0x0e,
		AppRequest: 0x22, AppResponse: 0x23,
		Bye: 0x27, FindSuccessor: 0x28, GetNeighbours: 0x29, ChordNotify: 0x2a, Leave: 0x2b, Routed: 0x2c, Punch: 0x2d,
		IHave:        0x2e,
		LastReserved: 0x2f, FirstUser: 0x30,
	}
	if Tree != 0x2f {
		t.Errorf("Tree = %#x, want 0x2f", uint8(Tree))
	}
	for f, v := range want {
		if uint8(f) != v {
			t.Errorf("%v = %#x, want %#x", f, uint8(f), v)
		}
	}
	methods := map[Method]uint8{None: 0x00, Gzip: 0x11, Zlib: 0x13, Snappy: 0x20, Zstd: 0x21}
	for m, v := range methods {
		if uint8(m) != v {
			t.Errorf("%v = %#x, want %#x", m, uint8(m), v)
		}
	}
}

func TestFlagString(t *testing.T) {
	names := map[Flag]string{
		Broadcast: "broadcast", Renegotiate: "renegotiate", Whisper: "whisper", Ping: "ping", Pong: "pong",
		Handshake: "handshake", Notify: "notify", Peers: "peers", Request: "request", Resend: "resend",
		Response: "response", Store: "store", Retrieve: "retrieve", Retrieved: "retrieved", Forward: "forward",
		Bye: "bye", FindSuccessor: "find-successor", GetNeighbours: "get-neighbours", ChordNotify: "chord-notify",
		Leave: "leave", AppRequest: "app-request", AppResponse: "app-response", Publish: "publish", Member: "member", MemberSync: "member-sync",
		Routed: "routed", Punch: "punch", IHave: "ihave", Tree: "tree",
		0x0f: "reserved(0x0f)", 0x10: "reserved(0x10)",
		FirstUser: "user(0x30)", 0x7f: "user(0x7f)", 0xff: "user(0xff)",
	}
	for f, want := range names {
		if got := f.String(); got != want {
			t.Errorf("Flag(%#x).String() = %q, want %q", uint8(f), got, want)
		}
	}
	// Every value has a distinct, non-empty name.
	seen := map[string]Flag{}
	for i := 0; i < 256; i++ {
		f := Flag(i)
		s := f.String()
		if s == "" {
			t.Fatalf("Flag(%#x) has no name", i)
		}
		if prev, ok := seen[s]; ok {
			t.Fatalf("Flag(%#x) and Flag(%#x) are both %q", uint8(prev), i, s)
		}
		seen[s] = f
		if got := fmt.Sprint(f); got != s {
			t.Fatalf("fmt.Sprint = %q", got)
		}
	}
}

func TestFlagRanges(t *testing.T) {
	for i := 0; i < 256; i++ {
		f := Flag(i)
		if f.IsReserved() != (i <= 0x2f) {
			t.Errorf("Flag(%#x).IsReserved() = %v", i, f.IsReserved())
		}
		if f.IsMainType() != (i <= 0x04) {
			t.Errorf("Flag(%#x).IsMainType() = %v", i, f.IsMainType())
		}
		err := CheckUser(f)
		if i <= 0x2f {
			if !errors.Is(err, ErrReservedFlag) {
				t.Errorf("CheckUser(%#x) = %v, want ErrReservedFlag", i, err)
			}
		} else if err != nil {
			t.Errorf("CheckUser(%#x) = %v", i, err)
		}
	}
}

func TestMethod(t *testing.T) {
	known := map[Method]string{None: "none", Gzip: "gzip", Zlib: "zlib", Snappy: "snappy", Zstd: "zstd"}
	for m, name := range known {
		if m.String() != name || !m.Known() {
			t.Errorf("%#x: %q known=%v", uint8(m), m.String(), m.Known())
		}
		got, err := ParseMethod(name)
		if err != nil || got != m {
			t.Errorf("ParseMethod(%q) = %v, %v", name, got, err)
		}
	}
	for i := 0; i < 256; i++ {
		m := Method(i)
		if _, ok := known[m]; ok {
			continue
		}
		if m.Known() {
			t.Errorf("Method(%#x).Known()", i)
		}
		if want := fmt.Sprintf("method(0x%02x)", i); m.String() != want {
			t.Errorf("Method(%#x).String() = %q", i, m.String())
		}
	}
	for _, bad := range []string{"", "GZIP", "lz4", "method(0x11)", " none"} {
		if _, err := ParseMethod(bad); err == nil {
			t.Errorf("ParseMethod(%q) succeeded", bad)
		}
	}
}
