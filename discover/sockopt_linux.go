//go:build linux

package discover

import (
	"net/netip"
	"syscall"
)

// listenControl lets several sockets of one host share the probe port
// (SO_REUSEADDR: each hears every broadcast or multicast probe; unicast
// probes reach one of them) and, for a multicast
// group, joins it on the interface the kernel picks.
func listenControl(group netip.Addr) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			set := func(level, opt, v int) {
				if serr == nil {
					serr = syscall.SetsockoptInt(int(fd), level, opt, v)
				}
			}
			set(syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			set(syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			if group.IsValid() && group.Is4() && serr == nil {
				serr = syscall.SetsockoptIPMreq(int(fd), syscall.IPPROTO_IP, syscall.IP_ADD_MEMBERSHIP,
					&syscall.IPMreq{Multiaddr: group.As4()})
			} else if group.IsValid() && serr == nil {
				serr = syscall.SetsockoptIPv6Mreq(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_JOIN_GROUP,
					&syscall.IPv6Mreq{Multiaddr: group.As16()})
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
