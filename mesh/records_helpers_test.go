package mesh

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// fakeRecord returns a correctly signed record of a member made up on the
// spot (a fresh key), listening at addrs, and the member's key.
func fakeRecord(t testing.TB, addrs ...string) (*protocol.Record, ed25519.PrivateKey) {
	t.Helper()
	key := base.GenerateKey()
	r := &protocol.Record{Key: key.Public().(ed25519.PublicKey), Seq: uint64(time.Now().UnixNano()),
		Time: time.Now().UnixNano(), Addrs: addrs}
	if err := r.Sign(func(msg []byte) []byte { return ed25519.Sign(key, msg) }); err != nil {
		t.Fatal(err)
	}
	return r, key
}

// learnRecord puts rec into s's table of known peers as if s had learnt
// it itself (charged to no neighbour), unless the table holds it already.
func learnRecord(t testing.TB, s *Socket, rec *protocol.Record) {
	t.Helper()
	if got := s.known.store(rec, protocol.NodeID{}); got == recordRefused {
		t.Fatalf("the table did not take the record of %s: %v", rec.ID.Short(), got)
	}
}

// knownAddr returns the first address s would dial to reach id.
func knownAddr(s *Socket, id protocol.NodeID) (string, bool) {
	as := s.known.addrs(id)
	if len(as) == 0 {
		return "", false
	}
	return as[0], true
}
