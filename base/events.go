package base

import (
	"sync"
	"sync/atomic"
)

// EventKind says what happened.
type EventKind int

const (
	// EventConnect: a connection to a new peer was established.
	EventConnect EventKind = iota + 1
	// EventDisconnect: a connection closed; Err says why.
	EventDisconnect
	// EventMessage: a message reached the receive queue (no handler
	// claimed it). It is still there for Recv.
	EventMessage
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventConnect:
		return "connect"
	case EventDisconnect:
		return "disconnect"
	case EventMessage:
		return "message"
	}
	return "unknown"
}

// Event is delivered to subscribers.
type Event struct {
	Kind    EventKind
	Peer    PeerInfo
	Conn    *Conn
	Message *Message // EventMessage only
	Err     error    // EventDisconnect only: why the connection closed
}

// eventBus delivers events to subscribers on one goroutine of its own, from
// a bounded queue: a slow subscriber delays other subscribers but never a
// connection's reader; when the queue is full, events are dropped and
// counted.
type eventBus struct {
	ch    chan Event
	drops *atomic.Uint64

	mu     sync.Mutex
	subs   map[uint64]func(Event)
	nextID uint64
	nsubs  atomic.Int32
}

func newEventBus(n int, drops *atomic.Uint64) *eventBus {
	return &eventBus{ch: make(chan Event, n), drops: drops, subs: make(map[uint64]func(Event))}
}

func (b *eventBus) active() bool { return b.nsubs.Load() > 0 }

func (b *eventBus) publish(e Event) {
	if !b.active() {
		return
	}
	select {
	case b.ch <- e:
	default:
		b.drops.Add(1)
	}
}

func (b *eventBus) run(done <-chan struct{}) {
	for {
		select {
		case e := <-b.ch:
			b.mu.Lock()
			fns := make([]func(Event), 0, len(b.subs))
			for _, fn := range b.subs {
				fns = append(fns, fn)
			}
			b.mu.Unlock()
			for _, fn := range fns {
				fn(e)
			}
		case <-done:
			return
		}
	}
}

func (b *eventBus) subscribe(fn func(Event)) func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.nextID
	b.nextID++
	b.subs[id] = fn
	b.nsubs.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			b.mu.Unlock()
			b.nsubs.Add(-1)
		})
	}
}

// Subscribe registers fn for every event and returns a function that
// cancels the subscription. Subscribers run one after another on the
// socket's event goroutine, never on a connection's reader, in the order
// the events happened. Events that find the queue full are dropped and
// counted in Stats.EventDrops; no event is published while there is no
// subscriber.
func (s *Socket) Subscribe(fn func(Event)) (cancel func()) {
	return s.events.subscribe(fn)
}
