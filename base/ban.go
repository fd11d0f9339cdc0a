package base

import (
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/meshsock/meshsock/protocol"
)

// Bans: per-identity refusals. A ban names a node ID, which the handshake
// has proven (docs/protocol.md §9.5), so a banned node cannot come back
// under its ID until the ban ends. It can come back under a fresh key, that
// is as a new node: a ban is not a bound on a host. What bounds a host is
// the per-source admission of admission.go, which counts connections by
// address whatever key they prove (WithMaxConnsPerSource,
// WithMaxPendingPerSource), so reconnecting with fresh keys never gets a
// source more connections than its bound.

// maxBanReason bounds the reason kept with a ban, in bytes (it is sent to
// the banned peer in its verdict).
const maxBanReason = 256

// banTable is the socket's bans, bounded by WithMaxBans.
type banTable struct {
	mu      sync.Mutex
	m       map[protocol.NodeID]ban
	evicted uint64 // bans dropped early to make room (Stats.BansEvicted)
}

type ban struct {
	until  time.Time
	reason string
}

// Ban refuses the node id at the handshake (verdict "not authorised" with
// reason; both sides' errors match ErrNotAuthorized) for d from now, and
// closes the current connection to it, if any, with a Bye giving the
// reason (its Err matches ErrClosed and ErrNotAuthorized). Banning a node
// banned already sets its new end and reason; d <= 0 lifts a ban.
//
// The table holds at most WithMaxBans nodes (DefaultMaxBans). When it is
// full, expired bans go first, then the ban that would end soonest
// (counted in Stats.BansEvicted). A ban binds one identity: a host that
// comes back with a fresh key is bound by the per-source limits
// (WithMaxConnsPerSource), not by the ban.
func (s *Socket) Ban(id protocol.NodeID, d time.Duration, reason string) {
	if id == s.id {
		return
	}
	reason = clipReason(reason, maxBanReason)
	t := &s.bans
	t.mu.Lock()
	if d <= 0 {
		delete(t.m, id)
		t.mu.Unlock()
		return
	}
	now := time.Now()
	if _, ok := t.m[id]; !ok && len(t.m) >= s.cfg.maxBans {
		t.makeRoomLocked(now)
	}
	if t.m == nil {
		t.m = make(map[protocol.NodeID]ban)
	}
	t.m[id] = ban{until: now.Add(d), reason: reason}
	t.mu.Unlock()
	if c, ok := s.Conn(id); ok {
		c.closeWithByeErr(banText(reason), ErrNotAuthorized)
	}
}

// makeRoomLocked frees one entry of a full table: every expired ban, or,
// if none has expired, the ban that ends soonest. The caller holds mu.
func (t *banTable) makeRoomLocked(now time.Time) {
	var first protocol.NodeID
	var firstEnd time.Time
	freed := false
	for id, b := range t.m {
		switch {
		case !b.until.After(now):
			delete(t.m, id)
			freed = true
		case firstEnd.IsZero() || b.until.Before(firstEnd):
			first, firstEnd = id, b.until
		}
	}
	if !freed && !firstEnd.IsZero() {
		delete(t.m, first)
		t.evicted++
	}
}

// banned returns the reason id is banned for, and whether it is.
func (s *Socket) banned(id protocol.NodeID) (string, bool) {
	t := &s.bans
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.m[id]
	if !ok {
		return "", false
	}
	if !b.until.After(time.Now()) {
		delete(t.m, id)
		return "", false
	}
	return b.reason, true
}

// counts returns the number of bans held (some perhaps expired) and of bans
// evicted early.
func (t *banTable) counts() (held int, evicted uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m), t.evicted
}

func banText(reason string) string {
	if reason == "" {
		return "banned"
	}
	return "banned: " + reason
}

// clipReason makes text fit a verdict or Bye: valid UTF-8, at most max
// bytes (cut at a rune boundary).
func clipReason(text string, max int) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if len(text) <= max {
		return text
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}
