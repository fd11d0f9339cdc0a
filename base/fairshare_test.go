package base_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestDispatchFairShare: one peer floods a socket whose handler is stuck,
// and used to fill the whole dispatch queue, so that a second peer's
// messages were all dropped. One connection's messages now hold at most
// their share of it (50 % here): the flood beyond is dropped and counted,
// and the second peer's messages are all handled once the handler moves.
func TestDispatchFairShare(t *testing.T) {
	socks := testnet.StartBase(t, 3, base.WithDispatchQueue(100, 1<<20), base.WithFairShare(50))
	flooder, honest, b := socks[0], socks[1], socks[2]
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var mu sync.Mutex
	got := map[string]int{}
	b.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		<-release
		mu.Lock()
		got[m.Conn.ID().Short()]++
		mu.Unlock()
		return true
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fc, err := flooder.Connect(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	hc, err := honest.Connect(ctx, b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := fc.Send(ctx, []byte(fmt.Sprint("flood ", i))); err != nil {
			t.Fatal(err)
		}
	}
	// The flooder's share is 50 messages, the first of them in the stuck
	// handler.
	testnet.Eventually(t, 10*time.Second, func() bool { return b.Stats().DispatchDrops == 150 }, "150 of the flood dropped")
	for i := range 10 {
		if err := hc.Send(ctx, []byte(fmt.Sprint("honest ", i))); err != nil {
			t.Fatal(err)
		}
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return b.Stats().FramesIn >= 210 }, "the honest messages read")
	once.Do(func() { close(release) })
	testnet.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got[honest.ID().Short()] == 10 && got[flooder.ID().Short()] == 50
	}, "the honest peer's 10 messages and 50 of the flood handled")
	st := b.Stats()
	if st.ShareDrops != 150 || st.DispatchDrops != 150 {
		t.Fatalf("ShareDrops = %d, DispatchDrops = %d, want 150 each", st.ShareDrops, st.DispatchDrops)
	}
}
