package base

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestConnectUnreachable: a failed dial matches ErrUnreachable and still
// carries the OS error; one that times out matches ErrTimeout too.
func TestConnectUnreachable(t *testing.T) {
	// A closed port on loopback refuses the dial.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	d := stNewAt(t, "")
	_, err = d.Connect(stCtx(t), closed)
	var op *net.OpError
	if !errors.Is(err, ErrUnreachable) || !errors.As(err, &op) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Connect to a closed port = %v; want ErrUnreachable wrapping the *net.OpError", err)
	}
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotMeshsock) {
		t.Errorf("Connect to a closed port = %v; want no timeout, no ErrNotMeshsock", err)
	}

	// The caller's context ends while the dial hangs.
	hang := func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	}
	ctx, cancel := context.WithTimeout(stCtx(t), 20*time.Millisecond)
	defer cancel()
	_, err = stNewAt(t, "", WithDialer(hang)).Connect(ctx, closed)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrUnreachable) || !errors.As(err, &op) {
		t.Errorf("dial cut short by the context = %v; want ErrTimeout and ErrUnreachable wrapping the *net.OpError", err)
	}

	// The dialer times out on its own (its Timeout), the context still live.
	timesOut := func(_ context.Context, network, addr string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
	}
	_, err = stNewAt(t, "", WithDialer(timesOut)).Connect(stCtx(t), closed)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrUnreachable) || !errors.As(err, &op) {
		t.Errorf("dial that timed out = %v; want ErrTimeout and ErrUnreachable wrapping the *net.OpError", err)
	}
}

// TestNewSocketListenFails: a listen that fails (address in use, bad
// address) matches ErrListen and still carries the OS error.
func TestNewSocketListenFails(t *testing.T) {
	taken := stNew(t).Addr().String()
	s, err := NewSocket(taken, WithLogger(stLogger()))
	var op *net.OpError
	if !errors.Is(err, ErrListen) || !errors.As(err, &op) || !errors.Is(err, syscall.EADDRINUSE) || s != nil {
		t.Errorf("NewSocket on a port in use = %v, %v; want ErrListen wrapping the *net.OpError", s, err)
	}
	for _, addr := range []string{"127.0.0.1:99999", "127.0.0.1"} {
		if s, err := NewSocket(addr, WithLogger(stLogger())); !errors.Is(err, ErrListen) || s != nil {
			t.Errorf("NewSocket(%q) = %v, %v; want ErrListen", addr, s, err)
		}
	}
	if _, err := NewSocket(taken, WithMaxConns(0)); errors.Is(err, ErrListen) || !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad option = %v; want ErrInvalidOption only", err)
	}
}
