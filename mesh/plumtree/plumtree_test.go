package plumtree

import (
	"slices"
	"testing"
	"time"

	"github.com/meshsock/meshsock/protocol"
)

var t0 = time.Unix(1700000000, 0)

func peer(b byte) Peer { return Peer{b} }

func ref(origin byte, seq uint64) Ref { return Ref{Origin: Peer{origin}, Seq: seq} }

func cfg(tree bool) Config {
	return Config{Tree: tree, PullTimeout: 100 * time.Millisecond, RepairWindow: time.Second,
		AnnounceInterval: 10 * time.Millisecond, MaxQueued: 8, MaxMissing: 16, MaxMissingPerPeer: 4,
		MaxPullsPerPeer: 2, MaxAnnouncers: 3}
}

func never(Ref) bool { return false }

// kinds returns the actions of one kind, by peer.
func byKind(acts []Action, k Kind) map[Peer][]Ref {
	out := map[Peer][]Ref{}
	for _, a := range acts {
		if a.Kind == k {
			out[a.To] = append(out[a.To], a.Refs...)
		}
	}
	return out
}

func TestDuplicatePrunesAndFreshKeepsEager(t *testing.T) {
	s := New(cfg(true))
	a, b := peer(1), peer(2)
	s.LinkUp(a)
	s.LinkUp(b)
	if !s.Eager(a) || !s.Eager(b) {
		t.Fatal("new links must be eager")
	}
	if acts := s.Received(ref(9, 1), a, true, t0); len(acts) != 0 {
		t.Fatalf("fresh copy sent %v", acts)
	}
	// A link is pruned once its duplicates reach pruneAt.
	var acts []Action
	for i := range pruneAt / pruneDup {
		if len(acts) != 0 {
			t.Fatalf("pruned after %d duplicates", i)
		}
		acts = s.Received(ref(9, 1), b, false, t0)
	}
	if len(acts) != 1 || acts[0].Kind != SendPrune || acts[0].To != b || s.Eager(b) {
		t.Fatalf("duplicate: %v, eager %v", acts, s.Eager(b))
	}
	// A duplicate on the lazy link sends nothing more.
	if acts := s.Received(ref(9, 1), b, false, t0); len(acts) != 0 {
		t.Fatalf("another duplicate sent %v", acts)
	}
	// A copy b pushed before it knew of the prune does not make it eager
	// again; one pushed later does.
	s.Received(ref(9, 2), b, true, t0.Add(time.Millisecond))
	if s.Eager(b) {
		t.Fatal("a copy in flight during the prune regrafted the link")
	}
	s.Received(ref(9, 3), b, true, t0.Add(time.Second))
	if !s.Eager(b) {
		t.Fatal("a copy pushed after the prune did not make the link eager")
	}
	if e, l := s.Links(); e != 2 || l != 0 {
		t.Fatalf("links %d eager %d lazy", e, l)
	}
}

func TestFloodModeNeverPrunesAndAnswersPruneWithGraft(t *testing.T) {
	s := New(cfg(false))
	a := peer(1)
	s.LinkUp(a)
	if acts := s.Received(ref(9, 1), a, false, t0); len(acts) != 0 || !s.Eager(a) {
		t.Fatalf("flood mode pruned: %v", acts)
	}
	acts := s.Prune(a, t0)
	if len(acts) != 1 || acts[0].Kind != SendGraft || len(acts[0].Refs) != 0 || !s.Eager(a) {
		t.Fatalf("prune to a flood node: %v", acts)
	}
}

func TestPinnedFloodPeerIsNotPruned(t *testing.T) {
	s := New(cfg(true))
	a := peer(1)
	s.LinkUp(a)
	s.Graft(a, nil, t0) // a floods
	if acts := s.Received(ref(9, 1), a, false, t0); len(acts) != 0 || !s.Eager(a) {
		t.Fatalf("a flood peer was pruned: %v", acts)
	}
}

func TestAnnouncementsBatched(t *testing.T) {
	s := New(cfg(true))
	a := peer(1)
	s.LinkUp(a)
	for i := range 10 {
		s.Announce(ref(9, uint64(i)), a, t0)
	}
	if acts, next := s.Tick(t0.Add(5 * time.Millisecond)); len(acts) != 0 || !next.Equal(t0.Add(10*time.Millisecond)) {
		t.Fatalf("early tick: %v, next %v", acts, next)
	}
	acts, next := s.Tick(t0.Add(10 * time.Millisecond))
	got := byKind(acts, SendIHave)[a]
	if len(acts) != 1 || len(got) != 8 || !next.IsZero() {
		t.Fatalf("batch: %d actions, %d refs (queue bound 8), next %v", len(acts), len(got), next)
	}
	if c := s.Counters(); c.Announced != 8 || c.AnnounceDrops != 2 {
		t.Fatalf("counters %+v", c)
	}
}

func TestPullAfterTimeoutThenNextAnnouncer(t *testing.T) {
	s := New(cfg(false))
	hostile, honest := peer(1), peer(2)
	s.LinkUp(hostile)
	s.LinkUp(honest)
	r := ref(9, 7)
	s.IHave(hostile, []Ref{r}, never, t0)
	s.IHave(honest, []Ref{r}, never, t0.Add(time.Millisecond))
	if acts, _ := s.Tick(t0.Add(50 * time.Millisecond)); len(acts) != 0 {
		t.Fatalf("pulled before the timeout: %v", acts)
	}
	acts, _ := s.Tick(t0.Add(100 * time.Millisecond))
	if w := byKind(acts, SendWant); len(w[hostile]) != 1 || len(w) != 1 {
		t.Fatalf("first pull: %v", acts)
	}
	// The hostile announcer never serves: the next pull goes to the other.
	acts, _ = s.Tick(t0.Add(200 * time.Millisecond))
	if w := byKind(acts, SendWant); len(w[honest]) != 1 || len(w) != 1 {
		t.Fatalf("second pull: %v", acts)
	}
	s.Received(r, honest, true, t0.Add(210*time.Millisecond))
	if c := s.Counters(); c.Repairs != 1 || c.PullsSent != 2 || s.Missing() != 0 {
		t.Fatalf("counters %+v, missing %d", c, s.Missing())
	}
}

// News over a link offsets its duplicates: a link that brings mostly news
// is kept.
func TestNewsOffsetsDuplicates(t *testing.T) {
	s := New(cfg(true))
	a := peer(1)
	s.LinkUp(a)
	for i := range 20 {
		for k := range 3 {
			s.Received(ref(9, uint64(3*i+k)), a, true, t0)
		}
		if acts := s.Received(ref(8, uint64(i)), a, false, t0); len(acts) != 0 {
			t.Fatalf("pruned a link that brings news: %v", acts)
		}
	}
}

// A copy pushed after the same broadcast arrived by pull was late, not
// redundant: it prunes nothing.
func TestLateCopyAfterPullPrunesNothing(t *testing.T) {
	s := New(cfg(false))
	s.cfg.Tree = true
	a, b := peer(1), peer(2)
	s.LinkUp(a)
	s.LinkUp(b)
	r := ref(9, 1)
	s.IHave(b, []Ref{r}, never, t0)
	s.Tick(t0.Add(100 * time.Millisecond))
	s.Received(r, b, true, t0.Add(110*time.Millisecond))
	for range 2 * pruneAt {
		if acts := s.Received(r, a, false, t0.Add(120*time.Millisecond)); len(acts) != 0 {
			t.Fatalf("a late copy pruned: %v", acts)
		}
	}
}

func TestTreeModePullGrafts(t *testing.T) {
	s := New(cfg(true))
	a := peer(1)
	s.LinkUp(a)
	s.Prune(a, t0)
	r := ref(9, 2)
	s.IHave(a, []Ref{r}, never, t0.Add(time.Second))
	acts, _ := s.Tick(t0.Add(time.Second + 100*time.Millisecond))
	if g := byKind(acts, SendGraft); len(g[a]) != 1 || !s.Eager(a) {
		t.Fatalf("pull in tree mode: %v, eager %v", acts, s.Eager(a))
	}
}

func TestKnownAndArrivedNotPulled(t *testing.T) {
	s := New(cfg(false))
	a := peer(1)
	s.LinkUp(a)
	have := ref(9, 1)
	s.IHave(a, []Ref{have, ref(9, 2)}, func(r Ref) bool { return r == have }, t0)
	s.Received(ref(9, 2), a, true, t0.Add(time.Millisecond))
	if acts, next := s.Tick(t0.Add(time.Second)); len(acts) != 0 || !next.IsZero() || s.Missing() != 0 {
		t.Fatalf("pulled what it has: %v", acts)
	}
	if c := s.Counters(); c.Repairs != 0 {
		t.Fatalf("a pushed copy counted as a repair: %+v", c)
	}
}

func TestMissingBounded(t *testing.T) {
	s := New(cfg(false))
	hostile, honest := peer(1), peer(2)
	s.LinkUp(hostile)
	s.LinkUp(honest)
	var refs []Ref
	for i := range 1000 {
		refs = append(refs, ref(8, uint64(i)))
	}
	s.IHave(hostile, refs, never, t0)
	if s.Missing() != 4 {
		t.Fatalf("one announcer holds %d missing entries, bound 4", s.Missing())
	}
	// The others still have room.
	s.IHave(honest, []Ref{ref(9, 1)}, never, t0)
	if s.Missing() != 5 {
		t.Fatalf("honest announcement not tracked: %d", s.Missing())
	}
	// At most two pulls outstanding at one peer.
	acts, _ := s.Tick(t0.Add(100 * time.Millisecond))
	if w := byKind(acts, SendWant); len(w[hostile]) != 2 || len(w[honest]) != 1 {
		t.Fatalf("pulls: %v", w)
	}
	// Past the repair window everything is given up.
	for now := t0.Add(200 * time.Millisecond); !now.After(t0.Add(time.Second)); now = now.Add(100 * time.Millisecond) {
		s.Tick(now)
	}
	if s.Missing() != 0 || s.Counters().GaveUp != 5 || s.Counters().MissingRefused != 996 {
		t.Fatalf("missing %d, counters %+v", s.Missing(), s.Counters())
	}
}

func TestLinkDownRepullsAtOnce(t *testing.T) {
	s := New(cfg(false))
	a, b := peer(1), peer(2)
	s.LinkUp(a)
	s.LinkUp(b)
	r := ref(9, 1)
	s.IHave(a, []Ref{r}, never, t0)
	s.IHave(b, []Ref{r}, never, t0)
	acts, _ := s.Tick(t0.Add(100 * time.Millisecond))
	if w := byKind(acts, SendWant); len(w[a]) != 1 {
		t.Fatalf("first pull: %v", acts)
	}
	s.LinkDown(a, t0.Add(110*time.Millisecond))
	acts, _ = s.Tick(t0.Add(110 * time.Millisecond))
	if w := byKind(acts, SendWant); len(w[b]) != 1 {
		t.Fatalf("after the link went: %v", acts)
	}
	s.LinkDown(b, t0.Add(120*time.Millisecond))
	if s.Missing() != 0 {
		t.Fatal("an entry without announcers stayed")
	}
	if s.Eager(a) {
		t.Fatal("a peer without a link is eager")
	}
}

func TestBigBatchesSplit(t *testing.T) {
	c := cfg(true)
	c.MaxQueued = 3000
	s := New(c)
	a := peer(1)
	s.LinkUp(a)
	for i := range 2500 {
		s.Announce(ref(9, uint64(i)), a, t0)
	}
	acts, _ := s.Tick(t0.Add(time.Second))
	if len(acts) != 3 || len(acts[0].Refs) != protocol.MaxBroadcastRefs {
		t.Fatalf("%d batches", len(acts))
	}
}

// dupsToPrune feeds p duplicates at now until one prunes its link, up to
// pruneAt of them, and reports whether one did.
func dupsToPrune(s *State, p Peer, now time.Time) bool {
	for i := range pruneAt {
		if acts := s.Received(ref(9, uint64(100+i)), p, false, now); len(acts) != 0 {
			return true
		}
	}
	return false
}

// A link this node grafted, or its peer grafted, is not pruned by the
// duplicates that follow while the branch it replaces is still eager: it
// is the link the tree needs. Once the hold is over, duplicates prune it
// again.
func TestGraftedLinkHeldAgainstPrune(t *testing.T) {
	// This node grafts a (it pulled over it).
	s := New(cfg(true))
	a := peer(1)
	s.LinkUp(a)
	s.Prune(a, t0)
	s.IHave(a, []Ref{ref(9, 2)}, never, t0.Add(time.Second))
	graftAt := t0.Add(time.Second + 100*time.Millisecond)
	if acts, _ := s.Tick(graftAt); len(byKind(acts, SendGraft)[a]) != 1 {
		t.Fatalf("no graft: %v", acts)
	}
	if dupsToPrune(s, a, graftAt.Add(10*time.Millisecond)) || !s.Eager(a) {
		t.Fatal("a link just grafted was pruned by duplicates")
	}
	if !dupsToPrune(s, a, graftAt.Add(s.graftHold())) || s.Eager(a) {
		t.Fatal("a grafted link was never pruned after the hold")
	}

	// The peer grafts b.
	b := peer(2)
	s.LinkUp(b)
	s.Graft(b, []Ref{ref(9, 3)}, t0)
	if dupsToPrune(s, b, t0.Add(10*time.Millisecond)) || !s.Eager(b) {
		t.Fatal("a link the peer just grafted was pruned by duplicates")
	}
	if !dupsToPrune(s, b, t0.Add(s.graftHold())) || s.Eager(b) {
		t.Fatal("a link the peer grafted was never pruned after the hold")
	}
}

// TestPushMarksAndAnnounces: Push leaves eager links unmarked, marks lazy
// ones and queues their announcements, skips the two it is told to, and
// for a pulled broadcast marks the link towards the origin too.
func TestPushMarksAndAnnounces(t *testing.T) {
	s := New(cfg(true))
	up, down, lazy, from, stranger := peer(1), peer(2), peer(3), peer(4), peer(5)
	for _, p := range []Peer{up, down, lazy, from} {
		s.LinkUp(p)
	}
	s.Received(ref(9, 1), up, true, t0) // up is towards origin 9
	for range pruneAt / pruneDup {
		s.Received(ref(9, 1), lazy, false, t0)
	}
	if s.Eager(lazy) {
		t.Fatal("setup: link not pruned")
	}
	peers := []Peer{up, down, lazy, from, stranger}
	marks, eager := s.Push(ref(9, 2), peers, from, Peer{}, false, true, t0, nil)
	if want := []bool{false, false, true, false, true}; !slices.Equal(marks, want) || eager != 3 {
		t.Fatalf("marks %v (eager %d), want %v (3)", marks, eager, want)
	}
	marks, _ = s.Push(ref(9, 3), peers, from, Peer{}, true, false, t0, marks)
	if want := []bool{true, false, true, false, true}; !slices.Equal(marks, want) {
		t.Fatalf("pulled: marks %v, want %v", marks, want)
	}
	acts, _ := s.Tick(t0.Add(time.Second))
	got := byKind(acts, SendIHave)
	if len(got) != 1 || !slices.Equal(got[lazy], []Ref{ref(9, 2)}) {
		t.Fatalf("announcements %v: want only ref 2 to the lazy link (ref 3 was not to be queued)", got)
	}
}

// TestPruneDelay: with PruneDelay, a link whose duplicates reach the prune
// score is pruned only by a duplicate after its (random) due time, and not
// at all if news takes its score back down first, as when another link of
// the cycle was cut meanwhile.
func TestPruneDelay(t *testing.T) {
	c := cfg(true)
	c.PruneDelay = 50 * time.Millisecond
	s := New(c)
	a, b := peer(1), peer(2)
	s.LinkUp(a)
	s.LinkUp(b)
	dupsTo := func(p Peer, at time.Time) []Action {
		var acts []Action
		for range pruneAt / pruneDup {
			acts = append(acts, s.Received(ref(9, 1), p, false, at)...)
		}
		return acts
	}
	if acts := dupsTo(b, t0); len(acts) != 0 || !s.Eager(b) {
		t.Fatalf("pruned at once: %v", acts)
	}
	// News over b takes its score below the prune score: the prune due is
	// called off, and a later duplicate alone does not prune.
	for i := range pruneAt {
		s.Received(ref(9, uint64(10+i)), b, true, t0.Add(time.Millisecond))
	}
	if acts := s.Received(ref(9, 1), b, false, t0.Add(time.Second)); len(acts) != 0 || !s.Eager(b) {
		t.Fatalf("pruned after its score fell: %v", acts)
	}
	// Sustained duplicates prune it once the delay has passed.
	dupsTo(a, t0)
	acts := s.Received(ref(9, 1), a, false, t0.Add(c.PruneDelay))
	if len(acts) != 1 || acts[0].Kind != SendPrune || acts[0].To != a || s.Eager(a) {
		t.Fatalf("after the delay: %v, eager %v", acts, s.Eager(a))
	}
}

// TestRelinkKeepsAnnouncements: a peer whose link went down is owed what
// was queued for it, what was announced to it since (a copy that found its
// link closing) and the broadcasts relayed since (Owe): all go over its
// next link within Relink, and are forgotten after.
func TestRelinkKeepsAnnouncements(t *testing.T) {
	c := cfg(false)
	c.Relink = time.Second
	s := New(c)
	a, b := peer(1), peer(2)
	s.LinkUp(a)
	s.LinkUp(b)
	s.Announce(ref(9, 1), a, t0)
	s.LinkDown(a, t0.Add(time.Millisecond))
	s.Announce(ref(9, 2), a, t0.Add(2*time.Millisecond))
	s.Owe(ref(9, 3))
	if s.Departed() != 1 {
		t.Fatalf("%d peers owed, want 1", s.Departed())
	}
	acts, next := s.Tick(t0.Add(20 * time.Millisecond))
	if len(byKind(acts, SendIHave)[a]) != 0 {
		t.Fatalf("announced to a peer without a link: %v", acts)
	}
	if want := t0.Add(time.Millisecond + time.Second); !next.Equal(want) {
		t.Fatalf("next tick %v, want the end of the relink window %v", next, want)
	}
	if !s.LinkUp(a) {
		t.Fatal("LinkUp did not report the announcements it took over")
	}
	acts, _ = s.Tick(t0.Add(30 * time.Millisecond))
	if got := byKind(acts, SendIHave)[a]; !slices.Equal(got, []Ref{ref(9, 1), ref(9, 2), ref(9, 3)}) {
		t.Fatalf("announced over the new link: %v", got)
	}
	if s.Departed() != 0 {
		t.Fatalf("%d peers still owed", s.Departed())
	}
	// Past the window they are forgotten, and counted.
	s.LinkDown(b, t0.Add(40*time.Millisecond))
	s.Owe(ref(9, 4))
	s.Tick(t0.Add(40*time.Millisecond + time.Second))
	if s.Departed() != 0 || s.LinkUp(b) {
		t.Fatal("announcements outlived the relink window")
	}
	if got := s.Counters().OwedForgotten; got != 1 {
		t.Fatalf("%d owed announcements counted as forgotten, want 1", got)
	}
	if acts, _ := s.Tick(t0.Add(2 * time.Second)); len(acts) != 0 {
		t.Fatalf("sent %v", acts)
	}
}

// TestRelinkBounded: the peers owed announcements are at most maxDeparted
// (the one that left first makes room), each owed at most
// protocol.MaxBroadcastRefs; with Relink zero nothing outlives a link.
func TestRelinkBounded(t *testing.T) {
	c := cfg(false)
	c.Relink = time.Minute
	c.MaxQueued = 2 * protocol.MaxBroadcastRefs
	s := New(c)
	for i := range maxDeparted + 1 {
		p := peer(byte(10 + i))
		s.LinkUp(p)
		s.LinkDown(p, t0.Add(time.Duration(i)*time.Millisecond))
	}
	s.Owe(ref(9, 1))
	// The last peer made room: the first was forgotten with nothing owed.
	if s.Departed() != maxDeparted || s.Counters().OwedForgotten != 0 {
		t.Fatalf("%d peers owed announcements, want %d", s.Departed(), maxDeparted)
	}
	if s.LinkUp(peer(10)) {
		t.Fatal("the first peer to leave was not the one dropped")
	}
	if !s.LinkUp(peer(11)) {
		t.Fatal("a later peer lost its announcements")
	}
	for i := range protocol.MaxBroadcastRefs + 5 {
		s.Owe(ref(9, uint64(i)))
	}
	if n := len(s.departed[peer(12)].queued); n != protocol.MaxBroadcastRefs {
		t.Fatalf("%d announcements owed to one peer, want %d", n, protocol.MaxBroadcastRefs)
	}
	// Each of the maxDeparted-1 peers still owed had room for 1023 more
	// of the 1029: 6 each forgotten.
	if got, want := s.Counters().OwedForgotten, uint64(6*(maxDeparted-1)); got != want {
		t.Fatalf("%d owed announcements counted as forgotten, want %d", got, want)
	}
	// Once full again, a peer leaving makes room by the one that left
	// first (peer 12, owed 1024), whose owed announcements are counted.
	s.LinkUp(peer(98))
	s.LinkDown(peer(98), t0.Add(time.Hour))
	before := s.Counters().OwedForgotten
	s.LinkUp(peer(99))
	s.LinkDown(peer(99), t0.Add(time.Hour))
	if got := s.Counters().OwedForgotten - before; got != protocol.MaxBroadcastRefs {
		t.Fatalf("evicting a peer counted %d forgotten, want %d", got, protocol.MaxBroadcastRefs)
	}
	c.Relink = 0
	s = New(c)
	s.LinkUp(peer(1))
	s.Announce(ref(9, 1), peer(1), t0)
	s.LinkDown(peer(1), t0)
	s.Owe(ref(9, 2))
	if s.Departed() != 0 || s.LinkUp(peer(1)) {
		t.Fatal("with Relink 0 a peer was owed announcements")
	}
}
