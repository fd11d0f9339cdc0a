package main

import (
	"bytes"
	"context"
	"io"
	"net"
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

// chatter is one chat run by a test: its input, its output, its result
// and the address it listens on.
type chatter struct {
	in   *io.PipeWriter
	out  *syncBuffer
	done chan error
	addr string
}

// startChat runs a chat named name joining through peers and waits until
// it listens.
func startChat(t *testing.T, ctx context.Context, peers, name string) *chatter {
	t.Helper()
	r, w := io.Pipe()
	c := &chatter{in: w, out: &syncBuffer{}, done: make(chan error, 1)}
	go func() { c.done <- run(ctx, r, c.out, "127.0.0.1:0", peers, name, false) }()
	waitFor(t, name+" to listen", func() bool {
		_, rest, ok := strings.Cut(c.out.String(), "listening on ")
		if ok {
			c.addr, _, _ = strings.Cut(rest, " ")
		}
		return ok
	})
	return c
}

func TestChatBetweenTwoNodes(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	alice := startChat(t, ctx, "", "alice")
	aliceInW, aliceOut, aliceDone, aliceAddr := alice.in, alice.out, alice.done, alice.addr

	bob := startChat(t, ctx, aliceAddr, "bob")
	bobInW, bobOut, bobDone := bob.in, bob.out, bob.done
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

// TestChatRoughEdges: /help lists the commands instead of broadcasting
// "/help"; a dead -peer address is reported and the next one used; others
// joining and leaving are announced; a line over maxLine is refused with a
// message and the chat goes on; an unknown command is an error message.
func TestChatRoughEdges(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	alice := startChat(t, ctx, "", "alice")
	aliceInW, aliceOut, aliceDone, aliceAddr := alice.in, alice.out, alice.done, alice.addr

	// A port nothing listens on, then alice.
	dead := deadAddr(t)
	bob := startChat(t, ctx, dead+","+aliceAddr, "bob")
	bobInW, bobOut, bobDone := bob.in, bob.out, bob.done
	waitFor(t, "bob to join through alice after the dead address", func() bool {
		s := bobOut.String()
		return strings.Contains(s, "could not join through "+dead) && strings.Contains(s, "joined through "+aliceAddr)
	})
	waitFor(t, "alice to see bob join", func() bool { return strings.Contains(aliceOut.String(), "* bob joined") })

	if _, err := io.WriteString(bobInW, "/help\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to see the help", func() bool { return strings.Contains(bobOut.String(), "/w <name or id> <text>") })

	long := strings.Repeat("x", maxLine+10)
	if _, err := io.WriteString(bobInW, long+"\n/nope\nstill here\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice to get the line after the long one", func() bool { return strings.Contains(aliceOut.String(), "<bob> still here") })
	if s := bobOut.String(); !strings.Contains(s, "line too long") || !strings.Contains(s, "unknown command /nope") {
		t.Errorf("bob was not told about the long line and the unknown command:\n%s", s)
	}
	if s := aliceOut.String(); strings.Contains(s, "<bob> /help") || strings.Contains(s, "xxxx") || strings.Contains(s, "<bob> /nope") {
		t.Errorf("a command or the long line was broadcast:\n%s", s)
	}

	if _, err := io.WriteString(bobInW, "/quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-bobDone; err != nil {
		t.Fatalf("bob: %v", err)
	}
	bobInW.Close()
	waitFor(t, "alice to see bob leave", func() bool { return strings.Contains(aliceOut.String(), "* bob left") })
	aliceInW.Close()
	if err := <-aliceDone; err != nil {
		t.Fatalf("alice: %v", err)
	}
}

// TestChatNoPeerAnswers: when every -peer address is dead, the chat says
// so and exits with an error naming each.
func TestChatNoPeerAnswers(t *testing.T) {
	defer goleak.VerifyNone(t)
	a, b := deadAddr(t), deadAddr(t)
	out := &syncBuffer{}
	err := run(context.Background(), strings.NewReader(""), out, "127.0.0.1:0", a+", "+b, "carol", false)
	if err == nil || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Fatalf("run: %v; want an error naming both addresses", err)
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
