package faultnet

import (
	"sync"
	"time"
)

// deadline is a settable deadline that can be waited on: wait returns a
// channel that is closed once the deadline has passed. Setting a new
// deadline re-arms it, so a wait that starts after a later deadline was
// set blocks again.
type deadline struct {
	mu    sync.Mutex
	gen   uint64 // bumped by every set; a timer only fires for its own gen
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// set arms the deadline for t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if t.IsZero() {
		if isClosed(d.ch) {
			d.ch = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !isClosed(d.ch) {
			close(d.ch)
		}
		return
	}
	if isClosed(d.ch) {
		d.ch = make(chan struct{})
	}
	gen, ch := d.gen, d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
		}
	})
}

// wait returns a channel closed once the current deadline has passed.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool { return isClosed(d.wait()) }

// stop disarms the timer for good (the conn is closing).
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
