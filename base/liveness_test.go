package base_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// TestKeepaliveUnderBacklog: a node that reads a backlog more slowly than
// it arrived, for longer than the silence timeout, keeps the link. Frames
// arrive all along, so neither end may call its peer silent. Before, the
// reader published its frame count only when its buffer ran empty, which
// a steady backlog never lets happen: the slow end saw silence and closed
// the link after the silence timeout.
func TestKeepaliveUnderBacklog(t *testing.T) {
	ftLeakCheck(t)
	const (
		interval, silence = 100 * time.Millisecond, 700 * time.Millisecond
		messages          = 1500
		pace              = time.Millisecond // the slow node handles one message per tick
	)
	tick := time.NewTicker(pace)
	done := make(chan struct{})
	var handled atomic.Int64
	slow, err := base.NewLayered("127.0.0.1:0", base.Layer{Handle: func(*base.Message) bool {
		select {
		case <-tick.C:
			handled.Add(1)
		case <-done: // the test is over: stop pacing
		}
		return true
	}}, base.WithLogger(testnet.Logger(t)), base.WithKeepalive(interval, silence), base.WithCompression())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close(ftCtx(t)) })
	t.Cleanup(func() { close(done); tick.Stop() }) // runs first
	downs := ftDisconnects(t, slow)
	fast := testnet.NewBase(t, "", base.WithKeepalive(interval, silence), base.WithCompression())
	fs := ftConnect(t, fast, slow)
	sf, _ := slow.Conn(fast.ID())

	// Frames of an odd length (999 B of payload): the reader's 64 KiB
	// buffer seldom ends exactly on a frame boundary.
	payload := make([]byte, 999)
	ctx := ftCtx(t)
	start := time.Now()
	for range messages {
		if err := fs.Send(ctx, payload); err != nil {
			t.Fatalf("send: %v (link: %v)", err, fs.Err())
		}
	}
	testnet.Eventually(t, ftWait+messages*pace, func() bool {
		return handled.Load() == messages || sf.Err() != nil || fs.Err() != nil
	}, "the slow node handles the backlog (%d of %d)", handled.Load(), messages)
	elapsed := time.Since(start)
	t.Logf("backlog of %d messages handled in %v (silence timeout %v); slow end sent %d pings, fast end %d",
		handled.Load(), elapsed.Round(time.Millisecond), silence, sf.Stats().Pings, fs.Stats().Pings)
	if err := sf.Err(); err != nil {
		t.Fatalf("the slow end closed the link after %v: %v", elapsed.Round(time.Millisecond), err)
	}
	if err := fs.Err(); err != nil {
		t.Fatalf("the fast end closed the link after %v: %v", elapsed.Round(time.Millisecond), err)
	}
	if elapsed < 2*silence {
		t.Fatalf("the backlog lasted %v only, not twice the silence timeout", elapsed)
	}
	select {
	case e := <-downs:
		t.Fatalf("disconnect: %v", e.Err)
	default:
	}
	// Still a working link, both ways.
	before := handled.Load()
	if err := fs.Send(ctx, []byte("after the backlog")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, ftWait, func() bool { return handled.Load() == before+1 }, "a message after the backlog arrives")
	if err := sf.Err(); errors.Is(err, base.ErrTimeout) {
		t.Fatalf("the slow end timed out: %v", err)
	}
}
