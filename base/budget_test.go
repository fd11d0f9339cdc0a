package base

import (
	"bytes"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// bgSlabMessage decodes an envelope with the given packets into a message
// that lives in a "slab" (a larger buffer around the envelope), as the
// reader makes it.
func bgSlabMessage(t *testing.T, packets ...[]byte) (*Message, []byte) {
	t.Helper()
	e := protocol.Envelope{Type: flags.Whisper, Sub: flags.Whisper, Sender: protocol.NewNodeID(), Seq: 7,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: packets}
	slab := make([]byte, 0, slabSize)
	slab = append(slab, "frames before"...)
	start := len(slab)
	slab = e.AppendTo(slab)
	env := slab[start:len(slab):len(slab)]
	m := &Message{Sender: e.Sender, Seq: 7, envelope: env, slab: true}
	d := protocol.Envelope{Packets: m.inline[:0]}
	if err := protocol.DecodeEnvelope(env, &d, protocol.DefaultLimits); err != nil {
		t.Fatal(err)
	}
	m.Packets = d.Packets
	return m, slab[:cap(slab)]
}

// bgOutside reports whether p shares no memory with buf.
func bgOutside(buf, p []byte) bool {
	_, in := offsetIn(buf, p)
	return len(p) == 0 || !in
}

func TestDetachCopiesOutOfTheSlab(t *testing.T) {
	for _, n := range []int{1, 2, 5} {
		packets := make([][]byte, n)
		for i := range packets {
			packets[i] = bytes.Repeat([]byte{byte('a' + i)}, 10*(i+1))
		}
		m, slab := bgSlabMessage(t, packets...)
		// A layer strips the first packet (chord's route header).
		m.Packets = m.Packets[1:]
		m.Route = "route"
		d := m.detach()
		if d == m || d.slab || d.Route != "route" || d.Sender != m.Sender || d.Seq != 7 {
			t.Fatalf("%d packets: detached message %+v", n, d)
		}
		if !bytes.Equal(d.envelope, m.envelope) || cap(d.envelope) != len(m.envelope) || !bgOutside(slab, d.envelope) {
			t.Fatalf("%d packets: envelope not copied exactly", n)
		}
		if len(d.Packets) != n-1 {
			t.Fatalf("%d packets: %d after detach, want %d", n, len(d.Packets), n-1)
		}
		for i, p := range d.Packets {
			if !bytes.Equal(p, packets[i+1]) || cap(p) != len(p) || !bgOutside(slab, p) {
				t.Fatalf("%d packets: packet %d = %q, or still in the slab", n, i, p)
			}
			if _, in := offsetIn(d.envelope, p); !in {
				t.Fatalf("%d packets: packet %d is not in the copied envelope", n, i)
			}
		}
		if len(d.Packets) <= len(d.inline) && len(d.Packets) > 0 && &d.Packets[0] != &d.inline[0] {
			t.Errorf("%d packets: the packet list is not the copy's own inline array", n)
		}
		if got, want := ownSize(m), int64(len(m.envelope))+messageOverhead; n <= 3 && got != want {
			t.Errorf("%d packets: ownSize = %d, want %d", n, got, want)
		}
		if ownSize(d) != ownSize(m) {
			t.Errorf("%d packets: ownSize %d after detach, %d before", n, ownSize(d), ownSize(m))
		}
	}
}

func TestDetachKeepsForeignPackets(t *testing.T) {
	m, _ := bgSlabMessage(t, []byte("in the envelope"), []byte{})
	own := []byte("the layer's own")
	m.Packets = [][]byte{m.Packets[0], own, m.Packets[1]}
	d := m.detach()
	if !bytes.Equal(d.Packets[0], []byte("in the envelope")) || &d.Packets[1][0] != &own[0] || len(d.Packets[2]) != 0 {
		t.Errorf("detached packets %q", d.Packets)
	}
}

func TestAdmitPinsOnlyAFew(t *testing.T) {
	m, _ := bgSlabMessage(t, []byte("small"))
	b := &budget{max: 64 << 20}
	// A short queue: the message stays in the slab and counts all of it.
	got, size, ok := admit(m, 0, b)
	if !ok || got != m || size != slabSize+msgBlock*messageOverhead || b.used.Load() != size {
		t.Fatalf("admit to an empty queue: copied %v, size %d, ok %v", got != m, size, ok)
	}
	// Behind pinnedQueued others: copied, counting its own size.
	got, size, ok = admit(m, pinnedQueued, b)
	if !ok || got == m || got.slab || size != ownSize(m) {
		t.Fatalf("admit behind a backlog: copied %v, size %d, ok %v", got != m, size, ok)
	}
	// A small bound: pinned messages may take an eighth of it only.
	small := &budget{max: 8 * (slabSize + msgBlock*messageOverhead)}
	if got, _, _ := admit(m, 0, small); got != m {
		t.Error("the first message was copied although it fits an eighth of the bound")
	}
	if got, _, _ := admit(m, 1, small); got == m {
		t.Error("a second pinned message would take more than an eighth of the bound")
	}
	// No room at all.
	full := &budget{max: 100}
	full.used.Store(100)
	if _, _, ok := admit(m, 0, full); ok || full.used.Load() != 100 {
		t.Errorf("admitted into a full budget (used %d)", full.used.Load())
	}
	// An oversized message goes into an empty queue.
	empty := &budget{max: 10}
	if _, size, ok := admit(m, 0, empty); !ok || empty.used.Load() != size {
		t.Error("an oversized message was refused by an empty queue")
	}
}
