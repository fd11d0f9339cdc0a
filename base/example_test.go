package base_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
)

// Two sockets on the loopback interface: one dials the other, sends a
// message and the other receives it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	alice, err := base.NewSocket("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close(ctx)
	bob, err := base.NewSocket("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close(ctx)

	conn, err := alice.Connect(ctx, bob.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.Send(ctx, []byte("hello"), []byte("bob")); err != nil {
		log.Fatal(err)
	}

	msg, err := bob.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, %s\n", msg.Packets[0], msg.Packets[1])
	fmt.Println("from alice:", msg.Sender == alice.ID())
	// Output:
	// hello, bob
	// from alice: true
}

// Handlers run in registration order; the first that returns true claims
// the message. Messages no handler claims go to Recv.
func ExampleSocket_RegisterHandler() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	server, err := base.NewSocket("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close(ctx)

	const echo = flags.FirstUser // an application flag
	server.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if m.Flag != echo {
			return false // not ours: let the next handler look
		}
		fmt.Printf("echo handler claimed %q\n", m.Packets[0])
		return true
	}))
	server.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		fmt.Printf("logging handler saw %q\n", m.Packets[0])
		return false
	}))

	client, err := base.NewSocket("")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)
	conn, err := client.Connect(ctx, server.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.SendMessage(ctx, flags.Whisper, echo, []byte("ping")); err != nil {
		log.Fatal(err)
	}
	if err := conn.Send(ctx, []byte("plain")); err != nil {
		log.Fatal(err)
	}

	// Messages from one connection are handled in order, so by the time
	// "plain" reaches Recv both handlers have printed.
	msg, err := server.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("Recv got %q\n", msg.Packets[0])
	// Output:
	// echo handler claimed "ping"
	// logging handler saw "plain"
	// Recv got "plain"
}

// Reply sends packets back to the sender of a message.
func ExampleMessage_Reply() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	server, err := base.NewSocket("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close(ctx)
	server.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		reply := append([]byte("re: "), m.Packets[0]...)
		if err := m.Reply(ctx, reply); err != nil {
			fmt.Println("reply failed:", err)
		}
		return true
	}))

	client, err := base.NewSocket("")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close(ctx)
	conn, err := client.Connect(ctx, server.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	if err := conn.Send(ctx, []byte("question")); err != nil {
		log.Fatal(err)
	}
	answer, err := client.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (from the server: %v)\n", answer.Packets[0], answer.Sender == server.ID())
	// Output:
	// re: question (from the server: true)
}
