package base

import (
	"net"
	"net/netip"
	"testing"
)

// TestSourceOf: what the per-source limits count as one source.
func TestSourceOf(t *testing.T) {
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 4444} }
	tests := []struct {
		name string
		opts []Option
		addr net.Addr
		want string // "" if exempt
	}{
		{"IPv4 address", nil, tcp("198.51.100.7"), "198.51.100.7/32"},
		{"IPv4-mapped IPv6 is IPv4", nil, tcp("::ffff:198.51.100.7"), "198.51.100.7/32"},
		{"IPv6 /64", nil, tcp("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64"},
		{"IPv6 zone dropped", nil, &net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, "fe80::/64"},
		{"IPv4 /24", []Option{WithSourcePrefix(24, 48)}, tcp("198.51.100.7"), "198.51.100.0/24"},
		{"IPv6 /48", []Option{WithSourcePrefix(24, 48)}, tcp("2001:db8:1:2::9"), "2001:db8:1::/48"},
		{"loopback exempt", nil, tcp("127.0.0.7"), ""},
		{"IPv6 loopback exempt", nil, tcp("::1"), ""},
		{"loopback counted", []Option{WithLoopbackExempt(false)}, tcp("127.0.0.7"), "127.0.0.7/32"},
		{"not an IP address", nil, &net.UnixAddr{Name: "/tmp/sock", Net: "unix"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stNewAt(t, "", tt.opts...)
			got, counted := s.sourceOf(tt.addr)
			switch {
			case tt.want == "" && counted:
				t.Errorf("sourceOf(%v) = %v; want exempt", tt.addr, got)
			case tt.want != "" && (!counted || got != netip.MustParsePrefix(tt.want)):
				t.Errorf("sourceOf(%v) = %v, %v; want %s", tt.addr, got, counted, tt.want)
			}
		})
	}
}

// TestConnsPerSourceDefault: the per-source bound on connections is a
// quarter of WithMaxConns, rounded up, unless set.
func TestConnsPerSourceDefault(t *testing.T) {
	for _, tt := range []struct {
		opts []Option
		want int
	}{
		{nil, DefaultMaxConns / 4},
		{[]Option{WithMaxConns(32)}, 8},
		{[]Option{WithMaxConns(5)}, 2},
		{[]Option{WithMaxConns(1)}, 1},
		{[]Option{WithMaxConnsPerSource(3), WithMaxConns(32)}, 3},
	} {
		if got := stNewAt(t, "", tt.opts...).cfg.connsPerSource(); got != tt.want {
			t.Errorf("%d options: %d connections per source, want %d", len(tt.opts), got, tt.want)
		}
	}
}
