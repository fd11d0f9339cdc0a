//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package base

import "syscall"

// reusePortSupported says whether this system lets a listener and outgoing
// connections share a local port. Here it does not: WithReusePort is
// accepted and dials use an ephemeral port, so hole punching through a NAT
// is unlikely to work (docs/mesh.md).
const reusePortSupported = false

// ReusePortControl would set SO_REUSEADDR and SO_REUSEPORT; this system
// has no SO_REUSEPORT, so it does nothing.
func ReusePortControl(network, address string, c syscall.RawConn) error { return nil }
