package base

import (
	"net"
	"strings"
	"testing"

	"github.com/meshsock/meshsock/protocol"
)

// TestParseObserved: only an "ip:port" with a specified unicast IP and a
// port is taken from a peer; anything else reads as "not said".
func TestParseObserved(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:4000":          "192.0.2.1:4000",
		"[2001:db8::1]:4000":      "[2001:db8::1]:4000",
		"[::ffff:192.0.2.1]:4000": "192.0.2.1:4000", // IPv4-mapped is IPv4
		"":                        "",
		"192.0.2.1":               "",
		"192.0.2.1:0":             "",
		"0.0.0.0:4000":            "",
		"[::]:4000":               "",
		"224.0.0.1:4000":          "",
		"[ff02::1]:4000":          "",
		"[fe80::1%eth0]:4000":     "",
		"example.com:4000":        "",
		"192.0.2.1:70000":         "",
		"192.0.2.1:http":          "",
		strings.Repeat("1", 300):  "",
	} {
		if got := parseObserved(in); got != want {
			t.Errorf("parseObserved(%q) = %q; want %q", in, got, want)
		}
	}
}

type oddAddr string

func (a oddAddr) Network() string { return "odd" }
func (a oddAddr) String() string  { return string(a) }

// TestObservedForFits: the observed address this node sends fits the
// Hello's limit, or is left out.
func TestObservedForFits(t *testing.T) {
	if got := observedFor(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4000}); got != "192.0.2.1:4000" {
		t.Errorf("observedFor(TCP) = %q", got)
	}
	if got := observedFor(oddAddr(strings.Repeat("x", protocol.MaxObservedLen+1))); got != "" {
		t.Errorf("observedFor(an address over the limit) = %q; want \"\"", got)
	}
	if got := observedFor(nil); got != "" {
		t.Errorf("observedFor(nil) = %q", got)
	}
}
