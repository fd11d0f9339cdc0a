package harness

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// floodMark is the message number in the header of a flooder's payloads:
// the nodes' handlers count and claim them instead of tracking them.
const floodMark = 1<<32 - 1

// flooder is a hostile neighbour of node 0 (Config.Flood): a bare base
// socket that sends made-up broadcasts, from one made-up origin with
// increasing sequence numbers, at a set rate (or as fast as node 0 reads
// them, if that is slower). On a signing network it signs them with the
// made-up origin's key, as a relay of a real (hostile) origin would pass
// them on: they cost the nodes a verification each, and pass it.
type flooder struct {
	key       ed25519.PrivateKey // the made-up origin's (nil: unsigned)
	sock      *base.Socket
	conn      *base.Conn
	size      int
	sent      atomic.Uint64
	delivered atomic.Uint64 // deliveries of its broadcasts, cluster-wide
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

func newFlooder(ctx context.Context, target string, size int, sign bool, proto protocol.Protocol) (*flooder, error) {
	s, err := base.NewSocket("", base.WithLogger(testnet.Discard), base.WithProtocol(proto), base.WithSigning(sign))
	if err != nil {
		return nil, err
	}
	c, err := s.Connect(ctx, target)
	if err != nil {
		_ = s.Close(context.Background())
		return nil, err
	}
	f := &flooder{sock: s, conn: c, size: size}
	if sign {
		f.key = base.GenerateKey()
	}
	return f, nil
}

// start floods, rate broadcasts per second, until stop.
func (f *flooder) start(rate int) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		payload := make([]byte, f.size)
		binary.LittleEndian.PutUint32(payload, floodMark)
		origin := protocol.NewNodeID()
		if f.key != nil {
			origin = protocol.NodeIDFromKey(f.key.Public().(ed25519.PublicKey))
		}
		e := protocol.Envelope{Type: flags.Broadcast, Sub: flags.Broadcast, Sender: origin,
			HopLimit: 128, Packets: [][]byte{payload}}
		start := time.Now()
		for seq := uint64(1); ctx.Err() == nil; seq++ {
			// Open-loop pacing: broadcast seq is due seq/rate after the start.
			if d := time.Until(start.Add(time.Duration(float64(seq) * float64(time.Second) / float64(rate)))); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			e.Seq, e.Time = seq, time.Now().UnixNano()
			env := e.AppendTo(nil)
			if f.key != nil {
				env = e.AppendSigned(nil, f.key)
			}
			if f.conn.SendEnvelope(ctx, 0, env) != nil {
				return
			}
			f.sent.Add(1)
		}
	}()
}

func (f *flooder) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	_ = f.sock.Close(context.Background())
}
