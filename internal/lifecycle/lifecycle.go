// Package lifecycle is the closing state that base, mesh and chord sockets
// share: a channel closed and a context cancelled when Close begins, the
// goroutines the socket owns, and a Close that waits for them, honours its
// context and works from any goroutine, one of the socket's own included.
//
// A user handler or subscriber runs on a goroutine the socket owns. When it
// calls Close, waiting for every owned goroutine would wait for the caller
// itself; Close therefore waits for every owned goroutine except the one it
// is called on, which returns to its loop, sees the socket closing and
// ends. Telling goroutines apart needs their runtime IDs (see goid).
package lifecycle

import (
	"context"
	"sync"
)

// Lifecycle tracks one socket's closing and goroutines. Create it with New.
type Lifecycle struct {
	ctx     context.Context
	cancel  context.CancelFunc
	closing chan struct{} // closed when Close begins
	stopped chan struct{} // closed when the first Close's stop has returned

	mu      sync.Mutex
	n       int            // goroutines running (Go) and calls held (Hold)
	ids     map[uint64]int // runtime IDs of the goroutines started with Go
	changed chan struct{}  // closed and replaced whenever n drops
	begun   bool
}

// New returns a Lifecycle that is open.
func New() *Lifecycle {
	l := &Lifecycle{
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
		ids:     make(map[uint64]int),
		changed: make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Context is cancelled when Close begins.
func (l *Lifecycle) Context() context.Context { return l.ctx }

// Closing is closed when Close begins.
func (l *Lifecycle) Closing() <-chan struct{} { return l.closing }

// Closed reports whether Close has begun.
func (l *Lifecycle) Closed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Go runs each of fs on a goroutine of its own that Close waits for. It
// reports false, and runs none of them, once Close has begun: they start
// all or none.
func (l *Lifecycle) Go(fs ...func()) bool {
	l.mu.Lock()
	if l.begun {
		l.mu.Unlock()
		return false
	}
	l.n += len(fs)
	l.mu.Unlock()
	for _, f := range fs {
		go func() {
			id := goid()
			l.mu.Lock()
			l.ids[id]++
			l.mu.Unlock()
			owned.add(id)
			defer func() {
				owned.remove(id)
				l.release(id)
			}()
			f()
		}()
	}
	return true
}

// Hold counts a call in progress (a dial, say) as one of the socket's
// goroutines, so that Close waits for it; Release ends it. Hold reports
// false once Close has begun.
func (l *Lifecycle) Hold() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.begun {
		return false
	}
	l.n++
	return true
}

// Release ends what Hold began.
func (l *Lifecycle) Release() { l.release(0) }

func (l *Lifecycle) release(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if id != 0 {
		if l.ids[id]--; l.ids[id] <= 0 {
			delete(l.ids, id)
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Running returns how many goroutines and held calls are still counted.
func (l *Lifecycle) Running() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Close begins closing (once: Closing is closed, Context cancelled, then
// stop runs), and waits until every goroutine started with Go and every
// held call has ended, except the calling goroutine itself, or until ctx
// ends, when it returns ctx's error. Close may be called any number of
// times, from any goroutine: a later call waits like the first, except
// that one made on a goroutine of any socket (a handler, a subscriber)
// returns at once, since the first call may be waiting for that very
// goroutine.
func (l *Lifecycle) Close(ctx context.Context, stop func(ctx context.Context)) error {
	self := goid()
	l.mu.Lock()
	first := !l.begun
	if first {
		l.begun = true
		close(l.closing)
	}
	l.mu.Unlock()
	if first {
		l.cancel()
		if stop != nil {
			stop(ctx)
		}
		close(l.stopped)
	} else {
		if owned.has(self) {
			return nil
		}
		select {
		case <-l.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.wait(ctx, self)
}

// wait waits until nothing but the caller is counted, or ctx ends.
func (l *Lifecycle) wait(ctx context.Context, self uint64) error {
	for {
		l.mu.Lock()
		n := l.n
		if l.ids[self] > 0 {
			n--
		}
		changed := l.changed
		l.mu.Unlock()
		if n <= 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// GoroutineID returns the runtime's ID of the calling goroutine (see goid).
func GoroutineID() uint64 { return goid() }

// OnOwnGoroutine reports whether the caller runs on a goroutine that some
// Lifecycle started (a connection's reader, a dispatcher, an event loop).
func OnOwnGoroutine() bool { return owned.has(goid()) }

// ownedSet is the runtime IDs of every goroutine that any Lifecycle
// started and that is still running.
type ownedSet struct {
	mu  sync.Mutex
	ids map[uint64]int
}

var owned = ownedSet{ids: make(map[uint64]int)}

func (o *ownedSet) add(id uint64) {
	o.mu.Lock()
	o.ids[id]++
	o.mu.Unlock()
}

func (o *ownedSet) remove(id uint64) {
	o.mu.Lock()
	if o.ids[id]--; o.ids[id] <= 0 {
		delete(o.ids, id)
	}
	o.mu.Unlock()
}

func (o *ownedSet) has(id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ids[id] > 0
}
