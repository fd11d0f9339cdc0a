//go:build linux

// Package sockopt holds socket options set through net.ListenConfig's
// Control, shared by the library and its tests.
package sockopt

import "syscall"

// Broadcast is a net.ListenConfig Control function that allows sending to
// broadcast addresses (SO_BROADCAST).
func Broadcast(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
