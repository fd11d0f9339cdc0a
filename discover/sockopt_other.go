//go:build !linux

package discover

import (
	"net/netip"
	"syscall"
)

// listenControl sets no option outside Linux: one node per host may use
// the probe port, and multicast groups are not joined.
func listenControl(netip.Addr) func(network, address string, c syscall.RawConn) error { return nil }
