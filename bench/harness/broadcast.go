package harness

import (
	"fmt"

	"github.com/meshsock/meshsock/mesh"
)

// BroadcastOptions maps a broadcast mode name to the mesh options that
// select it: "flood" (or "", the mesh default) or "tree".
func BroadcastOptions(mode string) ([]mesh.Option, error) {
	switch mode {
	case "", "flood":
		return nil, nil
	case "tree":
		return []mesh.Option{mesh.WithBroadcastMode(mesh.Tree)}, nil
	}
	return nil, fmt.Errorf("unknown broadcast mode %q (flood, tree)", mode)
}
