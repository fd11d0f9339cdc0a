package base_test

// Security tests (issue 11): impostors at the handshake, addresses that
// peers only claim, network keys, the authorisation hook, bans, other
// versions and encryptions, and what a link shows an eavesdropper. The
// attackers are raw-wire peers (internal/wirepeer) or real sockets. Helpers
// are prefixed "sc".

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/faultnet"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/internal/wirepeer"
	"github.com/meshsock/meshsock/protocol"
)

// scModes are the two link encryptions.
var scModes = []string{protocol.EncryptionTLS, protocol.EncryptionPlaintext}

// scProto is the default subnet with the given encryption.
func scProto(enc string) base.Option {
	return base.WithProtocol(protocol.Protocol{Subnet: protocol.DefaultProtocol.Subnet, Encryption: enc})
}

// scDial opens a raw peer to s with the given key (nil: fresh) and
// encryption.
func scDial(t *testing.T, s *base.Socket, key ed25519.PrivateKey, enc string) *wirepeer.Peer {
	t.Helper()
	p, err := wirepeer.Dial(ftCtx(t), s.Addr().String(), key, enc, ftWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// scSecure runs a raw dialer's Preambles and TLS (if any).
func scSecure(t *testing.T, p *wirepeer.Peer) {
	t.Helper()
	if err := p.SendPreamble(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadPreamble(); err != nil {
		t.Fatalf("the node's preamble: %v", err)
	}
	if err := p.Secure(); err != nil {
		t.Fatalf("tls: %v", err)
	}
}

// scFinish ends a raw dialer's handshake whose Hello went out: it reads the
// node's Hello, sends an Auth frame (signed by signer, nil: the peer's own
// key; with a proof under networkKey, nil: none) and reads the node's, then
// sends an accepting verdict and returns the node's verdict.
func scFinish(t *testing.T, p *wirepeer.Peer, signer ed25519.PrivateKey, networkKey []byte) protocol.Verdict {
	t.Helper()
	if _, err := p.ReadHello(); err != nil {
		t.Fatalf("the node's hello: %v", err)
	}
	if err := p.SendAuth(signer, networkKey); err != nil {
		t.Fatal(err)
	}
	a, err := p.ReadAuth()
	if err != nil {
		t.Fatalf("the node's auth frame: %v", err)
	}
	if !p.CheckAuth(a) {
		t.Error("the node's auth signature does not verify")
	}
	return scVerdict(t, p)
}

// scVerdict sends an accepting verdict and returns the node's.
func scVerdict(t *testing.T, p *wirepeer.Peer) protocol.Verdict {
	t.Helper()
	if err := p.SendVerdict(protocol.Verdict{Code: protocol.Accept}); err != nil {
		t.Fatal(err)
	}
	v, err := p.ReadVerdict()
	if err != nil {
		t.Fatalf("the node's verdict: %v", err)
	}
	return v
}

// scProblem waits until s's status shows a problem matching want.
func scProblem(t *testing.T, s *base.Socket, want error) {
	t.Helper()
	slRefusedInStatus(t, s, want)
}

// TestImpostorCannotTakeOverLink (issue 11, identity hijack): a raw peer
// claims the ID of V, which is connected to X, with link nonce 0, so that
// it would win the duplicate-link tie-break against V's link, and tries
// every way to pass for V: its own key, V's public key with its own
// signature, V's Hello and signature replayed from a connection to V. X
// refuses each with verdict 9 (ErrIdentity), counts it, and keeps V's link
// (the same Conn, still carrying whispers both ways). Before, X accepted
// the impostor, closed V's link and sent the impostor V's whispers.
func TestImpostorCannotTakeOverLink(t *testing.T) {
	for _, enc := range scModes {
		t.Run(enc, func(t *testing.T) {
			ftLeakCheck(t)
			x := testnet.NewBase(t, "127.0.0.1:0", scProto(enc))
			v := testnet.NewBase(t, "127.0.0.1:0", scProto(enc))
			vx := ftConnect(t, v, x)
			xv, _ := x.Conn(v.ID())

			attacks := []struct {
				name string
				run  func(t *testing.T) protocol.Verdict
			}{
				{"own key, V's ID", func(t *testing.T) protocol.Verdict {
					p := scDial(t, x, nil, enc)
					scSecure(t, p)
					if err := p.SendHelloExact(protocol.Hello{Version: protocol.Version,
						Protocol: protocol.Protocol{Subnet: "meshsock", Encryption: enc}.ID(),
						NodeID:   v.ID(), Key: p.Public(), Nonce: 0, Time: time.Now().UnixNano()}); err != nil {
						t.Fatal(err)
					}
					return scFinish(t, p, nil, nil)
				}},
				{"V's key, own signature", func(t *testing.T) protocol.Verdict {
					p := scDial(t, x, nil, enc)
					scSecure(t, p)
					if err := p.SendHelloExact(protocol.Hello{Version: protocol.Version,
						Protocol: protocol.Protocol{Subnet: "meshsock", Encryption: enc}.ID(),
						NodeID:   v.ID(), Key: v.PublicKey(), Nonce: 0, Time: time.Now().UnixNano()}); err != nil {
						t.Fatal(err)
					}
					return scFinish(t, p, nil, nil)
				}},
				{"V's hello and signature replayed", func(t *testing.T) protocol.Verdict {
					// A genuine Hello and signature of V, from a connection
					// to V, presented to X.
					vHello, vAuth := scRecorded(t, v, enc)
					p := scDial(t, x, nil, enc)
					scSecure(t, p)
					if err := p.SendHelloBody(vHello); err != nil {
						t.Fatal(err)
					}
					if _, err := p.ReadHello(); err != nil {
						t.Fatal(err)
					}
					if err := p.SendAuthFrame(vAuth); err != nil {
						t.Fatal(err)
					}
					if _, err := p.ReadAuth(); err != nil {
						t.Fatal(err)
					}
					return scVerdict(t, p)
				}},
			}
			for i, a := range attacks {
				t.Run(a.name, func(t *testing.T) {
					verdict := a.run(t)
					if verdict.Code != protocol.RejectIdentity {
						t.Fatalf("verdict %v (%q); want identity", verdict.Code, verdict.Reason)
					}
					t.Logf("refused: %s", verdict.Reason)
					testnet.Eventually(t, ftWait, func() bool { return x.Stats().IdentityFailures == uint64(i+1) },
						"X counts the impostor")
					scProblem(t, x, base.ErrIdentity)
					if cur, ok := x.Conn(v.ID()); !ok || cur != xv || vx.Err() != nil {
						t.Fatalf("V's link was replaced or closed (%v)", vx.Err())
					}
					ftExchange(t, vx, x, "V to X after "+a.name)
					ftExchange(t, xv, v, "X to V after "+a.name)
				})
			}
		})
	}
}

// scRecorded dials v as a raw peer, exchanges Hellos and Auth frames, and
// returns v's Hello body and Auth frame: a genuine Hello and signature of
// V, over another transcript.
func scRecorded(t *testing.T, v *base.Socket, enc string) ([]byte, protocol.Auth) {
	t.Helper()
	p := scDial(t, v, nil, enc)
	scSecure(t, p)
	if err := p.SendHello(protocol.Hello{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadHello(); err != nil {
		t.Fatal(err)
	}
	if err := p.SendAuth(nil, nil); err != nil {
		t.Fatal(err)
	}
	a, err := p.ReadAuth()
	if err != nil || !p.CheckAuth(a) {
		t.Fatalf("V's auth frame: %v", err)
	}
	return p.PeerHelloBody(), a
}

// scListen accepts one connection on loopback and runs serve on it as a raw
// listener with the given key and encryption.
func scListen(t *testing.T, key ed25519.PrivateKey, enc string, serve func(p *wirepeer.Peer)) string {
	return wirepeer.ServeOnce(t, ftWait, func(nc net.Conn) { serve(wirepeer.New(nc, false, key, enc)) })
}

// TestConnectToImpostorRefused: the dialer checks the listener as the
// listener checks the dialer. A raw listener that claims V's ID (with its
// own key, or with V's key and its own signature) makes Connect fail with
// ErrIdentity, and reads verdict 9 itself.
func TestConnectToImpostorRefused(t *testing.T) {
	for _, enc := range scModes {
		for _, claimKey := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/claims V's key %v", enc, claimKey), func(t *testing.T) {
				ftLeakCheck(t)
				v := testnet.NewBase(t, "", scProto(enc))
				d := testnet.NewBase(t, "", scProto(enc))
				got := make(chan protocol.Verdict, 1)
				addr := scListen(t, nil, enc, func(p *wirepeer.Peer) {
					h := protocol.Hello{NodeID: v.ID()}
					if claimKey {
						h.Key = v.PublicKey()
					}
					if err := p.Open(h, nil); err != nil {
						return
					}
					if vd, err := p.ReadVerdict(); err == nil {
						got <- vd
						_ = p.SendVerdict(protocol.Verdict{Code: protocol.Accept})
					}
				})
				_, err := d.Connect(ftCtx(t), addr)
				if !errors.Is(err, base.ErrIdentity) {
					t.Fatalf("Connect to an impostor = %v; want ErrIdentity", err)
				}
				select {
				case vd := <-got:
					if vd.Code != protocol.RejectIdentity {
						t.Errorf("the impostor read verdict %v, want identity", vd.Code)
					}
				case <-time.After(ftWait):
					t.Fatal("the impostor read no verdict")
				}
				if st := d.Stats(); st.IdentityFailures != 1 || st.Connects != 0 {
					t.Errorf("dialer: %d identity failures, %d connects; want 1, 0", st.IdentityFailures, st.Connects)
				}
			})
		}
	}
}

// TestTLSCertificateMustCarryHelloKey: a peer that holds two keys, presents
// a TLS certificate of one and a Hello (with a valid signature) of the
// other is refused with verdict 9: the Hello is bound to the TLS session's
// certificate.
func TestTLSCertificateMustCarryHelloKey(t *testing.T) {
	ftLeakCheck(t)
	x := testnet.NewBase(t, "127.0.0.1:0")
	helloKey := base.GenerateKey()
	p := scDial(t, x, helloKey, "")
	certKey := base.GenerateKey()
	cert, err := protocol.NewCertificate(certKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SendPreamble(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadPreamble(); err != nil {
		t.Fatal(err)
	}
	if err := p.StartTLS(&cert); err != nil {
		t.Fatal(err)
	}
	if err := p.SendHello(protocol.Hello{}); err != nil {
		t.Fatal(err)
	}
	if v := scFinish(t, p, nil, nil); v.Code != protocol.RejectIdentity || !strings.Contains(v.Reason, "certificate") {
		t.Fatalf("verdict %v (%q); want identity, for the certificate", v.Code, v.Reason)
	}
	scProblem(t, x, base.ErrIdentity)
}

// TestTLSNotNodeCertificate: a TLS client whose certificate is not a node
// certificate (ECDSA) is stopped inside TLS with a bad_certificate alert;
// the listener records ErrIdentity.
func TestTLSNotNodeCertificate(t *testing.T) {
	ftLeakCheck(t)
	x := testnet.NewBase(t, "127.0.0.1:0")
	p := scDial(t, x, nil, "")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SendPreamble(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReadPreamble(); err != nil {
		t.Fatal(err)
	}
	// In TLS 1.3 the client finishes before the server has checked its
	// certificate: the refusal arrives as an alert on the next read.
	err = p.StartTLS(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: ecKey})
	if err == nil {
		_, err = p.ReadFrame()
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("client: %v; want a bad_certificate alert", err)
	}
	scProblem(t, x, base.ErrIdentity)
	if st := x.Stats(); st.IdentityFailures != 1 {
		t.Errorf("IdentityFailures = %d, want 1", st.IdentityFailures)
	}
}

// TestConnectAddrNotTakenFromClaim (issue 11, byAddr poisoning): a real
// socket M that advertises V's listen address, whether it dialled X or X
// dialled it, does not make X.Connect(V's address) return M's connection:
// X dials and gets V. Before, X registered M's connection under the
// address M claimed and returned it without dialling.
func TestConnectAddrNotTakenFromClaim(t *testing.T) {
	for _, dir := range []string{"M dials X", "X dials M"} {
		t.Run(dir, func(t *testing.T) {
			ftLeakCheck(t)
			x := testnet.NewBase(t, "127.0.0.1:0")
			v := testnet.NewBase(t, "127.0.0.1:0")
			m := testnet.NewBase(t, "127.0.0.1:0", base.WithAdvertiseAddr(v.Addr().String()))
			if dir == "M dials X" {
				ftConnect(t, m, x)
			} else {
				c, err := x.Connect(ftCtx(t), m.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				if c.Peer().Addr != v.Addr().String() {
					t.Fatalf("M advertises %q, want V's address", c.Peer().Addr)
				}
			}
			c, err := x.Connect(ftCtx(t), v.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			if c.ID() != v.ID() {
				t.Fatalf("Connect(V's address) returned a connection to %s, not V (%s); M is %s",
					c.ID().Short(), v.ID().Short(), m.ID().Short())
			}
			ftExchange(t, c, v, "to the node at that address")
			// And again, now from the table.
			if again, err := x.Connect(ftCtx(t), v.Addr().String()); err != nil || again != c {
				t.Errorf("second Connect(V's address) = %v, %v; want the same connection to V", again, err)
			}
		})
	}
}

// TestEncryptionMismatch: a TLS node and a plaintext node refuse each other
// in plaintext, before any TLS, with ErrProtocolMismatch on both sides,
// whichever dials.
func TestEncryptionMismatch(t *testing.T) {
	ftLeakCheck(t)
	tlsNode := testnet.NewBase(t, "127.0.0.1:0")
	plain := testnet.NewBase(t, "127.0.0.1:0", scProto(protocol.EncryptionPlaintext))
	for i, pair := range [][2]*base.Socket{{tlsNode, plain}, {plain, tlsNode}} {
		d, l := pair[0], pair[1]
		_, err := d.Connect(ftCtx(t), l.Addr().String())
		if !errors.Is(err, base.ErrProtocolMismatch) || !strings.Contains(err.Error(), "encryption") {
			t.Fatalf("Connect = %v; want ErrProtocolMismatch naming the encryption", err)
		}
		for name, s := range map[string]*base.Socket{"dialer": d, "listener": l} {
			testnet.Eventually(t, ftWait, func() bool { return s.Stats().ProtocolMismatches == uint64(i+1) },
				"the %s counts the mismatch", name)
		}
	}
	if tlsNode.Stats().Connects+plain.Stats().Connects != 0 {
		t.Error("a connection was registered")
	}
}

// scV2Hello is the Hello a version 2 node sends: 9 items, no key.
func scV2Hello(t *testing.T) []byte {
	t.Helper()
	id := protocol.NewNodeID()
	pid := make([]byte, 16) // a v2 protocol ID; its value does not matter
	b, err := protocol.MarshalCBOR([]any{protocol.Magic, 2, pid, id[:], "", []byte{}, map[string]string{},
		uint64(7), time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVersion2PeerRefused: a version 2 node gets a protocol-mismatch
// verdict whichever side dials, and sees one: it reads the current
// Preamble as a Hello of that version (magic and version first), and the
// current node reads its Hello as a Preamble of version 2.
func TestVersion2PeerRefused(t *testing.T) {
	ftLeakCheck(t)
	t.Run("v2 dials", func(t *testing.T) {
		l := testnet.NewBase(t, "127.0.0.1:0")
		nc := ftDial(t, l.Addr())
		_ = nc.SetDeadline(time.Now().Add(ftWait))
		if err := protocol.WriteFrame(nc, flags.None, scV2Hello(t)); err != nil {
			t.Fatal(err)
		}
		fr := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize)
		_, first, err := fr.ReadFrame(nil)
		if err != nil {
			t.Fatal(err)
		}
		// What the v2 node's decoder looks at: an array whose items 0 and
		// 1 are the magic and another version (3).
		var items []any
		if err := protocol.UnmarshalCBOR(first, &items); err != nil || len(items) < 2 || items[0] != protocol.Magic ||
			items[1] != uint64(protocol.Version) {
			t.Fatalf("first frame %x (%v): not magic and version %d", first, err, protocol.Version)
		}
		b, _ := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.RejectProtocol, Reason: "wire version 3, want 2"})
		if err := protocol.WriteFrame(nc, flags.None, b); err != nil {
			t.Fatal(err)
		}
		_, body, err := fr.ReadFrame(nil)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := protocol.UnmarshalVerdict(body); err != nil || v.Code != protocol.RejectProtocol ||
			!strings.Contains(v.Reason, "version 2") {
			t.Fatalf("verdict %+v, %v; want a protocol mismatch naming version 2", v, err)
		}
		testnet.Eventually(t, ftWait, func() bool { return l.Stats().ProtocolMismatches == 1 }, "counted")
	})
	t.Run("v3 dials", func(t *testing.T) {
		d := testnet.NewBase(t, "")
		got := make(chan protocol.Verdict, 1)
		addr := scServeRaw(t, func(nc net.Conn) {
			if err := protocol.WriteFrame(nc, flags.None, scV2Hello(t)); err != nil {
				return
			}
			fr := protocol.NewFrameReader(nc, protocol.MaxHandshakeSize)
			if _, _, err := fr.ReadFrame(nil); err != nil { // the v3 Preamble
				return
			}
			b, _ := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.RejectProtocol, Reason: "wire version 3, want 2"})
			_ = protocol.WriteFrame(nc, flags.None, b)
			if _, body, err := fr.ReadFrame(nil); err == nil {
				if v, err := protocol.UnmarshalVerdict(body); err == nil {
					got <- v
				}
			}
		})
		_, err := d.Connect(ftCtx(t), addr)
		if !errors.Is(err, base.ErrProtocolMismatch) {
			t.Fatalf("Connect to a v2 node = %v; want ErrProtocolMismatch", err)
		}
		select {
		case v := <-got:
			if v.Code != protocol.RejectProtocol {
				t.Errorf("the v2 node read verdict %v", v.Code)
			}
		case <-time.After(ftWait):
			t.Fatal("the v2 node read no verdict")
		}
	})
}

// scServeRaw accepts one connection on loopback and runs serve on it.
func scServeRaw(t *testing.T, serve func(nc net.Conn)) string {
	return wirepeer.ServeOnce(t, ftWait, serve)
}

// scKeys returns n distinct network keys of 32 bytes.
func scKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = bytes.Repeat([]byte{byte(0xa0 + i)}, 32)
	}
	return keys
}

func scRing(t *testing.T, primary []byte, accepted ...[]byte) *base.Keyring {
	t.Helper()
	r, err := base.NewKeyring(primary, accepted...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// scRefusedBoth connects d to l, expects ErrNotAuthorized, and waits until l
// records it too.
func scRefusedBoth(t *testing.T, d, l *base.Socket, want error) {
	t.Helper()
	_, err := d.Connect(ftCtx(t), l.Addr().String())
	if !errors.Is(err, want) {
		t.Fatalf("Connect = %v; want %v", err, want)
	}
	t.Logf("dialer: %v", err)
	scProblem(t, l, want)
}

// TestNetworkKey: nodes that share a network key connect, on either
// encryption; a node with another key, or none, is refused with
// ErrNotAuthorized on both sides, whichever dials; a raw peer with a bad,
// missing or unexpected proof gets verdict 10.
func TestNetworkKey(t *testing.T) {
	keys := scKeys(2)
	for _, enc := range scModes {
		t.Run(enc, func(t *testing.T) {
			ftLeakCheck(t)
			ring := base.WithNetworkKey(scRing(t, keys[0]))
			a := testnet.NewBase(t, "127.0.0.1:0", scProto(enc), ring)
			b := testnet.NewBase(t, "127.0.0.1:0", scProto(enc), ring)
			ftExchange(t, ftConnect(t, a, b), b, "members")

			other := testnet.NewBase(t, "127.0.0.1:0", scProto(enc), base.WithNetworkKey(scRing(t, keys[1])))
			none := testnet.NewBase(t, "127.0.0.1:0", scProto(enc))
			scRefusedBoth(t, other, a, base.ErrNotAuthorized)
			scProblem(t, other, base.ErrNotAuthorized)
			scRefusedBoth(t, a, other, base.ErrNotAuthorized)
			scRefusedBoth(t, none, b, base.ErrNotAuthorized)
			scRefusedBoth(t, b, none, base.ErrNotAuthorized)
			testnet.Eventually(t, ftWait, func() bool { return b.Stats().AuthFailures == 2 }, "b counts both refusals")
			if st := b.Stats(); st.Connections != 1 {
				t.Errorf("b: %d connections, want 1", st.Connections)
			}

			for _, c := range []struct {
				name  string
				to    *base.Socket
				proof []byte
			}{
				{"wrong key", a, keys[1]},
				{"no proof", a, nil},
				{"proof to a node without a key", none, keys[0]},
			} {
				p := scDial(t, c.to, nil, enc)
				scSecure(t, p)
				if err := p.SendHello(protocol.Hello{}); err != nil {
					t.Fatal(err)
				}
				if v := scFinish(t, p, nil, c.proof); v.Code != protocol.RejectNotAuthz {
					t.Errorf("%s: verdict %v (%q); want not authorised", c.name, v.Code, v.Reason)
				}
			}
			p := scDial(t, a, nil, enc)
			scSecure(t, p)
			if err := p.SendHello(protocol.Hello{}); err != nil {
				t.Fatal(err)
			}
			if v := scFinish(t, p, nil, keys[0]); v.Code != protocol.Accept {
				t.Errorf("a raw peer with the key: verdict %v (%q)", v.Code, v.Reason)
			}
		})
	}
}

// TestNetworkKeyRotation: rotating from key A to key B without a restart.
// A node that has made B its primary key keeps connecting to nodes still
// on A that accept B, both ways; a node that accepts only A refuses it
// (both sides see ErrNotAuthorized); links that are up stay up while keys
// change; once every node has removed A, a node still on A alone is out.
func TestNetworkKeyRotation(t *testing.T) {
	ftLeakCheck(t)
	keys := scKeys(2)
	oldKey, newKey := keys[0], keys[1]
	rings := []*base.Keyring{scRing(t, oldKey), scRing(t, oldKey), scRing(t, oldKey)}
	nodes := make([]*base.Socket, len(rings))
	for i, r := range rings {
		nodes[i] = testnet.NewBase(t, "127.0.0.1:0", base.WithNetworkKey(r))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	ab := ftConnect(t, a, b)

	// Step 1: a and b accept the new key; c does not yet.
	for _, r := range rings[:2] {
		if err := r.Add(newKey); err != nil {
			t.Fatal(err)
		}
	}
	// Step 2: a proves with the new key from now on.
	if err := rings[0].Use(newKey); err != nil {
		t.Fatal(err)
	}
	if got := rings[0].Keys(); len(got) != 2 || !bytes.Equal(got[0], newKey) || !bytes.Equal(got[1], oldKey) {
		t.Fatalf("a's keys after Use: %x", got)
	}
	ftExchange(t, ab, b, "the link survives the rotation")
	// a (new primary) and b (old primary, accepts new): both directions.
	if err := ab.Close(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, ftWait, func() bool { _, ok := b.Conn(a.ID()); return !ok }, "b drops the closed link")
	ftExchange(t, ftConnect(t, b, a), a, "b dials a")
	ba, _ := b.Conn(a.ID())
	_ = ba.Close()
	testnet.Eventually(t, ftWait, func() bool { _, ok := a.Conn(b.ID()); return !ok }, "a drops the closed link")
	ftExchange(t, ftConnect(t, a, b), b, "a dials b")
	// c accepts only the old key: it refuses a, and a sees it too.
	scRefusedBoth(t, a, c, base.ErrNotAuthorized)
	scRefusedBoth(t, c, a, base.ErrNotAuthorized)
	// b, still on the old key, talks to c.
	ftConnect(t, b, c)

	// Step 3: everyone on the new key, the old one removed.
	for _, r := range rings[1:] {
		if err := r.Use(newKey); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rings {
		if err := r.Remove(oldKey); err != nil {
			t.Fatal(err)
		}
	}
	ftConnect(t, a, c)
	stale := testnet.NewBase(t, "", base.WithNetworkKey(scRing(t, oldKey)))
	scRefusedBoth(t, stale, a, base.ErrNotAuthorized)
}

// TestKeyring: construction and changes are checked, the keyring hands out
// copies, and it may change while handshakes use it (run with -race).
func TestKeyring(t *testing.T) {
	keys := scKeys(3)
	if _, err := base.NewKeyring(make([]byte, base.MinNetworkKeySize-1)); !errors.Is(err, base.ErrInvalidOption) {
		t.Errorf("short primary key: %v", err)
	}
	if _, err := base.NewKeyring(keys[0], make([]byte, base.MaxNetworkKeySize+1)); !errors.Is(err, base.ErrInvalidOption) {
		t.Errorf("long accepted key: %v", err)
	}
	if _, err := base.NewSocket("", base.WithNetworkKey(nil)); !errors.Is(err, base.ErrInvalidOption) {
		t.Errorf("WithNetworkKey(nil): %v", err)
	}
	r := scRing(t, keys[0], keys[1], keys[1])
	if got := r.Keys(); len(got) != 2 || !bytes.Equal(got[0], keys[0]) || !bytes.Equal(got[1], keys[1]) {
		t.Fatalf("Keys() = %x", got)
	}
	r.Keys()[0][0] ^= 1 // a copy
	if !bytes.Equal(r.Keys()[0], keys[0]) {
		t.Fatal("Keys() returned the keyring's own slice")
	}
	if err := r.Remove(keys[0]); !errors.Is(err, base.ErrInvalidOption) {
		t.Errorf("removing the primary key: %v", err)
	}
	if err := r.Use(keys[2]); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(keys[0]); err != nil {
		t.Fatal(err)
	}
	if got := r.Keys(); len(got) != 2 || !bytes.Equal(got[0], keys[2]) || !bytes.Equal(got[1], keys[1]) {
		t.Fatalf("after Use and Remove: %x", got)
	}
	if err := r.Add(make([]byte, 3)); !errors.Is(err, base.ErrInvalidOption) {
		t.Errorf("Add(short key): %v", err)
	}

	// Live changes during handshakes: every node always holds keys[1], so
	// every handshake succeeds whatever the primaries are.
	ftLeakCheck(t)
	shared := scRing(t, keys[1], keys[2])
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithNetworkKey(shared))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = shared.Use(keys[1+i%2])
			_ = shared.Add(keys[0])
			_ = shared.Remove(keys[0])
			_ = shared.Keys()
		}
	}()
	for range 5 {
		d := testnet.NewBase(t, "", base.WithNetworkKey(scRing(t, keys[1], keys[2])))
		ftConnect(t, d, l)
	}
	close(stop)
	wg.Wait()
}

// TestAuthorizeHook: the hook sees each peer's proven ID and key, its
// metadata and addresses, on both sides, with a context bounded by the
// handshake deadline. Its refusal is ErrNotAuthorized on both sides, with
// its reason; a hook that panics refuses the peer and the node goes on.
func TestAuthorizeHook(t *testing.T) {
	ftLeakCheck(t)
	var denied atomic.Pointer[protocol.NodeID]
	var seen sync.Map // node ID -> base.PeerInfo
	hook := func(ctx context.Context, p base.PeerInfo) error {
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > base.DefaultHandshakeTimeout {
			return fmt.Errorf("context without the handshake deadline")
		}
		seen.Store(p.ID, p)
		if d := denied.Load(); d != nil && *d == p.ID {
			return errors.New("not on the allow-list")
		}
		if p.Meta["role"] == "panic" {
			panic("hook bug")
		}
		return nil
	}
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithAuthorize(hook))
	d := testnet.NewBase(t, "", base.WithMetadata(map[string]string{"role": "client"}))
	ftConnect(t, d, l)
	v, ok := seen.Load(d.ID())
	if !ok {
		t.Fatal("the hook did not see the dialer")
	}
	p := v.(base.PeerInfo)
	if !p.Key.Equal(d.PublicKey()) || p.Meta["role"] != "client" || p.Outbound || p.RemoteAddr == "" {
		t.Errorf("the hook saw %+v", p)
	}

	// The listener refuses: both sides see ErrNotAuthorized and the reason.
	d2 := testnet.NewBase(t, "")
	id := d2.ID()
	denied.Store(&id)
	_, err := d2.Connect(ftCtx(t), l.Addr().String())
	if !errors.Is(err, base.ErrNotAuthorized) || !strings.Contains(err.Error(), "not on the allow-list") {
		t.Fatalf("Connect refused by the hook = %v; want ErrNotAuthorized with its reason", err)
	}
	scProblem(t, l, base.ErrNotAuthorized)

	// The dialer's hook refuses the listener.
	l2 := testnet.NewBase(t, "127.0.0.1:0")
	lid := l2.ID()
	denied.Store(&lid)
	d3 := testnet.NewBase(t, "", base.WithAuthorize(hook))
	scRefusedBoth(t, d3, l2, base.ErrNotAuthorized)
	if v, ok := seen.Load(l2.ID()); !ok || !v.(base.PeerInfo).Outbound {
		t.Error("the dialer's hook did not see the listener as outbound")
	}

	// A panicking hook refuses, counted as a handler panic.
	denied.Store(nil)
	bad := testnet.NewBase(t, "", base.WithMetadata(map[string]string{"role": "panic"}))
	scRefusedBoth(t, bad, l, base.ErrNotAuthorized)
	if st := l.Stats(); st.HandlerPanics != 1 {
		t.Errorf("HandlerPanics = %d, want 1", st.HandlerPanics)
	}
	ftConnect(t, testnet.NewBase(t, ""), l) // still serving
}

// TestBan: Ban closes the node's link with the reason (ErrNotAuthorized on
// the banning side; the banned side reads the reason from the Bye), refuses
// it at the handshake until the ban ends (ErrNotAuthorized on both sides,
// with the reason), and lets it back once lifted or expired.
func TestBan(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0")
	d := testnet.NewBase(t, "")
	downs := ftDisconnects(t, d)
	ftConnect(t, d, l)
	lc, _ := l.Conn(d.ID())
	l.Ban(d.ID(), time.Hour, "flooding")
	e := ftNextEvent(t, downs)
	if e.Peer.ID != l.ID() || !strings.Contains(e.Err.Error(), "banned: flooding") {
		t.Errorf("the banned side's link closed with %v; want the reason", e.Err)
	}
	testnet.Eventually(t, ftWait, func() bool { return lc.Err() != nil }, "the banning side closes the link")
	if !errors.Is(lc.Err(), base.ErrNotAuthorized) || !errors.Is(lc.Err(), base.ErrClosed) {
		t.Errorf("banned link's Err = %v; want ErrClosed and ErrNotAuthorized", lc.Err())
	}
	_, err := d.Connect(ftCtx(t), l.Addr().String())
	if !errors.Is(err, base.ErrNotAuthorized) || !strings.Contains(err.Error(), "flooding") {
		t.Fatalf("Connect while banned = %v; want ErrNotAuthorized with the reason", err)
	}
	testnet.Eventually(t, ftWait, func() bool { return l.Stats().AuthFailures == 1 }, "the refusal counted")
	if st := l.Stats(); st.Bans != 1 {
		t.Errorf("Bans = %d, want 1", st.Bans)
	}
	// Others are not affected.
	ftConnect(t, testnet.NewBase(t, ""), l)
	// Lifted.
	l.Ban(d.ID(), 0, "")
	ftConnect(t, d, l)
	// A short ban expires on its own.
	l.Ban(d.ID(), 100*time.Millisecond, "cool down")
	ctx := ftCtx(t)
	testnet.Eventually(t, ftWait, func() bool {
		_, err := d.Connect(ctx, l.Addr().String())
		return err == nil
	}, "the ban expires")
}

// TestBanDoesNotLiftSourceLimits (issue 11, per-identity accounting): a
// host that comes back under fresh keys is new identities to a ban, but
// it is still one source: the per-source bound counts its connections by
// address, whatever keys they prove. Banning one identity frees its slot
// for the source, no more.
func TestBanDoesNotLiftSourceLimits(t *testing.T) {
	ftLeakCheck(t)
	l := testnet.NewBase(t, "127.0.0.1:0", base.WithLoopbackExempt(false), base.WithMaxConnsPerSource(2))
	host := func() *base.Socket { return testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.5"))) }
	n1, n2 := host(), host()
	ftConnect(t, n1, l)
	ftConnect(t, n2, l)
	if _, err := host().Connect(ftCtx(t), l.Addr().String()); !errors.Is(err, base.ErrConnLimit) {
		t.Fatalf("a third key from the source: %v; want ErrConnLimit", err)
	}
	l.Ban(n1.ID(), time.Hour, "abuse")
	testnet.Eventually(t, ftWait, func() bool {
		_, up := n1.Conn(l.ID())
		return l.Stats().Connections == 1 && !up
	}, "the banned link closes on both ends")
	if _, err := n1.Connect(ftCtx(t), l.Addr().String()); !errors.Is(err, base.ErrNotAuthorized) {
		t.Fatalf("the banned identity: %v; want ErrNotAuthorized", err)
	}
	ftConnect(t, host(), l) // a fresh key takes the freed slot
	if _, err := host().Connect(ftCtx(t), l.Addr().String()); !errors.Is(err, base.ErrConnLimit) {
		t.Fatalf("yet another key: %v; want ErrConnLimit", err)
	}
	ftConnect(t, testnet.NewBase(t, "", base.WithDialer(slDialer("127.0.0.6"))), l) // another source
}

// TestTLSCaptureHidesPayload (issue 11): everything a TLS link carries is
// encrypted: a capture of both directions (internal/faultnet) holds neither
// a distinctive payload, nor the metadata, nor either node's key. The same
// capture of a plaintext link holds all of them, so the check can fail.
func TestTLSCaptureHidesPayload(t *testing.T) {
	payload := []byte("meshsock-capture-test:" + strings.Repeat("7d1f", 40))
	meta := "metadata-value-9a4c31"
	for _, enc := range scModes {
		t.Run(enc, func(t *testing.T) {
			ftLeakCheck(t)
			dialer := faultnet.NewDialer(faultnet.Faults{Capture: true})
			opts := []base.Option{base.WithCompression(), base.WithMetadata(map[string]string{"k": meta})}
			if enc != protocol.EncryptionTLS { // TLS is the default
				opts = append(opts, scProto(enc))
			}
			l := testnet.NewBase(t, "127.0.0.1:0", opts...)
			d := testnet.NewBase(t, "", append(opts, base.WithDialer(dialer.DialContext))...)
			c := ftConnect(t, d, l)
			ftExchange(t, c, l, string(payload))
			back, _ := l.Conn(d.ID())
			ftExchange(t, back, d, string(payload))
			written, read := dialer.Conns()[0].Captured()
			wire := append(written, read...)
			t.Logf("%d bytes captured", len(wire))
			secrets := map[string][]byte{
				"payload": payload, "metadata": []byte(meta),
				"dialer's key": d.PublicKey(), "listener's key": l.PublicKey(),
			}
			for name, secret := range secrets {
				found := bytes.Contains(wire, secret)
				if enc == protocol.EncryptionTLS && found {
					t.Errorf("the %s is in clear on a TLS link", name)
				}
				if enc == protocol.EncryptionPlaintext && !found {
					t.Errorf("the %s is not in a capture of a plaintext link: the capture sees nothing", name)
				}
			}
			if enc == protocol.EncryptionTLS {
				// After the 24-byte Preamble frame, TLS records: a
				// handshake record, TLS 1.x.
				if len(written) < 27 || !bytes.Equal(written[24:27], []byte{0x16, 0x03, 0x01}) {
					t.Errorf("the dialer's bytes after its preamble are not a TLS record: %x", written[:min(len(written), 32)])
				}
			}
		})
	}
}

// TestRefusalAfterPreamble: a listener that gives a handshake's slot to a
// newcomer after sending its Preamble refuses with a plaintext Verdict
// where its Hello (plaintext) or its first TLS record would be. The dialer
// tells the frame from a TLS record by its first byte and reports the
// refusal (ErrConnLimit), not a broken peer.
func TestRefusalAfterPreamble(t *testing.T) {
	for _, enc := range scModes {
		t.Run(enc, func(t *testing.T) {
			ftLeakCheck(t)
			d := testnet.NewBase(t, "", scProto(enc))
			addr := scListen(t, nil, enc, func(p *wirepeer.Peer) {
				if p.SendPreamble() != nil {
					return
				}
				b, _ := protocol.MarshalVerdict(protocol.Verdict{Code: protocol.RejectLimit, Reason: "displaced"})
				if protocol.WriteFrame(p.Raw, flags.None, b) != nil {
					return
				}
				_, _ = p.ReadRawFrame() // the dialer's preamble
				_ = p.Raw.SetReadDeadline(time.Now().Add(ftWait))
				buf := make([]byte, 4096)
				for {
					if _, err := p.Raw.Read(buf); err != nil {
						return
					}
				}
			})
			_, err := d.Connect(ftCtx(t), addr)
			if !errors.Is(err, base.ErrConnLimit) || errors.Is(err, base.ErrNotMeshsock) || !strings.Contains(err.Error(), "displaced") {
				t.Fatalf("Connect = %v; want ErrConnLimit with the listener's reason", err)
			}
		})
	}
}
