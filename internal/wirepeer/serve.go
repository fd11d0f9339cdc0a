package wirepeer

import (
	"net"
	"testing"
	"time"
)

// ServeOnce listens on loopback and runs serve on the first connection
// accepted, with a deadline of timeout on it; the listener and the
// connection close, and serve has returned, when the test ends. It returns
// the listener's address: the place for a hand-written peer that answers a
// dial.
func ServeOnce(t testing.TB, timeout time.Duration, serve func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(timeout))
		serve(nc)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}
