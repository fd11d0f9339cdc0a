package chord

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// hostileRelay is an attacker written on a bare base socket that speaks
// just enough chord to sit on a requester's lookup path: it answers the
// requester's Join naming itself, so it becomes the requester's successor,
// and then relays the requester's routed messages to their honest owners.
// For the keys it targets, it first sends the requester forged answers
// (naming an owner of its choice) with the request ID it has just seen.
type hostileRelay struct {
	t      *testing.T
	sock   *base.Socket
	ids    []protocol.NodeID // the honest ring, sorted
	links  map[protocol.NodeID]*base.Conn
	target sync.Map // protocol.NodeID -> struct{}: keys to forge answers for
	forged atomic.Int64
	// forge returns the forged answers (packet lists of response
	// messages) for a routed message with header h that came over c.
	forge func(c *base.Conn, h routeHeader, flag flags.Flag) [][][]byte
}

func newHostileRelay(t *testing.T, honest []*Socket) *hostileRelay {
	r := &hostileRelay{t: t, ids: sortedIDs(honest), links: make(map[protocol.NodeID]*base.Conn)}
	r.sock = testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(DefaultProtocol), base.WithLogger(testLogger(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, s := range honest {
		c, err := r.sock.Connect(ctx, s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		r.links[s.ID()] = c
	}
	r.sock.RegisterHandler(base.HandlerFunc(r.handle))
	return r
}

func (r *hostileRelay) self() PeerInfo {
	return PeerInfo{ID: r.sock.ID(), Addr: r.sock.AdvertisedAddr()}
}

func (r *hostileRelay) handle(m *base.Message) bool {
	ctx, cancel := context.WithTimeout(context.Background(), testRequest)
	defer cancel()
	switch m.Flag {
	case flags.GetNeighbours:
		// "My predecessor and successors: none." The requester keeps the
		// relay as its only successor.
		n, err := decodeNeighbours(m.Packets[0])
		if err != nil || n.answer {
			return true
		}
		env, _, err := r.sock.NewEnvelope(flags.Whisper, flags.GetNeighbours, 1, [][]byte{encodeNeighbours(neighbours{id: n.id, answer: true})})
		if err == nil {
			_ = m.Conn.SendControl(env)
		}
	case flags.FindSuccessor, flags.Request:
		h, err := decodeRouteHeader(m.Packets[0])
		if err != nil {
			return true
		}
		if h.key == h.origin {
			// A Join: "I own your ID", so the joiner takes the relay
			// as its successor.
			_ = m.Conn.SendMessage(ctx, flags.Whisper, flags.Response, r.joinAnswer(h)...)
			return true
		}
		if _, ok := r.target.Load(h.key); ok {
			for _, packets := range r.forge(m.Conn, h, m.Flag) {
				if err := m.Conn.SendMessage(ctx, flags.Whisper, flags.Response, packets...); err == nil {
					r.forged.Add(1)
				}
			}
		}
		// Then relay it honestly, to its owner.
		if owner, ok := Owner(r.ids, h.key); ok {
			_ = r.links[owner].Forward(m.Hops, m.Envelope())
		}
	}
	return true
}

// joinAnswer answers a joiner's find-successor naming the relay (which
// may: it speaks for itself, unsigned over its own link).
func (r *hostileRelay) joinAnswer(h routeHeader) [][]byte {
	return [][]byte{encodeResponseHeader(responseHeader{to: h.origin, id: h.id, hops: 1, key: h.key, from: r.self()})}
}

// signedBy returns h signed by node s (as s would sign an answer of its
// own), with s named as the answering node.
func signedBy(s *Socket, h responseHeader, packets [][]byte) responseHeader {
	h.from = s.self()
	s.signAnswer(&h, packets)
	return h
}

// TestForgedAnswersFromHostileRelay: a relay on the lookup path (a bare
// base socket) answers every lookup and request it relays for the test's
// keys with forged answers before it relays them honestly to their owner:
// an answer in the old format (wire version 2, which had no
// authentication) naming an owner of its choice — the honest owner's ID at
// the relay's own address, where it wants the traffic; the same in the new
// format, unsigned, and signed with the relay's own key; a valid answer of
// another honest node captured for another request (another requester and
// request ID), rewritten for this one; and a valid answer of that node
// for this request ID but another key. None may be accepted: every lookup
// returns the honest owner and every request its echo, and the requester
// counts every forgery as a drop.
//
// On the code before answers were authenticated, 10 of 10 lookups returned
// the relay's choice (and 10 of 10 requests its answer).
func TestForgedAnswersFromHostileRelay(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 1))
	honest := buildRing(t, 4, rng)
	for _, s := range honest {
		s.RegisterHandler(echo(s))
	}
	waitRing(t, honest, convergeWithin)
	relay := newHostileRelay(t, honest)
	ownerID, _ := Owner(relay.ids, relay.sock.ID())
	owner := byID(honest)[ownerID].Self()
	chosen := PeerInfo{ID: owner.ID, Addr: relay.self().Addr} // where the relay wants the traffic
	var other *Socket                                         // an honest node that is not the owner
	for _, s := range honest {
		if s.ID() != owner.ID {
			other = s
			break
		}
	}
	relay.forge = func(c *base.Conn, h routeHeader, flag flags.Flag) [][][]byte {
		var payload [][]byte
		if flag == flags.Request {
			payload = [][]byte{[]byte("forged")}
		}
		legacy := [][]byte{mustCBOR(t, &legacyResponseHeader{To: h.origin[:], ID: h.id, Status: statusOK, Hops: 1})}
		if flag == flags.FindSuccessor {
			legacy = append(legacy, mustCBOR(t, &nodeRefWire{ID: chosen.ID[:], Addr: chosen.Addr}))
		} else {
			legacy = append(legacy, payload...)
		}
		answer := responseHeader{to: h.origin, id: h.id, hops: 1, key: h.key, from: chosen}
		selfSigned := answer
		selfSigned.auth = append(append([]byte{}, relay.sock.PublicKey()...), relay.sock.Sign(answerSigningInput(nil, &selfSigned, payload))...)
		// Captured: the other node's answer to the relay's own request
		// (another requester, another ID), rewritten for this one.
		captured := signedBy(other, responseHeader{to: relay.sock.ID(), id: h.id + 1, hops: 1, key: h.key}, payload)
		captured.to, captured.id = h.origin, h.id
		// The other node's valid answer to this request ID, for another key.
		otherKey := signedBy(other, responseHeader{to: h.origin, id: h.id, hops: 1, key: other.ID()}, payload)
		var out [][][]byte
		out = append(out, legacy)
		for _, hdr := range []responseHeader{answer, selfSigned, captured, otherKey} {
			out = append(out, append([][]byte{encodeResponseHeader(hdr)}, payload...))
		}
		return out
	}

	req := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := req.Join(ctx, relay.self().Addr); err != nil {
		t.Fatal(err)
	}
	if got := req.Successor(); got.ID != relay.sock.ID() {
		t.Fatalf("requester's successor is %s, want the relay %s", got, relay.self())
	}

	before := req.Stats()
	const calls = 10
	var badLookups, badRequests int
	for i := range calls {
		key := FingerStart(relay.sock.ID(), 2*i) // in (relay, owner]: the relay is the next hop
		relay.target.Store(key, struct{}{})
		res, err := req.LookupDetail(ctx, key)
		if err != nil {
			t.Errorf("lookup %d through the relay: %v", i, err)
		} else if res.Owner != owner {
			badLookups++
		}
		payload := fmt.Sprintf("q%d", i)
		resp, err := req.Request(ctx, key, []byte(payload))
		if err != nil {
			t.Errorf("request %d through the relay: %v", i, err)
		} else if resp.Sender != owner.ID || string(resp.Packets[0]) != "echo:"+payload {
			badRequests++
		}
	}
	forged := uint64(relay.forged.Load())
	if forged < 2*calls*5 {
		t.Fatalf("the relay forged only %d answers; it is not on the path", forged)
	}
	if badLookups > 0 || badRequests > 0 {
		t.Errorf("forged answers accepted: %d of %d lookups returned the owner the relay chose, %d of %d requests its answer",
			badLookups, calls, badRequests, calls)
	}
	// Every forgery is a counted drop: malformed (the old format), bad
	// (not authenticated by the node it names), or late (it came after the
	// honest answer).
	var st Stats
	testnet.Eventually(t, 20*time.Second, func() bool {
		st = req.Stats()
		return (st.Malformed-before.Malformed)+(st.BadAnswers-before.BadAnswers)+(st.LateAnswers-before.LateAnswers) >= forged
	}, "the requester counts %d forged answers as drops", forged)
	t.Logf("%d forged answers: %d malformed, %d bad, %d late; 0 accepted", forged,
		st.Malformed-before.Malformed, st.BadAnswers-before.BadAnswers, st.LateAnswers-before.LateAnswers)
}

// legacyResponseHeader is the response header before answers were
// authenticated (wire version 2): [to, id, status, hops].
type legacyResponseHeader struct {
	_      struct{} `cbor:",toarray"`
	To     []byte
	ID     uint64
	Status uint8
	Hops   uint8
}

// TestAnswerBinding checks checkAnswer field by field: a valid signed
// answer completes its call; the same answer with any signed field
// changed (a replay for another request ID, requester, key, owner
// address, hop count or payload), signed by a key that is not the named
// node's, unsigned off the named node's link, or of the wrong kind, does
// not.
func TestAnswerBinding(t *testing.T) {
	signer, stranger := newNode(t), newNode(t)
	requester, key := idOf(0x0a), idOf(0x0102)
	lookup := &call{id: 7, kind: kindLookup, key: key}
	request := &call{id: 8, kind: kindRequest, key: key}
	payload := [][]byte{[]byte("answer")}
	valid := func(c *call, packets [][]byte) responseHeader {
		return signedBy(signer, responseHeader{to: requester, id: c.id, hops: 2, key: key}, packets)
	}
	m := &base.Message{Sender: signer.ID(), Hops: 1} // no link: only a signature can authenticate it
	for _, tc := range []struct {
		name    string
		c       *call
		h       func() responseHeader
		packets [][]byte
		ok      bool
	}{
		{"valid lookup answer", lookup, func() responseHeader { return valid(lookup, nil) }, nil, true},
		{"valid request answer", request, func() responseHeader { return valid(request, payload) }, payload, true},
		{"bounced request answered for another key", request, func() responseHeader {
			return signedBy(signer, responseHeader{to: requester, id: request.id, bounces: 1, key: idOf(5)}, payload)
		}, payload, true},
		{"replayed for another request ID", lookup, func() responseHeader { h := valid(request, nil); h.id = lookup.id; return h }, nil, false},
		{"replayed for another requester", lookup, func() responseHeader { h := valid(lookup, nil); h.to = idOf(0x0c); return h }, nil, false},
		{"signed for another key", lookup, func() responseHeader {
			return signedBy(signer, responseHeader{to: requester, id: lookup.id, key: idOf(5)}, nil)
		}, nil, false},
		{"key rewritten", lookup, func() responseHeader { h := valid(lookup, nil); h.key = idOf(5); lookup.key = h.key; return h }, nil, false},
		{"owner address rewritten", lookup, func() responseHeader { h := valid(lookup, nil); h.from.Addr = "192.0.2.66:1"; return h }, nil, false},
		{"owner ID rewritten", lookup, func() responseHeader { h := valid(lookup, nil); h.from.ID = stranger.ID(); return h }, nil, false},
		{"hops rewritten", lookup, func() responseHeader { h := valid(lookup, nil); h.hops = 1; return h }, nil, false},
		{"status rewritten", request, func() responseHeader { h := valid(request, payload); h.status = statusNoRoute; return h }, payload, false},
		{"payload rewritten", request, func() responseHeader { return valid(request, payload) }, [][]byte{[]byte("forged")}, false},
		{"signed by another node's key", lookup, func() responseHeader {
			h := responseHeader{to: requester, id: lookup.id, key: key, from: signer.self()}
			stranger.signAnswer(&h, nil)
			return h
		}, nil, false},
		{"signature of another node spliced in", lookup, func() responseHeader {
			h := signedBy(stranger, responseHeader{to: requester, id: lookup.id, key: key}, nil)
			h.from = signer.self()
			copy(h.auth, signer.base.PublicKey())
			return h
		}, nil, false},
		{"unsigned, not over the named node's link", lookup, func() responseHeader {
			return responseHeader{to: requester, id: lookup.id, key: key, from: signer.self()}
		}, nil, false},
		{"lookup answer with packets", lookup, func() responseHeader { return valid(lookup, payload) }, payload, false},
		{"answer to a maintenance call", &call{id: 9, kind: kindRPC}, func() responseHeader { return valid(&call{id: 9}, nil) }, nil, false},
	} {
		lookup.key = key
		h := tc.h()
		err := checkAnswer(tc.c, &h, tc.packets, m)
		if tc.ok && err != nil {
			t.Errorf("%s: refused: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, errBadAnswer) {
			t.Errorf("%s: err = %v, want errBadAnswer", tc.name, err)
		}
	}
}

// FuzzAnswer decodes arbitrary response headers and checks them against
// a pending lookup and request: never a panic, and nothing but the one
// valid signed answer of the seed corpus (in whatever encoding the decoder
// takes) is accepted.
func FuzzAnswer(f *testing.F) {
	seed := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := seed.Public().(ed25519.PublicKey)
	owner := PeerInfo{ID: protocol.NodeIDFromKey(pub), Addr: "h:1"}
	h := responseHeader{to: idOf(1), id: 7, key: idOf(2), from: owner}
	h.auth = append(append([]byte{}, pub...), ed25519.Sign(seed, answerSigningInput(nil, &h, nil))...)
	valid := h
	f.Add(encodeResponseHeader(h))
	h.auth = nil
	f.Add(encodeResponseHeader(h))
	f.Add(mustCBOR(f, &legacyResponseHeader{To: h.to[:], ID: 7}))
	m := &base.Message{Sender: owner.ID, Hops: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeResponseHeader(b)
		if err != nil {
			return
		}
		for _, c := range []*call{{id: 7, kind: kindLookup, key: idOf(2)}, {id: 7, kind: kindRequest, key: idOf(2)}} {
			if err := checkAnswer(c, &h, nil, m); err == nil && !responseHeadersEqual(h, valid) {
				t.Fatalf("accepted %x", b)
			}
		}
	})
}

// TestLeaveNamesInconsistentPredecessor: a predecessor that leaves names
// its own predecessor, which the receiver adopts — but only one that comes
// before the leaver. A node it names between itself and the receiver is a
// lie (that node would be the receiver's predecessor already) and is not
// adopted.
func TestLeaveNamesInconsistentPredecessor(t *testing.T) {
	node := newNode(t)
	relay := newHostileRelay(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := relay.sock.Connect(ctx, node.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	send := func(sub flags.Flag, packets ...[]byte) {
		t.Helper()
		env, _, err := relay.sock.NewEnvelope(flags.Whisper, sub, 1, packets)
		if err == nil {
			err = c.SendControl(env)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	send(flags.ChordNotify)
	testnet.Eventually(t, 10*time.Second, func() bool { p, ok := node.Predecessor(); return ok && p.ID == relay.sock.ID() },
		"the node takes the relay as its predecessor")
	liar := PeerInfo{ID: FingerStart(relay.sock.ID(), 0), Addr: "192.0.2.1:1"} // between the relay and the node
	leaves := node.Stats().Leaves
	send(flags.Leave, encodeLeave(liar, nil))
	testnet.Eventually(t, 10*time.Second, func() bool { return node.Stats().Leaves > leaves }, "the node handles the leave")
	if p, ok := node.Predecessor(); ok {
		t.Fatalf("after the leave the predecessor is %s, want none (the leaver named %s, which lies after it)", p, liar)
	}
}

// TestDeadSetPerAddress: a node that could not be reached at one address
// is dead at that address only (a neighbour's list may have given a made-up
// one); a node that left is dead at every address; a new link forgets both.
func TestDeadSetPerAddress(t *testing.T) {
	d := &deadSet{m: make(map[PeerInfo]time.Time), ttl: time.Minute}
	x, y := idOf(1), idOf(2)
	d.add(PeerInfo{ID: x, Addr: "192.0.2.1:1"})
	if !d.has(PeerInfo{ID: x, Addr: "192.0.2.1:1"}) || d.has(PeerInfo{ID: x, Addr: "127.0.0.1:2"}) {
		t.Fatal("a node unreachable at one address must be dead there and only there")
	}
	d.add(PeerInfo{ID: y})
	if !d.has(PeerInfo{ID: y, Addr: "127.0.0.1:3"}) || !d.has(PeerInfo{ID: y}) {
		t.Fatal("a node that left must be dead at every address")
	}
	d.remove(x)
	d.remove(y)
	if d.has(PeerInfo{ID: x, Addr: "192.0.2.1:1"}) || d.has(PeerInfo{ID: y}) || len(d.m) != 0 {
		t.Fatalf("entries left after remove: %v", d.m)
	}
}

// TestSignedAnswerAlongTheRing: an owner that cannot dial its requester
// (and has no link to it) signs its answer and sends it along the ring;
// the requester, which receives it from a relay, checks the signature and
// accepts it.
func TestSignedAnswerAlongTheRing(t *testing.T) {
	const n = 6
	keys := make([]ed25519.PrivateKey, n)
	for i := range keys {
		keys[i] = base.GenerateKey()
	}
	slices.SortFunc(keys, func(a, b ed25519.PrivateKey) int {
		return protocol.NodeIDFromKey(a.Public().(ed25519.PublicKey)).Compare(protocol.NodeIDFromKey(b.Public().(ed25519.PublicKey)))
	})
	// Node 0 (the requester) and node 3 (the owner), opposite on the
	// ring, cannot dial each other.
	var mu sync.Mutex
	refuse := map[int]string{}
	dialer := func(i int) base.DialFunc {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			no := refuse[i] == addr
			mu.Unlock()
			if no {
				return nil, fmt.Errorf("test: node %d may not dial %s", i, addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	nodes := make([]*Socket, n)
	for i := range nodes {
		nodes[i] = newNode(t, WithKey(keys[i]), WithSuccessors(2), WithBaseOptions(base.WithDialer(dialer(i))))
	}
	mu.Lock()
	refuse[0], refuse[3] = nodes[3].Addr().String(), nodes[0].Addr().String()
	mu.Unlock()
	// Node 3 joins last, when its successor (4), which answers the join,
	// is on the ring.
	for _, j := range [][2]int{{1, 0}, {2, 1}, {4, 2}, {5, 4}, {3, 2}} {
		joinVia(t, nodes[j[0]], nodes[j[1]])
	}
	waitRing(t, nodes, convergeWithin)
	req, owner := nodes[0], nodes[3]
	owner.RegisterHandler(echo(owner))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.Request(ctx, owner.ID(), []byte("ring"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Sender != owner.ID() || string(resp.Packets[0]) != "echo:ring" || resp.Hops < 2 {
		t.Fatalf("answer %q from %s in %d hops; want the owner's echo along the ring", resp.Packets[0], resp.Sender.Short(), resp.Hops)
	}
	res, err := req.LookupDetail(ctx, owner.ID())
	if err != nil || res.Owner != owner.Self() {
		t.Fatalf("lookup: %v, %v; want %s", res.Owner, err, owner.Self())
	}
	if st := owner.Stats(); st.SignedAnswers < 2 {
		t.Errorf("the owner signed %d answers, want at least 2", st.SignedAnswers)
	}
	if st := req.Stats(); st.BadAnswers != 0 {
		t.Errorf("the requester dropped %d answers", st.BadAnswers)
	}
}
