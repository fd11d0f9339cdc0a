package base

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

// Run: go test ./base -run '^$' -bench 'Verify|Sign' -benchmem
// Results are in docs/performance.md ("Signatures").

// benchSigned returns n signed 256-byte broadcasts from senders distinct
// origins (as a node sees them from a mesh of that many nodes), decoded
// into Messages as a reader leaves them.
func benchSigned(b *testing.B, n, senders int) []laneItem {
	keys := make([]ed25519.PrivateKey, senders)
	for i := range keys {
		keys[i] = GenerateKey()
	}
	items := make([]laneItem, n)
	for i := range items {
		k := keys[i%senders]
		e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast,
			Sender: protocol.NodeIDFromKey(k.Public().(ed25519.PublicKey)), Seq: uint64(i + 1),
			Time: time.Now().UnixNano(), HopLimit: 32, Packets: [][]byte{make([]byte, 256)}}
		env := e.AppendSigned(nil, k)
		var d protocol.Envelope
		if err := protocol.DecodeEnvelope(env, &d, protocol.DefaultLimits); err != nil {
			b.Fatal(err)
		}
		items[i] = laneItem{m: &Message{Sender: d.Sender, Seq: d.Seq, envelope: env, signed: true}, kind: itemVerify}
	}
	return items
}

// BenchmarkVerifyBatch measures what the pool pays per signature, in
// batches of 1 and 64 (ns/op is per batch; us/sig per signature), with the
// senders' keys in the key cache as they are in steady state.
func BenchmarkVerifyBatch(b *testing.B) {
	s, err := NewSocket("")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			items := benchSigned(b, n, 16)
			w := &worker{bv: newBatchVerifier()}
			w.items = items
			s.ver.verifyBatch(w) // fill the key cache
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.items = items
				s.ver.verifyBatch(w)
			}
			b.StopTimer()
			for _, it := range items {
				if it.bad != nil {
					b.Fatal(it.bad)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n)/1000, "us/sig")
		})
	}
}

// BenchmarkSignEnvelope is what NewEnvelope costs the origin for a signed
// 256-byte broadcast, against an unsigned one.
func BenchmarkSignEnvelope(b *testing.B) {
	for _, signing := range []bool{false, true} {
		b.Run(fmt.Sprint("signing=", signing), func(b *testing.B) {
			s, err := NewSocket("", WithSigning(signing))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			p := [][]byte{make([]byte, 256)}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.NewEnvelope(flags.Broadcast, flags.Broadcast, 32, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
