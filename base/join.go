package base

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshsock/meshsock/internal/optcheck"
)

// Seed lists (Join): each seed "host:port" is resolved to every address of
// its host, each address is tried with back-off, and the seeds are
// remembered so that a node short of peers can resolve them again (Rejoin)
// and find members whose DNS records changed. mesh and chord both join
// through this code; only what "joining through one address" means
// differs (a JoinFunc).

// Resolver resolves a host name to its addresses, IPv4 and IPv6 alike.
// *net.Resolver satisfies it; net.DefaultResolver is the default
// (WithResolver).
type Resolver interface {
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
}

// JoinFunc joins through one resolved address ("ip:port"): it returns nil
// once a link through it is formed. Socket.Join's connects to the address;
// a routing layer may do more (chord also looks up its place on the ring).
type JoinFunc func(ctx context.Context, addr string) error

// JoinConfig bounds Join and the re-resolution of remembered seeds. A zero
// field takes its default.
type JoinConfig struct {
	// Attempts is how many times each address is tried before it counts
	// as failed. Default: DefaultJoinAttempts (3).
	Attempts int
	// Backoff is the wait after an address's first failed attempt,
	// doubled after each further one up to MaxBackoff. Defaults:
	// DefaultJoinBackoff (250 ms) and DefaultJoinMaxBackoff (2 s).
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt (dial and handshake, and what a routing
	// layer does after). Default: DefaultJoinTimeout (10 s).
	Timeout time.Duration
	// Parallel is how many addresses are tried at once. Default:
	// DefaultJoinParallel (8).
	Parallel int
	// MaxAddrs is how many of a name's addresses are tried, in the
	// resolver's order; the rest are ignored. Default: DefaultJoinMaxAddrs
	// (16).
	MaxAddrs int
	// MaxSeeds is how many seeds the socket remembers for Rejoin; seeds
	// beyond it replace the oldest. Default: DefaultMaxSeeds (64).
	MaxSeeds int
	// Refresh is the least time between two re-joins through the
	// remembered seeds (Rejoin), which resolve every name again. Default:
	// DefaultSeedRefresh (30 s).
	Refresh time.Duration
}

// Join defaults (JoinConfig).
const (
	DefaultJoinAttempts   = 3
	DefaultJoinBackoff    = 250 * time.Millisecond
	DefaultJoinMaxBackoff = 2 * time.Second
	DefaultJoinTimeout    = 10 * time.Second
	DefaultJoinParallel   = 8
	DefaultJoinMaxAddrs   = 16
	DefaultMaxSeeds       = 64
	DefaultSeedRefresh    = 30 * time.Second
)

// withDefaults returns c with every zero field set to its default.
func (c JoinConfig) withDefaults() JoinConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Attempts, DefaultJoinAttempts)
	def(&c.Parallel, DefaultJoinParallel)
	def(&c.MaxAddrs, DefaultJoinMaxAddrs)
	def(&c.MaxSeeds, DefaultMaxSeeds)
	defd(&c.Backoff, DefaultJoinBackoff)
	defd(&c.MaxBackoff, DefaultJoinMaxBackoff)
	defd(&c.Timeout, DefaultJoinTimeout)
	defd(&c.Refresh, DefaultSeedRefresh)
	return c
}

func (c JoinConfig) validate() error {
	if c.Attempts < 0 || c.Parallel < 0 || c.MaxAddrs < 0 || c.MaxSeeds < 0 {
		return optcheck.Invalid("join: negative count (attempts %d, parallel %d, max addresses %d, max seeds %d)",
			c.Attempts, c.Parallel, c.MaxAddrs, c.MaxSeeds)
	}
	if c.Backoff < 0 || c.MaxBackoff < 0 || c.Timeout < 0 || c.Refresh < 0 {
		return optcheck.Invalid("join: negative duration (backoff %v, max backoff %v, timeout %v, refresh %v)",
			c.Backoff, c.MaxBackoff, c.Timeout, c.Refresh)
	}
	if d := c.withDefaults(); d.Backoff > d.MaxBackoff {
		return optcheck.Invalid("join: backoff %v exceeds the max backoff %v", d.Backoff, d.MaxBackoff)
	}
	return nil
}

// WithJoin sets the bounds of Join and Rejoin; zero fields keep their
// defaults. Negative values, or a Backoff over MaxBackoff, are invalid.
func WithJoin(cfg JoinConfig) Option {
	return func(c *config) error {
		if err := cfg.validate(); err != nil {
			return err
		}
		c.join = cfg.withDefaults()
		return nil
	}
}

// WithResolver sets the resolver Join uses for seed names. Default:
// net.DefaultResolver.
func WithResolver(r Resolver) Option {
	return func(c *config) error {
		if r == nil {
			return optcheck.Invalid("nil resolver")
		}
		c.resolver = r
		return nil
	}
}

// JoinFailure is one seed name that did not resolve, or one of its
// addresses that Join could not join through.
type JoinFailure struct {
	// Seed is the argument as given to Join ("host:port").
	Seed string
	// Addr is the address tried ("ip:port"), or "" when Seed did not
	// resolve.
	Addr string
	// Attempts is how many times it was tried.
	Attempts int
	// Err is the last attempt's error: for example one matching
	// ErrResolve, ErrUnreachable, ErrConnLimit or ErrProtocolMismatch.
	Err error
}

// JoinError is the error of a Join that formed no link: it lists every
// seed that did not resolve and every address that failed, in the order of
// Join's arguments. errors.Is and errors.As look through every failure
// (Unwrap), so errors.Is(err, ErrConnLimit) reports whether any address
// was refused for lack of room.
type JoinError struct {
	Failures []JoinFailure
}

// Error lists the failures, one per address.
func (e *JoinError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "meshsock: join: no link formed (%d failed)", len(e.Failures))
	for i, f := range e.Failures {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if f.Addr == "" || f.Addr == f.Seed {
			fmt.Fprintf(&b, "%s: %v", f.Seed, f.Err)
		} else {
			fmt.Fprintf(&b, "%s (%s): %v", f.Addr, f.Seed, f.Err)
		}
	}
	return b.String()
}

// Unwrap returns every failure's error.
func (e *JoinError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f.Err
	}
	return errs
}

// seedList is what the socket remembers of the seeds it joined through.
type seedList struct {
	mu      sync.Mutex
	names   []string  // oldest first, no duplicates
	last    time.Time // when the last re-join started
	running bool
}

// remember adds seeds to the list, keeping at most max (the newest). A
// Join resolves them now, so the next re-join waits its full interval.
func (l *seedList) remember(seeds []string, max int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	for _, s := range seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			continue // never resolves
		}
		if i := slices.Index(l.names, s); i >= 0 {
			l.names = slices.Delete(l.names, i, i+1)
		}
		l.names = append(l.names, s)
	}
	if over := len(l.names) - max; over > 0 {
		l.names = slices.Delete(l.names, 0, over)
	}
}

// Join joins through seeds, "host:port" each: every host name is resolved
// (WithResolver) to all its addresses, IPv4 and IPv6, and each address is
// dialled, with up to JoinConfig.Attempts tries and back-off between them,
// all within ctx; once one address has joined, a failed one is not tried
// again (Rejoin does later, if the node runs short of peers). It returns how many links it formed. The error is nil
// when at least one link formed (the failures of the other addresses are
// logged at level Info); when none formed it is a *JoinError listing every
// failure (errors.As finds it; errors.Is matches each failure's error,
// such as ErrResolve, ErrUnreachable or ErrConnLimit), or ErrClosed, or
// an error matching ErrTimeout when ctx ended first. An address whose
// earlier dial's link is still up counts as joined without a new dial (as
// in Connect). Seed addresses that are this node itself are no failure
// once a link formed.
//
// The seeds are remembered: a routing layer that finds itself short of
// peers calls Rejoin, which resolves them again. Join without seeds fails
// with ErrInvalidOption.
func (s *Socket) Join(ctx context.Context, seeds ...string) (int, error) {
	return s.JoinVia(ctx, s.connectVia, seeds...)
}

func (s *Socket) connectVia(ctx context.Context, addr string) error {
	_, err := s.Connect(ctx, addr)
	return err
}

// JoinVia is Join with another way of joining through one address: via
// is called once per attempt, and a link counts as formed when it returns
// nil. Routing layers use it (chord also finds its place on the ring).
func (s *Socket) JoinVia(ctx context.Context, via JoinFunc, seeds ...string) (int, error) {
	if s.isClosed() {
		return 0, ErrClosed
	}
	if len(seeds) == 0 {
		return 0, optcheck.Invalid("join: no seeds")
	}
	s.seeds.remember(seeds, s.cfg.join.MaxSeeds)
	n, jerr := s.join(ctx, via, seeds)
	if n > 0 {
		if jerr != nil {
			s.log.Info("joined, but some seed addresses failed", "links", n, "err", jerr)
		}
		return n, nil
	}
	if s.isClosed() {
		return 0, ErrClosed
	}
	if jerr == nil { // cannot happen: every seed yields an address or a failure
		jerr = &JoinError{}
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("%w: %w", ErrTimeout, jerr)
	}
	return 0, jerr
}

// Seeds returns the seeds this socket remembers, oldest first.
func (s *Socket) Seeds() []string {
	s.seeds.mu.Lock()
	defer s.seeds.mu.Unlock()
	return slices.Clone(s.seeds.names)
}

// Rejoin starts a join through the remembered seeds in the background,
// resolving every name again, unless one is running, there are no seeds,
// or the last one started less than JoinConfig.Refresh ago. It reports
// whether it started one. A nil via connects, as Join does. A routing
// layer calls it when it is short of peers.
func (s *Socket) Rejoin(via JoinFunc) bool {
	if via == nil {
		via = s.connectVia
	}
	l := &s.seeds
	l.mu.Lock()
	if l.running || len(l.names) == 0 || (!l.last.IsZero() && time.Since(l.last) < s.cfg.join.Refresh) {
		l.mu.Unlock()
		return false
	}
	seeds := slices.Clone(l.names)
	l.running, l.last = true, time.Now()
	l.mu.Unlock()
	started := s.lc.Go(func() {
		defer func() {
			l.mu.Lock()
			l.running = false
			l.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(s.lc.Context(), s.cfg.join.Refresh)
		defer cancel()
		n, err := s.join(ctx, via, seeds)
		s.log.Debug("re-joined through the remembered seeds", "links", n, "err", err)
	})
	if !started {
		l.mu.Lock()
		l.running = false
		l.mu.Unlock()
	}
	return started
}

// joinTarget is one address to join through, and the seed it came from.
type joinTarget struct {
	seed, addr string
}

// join resolves seeds and joins through every address, at most Parallel
// at once. It returns the links formed and a *JoinError of the failures
// (nil if none failed).
func (s *Socket) join(ctx context.Context, via JoinFunc, seeds []string) (int, error) {
	cfg := s.cfg.join
	seeds = slices.Clone(seeds)
	for i := 0; i < len(seeds); i++ { // a seed given twice is joined once
		if slices.Contains(seeds[:i], seeds[i]) {
			seeds = slices.Delete(seeds, i, i+1)
			i--
		}
	}
	var failures []JoinFailure
	var targets []joinTarget
	seen := make(map[string]bool)
	for _, seed := range seeds {
		addrs, attempts, err := s.resolveSeed(ctx, seed)
		if err != nil {
			failures = append(failures, JoinFailure{Seed: seed, Attempts: attempts, Err: err})
			continue
		}
		for _, a := range addrs {
			if !seen[a] {
				seen[a] = true
				targets = append(targets, joinTarget{seed: seed, addr: a})
			}
		}
	}
	results := make([]JoinFailure, len(targets))
	linked := &joinedSignal{ch: make(chan struct{})} // some address joined: the others are not retried
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = JoinFailure{Seed: t.seed, Addr: t.addr, Err: fmt.Errorf("%w: join %s: %w", ErrTimeout, t.addr, ctx.Err())}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			attempts, err := s.tryAddr(ctx, via, t.addr, linked)
			results[i] = JoinFailure{Seed: t.seed, Addr: t.addr, Attempts: attempts, Err: err}
		}()
	}
	wg.Wait()
	joined := 0
	// Keep the failures in argument order: unresolved seeds and failed
	// addresses interleaved as the seeds were given.
	var ordered []JoinFailure
	for _, seed := range seeds {
		for _, f := range failures {
			if f.Seed == seed {
				ordered = append(ordered, f)
			}
		}
		for _, r := range results {
			if r.Seed != seed {
				continue
			}
			if r.Err == nil {
				joined++
			} else {
				ordered = append(ordered, r)
			}
		}
	}
	if joined > 0 {
		// A seed list often names this node too (a DNS name with a record
		// per member): that is no failure once the node has joined.
		ordered = slices.DeleteFunc(ordered, func(f JoinFailure) bool { return errors.Is(f.Err, ErrSelfConnect) })
	}
	if len(ordered) == 0 {
		return joined, nil
	}
	return joined, &JoinError{Failures: ordered}
}

// tryAddr joins through addr with up to Attempts tries, backing off
// between them; it gives up early on an error that another try cannot
// mend, and once another address has joined (linked): the node is in, the
// caller need not wait out the back-off of a dead address, and the
// re-join retries it when the node runs short of peers. It returns the
// tries made and the last error.
func (s *Socket) tryAddr(ctx context.Context, via JoinFunc, addr string, linked *joinedSignal) (int, error) {
	cfg := s.cfg.join
	wait := cfg.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err = via(actx, addr)
		cancel()
		if err == nil {
			linked.set()
			return attempt, nil
		}
		if attempt >= cfg.Attempts || !retryable(err) || s.isClosed() || linked.isSet() {
			return attempt, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-linked.ch:
			t.Stop()
			return attempt, err
		case <-ctx.Done():
			t.Stop()
			return attempt, err
		}
		wait = min(2*wait, cfg.MaxBackoff)
	}
}

// joinedSignal is closed once one address of a join has joined.
type joinedSignal struct {
	once sync.Once
	ch   chan struct{}
}

func (j *joinedSignal) set() { j.once.Do(func() { close(j.ch) }) }

func (j *joinedSignal) isSet() bool {
	select {
	case <-j.ch:
		return true
	default:
		return false
	}
}

// retryable reports whether another attempt may succeed where err failed:
// an address that did not answer or had no room may later; a node of
// another protocol, this node itself or a refusal of identity or
// authorisation will not.
func retryable(err error) bool {
	switch {
	case errors.Is(err, ErrProtocolMismatch), errors.Is(err, ErrSelfConnect), errors.Is(err, ErrIdentity),
		errors.Is(err, ErrNotAuthorized), errors.Is(err, ErrNotMeshsock), errors.Is(err, ErrClockSkew):
		return false
	}
	return true
}

// resolveSeed resolves seed ("host:port") to its addresses ("ip:port"),
// at most MaxAddrs, trying the resolver up to Attempts times. An IP
// literal resolves to itself.
func (s *Socket) resolveSeed(ctx context.Context, seed string) ([]string, int, error) {
	cfg := s.cfg.join
	host, port, err := net.SplitHostPort(seed)
	if err != nil || host == "" || port == "" {
		if err == nil {
			err = errors.New("missing host or port")
		}
		return nil, 0, fmt.Errorf("%w: seed %q: %w", ErrResolve, seed, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []string{net.JoinHostPort(ip.String(), port)}, 0, nil
	}
	wait := cfg.Backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		ips, err := s.cfg.resolver.LookupHost(actx, host)
		cancel()
		if err == nil && len(ips) == 0 {
			err = errors.New("no addresses")
		}
		if err == nil {
			var addrs []string
			for _, ip := range ips {
				if a, perr := netip.ParseAddr(ip); perr == nil {
					ip = a.Unmap().String()
				}
				addr := net.JoinHostPort(ip, port)
				if !slices.Contains(addrs, addr) {
					addrs = append(addrs, addr)
				}
				if len(addrs) == cfg.MaxAddrs {
					break
				}
			}
			return addrs, attempt, nil
		}
		err = fmt.Errorf("%w: %s: %w", ErrResolve, host, err)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, attempt, err // the name does not exist: no point asking again now
		}
		if attempt >= cfg.Attempts {
			return nil, attempt, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, attempt, err
		}
		wait = min(2*wait, cfg.MaxBackoff)
	}
}
