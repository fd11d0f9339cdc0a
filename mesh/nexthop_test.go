package mesh

import (
	"crypto/ed25519"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// BenchmarkRouteTableMemory reports the heap a full table of the default
// size takes, per entry (go test -run X -bench RouteTableMemory ./mesh).
func BenchmarkRouteTableMemory(b *testing.B) {
	via := new(base.Conn)
	ids := make([]protocol.NodeID, DefaultRouteTable)
	for i := range ids {
		ids[i] = protocol.NewNodeID()
	}
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		t := newNextHops(DefaultRouteTable)
		for i, id := range ids {
			t.learn(id, via, uint64(i), int64(i))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/DefaultRouteTable, "B/entry")
		runtime.KeepAlive(t)
	}
}

// BenchmarkRouteTableLearn is the cost the table adds to each new
// broadcast a node takes (learnPath), with every core learning at once,
// beside the signature check each such broadcast costs anyway
// (go test -run X -bench RouteTableLearn ./mesh).
func BenchmarkRouteTableLearn(b *testing.B) {
	b.Run("learn", func(b *testing.B) {
		via := new(base.Conn)
		ids := make([]protocol.NodeID, 1024)
		for i := range ids {
			ids[i] = protocol.NewNodeID()
		}
		t := newNextHops(DefaultRouteTable)
		for i, id := range ids {
			t.learn(id, via, uint64(i), 0)
		}
		var seq atomic.Uint64
		seq.Store(uint64(len(ids)))
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				t.learn(ids[i%len(ids)], via, seq.Add(1), int64(i))
			}
		})
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		pub, key, _ := ed25519.GenerateKey(nil)
		msg := []byte("a broadcast's signing input, 51 bytes long........")
		sig := ed25519.Sign(key, msg)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !ed25519.Verify(pub, msg, sig) {
					panic("bad signature")
				}
			}
		})
	})
}
