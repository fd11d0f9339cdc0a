package base_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// TestSameDialerDuplicates: one node dials the same peer twice at once,
// under two names, so the address-level sharing of dials cannot merge
// them. Both ends must keep the same single connection (chosen by the
// dialer's link nonce), whatever order they saw the two arrive in.
func TestSameDialerDuplicates(t *testing.T) {
	for round := range 15 {
		socks := testnet.StartBase(t, 2)
		a, b := socks[0], socks[1]
		_, port, err := net.SplitHostPort(b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		for _, host := range []string{"127.0.0.1", "localhost"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := a.Connect(ctx, net.JoinHostPort(host, port)); err != nil {
					t.Errorf("round %d: Connect via %s: %v", round, host, err)
				}
			}()
		}
		wg.Wait()
		cancel()
		testnet.Eventually(t, 10*time.Second, func() bool {
			ca, cb := a.Conns(), b.Conns()
			if len(ca) != 1 || len(cb) != 1 {
				return false
			}
			return ca[0].LocalAddr().String() == cb[0].RemoteAddr().String() &&
				ca[0].RemoteAddr().String() == cb[0].LocalAddr().String()
		}, "round %d: one shared connection on both ends", round)
	}
}
