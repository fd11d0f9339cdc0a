package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/internal/optcheck"
)

// Topics: Publish floods a signed broadcast with sub-flag 0x24 whose first
// packet is the topic name (docs/protocol.md §12.4). Every node relays it
// by the flood rules; a node with a subscription to the topic also hands
// it, once, to each of its subscriptions whose filters its publisher
// passes, through the subscription's own bounded queue; a node without one
// only relays it.

const (
	// MaxTopicLen bounds a topic name, in bytes (1 at least).
	MaxTopicLen = 255
	// DefaultTopicQueue is a subscription's queue, in messages.
	DefaultTopicQueue = 256
)

// ErrBadTopic: a topic name is empty or longer than MaxTopicLen.
var ErrBadTopic = errors.New("mesh: topic name must be 1 to 255 bytes")

// WithTopicQueue bounds each topic subscription's queue, in messages: a
// message that finds it full is dropped for that subscription (counted by
// Subscription.Dropped and MemberStats.TopicDrops) and never waited for.
// Default: 256.
func WithTopicQueue(n int) Option {
	return optcheck.Positive("topic queue", n, func(c *config) { c.members.topicQueue = n })
}

// topicRegistry holds this node's subscriptions by topic.
type topicRegistry struct {
	mu   sync.RWMutex
	subs map[string][]*Subscription
}

// Subscription receives the messages published on one topic by
// publishers that pass its filters.
type Subscription struct {
	s       *Socket
	topic   string
	filters []MemberFilter
	q       chan *base.Message
	done    chan struct{}
	once    sync.Once
	dropped atomic.Uint64
}

func checkTopic(topic string) error {
	if len(topic) == 0 || len(topic) > MaxTopicLen {
		return fmt.Errorf("%w: %d bytes", ErrBadTopic, len(topic))
	}
	return nil
}

// SubscribeTopic subscribes to topic: every message published on it from
// now on, anywhere in the mesh (this node included), by a publisher whose
// member record passes every filter, is queued once for the
// subscription. With filters, a message from a publisher this node has no
// member record of yet is not delivered. Close the subscription when
// done.
func (s *Socket) SubscribeTopic(topic string, filter ...MemberFilter) (*Subscription, error) {
	if err := checkTopic(topic); err != nil {
		return nil, err
	}
	if s.lc.Closed() {
		return nil, ErrClosed
	}
	sub := &Subscription{s: s, topic: topic, filters: slices.Clone(filter),
		q: make(chan *base.Message, s.cfg.members.topicQueue), done: make(chan struct{})}
	r := &s.topics
	r.mu.Lock()
	r.subs[topic] = append(r.subs[topic], sub)
	r.mu.Unlock()
	return sub, nil
}

// Topic returns the subscription's topic.
func (sub *Subscription) Topic() string { return sub.topic }

// Dropped returns how many messages found the subscription's queue full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Next returns the oldest queued message, waiting until one arrives, ctx
// ends (ErrTimeout) or the subscription or the socket closes (ErrClosed).
// The message's Packets are the publisher's packets (the topic name
// removed) and its Sender the publisher; Reply answers the publisher.
func (sub *Subscription) Next(ctx context.Context) (*base.Message, error) {
	select {
	case m := <-sub.q:
		return m, nil
	default:
	}
	select {
	case m := <-sub.q:
		return m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: next: %w", ErrTimeout, ctx.Err())
	case <-sub.done:
		return nil, ErrClosed
	case <-sub.s.lc.Closing():
		return nil, ErrClosed
	}
}

// Close ends the subscription; Next then fails with ErrClosed. It is
// idempotent.
func (sub *Subscription) Close() {
	sub.once.Do(func() {
		close(sub.done)
		r := &sub.s.topics
		r.mu.Lock()
		defer r.mu.Unlock()
		rest := slices.DeleteFunc(slices.Clone(r.subs[sub.topic]), func(x *Subscription) bool { return x == sub })
		if len(rest) == 0 {
			delete(r.subs, sub.topic)
		} else {
			r.subs[sub.topic] = rest
		}
	})
}

// Publish floods packets on topic to every subscriber in the mesh, this
// node's own subscriptions included; each gets it once. It waits, as Send
// does, only while no neighbour has room. A subscriber never slows or
// fails it: a full subscription queue drops the message for that
// subscription. On a node without neighbours it reaches the local
// subscriptions only, and returns nil.
func (s *Socket) Publish(ctx context.Context, topic string, packets ...[]byte) error {
	if err := checkTopic(topic); err != nil {
		return err
	}
	if s.lc.Closed() {
		return ErrClosed
	}
	if len(packets) == 0 {
		return ErrNoPackets
	}
	all := make([][]byte, 0, 1+len(packets))
	all = append(append(all, []byte(topic)), packets...)
	local := &base.Message{Type: flags.Broadcast, Flag: flags.Publish, Sender: s.ID(), Time: time.Now(),
		Packets: all, Proven: true}
	s.deliverTopic(local)
	err := s.originate(ctx, flags.Publish, all)
	if err != nil && !errors.Is(err, ErrNoRoute) {
		return err
	}
	s.members.ctr.published.Add(1)
	return nil
}

// takePublish is the reader's part of a topic message, after the flood
// rules relayed it: it consumes one this node has no subscription for, or
// that is malformed, and lets the others go on to handleTopic, on a
// dispatcher.
func (s *Socket) takePublish(m *base.Message) bool {
	if len(m.Packets) < 1 || checkTopic(string(m.Packets[0])) != nil {
		s.log.Debug("dropping a malformed topic message", "sender", m.Sender.Short())
		return true
	}
	r := &s.topics
	r.mu.RLock()
	_, ok := r.subs[string(m.Packets[0])]
	r.mu.RUnlock()
	if !ok {
		s.members.ctr.topicRelayed.Add(1)
		return true
	}
	return false
}

// handleTopic is the mesh's first handler: it claims every topic message
// and queues it for the subscriptions.
func (s *Socket) handleTopic(m *base.Message) bool {
	if m.Flag != flags.Publish {
		return false
	}
	if m.Type == flags.Broadcast && len(m.Packets) >= 1 {
		s.deliverTopic(m)
	}
	return true
}

// deliverTopic queues m for each subscription to its topic whose filters
// its publisher passes, never waiting.
func (s *Socket) deliverTopic(m *base.Message) {
	topic := string(m.Packets[0])
	r := &s.topics
	r.mu.RLock()
	subs := r.subs[topic]
	r.mu.RUnlock()
	if len(subs) == 0 {
		return
	}
	var pub *Member
	looked := false
	for _, sub := range subs {
		if len(sub.filters) > 0 {
			if !looked {
				if mb, ok := s.Member(m.Sender); ok {
					pub = &mb
				}
				looked = true
			}
			if pub == nil || !matchAll(pub, sub.filters) {
				continue
			}
		}
		c := new(base.Message)
		*c = *m
		c.Packets = m.Packets[1:len(m.Packets):len(m.Packets)]
		select {
		case sub.q <- c:
			s.members.ctr.topicDelivered.Add(1)
		default:
			sub.dropped.Add(1)
			s.members.ctr.topicDrops.Add(1)
		}
	}
}
