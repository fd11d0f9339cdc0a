package mesh

import (
	"testing"
	"time"
)

// TestMemberLoopIdle: a node with membership off, or with membership on
// but no neighbour to send a heartbeat to, has nothing to do in its member
// loop but age the table now and then. The loop used to poll every
// millisecond in both cases (a heartbeat "due" that it could not send),
// which with hundreds of nodes in one process was a large part of the CPU.
func TestMemberLoopIdle(t *testing.T) {
	c := startCluster(t, 2)                                                      // membership off
	c.nodes = append(c.nodes, startCluster(t, 1, WithMembership(true)).nodes...) // on, alone
	c.wire([][2]int{{0, 1}})
	const window = 300 * time.Millisecond
	before := make([]uint64, len(c.nodes))
	for i, s := range c.nodes {
		before[i] = s.members.ctr.wakeups.Load()
	}
	// A window of time to count wake-ups in, not a wait for an event.
	time.Sleep(window)
	for i, s := range c.nodes {
		// A neighbour change or two may still wake a loop; polling
		// every millisecond gives hundreds.
		if n := s.members.ctr.wakeups.Load() - before[i]; n > 10 {
			t.Errorf("node %d: member loop woke %d times in %v with nothing to send", i, n, window)
		}
	}
}
