// Package testdns is a small DNS server for tests: it answers A and AAAA
// queries from a table the test changes at will, so that tests can resolve
// seed names through a real resolver (Join) without touching the system's
// DNS. Only tests import it.
package testdns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server serves the names Set gave it; other names do not exist
// (NXDOMAIN).
type Server struct {
	addr string
	srv  *dns.Server

	mu      sync.Mutex
	records map[string][]netip.Addr // by lower-case FQDN
	queries map[string]int          // A and AAAA questions, by lower-case FQDN
}

// Start starts a server on a free UDP port of 127.0.0.1; it stops when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testdns: %v", err)
	}
	s := &Server{addr: pc.LocalAddr().String(), records: make(map[string][]netip.Addr), queries: make(map[string]int)}
	started := make(chan struct{})
	s.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve), NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = s.srv.Shutdown()
		<-done
	})
	return s
}

// Addr returns the server's UDP address.
func (s *Server) Addr() string { return s.addr }

// Set makes name resolve to ips (IPv4 ones as A records, IPv6 ones as
// AAAA); no ips makes the name unknown.
func (s *Server) Set(name string, ips ...string) {
	addrs := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		addrs[i] = netip.MustParseAddr(ip)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[dns.CanonicalName(name)] = addrs
}

// Queries returns how many A and AAAA questions for name the server has
// answered.
func (s *Server) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dns.CanonicalName(name)]
}

// Resolver returns a resolver that asks only this server.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", s.addr)
		},
	}
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		addrs, ok := s.records[name]
		if !ok || len(addrs) == 0 {
			m.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA {
			continue
		}
		s.queries[name]++
		for _, a := range addrs {
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 0}
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(m)
}

// NeedLoopbacks skips the test unless this host can bind every ip (on
// Linux all of 127.0.0.0/8 is loopback; other systems need aliases).
func NeedLoopbacks(t testing.TB, ips ...string) {
	t.Helper()
	for _, ip := range ips {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Skipf("skipping: cannot listen on %s (Linux has all of 127.0.0.0/8 on loopback): %v", ip, err)
		}
		_ = ln.Close()
	}
}

// SamePort opens something on every ip with one port for all (a DNS record
// holds an address, not a port): open is called with "ip:0" for the first
// ip, then with "ip:port" for the others on the port the first got, and
// returns that port. When a later ip has the port taken it undoes what it
// opened and starts again. It returns the port.
func SamePort(t testing.TB, ips []string, open func(addr string) (port string, undo func(), err error)) string {
	t.Helper()
	NeedLoopbacks(t, ips...)
	var lastErr error
	for try := 0; try < 20; try++ {
		var undos []func()
		port, undo, err := open(net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("testdns: open %s: %v", ips[0], err)
		}
		undos = append(undos, undo)
		ok := true
		for _, ip := range ips[1:] {
			_, undo, err := open(net.JoinHostPort(ip, port))
			if err != nil {
				lastErr, ok = err, false
				break
			}
			undos = append(undos, undo)
		}
		if ok {
			return port
		}
		for _, u := range undos {
			u()
		}
	}
	t.Fatalf("testdns: no port free on all of %v: %v", ips, lastErr)
	return ""
}
