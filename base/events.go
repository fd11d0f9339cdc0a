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
	// Replaced (EventDisconnect only) says that a newer connection to the
	// same peer, registered here, took this one's place: two nodes that
	// dialled each other at once keep one connection, and a peer that
	// reconnects before its old connection was seen to close replaces it.
	// The EventConnect of the new connection follows; the peer stayed
	// linked. In a rarer race the peer closes the duplicate first, saying
	// so (Err matches ErrDuplicate), before the other connection is
	// registered here; that disconnect is not marked, since
	// the peer's word alone does not vouch for a connection this node has
	// not got yet, and an EventConnect usually follows it at once.
	Replaced bool
}

// eventBus delivers events to subscribers on one goroutine of its own, from
// a queue bounded in events and in the bytes of the messages they carry
// (what those keep alive, see budget.go): a slow subscriber delays other
// subscribers but never a connection's reader; when the queue is full,
// events are dropped and counted.
type eventBus struct {
	// ch holds pointers: a queue of Event values would cost every socket
	// about 180 bytes per slot up front (184 KiB at the default 1024),
	// while events are rare and only made when someone subscribed.
	ch     chan *queuedEvent
	bytes  budget
	drops  *atomic.Uint64
	onDrop func()

	mu     sync.Mutex
	subs   map[uint64]func(Event)
	nextID uint64
	nsubs  atomic.Int32
}

// queuedEvent is an event in the queue, with the bytes it counts there.
type queuedEvent struct {
	e    Event
	size int64
}

func newEventBus(n, maxBytes int, drops *atomic.Uint64, onDrop func()) *eventBus {
	b := &eventBus{ch: make(chan *queuedEvent, n), drops: drops, onDrop: onDrop, subs: make(map[uint64]func(Event))}
	b.bytes.max = int64(maxBytes)
	return b
}

func (b *eventBus) active() bool { return b.nsubs.Load() > 0 }

// backlog is how many events are waiting.
func (b *eventBus) backlog() int { return len(b.ch) }

func (b *eventBus) publish(e Event) {
	if !b.active() {
		return
	}
	var size int64
	if e.Message != nil {
		size = messageSize(e.Message)
		if !b.bytes.take(size) {
			b.dropped()
			return
		}
	}
	select {
	case b.ch <- &queuedEvent{e, size}:
	default:
		b.bytes.give(size)
		b.dropped()
	}
}

func (b *eventBus) dropped() {
	b.drops.Add(1)
	b.onDrop()
}

func (b *eventBus) run(done <-chan struct{}) {
	for {
		select {
		case qe := <-b.ch:
			e := qe.e
			b.mu.Lock()
			fns := make([]func(Event), 0, len(b.subs))
			for _, fn := range b.subs {
				fns = append(fns, fn)
			}
			b.mu.Unlock()
			for _, fn := range fns {
				fn(e)
			}
			b.bytes.give(qe.size)
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
// the events happened. Events that find the queue full (WithEventQueue,
// WithEventQueueBytes) are dropped and counted in Stats.EventDrops; no
// event is published while there is no subscriber.
func (s *Socket) Subscribe(fn func(Event)) (cancel func()) {
	return s.events.subscribe(fn)
}
