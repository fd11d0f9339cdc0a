package chord

import "github.com/meshsock/meshsock/base"

// Seed lists: see base/join.go, which chord and mesh share.
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
