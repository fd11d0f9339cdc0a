package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// drain reads sub until it is empty, counting payloads.
func drain(t *testing.T, sub *Subscription, into map[string]int) {
	t.Helper()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		m, err := sub.Next(done)
		if err != nil {
			if !errors.Is(err, ErrTimeout) {
				t.Fatal(err)
			}
			return
		}
		into[string(m.Packets[0])]++
	}
}

// TestTopicExactlyOnce: in a 32-node mesh with subscribers on a third of
// the nodes, every publish reaches every subscriber exactly once (the
// publisher's own subscription included) and no other node delivers it;
// a subscription to another topic gets none of it.
func TestTopicExactlyOnce(t *testing.T) {
	const n, perPub = 32, 20
	c := startCluster(t, n)
	c.wire(testnet.Random(n, 4, rand.New(rand.NewPCG(32, 1))))
	subs := make(map[int]*Subscription)
	for i := 0; i < n; i += 3 {
		sub, err := c.nodes[i].SubscribeTopic("news")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs[i] = sub
	}
	other, err := c.nodes[1].SubscribeTopic("sport")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	pubs := []int{0, 1, 17, 31}
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < perPub; k++ {
				if err := c.nodes[p].Publish(ctxT(t, 10*time.Second), "news", []byte(fmt.Sprintf("%d-%d", p, k))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := len(pubs) * perPub
	got := make(map[int]map[string]int)
	testnet.Eventually(t, 20*time.Second, func() bool {
		for i, sub := range subs {
			if got[i] == nil {
				got[i] = make(map[string]int)
			}
			drain(t, sub, got[i])
		}
		for i := range subs {
			if len(got[i]) < want {
				return false
			}
		}
		return true
	}, "every subscriber to get every message")
	c.waitQuiet()
	for i, sub := range subs {
		drain(t, sub, got[i])
		for k, v := range got[i] {
			if v != 1 {
				t.Errorf("node %d got %q %d times", i, k, v)
			}
		}
		if len(got[i]) != want {
			t.Errorf("node %d got %d messages, want %d", i, len(got[i]), want)
		}
	}
	for i, s := range c.nodes {
		st := s.MemberStats()
		if _, ok := subs[i]; !ok && st.TopicDelivered != 0 {
			t.Errorf("node %d, no subscriber, delivered %d", i, st.TopicDelivered)
		}
	}
	if m, err := other.Next(ctxNow()); err == nil {
		t.Fatalf("the other topic got %q", m.Packets[0])
	}
}

func ctxNow() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestTopicFilters: subscriptions filtered by group and by hub take only
// the messages of publishers whose records pass.
func TestTopicFilters(t *testing.T) {
	groups := []string{"a", "a", "b", "b"}
	c := &cluster{t: t}
	t.Cleanup(c.closeAll)
	for i, g := range groups {
		s, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithLogger(testnet.Logger(t).With("i", i)),
			WithGroup(g), WithHub(i == 3), WithMemberHeartbeat(100*time.Millisecond, 1000))
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, s)
	}
	sink, err := NewSocket("127.0.0.1:0", WithDiscovery(false), WithLogger(testnet.Logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = append(c.nodes, sink)
	c.wire([][2]int{{0, 4}, {1, 4}, {2, 4}, {3, 4}})
	testnet.Eventually(t, 10*time.Second, func() bool { return len(sink.Members()) == 5 }, "members")
	inA, err := sink.SubscribeTopic("t", InGroups("a"))
	if err != nil {
		t.Fatal(err)
	}
	hubs, err := sink.SubscribeTopic("t", HubsOnly())
	if err != nil {
		t.Fatal(err)
	}
	all, err := sink.SubscribeTopic("t")
	if err != nil {
		t.Fatal(err)
	}
	defer inA.Close()
	defer hubs.Close()
	defer all.Close()
	for i := 0; i < 4; i++ {
		if err := c.nodes[i].Publish(ctxT(t, 5*time.Second), "t", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	gotAll := map[string]int{}
	testnet.Eventually(t, 10*time.Second, func() bool { drain(t, all, gotAll); return len(gotAll) == 4 }, "all four")
	c.waitQuiet()
	gotA, gotHubs := map[string]int{}, map[string]int{}
	drain(t, inA, gotA)
	drain(t, hubs, gotHubs)
	if len(gotA) != 2 || gotA["0"] != 1 || gotA["1"] != 1 {
		t.Errorf("InGroups(a) got %v", gotA)
	}
	if len(gotHubs) != 1 || gotHubs["3"] != 1 {
		t.Errorf("HubsOnly got %v", gotHubs)
	}
}

// TestTopicSlowSubscriber: a subscription that is not read drops what
// its queue cannot hold (counted), and neither the publisher nor another
// subscription on the same node is held up.
func TestTopicSlowSubscriber(t *testing.T) {
	const total = 50
	c := startCluster(t, 2, WithTopicQueue(4))
	c.wire([][2]int{{0, 1}})
	slow, err := c.nodes[1].SubscribeTopic("x")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := c.nodes[1].SubscribeTopic("x")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	got := 0
	for i := 0; i < total; i++ {
		if err := c.nodes[0].Publish(ctxT(t, 5*time.Second), "x", payload(i)); err != nil {
			t.Fatal(err)
		}
		m, err := fast.Next(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Packets[0]) != string(payload(i)) || m.Sender != c.nodes[0].ID() {
			t.Fatalf("got %q from %s", m.Packets[0], m.Sender.Short())
		}
		got++
	}
	if slow.Dropped() != total-4 || c.nodes[1].MemberStats().TopicDrops != total-4 {
		t.Fatalf("slow subscriber dropped %d (stats %d), want %d", slow.Dropped(), c.nodes[1].MemberStats().TopicDrops, total-4)
	}
	slow.Close() // what it queued can still be read, then ErrClosed
	for i := 0; ; i++ {
		_, err := slow.Next(ctxT(t, time.Second))
		if errors.Is(err, ErrClosed) && i == 4 {
			break
		}
		if err != nil {
			t.Fatalf("Next after Close, message %d: %v", i, err)
		}
	}
	_ = got
}

// TestTopicNames: topic names are bounded.
func TestTopicNames(t *testing.T) {
	c := startCluster(t, 1)
	s := c.nodes[0]
	for _, topic := range []string{"", strings.Repeat("x", MaxTopicLen+1)} {
		if _, err := s.SubscribeTopic(topic); !errors.Is(err, ErrBadTopic) {
			t.Errorf("SubscribeTopic(%d bytes): %v", len(topic), err)
		}
		if err := s.Publish(ctxT(t, time.Second), topic, []byte("x")); !errors.Is(err, ErrBadTopic) {
			t.Errorf("Publish(%d bytes): %v", len(topic), err)
		}
	}
	// A lone node's publish reaches its own subscriptions.
	sub, err := s.SubscribeTopic(strings.Repeat("x", MaxTopicLen))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := s.Publish(ctxT(t, time.Second), sub.Topic(), []byte("self")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.Next(ctxT(t, time.Second)); err != nil || string(m.Packets[0]) != "self" {
		t.Fatalf("%v %v", m, err)
	}
}

// TestPublishValue: a typed value published on a topic decodes on a
// subscriber elsewhere in the mesh; a value that does not encode fails
// with ErrBadValue and publishes nothing.
func TestPublishValue(t *testing.T) {
	c := line(t, 2)
	pub, subNode := c.nodes[0], c.nodes[1]
	sub, err := subNode.SubscribeTopic("points")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	type point struct{ X, Y int }
	ctx := ctxT(t, 30*time.Second)
	if err := pub.PublishValue(ctx, "points", make(chan int)); !errors.Is(err, ErrBadValue) {
		t.Fatalf("publishing a channel: %v", err)
	}
	if err := pub.PublishValue(ctx, "points", point{3, 4}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var p point
	if err := DecodeMessage(m, &p); err != nil || p != (point{3, 4}) || m.Sender != pub.ID() {
		t.Fatalf("%+v from %s: %v", p, m.Sender.Short(), err)
	}
	if st := pub.MemberStats(); st.Published != 1 {
		t.Fatalf("published %d, want 1 (the bad value is not sent)", st.Published)
	}
}
