package harness

import (
	"strings"
	"testing"
)

func TestModeOptions(t *testing.T) {
	if opts, err := ModeOptions(BroadcastFlood); err != nil || len(opts) != 0 {
		t.Errorf("flood: %d options, %v (want the mesh defaults, no error)", len(opts), err)
	}
	for _, name := range BroadcastModes() {
		if _, err := ModeOptions(name); err != nil {
			t.Errorf("listed mode %q: %v", name, err)
		}
	}
	for _, bad := range []string{"", "Flood", "gossip", "chord"} {
		_, err := ModeOptions(bad)
		if err == nil {
			t.Errorf("mode %q accepted", bad)
			continue
		}
		// The error names every mode the bench knows.
		for _, name := range BroadcastModes() {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name mode %q", err, name)
			}
		}
	}
}

func TestConfigBroadcastMode(t *testing.T) {
	cfg := Default()
	if cfg.BroadcastMode() != BroadcastFlood {
		t.Errorf("default broadcast mode %q", cfg.BroadcastMode())
	}
	cfg.Broadcast, cfg.SendQueue = "gossip", -1
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "gossip") || !strings.Contains(err.Error(), "send queue") {
		t.Errorf("bad mode and send queue: %v", err)
	}
	// A chord run has no broadcast mode to check.
	cfg = Default()
	cfg.Mode = ModeChord
	if err := cfg.Validate(); err != nil {
		t.Errorf("chord: %v", err)
	}
}
