package base_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/internal/testnet"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestQuietByDefault: sockets made without WithLogger write nothing to the
// program's default logger, even when a handshake fails and a handler
// panics (both logged at INFO or above when a logger is given).
func TestQuietByDefault(t *testing.T) {
	var out syncBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	var socks []*base.Socket
	for range 2 {
		s, err := base.NewSocket("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		socks = append(socks, s)
	}
	a, b := socks[0], socks[1]
	b.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if string(m.Packets[0]) == "panic" {
			panic("handler bug")
		}
		return false
	}))
	// A handshake with something that is not meshsock fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			_, _ = nc.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			_ = nc.Close()
		}
	}()
	if _, err := a.Connect(ftCtx(t), ln.Addr().String()); err == nil {
		t.Fatal("a handshake with an HTTP server succeeded")
	}
	ab := ftConnect(t, a, b)
	if err := ab.Send(ftCtx(t), []byte("panic")); err != nil {
		t.Fatal(err)
	}
	ftExchange(t, ab, b, "after the panic")
	if b.Stats().HandlerPanics != 1 {
		t.Fatalf("HandlerPanics = %d, want 1", b.Stats().HandlerPanics)
	}
	if s := out.String(); s != "" {
		t.Errorf("the library wrote to the default logger without being given one:\n%s", s)
	}
}

// TestPanicStackReadable: a handler panic is logged with its stack as one
// attribute per frame, the panicking function first, instead of one long
// string of escaped newlines.
func TestPanicStackReadable(t *testing.T) {
	var out syncBuffer
	logger := slog.New(slog.NewTextHandler(&out, nil))
	a := testnet.NewBase(t, "127.0.0.1:0")
	b := testnet.NewBase(t, "127.0.0.1:0", base.WithLogger(logger))
	b.RegisterHandler(base.HandlerFunc(panickingHandler))
	ab := ftConnect(t, a, b)
	if err := ab.Send(ftCtx(t), []byte("panic")); err != nil {
		t.Fatal(err)
	}
	ftExchange(t, ab, b, "after the panic")
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "handler panicked") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no panic logged:\n%s", out.String())
	}
	if strings.Contains(line, `\n`) || strings.Contains(line, `\t`) {
		t.Errorf("the stack is an escaped multi-line string: %s", line)
	}
	if !strings.Contains(line, `stack.0="github.com/meshsock/meshsock/base_test.panickingHandler `) {
		t.Errorf("the first frame is not the panicking handler: %s", line)
	}
	if !strings.Contains(line, "stack.1=") {
		t.Errorf("the stack has one frame only: %s", line)
	}
}

func panickingHandler(m *base.Message) bool {
	if string(m.Packets[0]) == "panic" {
		panic("handler bug")
	}
	return false
}
