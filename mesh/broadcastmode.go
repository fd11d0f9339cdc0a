package mesh

import (
	"fmt"
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
)

// BroadcastMode says how a node relays broadcasts (WithBroadcastMode).
type BroadcastMode uint8

const (
	// Flood relays every new broadcast over every link but the one it
	// came on (docs/protocol.md §11). It is the default.
	Flood BroadcastMode = iota
	// Tree relays payloads only over eager links, which form a spanning
	// tree out of the flood itself, and announces them (IHAVE) over the
	// other, lazy, links, after Plumtree (docs/protocol.md §12.7): a
	// duplicate prunes the link it came on to lazy; a node that hears of
	// a broadcast only by announcement pulls it after the pull timeout and
	// grafts that link back, which also repairs the tree when a link goes.
	// A mesh may mix tree and flood nodes.
	Tree
)

func (m BroadcastMode) String() string {
	switch m {
	case Flood:
		return "flood"
	case Tree:
		return "tree"
	}
	return fmt.Sprintf("BroadcastMode(%d)", uint8(m))
}

// Defaults of broadcast repair (WithMessageCache, WithPullTimeout,
// WithRepairWindow, WithAnnounceInterval, WithRepairLimits).
const (
	DefaultMessageCache      = 4 << 20 // bytes of recent broadcasts kept to serve pulls
	DefaultPullTimeout       = 100 * time.Millisecond
	DefaultRepairWindow      = 10 * time.Second
	DefaultAnnounceInterval  = 20 * time.Millisecond
	DefaultMaxMissing        = 8192 // broadcasts waited for, all announcers
	DefaultMaxPullsPerPeer   = 1024 // pulls outstanding at one announcer
	DefaultMaxAnnounceQueued = 8192 // announcements queued for one neighbour
)

// repairConfig holds the broadcast mode and the repair bounds.
type repairConfig struct {
	mode             BroadcastMode
	cacheBytes       int
	pullTimeout      time.Duration
	window           time.Duration
	announceInterval time.Duration
	maxMissing       int
	maxPulls         int
	maxQueued        int
}

func defaultRepairConfig() repairConfig {
	return repairConfig{
		mode:             Flood,
		cacheBytes:       DefaultMessageCache,
		pullTimeout:      DefaultPullTimeout,
		window:           DefaultRepairWindow,
		announceInterval: DefaultAnnounceInterval,
		maxMissing:       DefaultMaxMissing,
		maxPulls:         DefaultMaxPullsPerPeer,
		maxQueued:        DefaultMaxAnnounceQueued,
	}
}

// WithBroadcastMode sets how this node relays broadcasts: Flood (the
// default) or Tree. Either way a broadcast a relay could not queue for a
// neighbour, or that was lost with a failing link, is announced and pulled
// (see WithMessageCache), and nodes of both modes may share one mesh.
func WithBroadcastMode(mode BroadcastMode) Option {
	return func(c *config) error {
		if mode != Flood && mode != Tree {
			return optcheck.Invalid("unknown broadcast mode %d", uint8(mode))
		}
		c.repair.mode = mode
		return nil
	}
}

// WithMessageCache bounds, in bytes, the cache of recent broadcasts
// (their signed envelopes, as received) from which this node serves the
// pulls of neighbours that missed them; the oldest go first. A pull for a
// broadcast no longer held is refused (Stats.PullsRefused), and the puller
// asks another announcer. The bound counts the envelopes (plus 9 bytes
// each), their index (8 bytes a slot, at most four slots an entry) and
// what slabs of 64 KiB (a sixteenth of the bound when smaller) leave
// unused; room is made a slab at a time. Once full the cache allocates
// nothing. Default: DefaultMessageCache (4 MiB).
func WithMessageCache(bytes int) Option {
	return optcheck.Positive("message cache", bytes, func(c *config) { c.repair.cacheBytes = bytes })
}

// WithPullTimeout sets how long a node waits for a broadcast it heard of
// only by announcement before it pulls it, and then for each pull before it
// asks the next announcer. Under load a node waits longer, up to 8 times
// d: 1.5 times how late pushed copies have recently been arriving after
// their announcement, so that it does not pull what is merely queued.
// In tree mode a link grafted (by either end) is not pruned for 3 times
// d: it replaces a branch of the tree that failed or lagged; and a link
// whose duplicates call for a prune is pruned after a random delay of up
// to 4 times d, so that two links of one cycle are not cut at once.
// Default: DefaultPullTimeout (100 ms).
func WithPullTimeout(d time.Duration) Option {
	return optcheck.Positive("pull timeout", d, func(c *config) { c.repair.pullTimeout = d })
}

// WithRepairWindow sets how long after its first announcement a missing
// broadcast is pulled (from each of its announcers in turn) before the node
// gives up on it. It is capped by the age window (WithSeenCache), past
// which a pulled copy would be dropped as too old. Default:
// DefaultRepairWindow (10 s).
func WithRepairWindow(d time.Duration) Option {
	return optcheck.Positive("repair window", d, func(c *config) { c.repair.window = d })
}

// WithAnnounceInterval sets how long announcements (IHAVE) are gathered
// before they are sent, in batches of at most protocol.MaxBroadcastRefs.
// Default: DefaultAnnounceInterval (20 ms).
func WithAnnounceInterval(d time.Duration) Option {
	return optcheck.Positive("announce interval", d, func(c *config) { c.repair.announceInterval = d })
}

// WithRepairLimits bounds the repair state: missing is how many
// announced broadcasts this node waits for at once (one neighbour may
// introduce at most a quarter of them, so a neighbour that announces what
// it never serves cannot take the room of the others), pullsPerPeer how
// many pulls may be outstanding at one neighbour, and queued how many
// announcements may wait for one neighbour's next batch (more are dropped,
// Stats.AnnounceDrops). Defaults: DefaultMaxMissing (8192),
// DefaultMaxPullsPerPeer (1024), DefaultMaxAnnounceQueued (8192).
func WithRepairLimits(missing, pullsPerPeer, queued int) Option {
	return func(c *config) error {
		if missing < 4 || pullsPerPeer < 1 || queued < 1 {
			return optcheck.Invalid("repair limits must be positive (missing at least 4), got %d, %d, %d", missing, pullsPerPeer, queued)
		}
		c.repair.maxMissing, c.repair.maxPulls, c.repair.maxQueued = missing, pullsPerPeer, queued
		return nil
	}
}
