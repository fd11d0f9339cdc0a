package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/testnet"
	"github.com/meshsock/meshsock/protocol"
)

type addArgs struct {
	A, B int
}

func addHandler(_ context.Context, _ protocol.NodeID, args Decoder) (any, error) {
	var a addArgs
	if err := args.Decode(&a); err != nil {
		return nil, err
	}
	return a.A + a.B, nil
}

// line starts n nodes in a line (discovery off: whatever is not a
// neighbour is reached through the mesh).
func line(t *testing.T, n int, opts ...Option) *cluster {
	c := startCluster(t, n, opts...)
	c.wire(testnet.Line(n))
	return c
}

func TestCallAcrossHops(t *testing.T) {
	c := line(t, 5) // 0-1-2-3-4: four hops
	from, to := c.nodes[0], c.nodes[4]
	if err := to.Handle("add", addHandler); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	var sum int
	if err := from.Call(ctx, to.ID(), "add", addArgs{2, 3}, &sum); err != nil {
		t.Fatal(err)
	}
	if sum != 5 {
		t.Fatalf("sum %d, want 5", sum)
	}
	// It went through the mesh, hop by hop, not over a new link.
	if st := from.Stats(); len(from.Peers()) != 1 || st.RoutedSent == 0 {
		t.Fatalf("peers %d, routed %d", len(from.Peers()), st.RoutedSent)
	}

	// Built-ins.
	var echo map[string]int
	if err := from.Call(ctx, to.ID(), TagPassThrough, map[string]int{"x": 1}, &echo); err != nil || echo["x"] != 1 {
		t.Fatalf("pass_through: %v, %v", echo, err)
	}
	var tags []string
	if err := from.Call(ctx, to.ID(), TagTags, nil, &tags); err != nil || fmt.Sprint(tags) != "[add info pass_through tags]" {
		t.Fatalf("tags: %v, %v", tags, err)
	}
	var info NodeInfo
	if err := from.Call(ctx, to.ID(), TagInfo, nil, &info); err != nil {
		t.Fatal(err)
	}
	rec, err := protocol.UnmarshalRecord(info.Record)
	if err != nil || info.ID != to.ID().String() || rec.Verify() != nil {
		t.Fatalf("info %+v: %v", info, err)
	}

	// A plain request, answered with Reply.
	to.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if m.Flag != flags.AppRequest {
			return false
		}
		_ = m.Reply(context.Background(), append([]byte("re: "), m.Packets[0]...))
		return true
	}))
	ans, err := from.Request(ctx, to.ID(), []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	if string(ans.Packets[0]) != "re: ping" || ans.Sender != to.ID() || ans.Flag != flags.AppResponse {
		t.Fatalf("answer %q from %s flag %s", ans.Packets[0], ans.Sender.Short(), ans.Flag)
	}

	// A result that does not decode into the target.
	var wrong string
	err = from.Call(ctx, to.ID(), "add", addArgs{1, 1}, &wrong)
	var de *DecodeError
	if !errors.As(err, &de) || !errors.Is(err, ErrBadValue) {
		t.Fatalf("decode into string: %v", err)
	}
	// Arguments the handler cannot read: a RemoteError saying so.
	var re *RemoteError
	if err := from.Call(ctx, to.ID(), "add", "not a struct", &sum); !errors.As(err, &re) || !re.BadArgs {
		t.Fatalf("bad args: %v", err)
	}
}

func TestCallUnknownTagOneRoundTrip(t *testing.T) {
	c := line(t, 3)
	from, to := c.nodes[0], c.nodes[2]
	ctx := ctxT(t, 30*time.Second)
	// Warm up the path.
	if err := from.Call(ctx, to.ID(), TagPassThrough, 1, nil); err != nil {
		t.Fatal(err)
	}
	// Counted by kind, not as whispers: maintenance may swap peer lists
	// meanwhile.
	sentBefore, answeredBefore := from.Stats().RequestsSent, to.Stats().AnswersSent
	err := from.Call(ctx, to.ID(), "nope", nil, nil)
	if !errors.Is(err, ErrUnknownTag) {
		t.Fatalf("err %v, want ErrUnknownTag", err)
	}
	// One request out, one answer back: a single round trip.
	if d := from.Stats().RequestsSent - sentBefore; d != 1 {
		t.Fatalf("caller sent %d messages, want 1", d)
	}
	if d := to.Stats().AnswersSent - answeredBefore; d != 1 {
		t.Fatalf("callee sent %d messages, want 1", d)
	}
	if to.Stats().UnknownTags != 1 || from.Stats().RequestTimeouts != 0 {
		t.Fatalf("unknown tags %d, timeouts %d", to.Stats().UnknownTags, from.Stats().RequestTimeouts)
	}
	// Bad tags fail locally.
	for _, tag := range []string{"", string(make([]byte, protocol.MaxTagLen+1)), "a\nb"} {
		if err := from.Call(ctx, to.ID(), tag, nil, nil); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("tag %q: %v", tag, err)
		}
		if err := to.Handle(tag, addHandler); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("Handle %q: %v", tag, err)
		}
	}
	if err := to.Handle(TagInfo, addHandler); !errors.Is(err, ErrInvalidTag) {
		t.Errorf("replacing a built-in: %v", err)
	}
}

func TestCallRemoteError(t *testing.T) {
	c := line(t, 2)
	from, to := c.nodes[0], c.nodes[1]
	if err := to.Handle("boom", func(context.Context, protocol.NodeID, Decoder) (any, error) {
		panic("kaboom")
	}); err != nil {
		t.Fatal(err)
	}
	if err := to.Handle("fail", func(context.Context, protocol.NodeID, Decoder) (any, error) {
		return nil, errors.New("no such thing")
	}); err != nil {
		t.Fatal(err)
	}
	if err := to.Handle("add", addHandler); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	var re *RemoteError
	err := from.Call(ctx, to.ID(), "boom", nil, nil)
	if !errors.As(err, &re) || !re.Panic || re.Message != "kaboom" || re.Node != to.ID() || re.Tag != "boom" {
		t.Fatalf("panic: %v", err)
	}
	err = from.Call(ctx, to.ID(), "fail", nil, nil)
	if !errors.As(err, &re) || re.Panic || re.Message != "no such thing" {
		t.Fatalf("error: %v", err)
	}
	// The remote survived and keeps serving.
	for i := 0; i < 3; i++ {
		var sum int
		if err := from.Call(ctx, to.ID(), "add", addArgs{i, 1}, &sum); err != nil || sum != i+1 {
			t.Fatalf("after the panic: %d, %v", sum, err)
		}
	}
	if st := to.Stats(); st.CallPanics != 1 || st.CallErrors != 1 {
		t.Fatalf("panics %d, errors %d", st.CallPanics, st.CallErrors)
	}
}

func TestCallsConcurrent(t *testing.T) {
	const callers, perCaller = 8, 1250
	c := startCluster(t, callers+1,
		WithMaxCallsPerCaller(perCaller), WithMaxCalls(callers*perCaller), WithMaxPendingCalls(perCaller))
	c.wire(testnet.Star(callers + 1)) // node 0 serves, 1..8 call
	server := c.nodes[0]
	if err := server.Handle("add", addHandler); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 120*time.Second)
	var wg sync.WaitGroup
	var bad atomic.Int64
	errs := make(chan error, 1)
	for i := 1; i <= callers; i++ {
		for j := 0; j < perCaller; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var sum int
				err := c.nodes[i].Call(ctx, server.ID(), "add", addArgs{i * 100000, j}, &sum)
				if err == nil && sum != i*100000+j {
					err = fmt.Errorf("caller %d call %d: got %d", i, j, sum)
				}
				if err != nil {
					bad.Add(1)
					select {
					case errs <- err:
					default:
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed; first: %v", n, callers*perCaller, <-errs)
	}
	if st := server.Stats(); st.CallsServed != callers*perCaller {
		t.Fatalf("served %d", st.CallsServed)
	}
}

func TestPendingCallsBound(t *testing.T) {
	c := startCluster(t, 2, WithMaxPendingCalls(2))
	c.wire(testnet.Line(2))
	from, to := c.nodes[0], c.nodes[1]
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	if err := to.Handle("wait", func(ctx context.Context, _ protocol.NodeID, _ Decoder) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "done", nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s string
			if err := from.Call(ctx, to.ID(), "wait", nil, &s); err != nil || s != "done" {
				t.Errorf("waiting call: %q, %v", s, err)
			}
		}()
	}
	<-started
	<-started
	if err := from.Call(ctx, to.ID(), "wait", nil, nil); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("third call: %v, want ErrTooManyRequests", err)
	}
	if _, err := from.Request(ctx, to.ID(), []byte("x")); !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("request: %v, want ErrTooManyRequests", err)
	}
	close(release)
	wg.Wait()
	// A request nobody answers times out and is forgotten.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := from.Request(short, to.ID(), []byte("unanswered")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered: %v", err)
	}
	if st := from.Stats(); st.PendingCalls != 0 || st.RequestTimeouts != 1 {
		t.Fatalf("pending %d, timeouts %d", st.PendingCalls, st.RequestTimeouts)
	}
}

func TestCallBusy(t *testing.T) {
	c := startCluster(t, 2, WithMaxCallsPerCaller(1))
	c.wire(testnet.Line(2))
	from, to := c.nodes[0], c.nodes[1]
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	if err := to.Handle("wait", func(ctx context.Context, _ protocol.NodeID, _ Decoder) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- from.Call(ctx, to.ID(), "wait", nil, nil) }()
	<-started
	if err := from.Call(ctx, to.ID(), "wait", nil, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("second call: %v, want ErrBusy", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if to.Stats().CallsBusy != 1 {
		t.Fatalf("busy %d", to.Stats().CallsBusy)
	}
}

func TestLateAndDuplicateAnswers(t *testing.T) {
	c := line(t, 2)
	from, to := c.nodes[0], c.nodes[1]
	got := make(chan *Message, 1)
	to.RegisterHandler(base.HandlerFunc(func(m *Message) bool {
		if m.Flag == flags.AppRequest {
			got <- m
			return true
		}
		return false
	}))
	ctx := ctxT(t, 30*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := from.Request(ctx, to.ID(), []byte("q"))
		done <- err
	}()
	m := <-got
	if err := m.Reply(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The same message cannot be answered twice…
	if err := m.Reply(ctx, []byte("again")); !errors.Is(err, ErrAnswered) {
		t.Fatalf("second reply: %v", err)
	}
	// …and an answer that comes anyway (sent by hand) is dropped, counted.
	hdr := protocol.MarshalAppResponse(&protocol.AppResponse{ID: m.Route.(*appCall).id})
	conn, _ := to.Base().Conn(from.ID())
	if err := conn.SendMessage(ctx, flags.Whisper, flags.AppResponse, hdr, []byte("dup")); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return from.Stats().LateAnswers == 1 }, "the duplicate to be counted")
}

// TestForgedAnswer: a neighbour of the caller that knows the ID of its
// request (as any node the request passes does) answers for the node
// asked, as itself and in that node's name; none of it is taken, and the
// real answer is.
func TestForgedAnswer(t *testing.T) {
	c := line(t, 3) // 0-1-2: node 0 calls node 2 through node 1
	from, to := c.nodes[0], c.nodes[2]
	release := make(chan struct{})
	if err := to.Handle("slow", func(ctx context.Context, _ protocol.NodeID, _ Decoder) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "real", nil
	}); err != nil {
		t.Fatal(err)
	}
	// The attacker: a bare base socket linked to the caller.
	x := testnet.NewBase(t, "")
	c.extras = append(c.extras, x)
	x.RegisterHandler(base.HandlerFunc(func(m *Message) bool { return true }))
	ctx := ctxT(t, 30*time.Second)
	conn, err := x.Connect(ctx, from.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, func() bool { return len(from.Peers()) == 2 }, "the attacker to be linked")

	done := make(chan error, 1)
	var result string
	go func() { done <- from.Call(ctx, to.ID(), "slow", nil, &result) }()
	// The request goes hop by hop through node 1, not through the
	// attacker; give the attacker its ID anyway: the worst case.
	var id uint64
	testnet.Eventually(t, 10*time.Second, func() bool {
		from.reqs.mu.Lock()
		defer from.reqs.mu.Unlock()
		for k := range from.reqs.pending {
			id = k
			return true
		}
		return false
	}, "the call to be pending")
	testnet.Eventually(t, 10*time.Second, func() bool { return from.hops.lookup(to.ID()) != nil },
		"the route search's answer to teach the way to the target")
	forged := protocol.MarshalAppResponse(&protocol.AppResponse{ID: id, Body: mustEncode(t, "forged")})
	// 1. As itself, a whisper: proven, but not from the node asked.
	if err := conn.SendMessage(ctx, flags.Whisper, flags.AppResponse, forged); err != nil {
		t.Fatal(err)
	}
	// 2. In the target's name, a whisper on its own link: not proven.
	e := protocol.Envelope{Type: flags.Whisper, Sub: flags.AppResponse, Sender: to.ID(), Seq: 1,
		Time: time.Now().UnixNano(), HopLimit: 1, Packets: [][]byte{forged}}
	if err := conn.SendEnvelope(ctx, 0, e.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	// 3. In the target's name, through the mesh, unsigned: refused before
	// anything takes it.
	// (Its seq is above the target's, which start at the clock: the
	// seen-state, which has the target's route answer, does not shed it
	// as behind before its signature is checked.)
	b := protocol.Envelope{Type: flags.Broadcast, Sub: flags.AppResponse, Sender: to.ID(), Seq: 1 << 62,
		Time: time.Now().UnixNano(), HopLimit: 8, Packets: [][]byte{idBytes(from.ID()), forged}}
	if err := conn.SendEnvelope(ctx, 0, b.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	// 4. In the target's name, routed, unsigned: likewise.
	r := protocol.Envelope{Type: flags.Whisper, Sub: flags.Routed, Sender: to.ID(), Seq: 1<<62 + 1,
		Time: time.Now().UnixNano(), HopLimit: 8,
		Packets: [][]byte{idBytes(from.ID()), {byte(flags.AppResponse)}, forged}}
	if err := conn.SendEnvelope(ctx, 0, r.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	// The first is refused by the request's check, the others (not signed
	// by the node they name) by base, before anything could take them.
	testnet.Eventually(t, 10*time.Second, func() bool {
		st := from.Stats()
		return st.RefusedAnswers == 1 && st.BadSignatures >= 3
	}, "the forged answers to be refused")
	if st := from.Stats(); st.LateAnswers != 0 {
		t.Fatalf("late answers %d", st.LateAnswers)
	}
	close(release)
	if err := <-done; err != nil || result != "real" {
		t.Fatalf("result %q, %v", result, err)
	}
}

func idBytes(id protocol.NodeID) []byte { return id[:] }

func mustEncode(t *testing.T, v any) []byte {
	b, err := EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTypedValues(t *testing.T) {
	c := line(t, 2)
	from, to := c.nodes[0], c.nodes[1]
	type point struct{ X, Y int }
	got := make(chan *Message, 2)
	to.RegisterHandler(base.HandlerFunc(func(m *Message) bool { got <- m; return true }))
	ctx := ctxT(t, 30*time.Second)
	if err := from.SendValue(ctx, point{1, 2}); err != nil {
		t.Fatal(err)
	}
	var p point
	if err := DecodeMessage(<-got, &p); err != nil || p != (point{1, 2}) {
		t.Fatalf("%+v, %v", p, err)
	}
	if err := from.WhisperValue(ctx, to.ID(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	var n int
	err := DecodeMessage(<-got, &n)
	var de *DecodeError
	if !errors.As(err, &de) || !errors.Is(err, ErrBadValue) || de.Target.Kind().String() != "int" {
		t.Fatalf("decoding a list into an int: %v", err)
	}
	if _, err := EncodeValue(make(chan int)); !errors.Is(err, ErrBadValue) {
		t.Fatalf("encoding a channel: %v", err)
	}
}
