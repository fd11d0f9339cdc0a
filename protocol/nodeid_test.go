package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestNodeIDRoundTrip(t *testing.T) {
	id := NodeID{0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0}
	const want = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	if got := id.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := id.Short(); got != "0f1e2d3c" {
		t.Errorf("Short() = %q", got)
	}
	forms := []string{
		want,
		strings.ReplaceAll(want, "-", ""),
		strings.ToUpper(want),
		strings.ToUpper(strings.ReplaceAll(want, "-", "")),
		"0F1e2D3c-4b5A-6978-8796-A5b4C3d2E1f0",
	}
	for _, s := range forms {
		got, err := ParseNodeID(s)
		if err != nil {
			t.Errorf("ParseNodeID(%q): %v", s, err)
			continue
		}
		if got != id {
			t.Errorf("ParseNodeID(%q) = %v, want %v", s, got, id)
		}
	}
	for i := 0; i < 100; i++ {
		id := NewNodeID()
		back, err := ParseNodeID(id.String())
		if err != nil || back != id {
			t.Fatalf("round trip of %v: %v, %v", id, back, err)
		}
	}
	if MustParseNodeID(want) != id {
		t.Error("MustParseNodeID")
	}
}

func TestNodeIDParseErrors(t *testing.T) {
	bad := []string{
		"",
		"0f1e2d3c",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",      // 35
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",    // 37
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",     // bad digit
		"0f1e2d3c_4b5a-6978-8796-a5b4c3d2e1f0",     // wrong separator
		"0f1e2d3c-4b5a-6978-87-96a5b4c3d2e1f0",     // hyphen misplaced
		"0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0--",    // hyphens moved to the end
		"0f1e2d3c4b5a69788796a5b4c3d2e1f",          // 31
		"0f1e2d3c4b5a69788796a5b4c3d2e1f0a",        // 33
		"0f1e2d3c4b5a69788796a5b4c3d2e1-0",         // hyphen in compact form
		"{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}",   // braces
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1\u00e9", // non-ASCII
		"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
	}
	for _, s := range bad {
		id, err := ParseNodeID(s)
		if !errors.Is(err, ErrInvalidNodeID) {
			t.Errorf("ParseNodeID(%q) error = %v, want ErrInvalidNodeID", s, err)
		}
		if !id.IsZero() {
			t.Errorf("ParseNodeID(%q) returned non-zero ID %v with error", s, id)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustParseNodeID did not panic on bad input")
			}
		}()
		MustParseNodeID("nope")
	}()
}

func TestNodeIDCompare(t *testing.T) {
	ids := []NodeID{
		{},
		{15: 1},
		{15: 2},
		{14: 1},
		{0: 0x7f, 15: 0xff},
		{0: 0x80},
		{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff},
	}
	for i := range ids {
		for j := range ids {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := ids[i].Compare(ids[j]); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", ids[i], ids[j], got, want)
			}
		}
	}
	if !ids[0].IsZero() || ids[1].IsZero() {
		t.Error("IsZero")
	}
}

func TestNodeIDText(t *testing.T) {
	id := MustParseNodeID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
	b, err := id.MarshalText()
	if err != nil || string(b) != id.String() {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
	var back NodeID
	if err := back.UnmarshalText(b); err != nil || back != id {
		t.Fatalf("UnmarshalText = %v, %v", back, err)
	}
	if err := back.UnmarshalText([]byte("garbage")); !errors.Is(err, ErrInvalidNodeID) {
		t.Fatalf("UnmarshalText(garbage) = %v", err)
	}
	if back != id {
		t.Error("failed UnmarshalText modified the ID")
	}
	// Through encoding/json, which uses the text methods (also as map keys).
	in := map[NodeID]NodeID{id: id}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}`
	if string(js) != wantJSON {
		t.Fatalf("json = %s", js)
	}
	var out map[NodeID]NodeID
	if err := json.Unmarshal(js, &out); err != nil || out[id] != id {
		t.Fatalf("json round trip: %v, %v", out, err)
	}
}

func TestNewNodeIDUnique(t *testing.T) {
	const n = 10000
	seen := make(map[NodeID]bool, n)
	for i := 0; i < n; i++ {
		id := NewNodeID()
		if id.IsZero() {
			t.Fatal("NewNodeID returned the zero ID")
		}
		if seen[id] {
			t.Fatalf("NewNodeID repeated %v", id)
		}
		seen[id] = true
	}
}
