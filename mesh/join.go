package mesh

import (
	"context"

	"github.com/meshsock/meshsock/base"
)

// Seed lists: see base/join.go, which mesh and chord share.
type (
	// Resolver resolves seed names (WithResolver); *net.Resolver is one.
	Resolver = base.Resolver
	// JoinConfig bounds Join and the re-resolution of seeds (WithJoin).
	JoinConfig = base.JoinConfig
	// JoinError is the error of a Join that formed no link: every seed
	// that did not resolve and every address that failed, with its error.
	JoinError = base.JoinError
	// JoinFailure is one failure of a JoinError.
	JoinFailure = base.JoinFailure
)

// ErrResolve: Join could not resolve a seed's host name.
var ErrResolve = base.ErrResolve

// WithResolver sets the resolver Join uses for seed names. Default:
// net.DefaultResolver.
func WithResolver(r Resolver) Option {
	return func(c *config) error { c.baseOpts = append(c.baseOpts, base.WithResolver(r)); return nil }
}

// WithJoin sets the bounds of Join and of the re-resolution of seeds; zero
// fields keep their defaults (base.JoinConfig: 3 attempts per address,
// back-off from 250 ms to 2 s, 10 s per attempt, 8 addresses at once, 16
// addresses per name, 64 seeds remembered, re-resolution at most every
// 30 s).
func WithJoin(cfg JoinConfig) Option {
	return func(c *config) error { c.baseOpts = append(c.baseOpts, base.WithJoin(cfg)); return nil }
}

// Join joins the mesh through seeds, "host:port" each. Every host name is
// resolved (WithResolver) to all its addresses, IPv4 and IPv6 — a DNS name
// with one record per member, such as a Kubernetes headless service, gives
// all of them — and each address is dialled, with retries and back-off
// (WithJoin), all within ctx; once one address has joined, a failed one is
// not tried again, so a dead seed does not hold Join up. It returns how
// many links it formed; after each, the two nodes swap peer lists as after
// Connect.
//
// Partial failure is success: the error is nil when at least one link
// formed (the failed addresses are logged at level Info). When none formed
// the error is a *JoinError that lists every seed that did not resolve and
// every address that failed, with its error; errors.Is looks through all
// of them (ErrResolve, ErrUnreachable, ErrConnLimit, ErrProtocolMismatch,
// ...), and the whole also matches ErrTimeout when ctx ended first. After
// Close it fails with ErrClosed.
//
// The node remembers its seeds. When it is short of peers — no
// neighbour, or (with discovery on) a free outgoing slot and no known
// member left to dial — it joins through them again, resolving every name
// anew, so a name whose records changed leads to the new members; at most
// once per JoinConfig.Refresh (30 s by default).
func (s *Socket) Join(ctx context.Context, seeds ...string) (joined int, err error) {
	if s.lc.Closed() {
		return 0, ErrClosed
	}
	return s.base.Join(ctx, seeds...)
}

// rejoinVia joins through one address of a remembered seed: as Connect,
// except that an address a neighbour advertises counts as joined without a
// dial. A small mesh is always short of peers by the rule above, and would
// otherwise dial its seed neighbours again (and drop the duplicate link)
// at every re-join. A neighbour that claims a seed's address only spares
// that dial; the node is not isolated, and the other addresses are dialled.
func (s *Socket) rejoinVia(ctx context.Context, addr string) error {
	for _, c := range *s.neighbours.Load() {
		if c.Peer().Addr == addr && c.Err() == nil {
			return nil
		}
	}
	_, err := s.base.Connect(ctx, addr)
	return err
}
