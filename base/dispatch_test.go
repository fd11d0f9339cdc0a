package base

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
)

// These tests pin down where user code runs: on dispatcher goroutines, never
// on a connection's reader (round 1 ran handlers on the reader, so a slow
// handler stopped a link's keepalive and Close from a handler hung).

// TestCloseFromHandler: Socket.Close called from a handler returns, and the
// socket is closed afterwards.
func TestCloseFromHandler(t *testing.T) {
	b := stNew(t)
	returned := make(chan error, 1)
	b.RegisterHandler(HandlerFunc(func(m *Message) bool {
		returned <- b.Close(context.Background())
		return true
	}))
	a := stNew(t)
	ab, _ := stConnect(t, a, b)
	if err := ab.Send(stCtx(t), []byte("quit")); err != nil {
		t.Fatal(err)
	}
	if err := stResult(t, returned); err != nil {
		t.Fatalf("Close from a handler: %v", err)
	}
	if _, err := b.Recv(stCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v, want ErrClosed", err)
	}
	stWait(t, "the peer to see the link go", func() bool { return ab.Err() != nil })
}

// TestCloseFromSubscriber: Close called from an event subscriber returns.
func TestCloseFromSubscriber(t *testing.T) {
	b := stNew(t)
	returned := make(chan error, 1)
	var once sync.Once
	b.Subscribe(func(e Event) {
		if e.Kind == EventConnect {
			once.Do(func() { returned <- b.Close(context.Background()) })
		}
	})
	a := stNew(t)
	// b may close before its verdict reaches a: Connect's error does not
	// matter here, only that b's Close returns.
	_, _ = a.Connect(stCtx(t), b.Addr().String())
	if err := stResult(t, returned); err != nil {
		t.Fatalf("Close from a subscriber: %v", err)
	}
	if !b.isClosed() {
		t.Fatal("socket not closed")
	}
}

// TestSlowHandlerKeepsLinkAlive: while a handler is stuck, the connection's
// reader goes on reading, so pings are answered and the link stays up
// (round 1: the reader was the handler's goroutine, the peer heard nothing
// and closed the link as silent).
func TestSlowHandlerKeepsLinkAlive(t *testing.T) {
	keep := WithKeepalive(20*time.Millisecond, 200*time.Millisecond)
	b := stNew(t, keep)
	started, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the sockets' cleanups
	b.RegisterHandler(HandlerFunc(func(m *Message) bool {
		if stPacket(m) != "stall" {
			return false
		}
		close(started)
		<-release
		return true
	}))
	a := stNew(t, keep)
	ab, ba := stConnect(t, a, b)
	if err := ab.Send(stCtx(t), []byte("stall")); err != nil {
		t.Fatal(err)
	}
	<-started
	// Many silence timeouts pass while the handler is stuck; b answers a's
	// pings all the while.
	stWait(t, "b to answer 20 pings while its handler is stuck", func() bool {
		return ba.Stats().Pongs >= 20 && ab.Err() == nil
	})
	if ab.Err() != nil || ba.Err() != nil {
		t.Fatalf("link closed while a handler was slow: %v / %v", ab.Err(), ba.Err())
	}
	// Another peer's messages are handled meanwhile, on another worker.
	c := stNew(t)
	cb, _ := stConnect(t, c, b)
	if err := cb.Send(stCtx(t), []byte("meanwhile")); err != nil {
		t.Fatal(err)
	}
	if got := stPacket(stRecv(t, b)); got != "meanwhile" {
		t.Fatalf("got %q", got)
	}
	unblock()
}

// stStuckHandler connects a to b (made with opts) and sends one message,
// whose handler on b stays stuck until blk is released.
func stStuckHandler(t *testing.T, opts ...Option) (b *Socket, ab, ba *Conn, blk *stBlocker) {
	t.Helper()
	b = stNew(t, opts...)
	blk = newStBlocker(t)
	b.RegisterHandler(blk)
	ab, ba = stConnect(t, stNew(t), b)
	if err := ab.Send(stCtx(t), []byte("stall")); err != nil {
		t.Fatal(err)
	}
	<-blk.started
	return b, ab, ba, blk
}

// TestConnCloseWaitsForItsLoops: Conn.Close from another goroutine while a
// handler of that connection runs still waits for the reader and writer
// (round 1 returned at once: the reader was busy in the handler).
func TestConnCloseWaitsForItsLoops(t *testing.T) {
	_, _, ba, blk := stStuckHandler(t)
	if err := ba.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan struct{}{"writer": ba.writerDone, "reader": ba.readerDone} {
		select {
		case <-ch:
		default:
			t.Errorf("Conn.Close returned before its %s ended", name)
		}
	}
	blk.Release()
}

// TestDispatchQueueBounded: messages that find the dispatch queue full are
// dropped and counted, by count and by bytes; the reader never waits.
func TestDispatchQueueBounded(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opt        Option
		size, sent int
	}{
		{"messages", WithDispatchQueue(3, 64<<20), 10, 20},
		{"bytes", WithDispatchQueue(1000, 8<<10), 2 << 10, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ab, ba, blk := stStuckHandler(t, tc.opt)
			payload := bytes.Repeat([]byte("z"), tc.size)
			for range tc.sent {
				if err := ab.Send(stCtx(t), payload); err != nil {
					t.Fatal(err)
				}
			}
			stWait(t, "the reader to read every frame", func() bool { return ba.Stats().FramesIn >= uint64(tc.sent+1) })
			st := b.Stats()
			if st.DispatchDrops == 0 || st.DispatchDrops >= uint64(tc.sent) {
				t.Fatalf("DispatchDrops = %d of %d sent, want some but not all", st.DispatchDrops, tc.sent)
			}
			queued := uint64(tc.sent) - st.DispatchDrops
			blk.Release()
			for range queued {
				if m := stRecv(t, b); len(m.Packets[0]) != tc.size {
					t.Fatalf("got a packet of %d bytes", len(m.Packets[0]))
				}
			}
			if ba.Err() != nil {
				t.Fatalf("link closed: %v", ba.Err())
			}
		})
	}
}

// TestHandlersKeepLinkOrder: one connection's messages reach the handlers
// in the order they were sent, whatever the number of workers.
func TestHandlersKeepLinkOrder(t *testing.T) {
	const n = 2000
	b := stNew(t, WithDispatchers(3))
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	b.RegisterHandler(HandlerFunc(func(m *Message) bool {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, stPacket(m))
		if len(got) == n {
			close(done)
		}
		return true
	}))
	a := stNew(t)
	ab, _ := stConnect(t, a, b)
	for i := range n {
		if err := ab.Send(stCtx(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(stTimeout):
		t.Fatal("not every message was handled")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, p := range got {
		if p != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, p)
		}
	}
}

// TestEmptyMessages: a send without packets is an error, and a message
// without packets from a peer (hostile or broken) never reaches the user,
// who would read Packets[0].
func TestEmptyMessages(t *testing.T) {
	a, b := stNew(t), stNew(t)
	ab, _ := stConnect(t, a, b)
	ctx := stCtx(t)
	if err := a.Broadcast(ctx); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Broadcast(): %v, want ErrNoPackets", err)
	}
	if err := ab.Send(ctx); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Conn.Send(): %v, want ErrNoPackets", err)
	}
	if err := a.Whisper(ctx, b.ID()); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Whisper(): %v, want ErrNoPackets", err)
	}
	// The raw path still lets a peer send one: b drops it.
	if err := ab.SendMessage(ctx, flags.Whisper, flags.Whisper); err != nil {
		t.Fatal(err)
	}
	if err := ab.Send(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	m := stRecv(t, b)
	if len(m.Packets) == 0 || stPacket(m) != "after" {
		t.Fatalf("got %d packets %q, want the message after the empty one", len(m.Packets), m.Packets)
	}
	if st := b.Stats(); st.Malformed != 1 {
		t.Fatalf("Malformed = %d, want 1", st.Malformed)
	}
	if err := m.Reply(ctx); !errors.Is(err, ErrNoPackets) {
		t.Errorf("Reply(): %v, want ErrNoPackets", err)
	}
}
