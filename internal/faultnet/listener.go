package faultnet

import (
	"context"
	"net"
	"slices"
	"sync"
)

// registry tracks the open connections a Listener or Dialer wrapped, in the
// order they were made; a connection leaves it when it is closed.
type registry struct {
	mu     sync.Mutex
	faults Faults
	conns  []*Conn
	count  uint64
}

func (r *registry) wrap(nc net.Conn) *Conn {
	r.mu.Lock()
	f := r.faults
	f.Seed += r.count // each connection its own, repeatable, random stream
	r.count++
	c := Wrap(nc, f)
	c.onClose = r.remove
	r.conns = append(r.conns, c)
	r.mu.Unlock()
	return c
}

func (r *registry) remove(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.conns, c); i >= 0 {
		r.conns = slices.Delete(r.conns, i, i+1)
	}
}

// Conns returns the open wrapped connections, oldest first.
func (r *registry) Conns() []*Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.conns)
}

// Count returns how many connections were wrapped in all.
func (r *registry) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int(r.count)
}

// SetFaults changes the initial faults of connections wrapped from now on.
func (r *registry) SetFaults(f Faults) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = f
}

// Listener wraps every accepted connection in a *Conn.
type Listener struct {
	net.Listener
	registry
}

// NewListener wraps ln; accepted connections start with faults f.
func NewListener(ln net.Listener, f Faults) *Listener {
	return &Listener{Listener: ln, registry: registry{faults: f}}
}

// Listen listens on a TCP address ("127.0.0.1:0") and wraps the listener.
func Listen(addr string, f Faults) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewListener(ln, f), nil
}

// Accept accepts the next connection and wraps it.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(nc), nil
}

// Dialer dials TCP connections and wraps them. Its DialContext method has
// the signature of base.DialFunc: base.WithDialer(d.DialContext).
type Dialer struct {
	// Dialer is the underlying dialer; its zero value is fine.
	Dialer net.Dialer
	registry
}

// NewDialer returns a Dialer whose connections start with faults f.
func NewDialer(f Faults) *Dialer {
	return &Dialer{registry: registry{faults: f}}
}

// DialContext dials addr and wraps the connection.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := d.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return d.wrap(nc), nil
}
