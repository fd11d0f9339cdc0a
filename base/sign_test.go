package base_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// origin is a node key that signs envelopes without a socket: the origin of
// messages that the test's peers pass on as relays.
type origin struct {
	key ed25519.PrivateKey
	id  protocol.NodeID
}

func newOrigin() origin {
	k := base.GenerateKey()
	return origin{k, protocol.NodeIDFromKey(k.Public().(ed25519.PublicKey))}
}

// broadcast returns a broadcast envelope of o's, signed with key (o's own
// for a genuine one).
func (o origin) broadcast(key ed25519.PrivateKey, seq uint64, payload string) []byte {
	e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: o.id, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: 8, Packets: [][]byte{[]byte(payload)}}
	return e.AppendSigned(nil, key)
}

// unsigned returns the same broadcast without a signature.
func (o origin) unsigned(seq uint64, payload string) []byte {
	e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: o.id, Seq: seq,
		Time: time.Now().UnixNano(), HopLimit: 8, Packets: [][]byte{[]byte(payload)}}
	return e.AppendTo(nil)
}

// tamper returns env with its first packet's first byte changed: the bytes a
// hostile relay would pass on.
func tamper(env []byte) []byte {
	b := append([]byte(nil), env...)
	var e protocol.Envelope
	if err := protocol.DecodeEnvelope(b, &e, protocol.DefaultLimits); err != nil {
		panic(err)
	}
	e.Packets[0][0] ^= 0x20 // aliases b
	return b
}

// seen records what a layer's Handle and Dropped saw.
type seen struct {
	mu      sync.Mutex
	handled []string // first packet, and whether Proven, of each message Handle saw
	dropped []error
	gate    chan struct{} // Handle of a message "gate" waits for it to close
	inGate  atomic.Bool
}

func (r *seen) layer() base.Layer {
	return base.Layer{
		Handle: func(m *base.Message) bool {
			p := string(m.Packets[0])
			if p == "gate" && r.gate != nil {
				r.inGate.Store(true)
				<-r.gate
			}
			r.mu.Lock()
			r.handled = append(r.handled, fmt.Sprintf("%s/%v/%s", p, m.Proven, m.Conn.ID().Short()))
			r.mu.Unlock()
			return true
		},
		Dropped: func(m *base.Message, reason error) {
			r.mu.Lock()
			r.dropped = append(r.dropped, reason)
			r.mu.Unlock()
		},
	}
}

func (r *seen) snapshot() ([]string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.handled...), append([]error(nil), r.dropped...)
}

func signCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newLayered(t *testing.T, l base.Layer, opts ...base.Option) *base.Socket {
	t.Helper()
	s, err := base.NewLayered("127.0.0.1:0", l, append([]base.Option{base.WithLogger(testnet.Logger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func dial(t *testing.T, from, to *base.Socket) *base.Conn {
	t.Helper()
	c, err := from.Connect(signCtx(t), to.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSignedBroadcastProven: what a node originates is signed and verified
// on arrival; a whisper from the link's peer needs no signature; both say
// their sender is proven. With signing off, a peer's own messages are
// proven by the link and nothing is verified.
func TestSignedBroadcastProven(t *testing.T) {
	for _, signing := range []bool{true, false} {
		t.Run(fmt.Sprint("signing=", signing), func(t *testing.T) {
			var r seen
			n := newLayered(t, r.layer(), base.WithSigning(signing))
			p := testnet.NewBase(t, "", base.WithSigning(signing))
			c := dial(t, p, n)
			ctx := signCtx(t)
			if err := p.Broadcast(ctx, []byte("b")); err != nil {
				t.Fatal(err)
			}
			if err := c.Send(ctx, []byte("w")); err != nil {
				t.Fatal(err)
			}
			testnet.Eventually(t, 10*time.Second, func() bool { h, _ := r.snapshot(); return len(h) == 2 })
			h, _ := r.snapshot()
			peer := p.ID().Short()
			if h[0] != "b/true/"+peer || h[1] != "w/true/"+peer {
				t.Fatalf("handled %q", h)
			}
			st := n.Stats()
			if want := map[bool]uint64{true: 1, false: 0}[signing]; st.Verified != want || st.BadSignatures != 0 {
				t.Fatalf("Verified %d (want %d), BadSignatures %d", st.Verified, want, st.BadSignatures)
			}
		})
	}
}

// TestSigningMismatchRefused: a node that signs and one that does not
// refuse each other at the handshake, on both sides.
func TestSigningMismatchRefused(t *testing.T) {
	a := testnet.NewBase(t, "127.0.0.1:0")
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithSigning(false))
	if _, err := b.Connect(signCtx(t), a.Addr().String()); !errors.Is(err, base.ErrProtocolMismatch) {
		t.Fatalf("Connect = %v, want ErrProtocolMismatch", err)
	}
	if a.Protocol().Signing != protocol.SigningEd25519 || b.Protocol().Signing != protocol.SigningNone {
		t.Fatalf("protocols %+v and %+v", a.Protocol(), b.Protocol())
	}
	// WithSigning wins over WithProtocol, in either order.
	p := protocol.Protocol{Subnet: "x", Encryption: "plaintext", Signing: protocol.SigningNone}
	c := testnet.NewBase(t, "", base.WithSigning(true), base.WithProtocol(p))
	if !c.Protocol().Signs() {
		t.Fatal("WithSigning(true) lost to WithProtocol")
	}
	if _, err := base.NewSocket("", base.WithProtocol(protocol.Protocol{Subnet: "x", Signing: "rsa"})); !errors.Is(err, base.ErrInvalidOption) {
		t.Fatalf("unknown signing: %v", err)
	}
}

// TestBadSignaturesDroppedAndStruck: a relayed message that is unsigned,
// altered, or signed by a key not its sender's never reaches the layer's
// Handle; each is counted, reported to Dropped with ErrBadSignature, and a
// strike: the third closes the link with an error matching
// ErrBadSignature. A genuine one between them goes through.
func TestBadSignaturesDroppedAndStruck(t *testing.T) {
	var r seen
	n := newLayered(t, r.layer(), base.WithSignatureStrikes(3, 0))
	p := testnet.NewBase(t, "")
	c := dial(t, p, n)
	o, other := newOrigin(), newOrigin()
	ctx := signCtx(t)
	for i, env := range [][]byte{
		o.unsigned(1, "unsigned"),
		o.broadcast(o.key, 2, "genuine"),
		tamper(o.broadcast(o.key, 3, "altered")),
		o.broadcast(other.key, 4, "wrong key"),
	} {
		if err := c.SendEnvelope(ctx, 0, env); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return c.Err() != nil }, "the link is closed after 3 strikes")
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().SignatureCloses == 1 })
	h, dropped := r.snapshot()
	if len(h) != 1 || h[0] != "genuine/true/"+p.ID().Short() {
		t.Fatalf("handled %q, want only the genuine one", h)
	}
	if len(dropped) != 3 {
		t.Fatalf("dropped %v, want 3", dropped)
	}
	for _, err := range dropped {
		if !errors.Is(err, base.ErrBadSignature) {
			t.Fatalf("drop reason %v does not match ErrBadSignature", err)
		}
	}
	if st := n.Stats(); st.BadSignatures != 3 || st.Verified != 2 {
		t.Fatalf("BadSignatures %d (want 3), Verified %d (want 2: two keys do not match)", st.BadSignatures, st.Verified)
	}
	// The node's end of the link says why it closed.
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().Connections == 0 })
}

// TestWhisperOnBehalfOfAnotherMustBeSigned: a one-hop whisper whose sender
// is not the link's peer needs a signature too (else a peer could speak
// for any node it names).
func TestWhisperOnBehalfOfAnotherMustBeSigned(t *testing.T) {
	var r seen
	n := newLayered(t, r.layer())
	p := testnet.NewBase(t, "")
	c := dial(t, p, n)
	o := newOrigin()
	e := protocol.Envelope{Type: flags.Whisper, Sub: flags.Whisper, Sender: o.id, Seq: 1,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: [][]byte{[]byte("spoof")}}
	if err := c.SendEnvelope(signCtx(t), 0, e.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	e.Seq, e.Packets = 2, [][]byte{[]byte("signed")}
	if err := c.SendEnvelope(signCtx(t), 0, e.AppendSigned(nil, o.key)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { h, _ := r.snapshot(); return len(h) == 1 })
	if h, d := r.snapshot(); h[0] != "signed/true/"+p.ID().Short() || len(d) != 1 {
		t.Fatalf("handled %q, dropped %v", h, d)
	}
}

// TestVerifyKeepsConnectionOrder: signed broadcasts (verified on the pool)
// and whispers (which need no verification) from one connection reach the
// layer and the user in the order they were sent.
func TestVerifyKeepsConnectionOrder(t *testing.T) {
	var r seen
	n := newLayered(t, base.Layer{Handle: func(m *base.Message) bool {
		r.mu.Lock()
		r.handled = append(r.handled, string(m.Packets[0]))
		r.mu.Unlock()
		return false
	}}, base.WithVerifyWorkers(2))
	p := testnet.NewBase(t, "")
	c := dial(t, p, n)
	ctx := signCtx(t)
	const count = 400
	for i := range count {
		payload := []byte(fmt.Sprint(i))
		var err error
		if i%3 == 0 {
			err = c.Send(ctx, payload)
		} else {
			err = p.Broadcast(ctx, payload)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range count {
		m, err := n.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(m.Packets[0]); got != fmt.Sprint(i) || !m.Proven {
			t.Fatalf("message %d: got %q (Proven %v)", i, got, m.Proven)
		}
	}
	h, _ := r.snapshot()
	for i, p := range h {
		if p != fmt.Sprint(i) {
			t.Fatalf("Handle saw %q at %d", p, i)
		}
	}
}

// TestCopiesWaitForTheFirstCopy: a copy of a message that arrives while
// another copy is being verified is not verified again; one with other
// bytes (a forgery under the same sender and seq) is, after the first
// copy's verdict, and dropped.
func TestCopiesWaitForTheFirstCopy(t *testing.T) {
	r := seen{gate: make(chan struct{})}
	n := newLayered(t, r.layer(), base.WithVerifyWorkers(1))
	p1, p2 := testnet.NewBase(t, ""), testnet.NewBase(t, "")
	c1, c2 := dial(t, p1, n), dial(t, p2, n)
	o := newOrigin()
	ctx := signCtx(t)
	genuine := o.broadcast(o.key, 1, "x")
	// The gate holds the only worker in Handle: the genuine copy from p1
	// is verified after it, so the copies from p2 find it in flight.
	if err := c1.SendEnvelope(ctx, 0, o.broadcast(o.key, 100, "gate")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, r.inGate.Load)
	if err := c1.SendEnvelope(ctx, 0, genuine); err != nil {
		t.Fatal(err)
	}
	// The gate's message counts in the backlog until its lane is done.
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().VerifyBacklog == 2 })
	for _, env := range [][]byte{genuine, tamper(genuine), genuine} {
		if err := c2.SendEnvelope(ctx, 0, env); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().VerifyParked == 3 })
	close(r.gate)
	testnet.Eventually(t, 10*time.Second, func() bool { h, d := r.snapshot(); return len(h) == 4 && len(d) == 1 })
	h, d := r.snapshot()
	a, b := p1.ID().Short(), p2.ID().Short()
	want := []string{"gate/true/" + a, "x/true/" + a, "x/true/" + b, "x/true/" + b}
	if fmt.Sprint(h) != fmt.Sprint(want) || len(d) != 1 || !errors.Is(d[0], base.ErrBadSignature) {
		t.Fatalf("handled %q, want %q; dropped %v", h, want, d)
	}
	// gate, the genuine copy, the forgery: three signatures checked for
	// five messages.
	if st := n.Stats(); st.Verified != 3 || st.BadSignatures != 1 {
		t.Fatalf("Verified %d (want 3), BadSignatures %d (want 1)", st.Verified, st.BadSignatures)
	}
}

// TestForgedFirstCopyDoesNotHideTheGenuine: a forger whose copy of a
// victim's message (same sender and seq, bad signature) is in flight first
// does not stop the genuine copy, which waited behind it.
func TestForgedFirstCopyDoesNotHideTheGenuine(t *testing.T) {
	r := seen{gate: make(chan struct{})}
	n := newLayered(t, r.layer(), base.WithVerifyWorkers(1))
	forger, honest := testnet.NewBase(t, ""), testnet.NewBase(t, "")
	cf, ch := dial(t, forger, n), dial(t, honest, n)
	o := newOrigin()
	ctx := signCtx(t)
	genuine := o.broadcast(o.key, 7, "real")
	if err := cf.SendEnvelope(ctx, 0, o.broadcast(o.key, 100, "gate")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, r.inGate.Load)
	if err := cf.SendEnvelope(ctx, 0, tamper(genuine)); err != nil {
		t.Fatal(err)
	}
	// The gate's message counts in the backlog until its lane is done.
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().VerifyBacklog == 2 })
	if err := ch.SendEnvelope(ctx, 0, genuine); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().VerifyParked == 1 }, "stats %+v", n.Stats())
	close(r.gate)
	testnet.Eventually(t, 10*time.Second, func() bool { h, d := r.snapshot(); return len(h) == 2 && len(d) == 1 })
	h, d := r.snapshot()
	if h[1] != "real/true/"+honest.ID().Short() || len(d) != 1 || n.Stats().BadSignatures != 1 {
		t.Fatalf("handled %q, dropped %v", h, d)
	}
}

// TestVerifyBacklogPacesTheReader: when the verify backlog is full, the
// reader of the connection that fills it waits (counted), nothing is
// dropped, and everything arrives in order once the workers catch up.
func TestVerifyBacklogPacesTheReader(t *testing.T) {
	r := seen{gate: make(chan struct{})}
	n := newLayered(t, r.layer(), base.WithVerifyWorkers(1), base.WithVerifyBacklog(4, 1<<20))
	p := testnet.NewBase(t, "")
	c := dial(t, p, n)
	o := newOrigin()
	ctx := signCtx(t)
	if err := c.SendEnvelope(ctx, 0, o.broadcast(o.key, 1, "gate")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, r.inGate.Load)
	const count = 20
	for i := range count {
		if err := c.SendEnvelope(ctx, 0, o.broadcast(o.key, uint64(2+i), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().VerifyWaits >= 1 })
	if st := n.Stats(); st.VerifyBacklog > 4 {
		t.Fatalf("backlog %d over its bound 4", st.VerifyBacklog)
	}
	close(r.gate)
	testnet.Eventually(t, 10*time.Second, func() bool { h, _ := r.snapshot(); return len(h) == count+1 })
	h, d := r.snapshot()
	for i := range count {
		if h[i+1] != fmt.Sprintf("%d/true/%s", i, p.ID().Short()) {
			t.Fatalf("handled %q", h)
		}
	}
	if len(d) != 0 || n.Stats().VerifyBacklog != 0 {
		t.Fatalf("dropped %v, backlog %d", d, n.Stats().VerifyBacklog)
	}
}

// TestBadSignaturesBanThePeer: a neighbour closed for bad signatures is
// banned for the configured time, so it cannot reconnect (with the same
// key) and collect its strikes anew; both sides see ErrNotAuthorized.
func TestBadSignaturesBanThePeer(t *testing.T) {
	var r seen
	n := newLayered(t, r.layer(), base.WithSignatureStrikes(1, time.Hour))
	p := testnet.NewBase(t, "")
	c := dial(t, p, n)
	o := newOrigin()
	if err := c.SendEnvelope(signCtx(t), 0, tamper(o.broadcast(o.key, 1, "altered"))); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return c.Err() != nil }, "the link is closed after 1 strike")
	testnet.Eventually(t, 10*time.Second, func() bool { return n.Stats().Connections == 0 && len(p.Conns()) == 0 },
		"both ends drop the link")
	if _, err := p.Connect(signCtx(t), n.Addr().String()); !errors.Is(err, base.ErrNotAuthorized) {
		t.Fatalf("reconnect after the strikes: %v, want ErrNotAuthorized (banned)", err)
	}
	if st := n.Stats(); st.Bans != 1 {
		t.Fatalf("Stats.Bans = %d, want 1", st.Bans)
	}
}
