package chord

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

func TestWireRoundTrip(t *testing.T) {
	key, origin := idOf(42), idOf(7)
	h := routeHeader{key: key, origin: origin, id: 99, addr: "127.0.0.1:1", prior: 3, bounces: 2, direct: true}
	got, err := decodeRouteHeader(encodeRouteHeader(h))
	if err != nil || got != h {
		t.Fatalf("route header: %+v, %v; want %+v", got, err, h)
	}
	for _, auth := range [][]byte{nil, bytes.Repeat([]byte{7}, answerAuthLen)} {
		r := responseHeader{to: origin, id: 99, status: statusNoRoute, hops: 4, bounces: 2, key: key, from: PeerInfo{idOf(3), "c:3"}, auth: auth}
		gotR, err := decodeResponseHeader(encodeResponseHeader(r))
		if err != nil || !responseHeadersEqual(gotR, r) {
			t.Fatalf("response header: %+v, %v; want %+v", gotR, err, r)
		}
	}
	n := neighbours{id: 5, answer: true, pred: PeerInfo{idOf(1), "a:1"}, succs: []PeerInfo{{idOf(2), "b:2"}, {idOf(3), "c:3"}}}
	gotN, err := decodeNeighbours(encodeNeighbours(n))
	if err != nil || gotN.id != 5 || !gotN.answer || gotN.pred != n.pred || len(gotN.succs) != 2 || gotN.succs[1] != n.succs[1] {
		t.Fatalf("neighbours: %+v, %v; want %+v", gotN, err, n)
	}
	q, err := decodeNeighbours(encodeNeighbours(neighbours{id: 6}))
	if err != nil || q.answer || !q.pred.ID.IsZero() || len(q.succs) != 0 {
		t.Fatalf("neighbours question: %+v, %v", q, err)
	}
	p, s, err := decodeLeave(encodeLeave(PeerInfo{}, n.succs))
	if err != nil || !p.ID.IsZero() || len(s) != 2 {
		t.Fatalf("leave: %v %v %v", p, s, err)
	}
}

func responseHeadersEqual(a, b responseHeader) bool {
	return a.to == b.to && a.id == b.id && a.status == b.status && a.hops == b.hops && a.bounces == b.bounces &&
		a.key == b.key && a.from == b.from && bytes.Equal(a.auth, b.auth)
}

// TestWireGolden pins the byte form of a route header (docs/chord.md §4).
func TestWireGolden(t *testing.T) {
	h := routeHeader{key: idOf(0x0102), origin: idOf(0x0a), id: 1, addr: "h:1", prior: 0, bounces: 0, direct: true}
	got := encodeRouteHeader(h)
	want := []byte{0x87,
		0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02,
		0x01,
		0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
		0x63, 'h', ':', '1',
		0x00, 0x00, 0x01}
	if !bytes.Equal(got, want) {
		t.Fatalf("route header\n got %x\nwant %x", got, want)
	}
	r := encodeResponseHeader(responseHeader{to: idOf(0x0a), id: 1, status: 0, hops: 3, key: idOf(0x0102), from: PeerInfo{idOf(0x0b), "h:2"}})
	wantR := []byte{0x88,
		0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
		0x01, 0x00, 0x03, 0x00,
		0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02,
		0x82, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0x63, 'h', ':', '2',
		0x40}
	if !bytes.Equal(r, wantR) {
		t.Fatalf("response header\n got %x\nwant %x", r, wantR)
	}
}

func mustCBOR(t testing.TB, v any) []byte {
	b, err := protocol.MarshalCBOR(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWireRejectsMalformed(t *testing.T) {
	id := idOf(1)
	long := string(bytes.Repeat([]byte{'a'}, maxAddrLen+1))
	from := nodeRefWire{ID: id[:], Addr: "a:1"}
	decodeResponse := func(b []byte) error { _, err := decodeResponseHeader(b); return err }
	many := make([]nodeRefWire, MaxSuccessors+1)
	for i := range many {
		many[i] = nodeRefWire{ID: id[:], Addr: "a:1"}
	}
	for name, tc := range map[string]struct {
		b      []byte
		decode func([]byte) error
	}{
		"empty header":       {nil, func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"short key":          {mustCBOR(t, &routeHeaderWire{Key: id[:4], Origin: id[:]}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"zero origin":        {mustCBOR(t, &routeHeaderWire{Key: id[:], Origin: make([]byte, 16)}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"long address":       {mustCBOR(t, &routeHeaderWire{Key: id[:], Origin: id[:], Addr: long}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"too many bounces":   {mustCBOR(t, &routeHeaderWire{Key: id[:], Origin: id[:], Bounces: MaxBounces + 1}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"extra item":         {mustCBOR(t, []any{id[:], 1, id[:], "", 0, 0, 0, 0}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"hops overflow":      {mustCBOR(t, []any{id[:], 1, id[:], "", 300, 0, 0}), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"trailing byte":      {append(encodeRouteHeader(routeHeader{key: id, origin: id}), 0), func(b []byte) error { _, err := decodeRouteHeader(b); return err }},
		"response ID 0":      {mustCBOR(t, &responseHeaderWire{To: id[:], Key: id[:], From: from}), decodeResponse},
		"response status":    {mustCBOR(t, &responseHeaderWire{To: id[:], ID: 1, Status: 9, Key: id[:], From: from}), decodeResponse},
		"response bounces":   {mustCBOR(t, &responseHeaderWire{To: id[:], ID: 1, Bounces: MaxBounces + 1, Key: id[:], From: from}), decodeResponse},
		"response short key": {mustCBOR(t, &responseHeaderWire{To: id[:], ID: 1, Key: id[:15], From: from}), decodeResponse},
		"response no from":   {mustCBOR(t, &responseHeaderWire{To: id[:], ID: 1, Key: id[:], From: nodeRefWire{ID: []byte{}}}), decodeResponse},
		"response auth size": {mustCBOR(t, &responseHeaderWire{To: id[:], ID: 1, Key: id[:], From: from, Auth: make([]byte, 64)}), decodeResponse},
		"response v2":        {mustCBOR(t, &legacyResponseHeader{To: id[:], ID: 1}), decodeResponse},
		"too many succs":     {mustCBOR(t, &neighboursWire{Answer: true, Pred: nodeRefWire{ID: []byte{}}, Succs: many}), func(b []byte) error { _, err := decodeNeighbours(b); return err }},
		"succ without addr":  {mustCBOR(t, &neighboursWire{Answer: true, Pred: nodeRefWire{ID: []byte{}}, Succs: []nodeRefWire{{ID: id[:]}}}), func(b []byte) error { _, err := decodeNeighbours(b); return err }},
		"question with data": {mustCBOR(t, &neighboursWire{Pred: nodeRefWire{ID: id[:], Addr: "a:1"}}), func(b []byte) error { _, err := decodeNeighbours(b); return err }},
		"leave bad pred":     {mustCBOR(t, &leaveWire{Pred: nodeRefWire{ID: id[:3], Addr: "a:1"}}), func(b []byte) error { _, _, err := decodeLeave(b); return err }},
		"response tag":       {[]byte{0xc1, 0x00}, decodeResponse},
		"indefinite array":   {[]byte{0x9f, 0xff}, decodeResponse},
	} {
		if err := tc.decode(tc.b); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzDecoders feeds arbitrary bytes to every decoder: they must return an
// error or a valid value, never panic.
func FuzzDecoders(f *testing.F) {
	id := idOf(1)
	f.Add(encodeRouteHeader(routeHeader{key: id, origin: id, addr: "a:1"}))
	f.Add(encodeResponseHeader(responseHeader{to: id, id: 1, key: id, from: PeerInfo{id, "a:1"}}))
	f.Add(encodeResponseHeader(responseHeader{to: id, id: 1, key: id, from: PeerInfo{id, "a:1"}, auth: make([]byte, answerAuthLen)}))
	f.Add(encodeNeighbours(neighbours{id: 1, answer: true, succs: []PeerInfo{{id, "a:1"}}}))
	f.Add(encodeLeave(PeerInfo{id, "a:1"}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeRouteHeader(b)
		_, _ = decodeResponseHeader(b)
		_, _ = decodeNeighbours(b)
		_, _, _ = decodeLeave(b)
	})
}

// TestMalformedFromNetwork sends broken chord messages from a bare base
// socket on chord's protocol: the node drops and counts them, keeps the
// link, and keeps working.
func TestMalformedFromNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node := newNode(t)
	raw := testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(DefaultProtocol), base.WithLogger(testLogger(t)))
	c, err := raw.Connect(ctx, node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		typ, sub flags.Flag
		packets  [][]byte
	}{
		{flags.Whisper, flags.Request, nil},                                                                       // no header
		{flags.Whisper, flags.Request, [][]byte{{0xff, 0x00}}},                                                    // not CBOR
		{flags.Broadcast, flags.Forward, [][]byte{encodeRouteHeader(routeHeader{key: id1(), origin: id1()})}},     // wrong type
		{flags.Whisper, flags.FindSuccessor, [][]byte{encodeRouteHeader(routeHeader{key: id1(), origin: id1()})}}, // lookup without ID
		{flags.Whisper, flags.Response, [][]byte{{0x80}}},
		{flags.Whisper, flags.GetNeighbours, [][]byte{{0x84, 0x01}}},
		{flags.Whisper, flags.ChordNotify, [][]byte{{0x01}}},
		{flags.Whisper, flags.Leave, [][]byte{bytes.Repeat([]byte{0x81}, 100)}},
	}
	for _, m := range bad {
		if err := c.SendMessage(ctx, m.typ, m.sub, m.packets...); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 20*time.Second, func() bool { return node.Stats().Malformed >= uint64(len(bad)) },
		"node counts %d malformed messages", len(bad))
	if c.Err() != nil {
		t.Fatalf("link closed after malformed chord packets: %v", c.Err())
	}
	// Still working: a lookup from the raw peer's side of the ring.
	if owner, err := node.Lookup(ctx, id1()); err != nil || owner.ID != node.ID() {
		t.Fatalf("lookup after malformed input: %v, %v", owner, err)
	}
}

func id1() protocol.NodeID { return idOf(1) }
