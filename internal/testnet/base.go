package testnet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
)

// CloseTimeout bounds how long the cleanup of StartBase and NewBase waits
// for the sockets to close.
const CloseTimeout = 10 * time.Second

// Logger returns a logger that writes to t.Log (shown for failed tests and
// with -v): debug and up with -v, info and up otherwise. It stops writing
// when the test's cleanups have run, so a late log line cannot panic the
// test binary.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return LoggerAt(t, level)
}

// LoggerAt is Logger with an explicit minimum level.
func LoggerAt(t testing.TB, level slog.Level) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.stop) // registered first, so it runs after later cleanups
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	}))
}

// tWriter sends each log record (one Write each) to t.Log.
type tWriter struct {
	mu   sync.RWMutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Discard is a logger that drops everything.
var Discard = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError + 100}))

// NewBase creates one base socket listening on addr ("" to only dial, or
// "" with base.WithListener) with a test logger (the options may replace
// it), and closes it when the test ends.
func NewBase(t testing.TB, addr string, opts ...base.Option) *base.Socket {
	t.Helper()
	s, err := base.NewSocket(addr, append([]base.Option{base.WithLogger(Logger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("testnet: NewSocket(%q): %v", addr, err)
	}
	t.Cleanup(func() { closeAll(t, []*base.Socket{s}) })
	return s
}

// StartBase creates n base sockets listening on 127.0.0.1 with a test
// logger (the options may replace it) and closes them all, concurrently,
// when the test ends.
func StartBase(t testing.TB, n int, opts ...base.Option) []*base.Socket {
	t.Helper()
	logger := Logger(t)
	socks := make([]*base.Socket, 0, n)
	t.Cleanup(func() { closeAll(t, socks) })
	for i := 0; i < n; i++ {
		s, err := base.NewSocket("127.0.0.1:0", append([]base.Option{base.WithLogger(logger.With("i", i))}, opts...)...)
		if err != nil {
			t.Fatalf("testnet: NewSocket %d: %v", i, err)
		}
		socks = append(socks, s)
	}
	return socks
}

func closeAll(t testing.TB, socks []*base.Socket) {
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(socks))
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("testnet: closing socket %d: %v", i, err)
		}
	}
}

// ConnectBase wires base sockets along edges (see Wire) and returns the
// first error. Each edge dials from socks[from] to socks[to].
func ConnectBase(ctx context.Context, socks []*base.Socket, edges [][2]int) error {
	return Wire(ctx, len(socks), edges, func(ctx context.Context, from, to int) error {
		addr := socks[to].Addr()
		if addr == nil {
			return fmt.Errorf("socket %d does not listen", to)
		}
		_, err := socks[from].Connect(ctx, addr.String())
		return err
	})
}
