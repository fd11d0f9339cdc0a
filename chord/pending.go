package chord

import (
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/protocol"
)

// callKind says what a pending call waits for.
type callKind uint8

const (
	kindRequest callKind = iota + 1 // a response to a routed request
	kindLookup                      // a response to a find-successor
	kindRPC                         // a get-neighbours answer from one peer
)

// call is one request, lookup or maintenance call waiting for its answer.
// The fields below done are written once, by whoever removes the call from
// the table, before done is closed.
type call struct {
	id   uint64
	kind callKind
	user bool            // counts against the pending limit
	peer protocol.NodeID // kindRPC: the node that must answer
	key  protocol.NodeID // kindLookup, kindRequest: the key asked about
	done chan struct{}

	msg    *base.Message // the response (request, lookup)
	status uint8
	reason string
	hops   int
	owner  PeerInfo   // lookup
	nb     neighbours // rpc
	err    error      // ErrClosed when the socket closed
}

// calls is the bounded table of pending calls. Each entry is removed by
// exactly one party: the answer (take) or the waiter giving up (drop), so
// a late or duplicate answer finds nothing and is dropped.
type calls struct {
	mu     sync.Mutex
	m      map[uint64]*call
	user   int
	max    int
	closed bool
}

func newCalls(max int) *calls {
	return &calls{m: make(map[uint64]*call), max: max}
}

// open registers a new call with a fresh random ID (random so that a node
// off the request's path cannot guess it; the nodes on the path see it, so
// answers are authenticated too, see checkAnswer).
func (t *calls) open(kind callKind, user bool, peer, key protocol.NodeID) (*call, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if user && t.user >= t.max {
		return nil, fmt.Errorf("%w: %d pending", ErrTooManyRequests, t.user)
	}
	c := &call{kind: kind, user: user, peer: peer, key: key, done: make(chan struct{})}
	for {
		c.id = rand.Uint64()
		if _, dup := t.m[c.id]; c.id != 0 && !dup {
			break
		}
	}
	t.m[c.id] = c
	if user {
		t.user++
	}
	return c, nil
}

func (t *calls) removeLocked(c *call) {
	delete(t.m, c.id)
	if c.user {
		t.user--
	}
}

// peek returns the pending call with this ID, or nil, and leaves it in the
// table (an answer is checked outside the lock, then taken).
func (t *calls) peek(id uint64) *call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

// take removes and returns the call with this ID if ok accepts it; the
// caller then fills in the answer and closes done.
func (t *calls) take(id uint64, ok func(*call) bool) *call {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[id]
	if c == nil || !ok(c) {
		return nil
	}
	t.removeLocked(c)
	return c
}

// drop removes c if it is still pending and reports whether it did; false
// means an answer took it, and done is (or is about to be) closed.
func (t *calls) drop(c *call) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[c.id] != c {
		return false
	}
	t.removeLocked(c)
	return true
}

// closeAll fails every pending call with ErrClosed and refuses new ones.
func (t *calls) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for id, c := range t.m {
		delete(t.m, id)
		c.err = ErrClosed
		close(c.done)
	}
	t.user = 0
}

// failPeer fails the maintenance calls waiting for an answer from peer
// (its link went down, so the answer cannot come) with err.
func (t *calls) failPeer(peer protocol.NodeID, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.m {
		if c.kind == kindRPC && c.peer == peer {
			t.removeLocked(c)
			c.err = err
			close(c.done)
		}
	}
}

// pending returns the user calls in flight.
func (t *calls) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.user
}
