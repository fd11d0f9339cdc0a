package mesh

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// TestTreeSendEagerLinksFull: in tree mode a broadcast was announced to
// the lazy links before it was pushed to the eager ones, and a Send whose
// eager links all failed to take it (closed, or their queues full) failed
// although the announcement went out: the lazy neighbours pulled it and
// delivered it, and a caller sending it again had it delivered twice
// (TestTreeChurn: "node 0 got message 125 2 times"). S has an eager
// neighbour whose queue fills and a lazy one that reads: every Send
// succeeds, and the lazy neighbour gets the payload of the ones the eager
// queue could not take. Then the lazy neighbour stops reading too, and
// the Send that no queue takes fails without announcing its broadcast.
func TestTreeSendEagerLinksFull(t *testing.T) {
	nt := newNeighbourTestWith(t, 2, []Option{WithBroadcastMode(Tree)})
	s := nt.s
	eager, lazy := nt.peers[0], nt.peers[1]
	s.rep.mu.Lock()
	s.rep.st.Prune(lazy.sock.ID(), time.Now())
	pruned := !s.rep.st.Eager(lazy.sock.ID()) && s.rep.st.Eager(eager.sock.ID())
	s.rep.mu.Unlock()
	if !pruned {
		t.Fatal("the links are not one eager, one lazy")
	}
	// announced flushes what S has queued to announce (not sent: the
	// test takes it) and returns how many announcements S has made.
	announced := func() uint64 {
		s.rep.mu.Lock()
		defer s.rep.mu.Unlock()
		s.rep.st.Tick(time.Now().Add(time.Hour))
		return s.rep.st.Counters().Announced
	}
	data := noise(32 << 10)
	eager.fc.StopReading(true)
	i := 0
	for ; ; i++ {
		if i > 10000 {
			t.Fatal("the eager queue never filled")
		}
		markSlow(eager) // its copy dropped, not waited for, once its queue is full
		before := nt.dropped(eager)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Send(ctx, payload(i), data)
		cancel()
		if err != nil {
			t.Fatalf("Send %d, with the lazy neighbour's queue free: %v", i, err)
		}
		if nt.dropped(eager) != before {
			break // the eager queue did not take it
		}
	}
	testnet.Eventually(t, 30*time.Second, func() bool { return lazy.received(i) },
		"the lazy neighbour to get the payload the eager one could not take")

	// No queue has room: the Send fails, and nobody hears of it.
	lazy.fc.StopReading(true)
	for i++; ; i++ {
		if i > 20000 {
			t.Fatal("the lazy queue never filled")
		}
		markSlow(eager, lazy)
		before := announced()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := s.Send(ctx, payload(i), data)
		cancel()
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Send %d: %v, want ErrTimeout", i, err)
		}
		if got := announced() - before; got != 0 {
			t.Fatalf("Send %d failed, yet its broadcast was announced %d times", i, got)
		}
		break
	}
}
