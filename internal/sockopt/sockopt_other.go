//go:build !linux

// Package sockopt holds socket options set through net.ListenConfig's
// Control, shared by the library and its tests.
package sockopt

import "syscall"

// Broadcast sets no option outside Linux.
func Broadcast(network, address string, c syscall.RawConn) error { return nil }
