// Package testnet holds helpers that tests of every layer share: waiting
// for a condition, topology builders generic over the socket type, and
// sockets started with a test logger and closed when the test ends.
package testnet

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Polling backoff: the first check is immediate, then the interval grows
// from minPoll to maxPoll.
const (
	minPoll = time.Millisecond
	maxPoll = 20 * time.Millisecond
)

// WaitFor polls cond with a short, growing backoff until it returns true
// (nil) or ctx ends (ctx's error, wrapped). cond is checked once more after
// ctx ends, so a condition that became true at the last moment still counts.
func WaitFor(ctx context.Context, cond func() bool) error {
	wait := minPoll
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			if cond() {
				return nil
			}
			return fmt.Errorf("testnet: condition not met: %w", ctx.Err())
		case <-timer.C:
		}
		wait = min(wait*3/2+time.Millisecond/2, maxPoll)
		timer.Reset(wait)
	}
}

// Eventually fails the test unless cond becomes true within timeout. The
// optional msgAndArgs describe what was awaited: a format string and its
// arguments (or any single value).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := WaitFor(ctx, cond); err != nil {
		t.Fatalf("condition not met within %v: %s", timeout, message(msgAndArgs))
	}
}

func message(msgAndArgs []any) string {
	switch {
	case len(msgAndArgs) == 0:
		return "(no description)"
	case len(msgAndArgs) == 1:
		return fmt.Sprint(msgAndArgs[0])
	}
	if format, ok := msgAndArgs[0].(string); ok {
		return fmt.Sprintf(format, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs...)
}
