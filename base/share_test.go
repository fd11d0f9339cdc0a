package base

import (
	"errors"
	"testing"
)

// TestRelayShare: relays from one source may hold at most their share of
// a send queue, by messages and by bytes; another source still gets in,
// and the writer's take frees every share.
func TestRelayShare(t *testing.T) {
	q := newSendQueue(10, 1000, 1)
	q.shareData, q.shareBytes = 5, 500
	a, b := &Conn{}, &Conn{}
	for i := range 5 {
		if err := q.pushFrom(stItem(10), a, true); err != nil {
			t.Fatalf("relay %d from a: %v", i, err)
		}
	}
	err := q.pushFrom(stItem(10), a, true)
	if !errors.Is(err, ErrRelayShare) || !errors.Is(err, ErrQueueFull) {
		t.Fatalf("relay beyond a's share: %v, want ErrRelayShare matching ErrQueueFull", err)
	}
	for i := range 5 {
		if err := q.pushFrom(stItem(10), b, true); err != nil {
			t.Fatalf("relay %d from b with a at its share: %v", i, err)
		}
	}
	if err := q.pushFrom(stItem(10), b, true); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("relay into a full queue: %v", err)
	}
	q.take(nil, nil)
	// Bytes: one item over the byte share passes alone, not a second.
	if err := q.pushFrom(stItem(600), a, true); err != nil {
		t.Fatalf("an oversized relay into an empty share: %v", err)
	}
	if err := q.pushFrom(stItem(1), a, true); !errors.Is(err, ErrRelayShare) {
		t.Fatalf("relay beyond a's byte share: %v", err)
	}
	if len(q.shares) != 1 || q.shares[0].src != a {
		t.Fatalf("shares after a take: %+v", q.shares)
	}
	// With one possible source there is nobody to share with.
	if err := q.pushFrom(stItem(1), a, false); err != nil {
		t.Fatalf("relay from the only source: %v", err)
	}
}
