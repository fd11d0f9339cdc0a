package base

import (
	"strings"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

// TestBanTableBounded: the table holds at most WithMaxBans nodes; when it
// is full, expired bans go first, then the one that would end soonest,
// counted in BansEvicted. Re-banning a node updates it without evicting.
func TestBanTableBounded(t *testing.T) {
	s := stNew(t, WithMaxBans(3))
	ids := make([]protocol.NodeID, 6)
	for i := range ids {
		ids[i] = protocol.NewNodeID()
	}
	for i, d := range []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour} {
		s.Ban(ids[i], d, "r")
	}
	s.Ban(ids[0], 4*time.Hour, "again") // already held: no eviction
	if st := s.Stats(); st.Bans != 3 || st.BansEvicted != 0 {
		t.Fatalf("Bans = %d, BansEvicted = %d; want 3, 0", st.Bans, st.BansEvicted)
	}
	s.Ban(ids[3], 5*time.Hour, "r") // full: ids[1] ends soonest
	if _, ok := s.banned(ids[1]); ok {
		t.Error("the ban ending soonest was kept")
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := s.banned(ids[i]); !ok {
			t.Errorf("ban %d was evicted", i)
		}
	}
	if why, _ := s.banned(ids[0]); why != "again" {
		t.Errorf("re-banned reason %q, want the new one", why)
	}
	// An expired ban goes first, uncounted.
	s.bans.mu.Lock()
	b := s.bans.m[ids[2]]
	b.until = time.Now().Add(-time.Second)
	s.bans.m[ids[2]] = b
	s.bans.mu.Unlock()
	s.Ban(ids[4], time.Minute, "r")
	if st := s.Stats(); st.Bans != 3 || st.BansEvicted != 1 {
		t.Errorf("Bans = %d, BansEvicted = %d; want 3, 1", st.Bans, st.BansEvicted)
	}
	if _, ok := s.banned(ids[4]); !ok {
		t.Error("the newest ban is missing")
	}
	// Banning oneself does nothing; a long reason is clipped.
	s.Ban(s.ID(), time.Hour, "self")
	if _, ok := s.banned(s.ID()); ok {
		t.Error("the node banned itself")
	}
	s.Ban(ids[5], time.Hour, strings.Repeat("é", 1000))
	if why, _ := s.banned(ids[5]); len(why) > maxBanReason || !strings.HasPrefix(why, "é") || strings.ContainsRune(why, '\uFFFD') {
		t.Errorf("reason of %d bytes, %q...", len(why), why[:min(len(why), 8)])
	}
}

func TestClipReason(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"", 0, ""},
	} {
		if got := clipReason(c.in, c.max); got != c.want {
			t.Errorf("clipReason(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
