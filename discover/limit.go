package discover

import (
	"net/netip"
	"time"
)

// bucket is a token bucket: rate tokens a second, at most burst held.
// Not safe for concurrent use (the Service's mutex guards it).
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends one token if there is one.
func (b *bucket) take(now time.Time, rate, burst int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*float64(rate))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full reports whether the bucket has refilled to burst by now: a source
// whose bucket is full can be forgotten, since a new bucket starts full.
func (b *bucket) full(now time.Time, rate, burst int) bool {
	return b.tokens+now.Sub(b.last).Seconds()*float64(rate) >= float64(burst)
}

// sources is the per-source-address limiter, bounded to max addresses.
// When it is full, sources whose buckets refilled are forgotten; if none
// has, a datagram from a new source is dropped (a flood from spoofed
// addresses cannot grow the map).
type sources struct {
	m   map[netip.Addr]*bucket
	max int
}

func (s *sources) take(src netip.Addr, now time.Time, rate, burst int) (ok, full bool) {
	b := s.m[src]
	if b == nil {
		if len(s.m) >= s.max {
			for a, old := range s.m {
				if old.full(now, rate, burst) {
					delete(s.m, a)
				}
			}
			if len(s.m) >= s.max {
				return false, true
			}
		}
		b = &bucket{}
		s.m[src] = b
	}
	return b.take(now, rate, burst), false
}
