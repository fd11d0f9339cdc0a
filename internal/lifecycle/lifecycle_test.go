package lifecycle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCloseWaitsForGoroutines(t *testing.T) {
	l := New()
	var ended atomic.Int32
	for range 3 {
		l.Go(func() {
			<-l.Closing()
			ended.Add(1)
		})
	}
	stopped := false
	if err := l.Close(ctxT(t, 5*time.Second), func(context.Context) { stopped = true }); err != nil {
		t.Fatal(err)
	}
	if !stopped || ended.Load() != 3 || l.Running() != 0 {
		t.Fatalf("stop ran %v, %d of 3 goroutines ended, %d running", stopped, ended.Load(), l.Running())
	}
	if l.Go(func() {}) || l.Hold() {
		t.Fatal("Go or Hold accepted work after Close")
	}
	if l.Context().Err() == nil || !l.Closed() {
		t.Fatal("context not cancelled or not closed")
	}
}

// TestCloseFromOwnGoroutine: a goroutine the lifecycle started (a handler's
// dispatcher, say) can close it; Close waits for the others only.
func TestCloseFromOwnGoroutine(t *testing.T) {
	l := New()
	other := make(chan struct{})
	l.Go(func() {
		<-l.Closing()
		close(other)
	})
	res := make(chan error, 1)
	l.Go(func() {
		res <- l.Close(context.Background(), nil)
		// A second Close from an owned goroutine returns at once.
		res <- l.Close(context.Background(), nil)
	})
	for range 2 {
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close called from an owned goroutine did not return")
		}
	}
	select {
	case <-other:
	default:
		t.Fatal("Close returned before the other goroutine ended")
	}
	if err := l.Close(ctxT(t, 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
}

func TestCloseHonoursContext(t *testing.T) {
	l := New()
	release := make(chan struct{})
	l.Go(func() { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	close(release)
	if err := l.Close(ctxT(t, 5*time.Second), nil); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestHoldCountsUntilRelease(t *testing.T) {
	l := New()
	if !l.Hold() {
		t.Fatal("Hold refused on an open lifecycle")
	}
	done := make(chan error, 1)
	go func() { done <- l.Close(context.Background(), nil) }()
	<-l.Closing()
	select {
	case <-done:
		t.Fatal("Close returned while a call was held")
	default:
	}
	l.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after Release")
	}
}

func TestGoid(t *testing.T) {
	a := goid()
	ch := make(chan uint64)
	go func() { ch <- goid() }()
	b := <-ch
	if a == 0 || b == 0 || a == b {
		t.Fatalf("goroutine IDs %d and %d", a, b)
	}
	if OnOwnGoroutine() {
		t.Fatal("the test goroutine counted as owned")
	}
}
