package mesh

import (
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
	"github.com/meshsock/meshsock/protocol"
)

// Defaults of NAT hole punching (WithPunch, WithPunchLimits).
const (
	DefaultPunchBurst       = 4                      // punch messages one neighbour may send at once…
	DefaultPunchPerMinute   = 12                     // …and per minute after that
	DefaultMaxPunches       = 4                      // punches dialling at once, in either role
	DefaultPunchWindow      = 3 * time.Second        // how long both ends dial
	DefaultPunchDelay       = 200 * time.Millisecond // how long after the introduction both start
	DefaultPunchAnswer      = 2 * time.Second        // how long a requester waits for the introducer's answer
	DefaultPunchBackoff     = 30 * time.Second       // automatic punches to one node at most this often
	DefaultPunchIntroducers = 3                      // neighbours Punch asks, one after the other
)

// PunchLimits bounds NAT hole punching. A zero field takes its default.
type PunchLimits struct {
	// Burst and PerMinute bound the punch messages one neighbour may send
	// (requests to introduce it, and introductions): Burst at once, then
	// PerMinute a minute. Those beyond are dropped and counted
	// (Stats.PunchRateLimited). Defaults: DefaultPunchBurst,
	// DefaultPunchPerMinute.
	Burst, PerMinute int
	// MaxActive bounds the punches this node dials at once, as requester
	// or target; an introduction beyond it is dropped and counted.
	// Default: DefaultMaxPunches.
	MaxActive int
	// Window is how long both ends dial (DefaultPunchWindow); Delay is how
	// long after the introduction they start, which the introducer tells
	// both (DefaultPunchDelay; a target waits at most Window).
	Window, Delay time.Duration
	// Answer is how long Punch waits for an introducer's answer
	// (DefaultPunchAnswer).
	Answer time.Duration
	// Backoff is how often at most this node punches, by itself, towards
	// one node it failed to dial (DefaultPunchBackoff).
	Backoff time.Duration
	// Introducers is how many neighbours Punch asks in turn
	// (DefaultPunchIntroducers).
	Introducers int
}

func defaultPunchLimits() PunchLimits {
	return PunchLimits{Burst: DefaultPunchBurst, PerMinute: DefaultPunchPerMinute, MaxActive: DefaultMaxPunches,
		Window: DefaultPunchWindow, Delay: DefaultPunchDelay, Answer: DefaultPunchAnswer,
		Backoff: DefaultPunchBackoff, Introducers: DefaultPunchIntroducers}
}

// WithPunch turns NAT hole punching on or off (docs/mesh.md, "NAT hole
// punching"). On, the node listens and dials from one port
// (base.WithReusePort), introduces two neighbours that ask for it to each
// other, answers introductions of members that asked to reach it, and
// punches towards a node it cannot dial (Punch; automatically when a
// whisper's direct dial fails). Off, it does none of that, and refuses
// requests to introduce. Default: on.
func WithPunch(on bool) Option {
	return func(c *config) error {
		c.punch = on
		return nil
	}
}

// WithPunchLimits sets the bounds of hole punching; see PunchLimits.
// Negative values, a Delay longer than protocol.MaxPunchDelay or a Window
// shorter than base.PunchRetry are refused.
func WithPunchLimits(l PunchLimits) Option {
	return func(c *config) error {
		d := defaultPunchLimits()
		for _, v := range []int{l.Burst, l.PerMinute, l.MaxActive, l.Introducers} {
			if v < 0 {
				return optcheck.Invalid("punch limits must not be negative: %+v", l)
			}
		}
		for _, v := range []time.Duration{l.Window, l.Delay, l.Answer, l.Backoff} {
			if v < 0 {
				return optcheck.Invalid("punch durations must not be negative: %+v", l)
			}
		}
		if l.Delay > protocol.MaxPunchDelay {
			return optcheck.Invalid("punch delay %v exceeds %v", l.Delay, protocol.MaxPunchDelay)
		}
		if l.Window > 0 && l.Window < 100*time.Millisecond {
			return optcheck.Invalid("punch window %v is shorter than 100ms", l.Window)
		}
		pick := func(v, def int) int {
			if v == 0 {
				return def
			}
			return v
		}
		pickD := func(v, def time.Duration) time.Duration {
			if v == 0 {
				return def
			}
			return v
		}
		c.punchLimits = PunchLimits{
			Burst: pick(l.Burst, d.Burst), PerMinute: pick(l.PerMinute, d.PerMinute),
			MaxActive: pick(l.MaxActive, d.MaxActive), Introducers: pick(l.Introducers, d.Introducers),
			Window: pickD(l.Window, d.Window), Delay: pickD(l.Delay, d.Delay),
			Answer: pickD(l.Answer, d.Answer), Backoff: pickD(l.Backoff, d.Backoff),
		}
		return nil
	}
}
