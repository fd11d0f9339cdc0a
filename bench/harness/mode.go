package harness

import (
	"fmt"
	"strings"

	"github.com/meshsock/meshsock/mesh"
)

// Broadcast modes of the mesh the bench knows (Config.Broadcast).
const (
	// BroadcastFlood is the mesh's relay as it is by default: every node
	// relays a new broadcast to every neighbour but the one it came from.
	BroadcastFlood = "flood"
	// BroadcastTree is Plumtree (mesh.Tree): payloads pushed along a
	// spanning tree, announcements on the other links.
	BroadcastTree = "tree"
)

// broadcastModes maps each broadcast mode name to the mesh options that
// select it, in the order the help text lists them. A new mode is one more
// line here.
var broadcastModes = []struct {
	name    string
	options func() []mesh.Option
}{
	{BroadcastFlood, func() []mesh.Option { return nil }}, // the mesh default
	{BroadcastTree, func() []mesh.Option { return []mesh.Option{mesh.WithBroadcastMode(mesh.Tree)} }},
}

// BroadcastModes returns the names ModeOptions knows.
func BroadcastModes() []string {
	names := make([]string, len(broadcastModes))
	for i, m := range broadcastModes {
		names[i] = m.name
	}
	return names
}

// ModeOptions returns the mesh options that make a node relay broadcasts in
// the named mode; an unknown name is an error that lists the known ones.
func ModeOptions(mode string) ([]mesh.Option, error) {
	for _, m := range broadcastModes {
		if m.name == mode {
			return m.options(), nil
		}
	}
	return nil, fmt.Errorf("unknown broadcast mode %q (known: %s)", mode, strings.Join(BroadcastModes(), ", "))
}
