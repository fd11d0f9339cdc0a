package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshsock/meshsock/internal/testnet"
)

// syncBuffer is an io.Writer whose contents can be read while written.
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testnet.Eventually(t, 10*time.Second, cond, what)
}

func TestChatBetweenTwoNodes(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	aliceIn, aliceInW := io.Pipe()
	aliceOut := &syncBuffer{}
	aliceDone := make(chan error, 1)
	go func() { aliceDone <- run(ctx, aliceIn, aliceOut, "127.0.0.1:0", "", "alice", false) }()
	var aliceAddr string
	waitFor(t, "alice to listen", func() bool {
		_, rest, ok := strings.Cut(aliceOut.String(), "listening on ")
		if ok {
			aliceAddr, _, _ = strings.Cut(rest, " ")
		}
		return ok
	})

	bobIn, bobInW := io.Pipe()
	bobOut := &syncBuffer{}
	bobDone := make(chan error, 1)
	go func() { bobDone <- run(ctx, bobIn, bobOut, "127.0.0.1:0", aliceAddr, "bob", false) }()
	waitFor(t, "bob to join", func() bool { return strings.Contains(bobOut.String(), "joined through") })

	if _, err := io.WriteString(bobInW, "hello alice\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice to receive", func() bool { return strings.Contains(aliceOut.String(), "<bob> hello alice") })

	if _, err := io.WriteString(aliceInW, "/w bob psst\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to receive the whisper", func() bool {
		return strings.Contains(bobOut.String(), "<alice> (whisper) psst")
	})

	if _, err := io.WriteString(bobInW, "/quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-bobDone; err != nil {
		t.Fatalf("bob: %v", err)
	}
	bobInW.Close()   // lets bob's input reader finish, as the end of a process would
	aliceInW.Close() // end of input: alice leaves too
	if err := <-aliceDone; err != nil {
		t.Fatalf("alice: %v", err)
	}
}
