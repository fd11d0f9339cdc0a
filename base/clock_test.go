package base

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// ckClock sets the socket's handshake clock to the real one shifted by d.
func ckClock(d time.Duration) Option {
	return func(c *config) error {
		c.now = func() time.Time { return time.Now().Add(d) }
		return nil
	}
}

// ckProblem reports whether s's status holds a problem matching target.
func ckProblem(s *Socket, target error) bool {
	for _, p := range s.Status().Problems {
		if errors.Is(p.Err, target) {
			return true
		}
	}
	return false
}

// TestHandshakeClockSkew: a peer whose clock is 70 s off is refused at the
// handshake, whichever side is off and in either direction; the dialer's
// Connect and the listener both fail with ErrClockSkew, the error says by
// how much, and nothing is registered. 4 s off is within the default
// allowance of 5 s and connects.
func TestHandshakeClockSkew(t *testing.T) {
	cases := []struct {
		name             string
		listener, dialer time.Duration // clock offsets
		sign             string        // of the offset the dialer measures
	}{
		{"listener ahead", 70 * time.Second, 0, "+1m"},
		{"listener behind", -70 * time.Second, 0, "-1m"},
		{"dialer ahead", 0, 70 * time.Second, "-1m"},
		{"dialer behind", 0, -70 * time.Second, "+1m"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := stNew(t, ckClock(c.listener))
			d := stNewAt(t, "", ckClock(c.dialer))
			if _, err := d.Connect(stCtx(t), l.Addr().String()); !errors.Is(err, ErrClockSkew) {
				t.Fatalf("Connect error = %v; want ErrClockSkew", err)
			} else if !strings.Contains(err.Error(), "offset between "+c.sign) {
				t.Errorf("Connect error %q does not give the measured offset (%s...)", err, c.sign)
			}
			stWait(t, "the listener to record the refusal", func() bool { return ckProblem(l, ErrClockSkew) })
			for name, s := range map[string]*Socket{"listener": l, "dialer": d} {
				if st := s.Stats(); st.Connects != 0 || st.HandshakeFailures != 1 {
					t.Errorf("%s: %d connects, %d handshake failures; want 0, 1", name, st.Connects, st.HandshakeFailures)
				}
			}
		})
	}
	for _, off := range []time.Duration{4 * time.Second, -4 * time.Second} {
		t.Run("within allowance "+off.String(), func(t *testing.T) {
			l := stNew(t, ckClock(off))
			d := stNew(t)
			stConnect(t, d, l) // waits for both ends
			if ckProblem(l, ErrClockSkew) || ckProblem(d, ErrClockSkew) {
				t.Fatal("a clock-skew problem was recorded for a connection that was accepted")
			}
		})
	}
}

// ckTenAhead matches the listener's measurement of a dialer 10 s ahead:
// at least 10 s less the time the dialer's Hello took to be read, which a
// loaded machine stretches (26 ms seen in CI).
var ckTenAhead = regexp.MustCompile(`the dialer's clock is at least (9\.[5-9]\d*|10)s ahead of the listener's`)

// TestHandshakeClockSkewAllowance: the allowance is the option's. A 10 s
// offset is refused by default and accepted with WithClockSkew(time.Minute)
// on both sides; with the allowance on one side only, that side refuses and
// the other still sees ErrClockSkew (from the verdict).
func TestHandshakeClockSkewAllowance(t *testing.T) {
	wide := WithClockSkew(time.Minute)
	l := stNew(t, ckClock(10*time.Second), wide)
	d := stNewAt(t, "", wide)
	stConnect(t, d, l)

	// Only the dialer is lenient: the listener refuses, the dialer reads
	// its verdict. (The dialer is the one ahead: the listener bounds a
	// dialer's lead tightly, but allows a dialer that seems behind up to a
	// handshake timeout more, as its Hello may predate the accept.)
	l2 := stNew(t, ckClock(-10*time.Second))
	if _, err := d.Connect(stCtx(t), l2.Addr().String()); !errors.Is(err, ErrClockSkew) ||
		!ckTenAhead.MatchString(err.Error()) {
		t.Fatalf("Connect to a strict listener = %v; want ErrClockSkew with the listener's measurement", err)
	}
	stWait(t, "the strict listener to record the refusal", func() bool { return ckProblem(l2, ErrClockSkew) })

	// Only the listener is lenient: the dialer refuses.
	l3 := stNew(t, ckClock(10*time.Second), wide)
	d3 := stNewAt(t, "")
	if _, err := d3.Connect(stCtx(t), l3.Addr().String()); !errors.Is(err, ErrClockSkew) ||
		!strings.Contains(err.Error(), "the listener's clock is at least") {
		t.Fatalf("strict dialer: Connect = %v; want ErrClockSkew with its own measurement", err)
	}
	stWait(t, "the lenient listener to see the dialer's refusal", func() bool { return ckProblem(l3, ErrClockSkew) })
}

// TestWithClockSkewValidated: a negative allowance is refused; zero is an
// allowance like any other.
func TestWithClockSkewValidated(t *testing.T) {
	if s, err := NewSocket("", WithClockSkew(-time.Nanosecond)); !errors.Is(err, ErrInvalidOption) || s != nil {
		t.Errorf("WithClockSkew(-1ns) = %v, %v; want ErrInvalidOption", s, err)
	}
	s := stNew(t, WithClockSkew(0))
	if s.cfg.clockSkew != 0 {
		t.Errorf("WithClockSkew(0) left the allowance at %v", s.cfg.clockSkew)
	}
	if d := stNew(t); d.cfg.clockSkew != DefaultClockSkew {
		t.Errorf("default allowance %v, want %v", d.cfg.clockSkew, DefaultClockSkew)
	}
	stConnect(t, stNew(t, WithClockSkew(0)), s) // same clock: accepted even at 0
}

// TestClockVerdict: a peer is refused only when its whole offset range is
// outside the allowance, so delay never causes a refusal.
func TestClockVerdict(t *testing.T) {
	const s5 = 5 * time.Second
	cases := []struct {
		allow  time.Duration
		lo, hi time.Duration
		refuse bool
	}{
		{s5, -s5, s5, false},
		{s5, 4 * time.Second, 6 * time.Second, false},   // straddles +5 s
		{s5, -6 * time.Second, -4 * time.Second, false}, // straddles -5 s
		{s5, -time.Minute, time.Minute, false},          // a slow exchange hides any offset
		{s5, s5 + 1, 7 * time.Second, true},             // certainly ahead
		{s5, -7 * time.Second, -s5 - 1, true},           // certainly behind
		{0, -time.Millisecond, time.Millisecond, false}, // 0 still accepts agreeing clocks
		{0, 1, time.Millisecond, true},                  // but not one certainly ahead
		{0, 0, 0, false},                                // the edge itself is inside
		{s5, time.Duration(math.MaxInt64), time.Duration(math.MaxInt64), true},
	}
	s := &Socket{cfg: defaultConfig()}
	for _, c := range cases {
		s.cfg.clockSkew = c.allow
		v, refused := s.clockVerdict(offsetRange{lo: c.lo, hi: c.hi}, true)
		if refused != c.refuse || (refused && v.Code != protocol.RejectClockSkew) {
			t.Errorf("allowance %v, offset in [%v, %v]: verdict %+v, refused %v; want refused %v",
				c.allow, c.lo, c.hi, v, refused, c.refuse)
		}
	}
}

// TestClockOffset: the ranges the two sides compute. The dialer's is tight;
// the listener's allows for a dialer that built its Hello while the
// connection waited to be accepted; extreme times from a peer saturate
// instead of overflowing.
func TestClockOffset(t *testing.T) {
	s := &Socket{cfg: defaultConfig()}
	s.cfg.handshakeTimeout = 2 * time.Second
	start := time.Unix(1700000000, 0)
	received := start.Add(10 * time.Millisecond)

	// A dialer with the same clock built its Hello 1 ms before the
	// listener accepted: the listener's range still holds 0.
	off := s.clockOffset(start.Add(-time.Millisecond).UnixNano(), start, received, false)
	if off.lo > 0 || off.hi < 0 || off.hi != 2*time.Second-time.Millisecond {
		t.Errorf("listener: %+v; want a range holding 0 up to the handshake timeout", off)
	}
	// The dialer's range: between reading and starting to dial.
	off = s.clockOffset(start.Add(5*time.Millisecond).UnixNano(), start, received, true)
	if off.lo != -5*time.Millisecond || off.hi != 5*time.Millisecond {
		t.Errorf("dialer: %+v; want [-5ms, +5ms]", off)
	}
	for _, peerTime := range []int64{math.MinInt64, math.MaxInt64, 0} {
		off := s.clockOffset(peerTime, start, received, true)
		if off.lo > off.hi {
			t.Errorf("peer time %d: range %+v is reversed (overflow)", peerTime, off)
		}
		if _, refused := s.clockVerdict(off, true); !refused {
			t.Errorf("peer time %d: accepted", peerTime)
		}
	}
}
