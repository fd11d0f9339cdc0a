package protocol

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/meshsock/meshsock/flags"
)

func TestBroadcastRefsRoundTrip(t *testing.T) {
	refs := []BroadcastRef{{Origin: goldenNodeID, Seq: 1}, {Origin: goldenTarget, Seq: 1<<64 - 1}}
	b := AppendBroadcastRefs(nil, refs)
	if len(b) != 2*BroadcastRefSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := ParseBroadcastRefs(nil, b)
	if err != nil || !slices.Equal(got, refs) {
		t.Fatalf("%v %v", got, err)
	}
	for kind, want := range map[TreeKind][]BroadcastRef{TreeGraft: refs, TreeWant: refs[:1], TreePrune: nil} {
		k, got, err := ParseTreeControl(nil, AppendTreeControl(nil, kind, want))
		if err != nil || k != kind || !slices.Equal(got, want) {
			t.Fatalf("%v: %v %v %v", kind, k, got, err)
		}
	}
	// A GRAFT without references says the sender floods.
	if k, got, err := ParseTreeControl(nil, []byte{byte(TreeGraft)}); err != nil || k != TreeGraft || len(got) != 0 {
		t.Fatalf("empty graft: %v %v %v", k, got, err)
	}
}

func TestTreeMessagesMalformed(t *testing.T) {
	ref := AppendBroadcastRefs(nil, []BroadcastRef{{Origin: goldenNodeID, Seq: 1}})
	tooMany := bytes.Repeat(ref, MaxBroadcastRefs+1)
	for name, b := range map[string][]byte{
		"empty": nil, "short": ref[:BroadcastRefSize-1], "long": append(slices.Clone(ref), 0), "too many": tooMany,
	} {
		if _, err := ParseBroadcastRefs(nil, b); !errors.Is(err, ErrBadTreeMessage) || !errors.Is(err, ErrMalformed) {
			t.Errorf("refs %s: %v", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":           nil,
		"unknown kind":    append([]byte{9}, ref...),
		"kind 0":          {0},
		"prune with refs": append([]byte{byte(TreePrune)}, ref...),
		"iwant without":   {byte(TreeWant)},
		"graft ragged":    append([]byte{byte(TreeGraft)}, ref[:5]...),
		"iwant too many":  append([]byte{byte(TreeWant)}, tooMany...),
	} {
		if _, _, err := ParseTreeControl(nil, b); !errors.Is(err, ErrBadTreeMessage) {
			t.Errorf("tree %s: %v", name, err)
		}
	}
	if TreeKind(9).String() != "tree(9)" || TreeWant.String() != "iwant" {
		t.Fatal("kind names")
	}
}

func TestEnvelopeRef(t *testing.T) {
	e := goldenBroadcast()
	e.Seq = 1<<40 + 3
	typ, r, err := EnvelopeRef(e.AppendTo(nil))
	if err != nil || typ != flags.Broadcast || r.Origin != goldenNodeID || r.Seq != e.Seq {
		t.Fatalf("%v %+v %v", typ, r, err)
	}
	for _, bad := range [][]byte{nil, {0x88}, {0x87, 0, 0}, {0x88, 0, 0, 0x4f}} {
		if _, _, err := EnvelopeRef(bad); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
}

// FuzzTreeMessages: the decoders never panic, accept only whole
// references within the bounds, and re-encode what they accept to the
// same bytes.
func FuzzTreeMessages(f *testing.F) {
	ref := AppendBroadcastRefs(nil, []BroadcastRef{{Origin: goldenNodeID, Seq: 7}})
	f.Add(ref)
	f.Add(append([]byte{byte(TreeWant)}, ref...))
	f.Add([]byte{byte(TreePrune)})
	f.Add([]byte{byte(TreeGraft)})
	f.Add(goldenBroadcast().AppendTo(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if refs, err := ParseBroadcastRefs(nil, b); err == nil {
			if len(refs) == 0 || len(refs) > MaxBroadcastRefs || !bytes.Equal(AppendBroadcastRefs(nil, refs), b) {
				t.Fatalf("accepted %x as %v", b, refs)
			}
		}
		if kind, refs, err := ParseTreeControl(nil, b); err == nil {
			if len(refs) > MaxBroadcastRefs || !bytes.Equal(AppendTreeControl(nil, kind, refs), b) {
				t.Fatalf("accepted %x as %v %v", b, kind, refs)
			}
		}
		_, _, _ = EnvelopeRef(b)
	})
}
