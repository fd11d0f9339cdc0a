package mesh

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
)

// fromIP makes a node dial from ip (every 127.x.y.z is loopback on Linux).
func fromIP(ip string) Option {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return WithBaseOptions(base.WithDialer(d.DialContext))
}

// TestSourceLimitThroughBaseOptions: base's per-source limits reach a mesh
// node through WithBaseOptions, and the per-source bound follows
// WithMaxPeers (a quarter of it by default): a third peer from one source
// is refused with ErrConnLimit, counted in the node's Stats, while a peer
// from another source gets in.
func TestSourceLimitThroughBaseOptions(t *testing.T) {
	l := startCluster(t, 1, WithMaxOutgoing(1), WithMaxPeers(8), WithBaseOptions(base.WithLoopbackExempt(false))).nodes[0]
	ctx := ctxT(t, 10*time.Second)
	for i := range 3 {
		d := startCluster(t, 1, fromIP("127.0.0.2")).nodes[0]
		err := d.Connect(ctx, l.Addr().String())
		switch {
		case i < 2 && err != nil:
			t.Fatalf("peer %d from 127.0.0.2: %v", i, err)
		case i == 2 && !errors.Is(err, ErrConnLimit):
			t.Fatalf("third peer from 127.0.0.2: %v, want ErrConnLimit", err)
		}
	}
	if err := startCluster(t, 1, fromIP("127.0.0.3")).nodes[0].Connect(ctx, l.Addr().String()); err != nil {
		t.Fatalf("peer from 127.0.0.3: %v", err)
	}
	if st := l.Stats(); st.SourceConnRefusals != 1 || st.Neighbours != 3 {
		t.Errorf("%d source refusals, %d neighbours; want 1, 3", st.SourceConnRefusals, st.Neighbours)
	}
}
