package base

import (
	"context"
	"testing"
	"time"

	"github.com/meshsock/meshsock/flags"
)

// TestInject: a locally made message goes to the user handlers (not the
// layer's Handle), then to Recv, with or without a connection, and Reply on
// it goes through the layer's Reply.
func TestInject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var builtin, replied int
	s, err := NewLayered("127.0.0.1:0", Layer{
		Handle: func(*Message) bool { builtin++; return true },
		Reply: func(_ context.Context, m *Message, packets [][]byte) error {
			replied++
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	unsub := s.Subscribe(func(Event) {}) // events must cope with a nil Conn
	defer unsub()
	claimed := 0
	s.RegisterHandler(HandlerFunc(func(m *Message) bool {
		if string(m.Packets[0]) == "claim" {
			claimed++
			return true
		}
		return false
	}))
	s.Inject(&Message{Type: flags.Whisper, Flag: flags.Whisper, Packets: [][]byte{[]byte("claim")}})
	s.Inject(&Message{Type: flags.Whisper, Flag: flags.Whisper, Packets: [][]byte{[]byte("queue")}})
	m, err := s.Recv(ctx)
	if err != nil || string(m.Packets[0]) != "queue" || m.Conn != nil {
		t.Fatalf("Recv: %v, %v", m, err)
	}
	if err := m.Reply(ctx, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	if builtin != 0 || claimed != 1 || replied != 1 {
		t.Fatalf("built-in handler ran %d times, user handler claimed %d, replier ran %d; want 0, 1, 1", builtin, claimed, replied)
	}
}

// TestPrefilter: a prefilter sees every message before the handler chain,
// and what it drops reaches neither handlers nor Recv.
func TestPrefilter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var filtered, handled int
	recv, err := NewLayered("127.0.0.1:0", Layer{Prefilter: func(m *Message) bool {
		filtered++
		return string(m.Packets[0]) == "drop"
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close(ctx)
	recv.RegisterHandler(HandlerFunc(func(m *Message) bool { handled++; return false }))
	send, err := NewSocket("")
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close(ctx)
	conn, err := send.Connect(ctx, recv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"drop", "keep", "drop", "last"} {
		if err := conn.Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"keep", "last"} {
		m, err := recv.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Packets[0]) != want {
			t.Fatalf("Recv got %q, want %q", m.Packets[0], want)
		}
	}
	// The reader ran the prefilter for all four before delivering "last".
	if filtered != 4 || handled != 2 {
		t.Fatalf("prefilter saw %d, handlers saw %d; want 4 and 2", filtered, handled)
	}
}
