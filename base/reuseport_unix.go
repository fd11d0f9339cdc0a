//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package base

import "syscall"

// reusePortSupported says whether this system lets a listener and outgoing
// connections share a local port (SO_REUSEADDR with SO_REUSEPORT).
const reusePortSupported = true

// ReusePortControl is a net.ListenConfig or net.Dialer Control function that
// sets SO_REUSEADDR and SO_REUSEPORT on the socket, so that a listener and
// the connections a node dials can share one local port (WithReusePort
// sets them on the listener after its bind, and on each dial before it).
func ReusePortControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
