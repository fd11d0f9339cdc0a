package base_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testdns"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

// jnFast keeps the join's back-off short, so that tests with dead
// addresses take milliseconds.
var jnFast = base.WithJoin(base.JoinConfig{Backoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})

// jnSockets starts a base socket on each ip, all on one port, and returns
// them and the port.
func jnSockets(t *testing.T, ips []string, opts ...base.Option) ([]*base.Socket, string) {
	t.Helper()
	var socks []*base.Socket
	port := testdns.SamePort(t, ips, func(addr string) (string, func(), error) {
		s, err := base.NewSocket(addr, append([]base.Option{base.WithLogger(testnet.Logger(t))}, opts...)...)
		if err != nil {
			return "", nil, err
		}
		socks = append(socks, s)
		_, port, _ := net.SplitHostPort(s.Addr().String())
		return port, func() { _ = s.Close(context.Background()); socks = socks[:len(socks)-1] }, nil
	})
	t.Cleanup(func() {
		for _, s := range socks {
			_ = s.Close(context.Background())
		}
	})
	return socks, port
}

// TestJoinEveryAddressOfAName: a name with three A records, one of them
// dead, and an AAAA record (where the host has IPv6) gives a link to each
// live address; the dead address is retried and logged, not an error.
func TestJoinEveryAddressOfAName(t *testing.T) {
	ftLeakCheck(t)
	dns := testdns.Start(t)
	ips := []string{"127.0.0.2", "127.0.0.3"}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		_ = ln.Close()
		ips = append(ips, "::1")
	} else {
		t.Logf("no IPv6 loopback (%v): A records only", err)
	}
	live, port := jnSockets(t, ips)
	dns.Set("seeds.meshsock.test", append(ips, "127.0.0.4")...)
	n := testnet.NewBase(t, "", base.WithResolver(dns.Resolver()), jnFast)
	joined, err := n.Join(ftCtx(t), "seeds.meshsock.test:"+port)
	if err != nil || joined != len(ips) {
		t.Fatalf("Join = %d, %v; want %d links and no error", joined, err, len(ips))
	}
	for _, s := range live {
		if _, ok := n.Conn(s.ID()); !ok {
			t.Errorf("no link to %s", s.Addr())
		}
	}
	if dns.Queries("seeds.meshsock.test") == 0 {
		t.Error("the name was not resolved through the test's DNS server")
	}
	if got := n.Seeds(); len(got) != 1 || got[0] != "seeds.meshsock.test:"+port {
		t.Errorf("Seeds() = %v", got)
	}
}

// TestJoinErrorListsEveryFailure: when no link forms, the *JoinError
// names every seed and address with its own error, in argument order;
// errors.Is matches each, and errors that another try cannot mend are
// not retried.
func TestJoinErrorListsEveryFailure(t *testing.T) {
	ftLeakCheck(t)
	dns := testdns.Start(t)
	// A node with room for one link, which it has.
	full := testnet.NewBase(t, "127.0.0.1:0", base.WithMaxConns(1))
	other := testnet.NewBase(t, "")
	if _, err := other.Connect(ftCtx(t), full.Addr().String()); err != nil {
		t.Fatal(err)
	}
	foreign := testnet.NewBase(t, "127.0.0.1:0", base.WithProtocol(protocol.Protocol{Subnet: "elsewhere", Encryption: protocol.EncryptionTLS}))
	dead := testnet.NewBase(t, "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	if err := dead.Close(ftCtx(t)); err != nil {
		t.Fatal(err)
	}
	n := testnet.NewBase(t, "", base.WithResolver(dns.Resolver()), jnFast)
	seeds := []string{"gone.meshsock.test:4000", deadAddr, full.Addr().String(), foreign.Addr().String(), "no-port"}
	joined, err := n.Join(ftCtx(t), seeds...)
	if joined != 0 || err == nil {
		t.Fatalf("Join = %d, %v; want 0 and an error", joined, err)
	}
	var je *base.JoinError
	if !errors.As(err, &je) {
		t.Fatalf("error %v (%T) is not a *JoinError", err, err)
	}
	want := []struct {
		seed, addr string
		attempts   int
		is         error
	}{
		{seeds[0], "", 1, base.ErrResolve}, // NXDOMAIN: asking again now is pointless
		{seeds[1], deadAddr, 3, base.ErrUnreachable},
		{seeds[2], seeds[2], 3, base.ErrConnLimit},
		{seeds[3], seeds[3], 1, base.ErrProtocolMismatch},
		{seeds[4], "", 0, base.ErrResolve},
	}
	if len(je.Failures) != len(want) {
		t.Fatalf("%d failures, want %d: %v", len(je.Failures), len(want), err)
	}
	for i, w := range want {
		f := je.Failures[i]
		if f.Seed != w.seed || f.Addr != w.addr || f.Attempts != w.attempts || !errors.Is(f.Err, w.is) {
			t.Errorf("failure %d = %+v; want seed %q, address %q, %d attempts, an error matching %v",
				i, f, w.seed, w.addr, w.attempts, w.is)
		}
		if !errors.Is(err, w.is) {
			t.Errorf("errors.Is(err, %v) = false", w.is)
		}
		if !strings.Contains(err.Error(), w.seed) {
			t.Errorf("the error text does not name %q: %v", w.seed, err)
		}
	}
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("no *net.DNSError saying the name does not exist in %v", err)
	}
	if errors.Is(err, base.ErrTimeout) {
		t.Error("matches ErrTimeout, but ctx did not end")
	}
}

// TestJoinBacksOff: an address that fails is tried again after the
// back-off, doubled each time, and joins once it answers.
func TestJoinBacksOff(t *testing.T) {
	ftLeakCheck(t)
	const backoff = 20 * time.Millisecond
	n := testnet.NewBase(t, "", base.WithJoin(base.JoinConfig{Attempts: 4, Backoff: backoff, MaxBackoff: time.Second}))
	var mu sync.Mutex
	var calls []time.Time
	via := func(ctx context.Context, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) < 3 {
			return base.ErrUnreachable
		}
		return nil
	}
	joined, err := n.JoinVia(ftCtx(t), via, "192.0.2.1:4000")
	if joined != 1 || err != nil {
		t.Fatalf("JoinVia = %d, %v; want 1, nil", joined, err)
	}
	if len(calls) != 3 {
		t.Fatalf("%d attempts, want 3", len(calls))
	}
	if d := calls[1].Sub(calls[0]); d < backoff {
		t.Errorf("second attempt %v after the first; want at least %v", d, backoff)
	}
	if d := calls[2].Sub(calls[1]); d < 2*backoff {
		t.Errorf("third attempt %v after the second; want at least %v (doubled)", d, 2*backoff)
	}
}

// TestJoinContextEnds: a join cut short by ctx matches ErrTimeout and
// still lists the failures.
func TestJoinContextEnds(t *testing.T) {
	ftLeakCheck(t)
	n := testnet.NewBase(t, "", base.WithJoin(base.JoinConfig{Attempts: 100, Backoff: time.Hour, MaxBackoff: time.Hour}))
	ctx, cancel := context.WithTimeout(ftCtx(t), 50*time.Millisecond)
	defer cancel()
	joined, err := n.JoinVia(ctx, func(context.Context, string) error { return base.ErrUnreachable }, "192.0.2.1:4000")
	var je *base.JoinError
	if joined != 0 || !errors.Is(err, base.ErrTimeout) || !errors.As(err, &je) || len(je.Failures) != 1 {
		t.Fatalf("JoinVia = %d, %v; want 0 and an ErrTimeout around a *JoinError of one failure", joined, err)
	}
}

// TestJoinSelfIsNoFailure: a seed list that names this node too (as a
// DNS name with a record per member does) joins without an error; naming
// only this node fails with ErrSelfConnect.
func TestJoinSelfIsNoFailure(t *testing.T) {
	ftLeakCheck(t)
	a := testnet.NewBase(t, "127.0.0.1:0")
	b := testnet.NewBase(t, "127.0.0.1:0", jnFast)
	if joined, err := b.Join(ftCtx(t), b.Addr().String(), a.Addr().String()); joined != 1 || err != nil {
		t.Fatalf("Join(self, a) = %d, %v; want 1, nil", joined, err)
	}
	if joined, err := b.Join(ftCtx(t), b.Addr().String()); joined != 0 || !errors.Is(err, base.ErrSelfConnect) {
		t.Fatalf("Join(self) = %d, %v; want 0 and ErrSelfConnect", joined, err)
	}
}

// TestJoinRepeatedSeed: a seed given twice, or two names for one
// address, is one link.
func TestJoinRepeatedSeed(t *testing.T) {
	ftLeakCheck(t)
	a := testnet.NewBase(t, "127.0.0.1:0")
	n := testnet.NewBase(t, "")
	addr := a.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	if joined, err := n.Join(ftCtx(t), addr, addr, "127.0.0.1:"+port); joined != 1 || err != nil {
		t.Fatalf("Join(a, a, a) = %d, %v; want 1, nil", joined, err)
	}
}

// TestRejoinRateBound: Rejoin resolves the remembered seeds again at most
// once per JoinConfig.Refresh, one at a time.
func TestRejoinRateBound(t *testing.T) {
	ftLeakCheck(t)
	const refresh = 100 * time.Millisecond
	dns := testdns.Start(t)
	dns.Set("seeds.meshsock.test", "127.0.0.2")
	n := testnet.NewBase(t, "", base.WithResolver(dns.Resolver()),
		base.WithJoin(base.JoinConfig{Attempts: 1, Refresh: refresh}))
	var tries atomic.Int32
	via := func(context.Context, string) error { tries.Add(1); return nil }
	joinedAt := time.Now()
	if _, err := n.JoinVia(ftCtx(t), via, "seeds.meshsock.test:4000"); err != nil {
		t.Fatal(err)
	}
	if n.Rejoin(via) {
		t.Fatal("Rejoin started at once after Join")
	}
	var started time.Time
	testnet.Eventually(t, ftWait, func() bool {
		if n.Rejoin(via) {
			started = time.Now()
			return true
		}
		return false
	}, "Rejoin never started")
	if d := started.Sub(joinedAt); d < refresh {
		t.Errorf("Rejoin started %v after Join; want at least %v", d, refresh)
	}
	if n.Rejoin(via) {
		t.Error("a second Rejoin started within the refresh interval")
	}
	testnet.Eventually(t, ftWait, func() bool { return tries.Load() == 2 }, "the re-join did not try the seed")
	if q := dns.Queries("seeds.meshsock.test"); q < 2 {
		t.Errorf("the name was resolved %d times; want once per join", q)
	}
}

// TestJoinOptionsValidated: bad join bounds and a nil resolver fail at
// construction.
func TestJoinOptionsValidated(t *testing.T) {
	for name, opt := range map[string]base.Option{
		"negative attempts":        base.WithJoin(base.JoinConfig{Attempts: -1}),
		"negative refresh":         base.WithJoin(base.JoinConfig{Refresh: -time.Second}),
		"backoff over max backoff": base.WithJoin(base.JoinConfig{Backoff: time.Minute, MaxBackoff: time.Second}),
		"nil resolver":             base.WithResolver(nil),
		"negative quorum":          base.WithObservedQuorum(-1),
	} {
		if s, err := base.NewSocket("", opt); !errors.Is(err, base.ErrInvalidOption) {
			if s != nil {
				_ = s.Close(context.Background())
			}
			t.Errorf("%s: NewSocket = %v; want ErrInvalidOption", name, err)
		}
	}
}

// TestJoinBounds: the addresses tried per name, the addresses tried at
// once and the seeds remembered are bounded as configured.
func TestJoinBounds(t *testing.T) {
	ftLeakCheck(t)
	dns := testdns.Start(t)
	dns.Set("many.meshsock.test", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5")
	n := testnet.NewBase(t, "", base.WithResolver(dns.Resolver()),
		base.WithJoin(base.JoinConfig{Attempts: 1, MaxAddrs: 2, Parallel: 2, MaxSeeds: 3}))
	var mu sync.Mutex
	tried := map[string]bool{}
	var now, most int
	via := func(ctx context.Context, addr string) error {
		mu.Lock()
		tried[addr] = true
		now++
		most = max(most, now)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // hold the slot, so that a third would overlap
		mu.Lock()
		now--
		mu.Unlock()
		return nil
	}
	joined, err := n.JoinVia(ftCtx(t), via, "many.meshsock.test:4000")
	if err != nil || joined != 2 || len(tried) != 2 {
		t.Fatalf("JoinVia = %d, %v, tried %v; want 2 of the name's 5 addresses", joined, err, tried)
	}
	seeds := []string{"192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1", "192.0.2.4:1", "192.0.2.5:1"}
	clear(tried)
	most = 0
	if joined, err := n.JoinVia(ftCtx(t), via, seeds...); joined != 5 || err != nil {
		t.Fatalf("JoinVia = %d, %v; want 5", joined, err)
	}
	if most > 2 {
		t.Errorf("%d addresses tried at once; want at most 2", most)
	}
	if got := n.Seeds(); !slices.Equal(got, seeds[2:]) {
		t.Errorf("Seeds() = %v; want the newest 3, %v", got, seeds[2:])
	}
}

// TestJoinStopsRetryingOnceIn: once one address has joined, a failing one
// is not waited for through its back-off: Join returns with the link.
func TestJoinStopsRetryingOnceIn(t *testing.T) {
	ftLeakCheck(t)
	n := testnet.NewBase(t, "", base.WithJoin(base.JoinConfig{Attempts: 3, Backoff: time.Hour, MaxBackoff: time.Hour}))
	var deadTries atomic.Int32
	via := func(ctx context.Context, addr string) error {
		if addr == "192.0.2.9:1" {
			deadTries.Add(1)
			return base.ErrUnreachable
		}
		return nil
	}
	// Either order: the dead address fails first and waits out its
	// back-off until the live one joins, or fails after and is not retried.
	ctx := ftCtx(t)
	joined, err := n.JoinVia(ctx, via, "192.0.2.9:1", "192.0.2.1:1")
	if joined != 1 || err != nil {
		t.Fatalf("JoinVia = %d, %v; want 1, nil", joined, err)
	}
	if ctx.Err() != nil {
		t.Fatal("JoinVia returned only when its context ended: it waited out the dead address's back-off")
	}
	if got := deadTries.Load(); got != 1 {
		t.Errorf("the dead address was tried %d times; want once", got)
	}
}
