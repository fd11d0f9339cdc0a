package base

import (
	"crypto/ed25519"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/meshsock/meshsock/compress"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

func TestOptionsRejectInvalidValues(t *testing.T) {
	tooMuchMeta := make(map[string]string, protocol.MaxMetaEntries+1)
	for i := range protocol.MaxMetaEntries + 1 {
		tooMuchMeta["k"+strconv.Itoa(i)] = "v"
	}
	snappy, err := compress.Builtin(flags.Snappy)
	if err != nil {
		t.Fatal(err)
	}
	snappyOnly, err := compress.NewSet(snappy)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []Option
	}{
		{"empty subnet", []Option{WithProtocol(protocol.Protocol{Encryption: "plaintext"})}},
		{"encryption only a label", []Option{WithProtocol(protocol.Protocol{Subnet: "x", Encryption: "tls-1.3-aes256"})}},
		{"empty encryption", []Option{WithProtocol(protocol.Protocol{Subnet: "x"})}},
		{"nil network key", []Option{WithNetworkKey(nil)}},
		{"empty keyring", []Option{WithNetworkKey(&Keyring{})}},
		{"nil authorisation hook", []Option{WithAuthorize(nil)}},
		{"zero max bans", []Option{WithMaxBans(0)}},
		{"short key", []Option{WithKey(make([]byte, 31))}},
		{"nil key", []Option{WithKey(nil)}},
		{"too much metadata", []Option{WithMetadata(tooMuchMeta)}},
		{"nil logger", []Option{WithLogger(nil)}},
		{"nil codec set", []Option{WithCodecs(nil)}},
		{"too many methods", []Option{WithCompression(make([]flags.Method, protocol.MaxAcceptMethods+1)...)}},
		{"method without codec", []Option{WithCompression(flags.Method(0x7e))}},
		{"method missing from custom set", []Option{WithCodecs(snappyOnly), WithCompression(flags.Zstd)}},
		{"negative threshold", []Option{WithCompressThreshold(-1)}},
		{"frame size too small", []Option{WithMaxFrameSize(63)}},
		{"frame size too large", []Option{WithMaxFrameSize(1<<30 + 1)}},
		{"zero packets", []Option{WithMaxPackets(0)}},
		{"negative packets", []Option{WithMaxPackets(-5)}},
		{"zero send queue", []Option{WithSendQueue(0, 1024)}},
		{"zero send queue bytes", []Option{WithSendQueue(16, 0)}},
		{"zero control queue", []Option{WithControlQueue(0)}},
		{"unknown queue policy", []Option{WithQueuePolicy(QueuePolicy(7))}},
		{"negative queue policy", []Option{WithQueuePolicy(QueuePolicy(-1))}},
		{"zero receive queue", []Option{WithRecvQueue(0)}},
		{"zero event queue", []Option{WithEventQueue(0)}},
		{"zero receive queue bytes", []Option{WithRecvQueueBytes(0)}},
		{"negative event queue bytes", []Option{WithEventQueueBytes(-1)}},
		{"zero max conns", []Option{WithMaxConns(0)}},
		{"zero pending handshakes", []Option{WithMaxPendingHandshakes(0)}},
		{"zero pending per source", []Option{WithMaxPendingPerSource(0)}},
		{"zero conns per source", []Option{WithMaxConnsPerSource(0)}},
		{"zero IPv4 source prefix", []Option{WithSourcePrefix(0, 64)}},
		{"long IPv4 source prefix", []Option{WithSourcePrefix(33, 64)}},
		{"zero IPv6 source prefix", []Option{WithSourcePrefix(32, 0)}},
		{"long IPv6 source prefix", []Option{WithSourcePrefix(32, 129)}},
		{"zero handshake timeout", []Option{WithHandshakeTimeout(0)}},
		{"negative write timeout", []Option{WithWriteTimeout(-time.Second)}},
		{"zero keepalive interval", []Option{WithKeepalive(0, time.Second)}},
		{"zero silence timeout", []Option{WithKeepalive(time.Second, 0)}},
		{"zero flush timeout", []Option{WithFlushTimeout(0)}},
		{"zero resend window", []Option{WithResendWindow(0)}},
		{"zero resend bytes", []Option{WithResendBytes(0)}},
		{"negative resend age", []Option{WithResendAge(-time.Second)}},
		{"small read buffer", []Option{WithBufferSizes(4095, 4096)}},
		{"small write buffer", []Option{WithBufferSizes(4096, 100)}},
		{"zero dispatchers", []Option{WithDispatchers(0)}},
		{"zero dispatch queue", []Option{WithDispatchQueue(0, 1)}},
		{"zero fair share", []Option{WithFairShare(0)}},
		{"fair share over 100 %", []Option{WithFairShare(101)}},
		{"zero dispatch queue bytes", []Option{WithDispatchQueue(1, 0)}},
		{"nil listener", []Option{WithListener(nil)}},
		{"nil dialer", []Option{WithDialer(nil)}},
		// The relation between options: silence must exceed the interval.
		{"silence equal to keepalive", []Option{WithKeepalive(2*time.Second, 2*time.Second)}},
		{"silence shorter than keepalive", []Option{WithKeepalive(2*time.Second, time.Second)}},
		{"silence shorter than default keepalive", []Option{WithKeepalive(DefaultKeepaliveInterval, DefaultKeepaliveInterval-time.Nanosecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]Option{WithLogger(stLogger())}, tt.opts...)
			s, err := NewSocket("", opts...)
			if err == nil {
				stClose(t, s)
				t.Fatal("NewSocket accepted an invalid option")
			}
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("error %v does not match ErrInvalidOption", err)
			}
			if s != nil {
				t.Error("NewSocket returned a socket along with an error")
			}
		})
	}
}

func TestOptionsAcceptValidValues(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key := GenerateKey()
	id := protocol.NodeIDFromKey(key.Public().(ed25519.PublicKey))
	proto := protocol.Protocol{Subnet: "test", Encryption: "plaintext"}
	meta := map[string]string{"k": "v"}
	s := stNewAt(t, "",
		nil, // skipped
		WithProtocol(proto),
		WithKey(key),
		WithAdvertiseAddr("example.org:4000"),
		WithMetadata(meta),
		WithCodecs(compress.DefaultSet()),
		WithCompression(), // none at all is fine
		WithCompressThreshold(0),
		WithMaxFrameSize(64),
		WithMaxFrameSize(1<<30),
		WithMaxFrameSize(1<<20),
		WithMaxPackets(1),
		WithSendQueue(1, 1),
		WithControlQueue(1),
		WithQueuePolicy(Drop),
		WithRecvQueue(1),
		WithRecvQueueBytes(2),
		WithEventQueue(1),
		WithEventQueueBytes(3),
		WithMaxConns(1),
		WithMaxPendingHandshakes(1),
		WithHandshakeTimeout(time.Millisecond),
		WithWriteTimeout(time.Millisecond),
		WithKeepalive(time.Second, time.Second+time.Nanosecond),
		WithFlushTimeout(time.Millisecond),
		WithResendWindow(1),
		WithResendBytes(7),
		WithResendAge(time.Nanosecond),
		WithBufferSizes(4096, 4096),
		WithDispatchers(3),
		WithDispatchQueue(5, 6),
		WithListener(ln),
		WithDialer((&net.Dialer{}).DialContext),
	)
	meta["k"] = "changed" // the socket keeps its own copy
	explicit := proto
	explicit.Signing = protocol.SigningEd25519 // what an empty Signing means, spelt out
	if s.ID() != id || s.Protocol() != explicit || s.AdvertisedAddr() != "example.org:4000" {
		t.Errorf("ID %v, Protocol %v, AdvertisedAddr %q", s.ID(), s.Protocol(), s.AdvertisedAddr())
	}
	if s.Addr().String() != ln.Addr().String() {
		t.Errorf("Addr = %v, want the listener's %v", s.Addr(), ln.Addr())
	}
	c := &s.cfg
	if c.meta["k"] != "v" || c.maxFrameSize != 1<<20 || c.limits.MaxPacketSize != 1<<20 || c.limits.MaxPackets != 1 {
		t.Errorf("config: meta %v, frame %d, packet %d, packets %d", c.meta, c.maxFrameSize, c.limits.MaxPacketSize, c.limits.MaxPackets)
	}
	if c.queuePolicy != Drop || c.sendQueueLen != 1 || c.sendQueueBytes != 1 || c.dispatchers != 3 ||
		c.dispatchQueueLen != 5 || c.dispatchQueueBytes != 6 {
		t.Errorf("config: policy %v, queue %d/%d, dispatchers %d, dispatch queue %d/%d", c.queuePolicy, c.sendQueueLen, c.sendQueueBytes,
			c.dispatchers, c.dispatchQueueLen, c.dispatchQueueBytes)
	}
	if c.recvQueueLen != 1 || c.recvQueueBytes != 2 || c.eventQueueLen != 1 || c.eventQueueBytes != 3 {
		t.Errorf("config: receive queue %d/%d, event queue %d/%d", c.recvQueueLen, c.recvQueueBytes, c.eventQueueLen, c.eventQueueBytes)
	}
	if c.resendWindow != 1 || c.resendBytes != 7 || c.resendAge != time.Nanosecond {
		t.Errorf("config: resend window %d frames, %d bytes, %v", c.resendWindow, c.resendBytes, c.resendAge)
	}
	if len(s.compressionList()) != 0 {
		t.Errorf("compression list = %v, want empty", s.compressionList())
	}
}

func TestOptionDefaults(t *testing.T) {
	s := stNewAt(t, "")
	if s.Addr() != nil {
		t.Errorf("a socket without a listen address has Addr %v", s.Addr())
	}
	if s.AdvertisedAddr() != "" {
		t.Errorf("AdvertisedAddr = %q, want empty", s.AdvertisedAddr())
	}
	if s.ID().IsZero() {
		t.Error("no random node ID")
	}
	if s.Protocol() != protocol.DefaultProtocol {
		t.Errorf("Protocol = %v", s.Protocol())
	}
	c := &s.cfg
	if c.queuePolicy != Block || c.maxFrameSize != DefaultMaxFrameSize || c.keepalive != DefaultKeepaliveInterval ||
		c.silence != DefaultSilenceTimeout || c.recvQueueLen != DefaultRecvQueueLen || c.compressThreshold != DefaultCompressThreshold {
		t.Errorf("defaults: %+v", c)
	}
	if c.recvQueueBytes != DefaultRecvQueueBytes || c.eventQueueLen != DefaultEventQueueLen || c.eventQueueBytes != DefaultEventQueueBytes ||
		c.dispatchQueueBytes != DefaultDispatchQueueBytes {
		t.Errorf("defaults: receive queue %d bytes, event queue %d/%d, dispatch queue %d bytes",
			c.recvQueueBytes, c.eventQueueLen, c.eventQueueBytes, c.dispatchQueueBytes)
	}
	if c.resendWindow != DefaultResendWindow || c.resendBytes != DefaultResendBytes || c.resendAge != DefaultResendAge {
		t.Errorf("defaults: resend window %d frames, %d bytes, %v", c.resendWindow, c.resendBytes, c.resendAge)
	}
	if Block.String() != "block" || Drop.String() != "drop" {
		t.Errorf("QueuePolicy names: %q, %q", Block, Drop)
	}
	if other := stNewAt(t, ""); other.ID() == s.ID() {
		t.Error("two sockets drew the same node ID")
	}
}

func TestNewSocketBadListenAddress(t *testing.T) {
	for _, addr := range []string{"not an address", "127.0.0.1:99999", "127.0.0.1:-1", "192.0.2.1:0"} {
		s, err := NewSocket(addr, WithLogger(stLogger()))
		if err == nil {
			stClose(t, s)
			t.Errorf("NewSocket(%q) succeeded", addr)
			continue
		}
		if errors.Is(err, ErrInvalidOption) {
			t.Errorf("NewSocket(%q): %v; a listen failure is not an invalid option", addr, err)
		}
	}
	// An address already in use.
	taken := stNew(t)
	if s, err := NewSocket(taken.Addr().String(), WithLogger(stLogger())); err == nil {
		stClose(t, s)
		t.Error("NewSocket on an address in use succeeded")
	}
}

func TestWithListenerAndAddressRejected(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := NewSocket("127.0.0.1:0", WithLogger(stLogger()), WithListener(ln))
	if !errors.Is(err, ErrInvalidOption) {
		if s != nil {
			stClose(t, s)
		}
		t.Fatalf("NewSocket with an address and a listener: %v, want ErrInvalidOption", err)
	}
	// The listener was not taken over: it still accepts.
	dialed := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("listener unusable after the rejected NewSocket: %v", err)
	}
	c.Close()
	if err := <-dialed; err != nil {
		t.Fatalf("dial: %v", err)
	}
}
