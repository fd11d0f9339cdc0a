package base_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshsock/meshsock/base"
	"github.com/meshsock/meshsock/flags"
	"github.com/meshsock/meshsock/protocol"
)

var linkSizes = []struct {
	name string
	size int
}{{"64B", 64}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

// BenchmarkLink measures one link over loopback, one sender and one
// receiver, for base sockets (default options: TLS 1.3) beside raw TCP with
// the same framing (5-byte header, 64 KiB buffers, no envelope, no
// encryption), in the same run:
//
//	go test ./base -run '^$' -bench Link -benchtime 2s -count 5
func BenchmarkLink(b *testing.B) {
	for _, sz := range linkSizes {
		b.Run("raw/"+sz.name, func(b *testing.B) { benchRaw(b, sz.size) })
		b.Run("base/"+sz.name, func(b *testing.B) { benchBase(b, sz.size) })
	}
}

// BenchmarkLinkEncryption measures one link as BenchmarkLink does, on
// plaintext and on TLS 1.3 (the default), side by side for each size, so
// that the two figures come from the same run:
//
//	go test ./base -run '^$' -bench LinkEncryption -benchtime 2s -count 5
func BenchmarkLinkEncryption(b *testing.B) {
	for _, sz := range linkSizes {
		for _, enc := range []string{protocol.EncryptionPlaintext, protocol.EncryptionTLS} {
			p := base.WithProtocol(protocol.Protocol{Subnet: protocol.DefaultProtocol.Subnet, Encryption: enc})
			b.Run(enc+"/"+sz.name, func(b *testing.B) { benchBase(b, sz.size, p) })
		}
	}
}

func benchBase(b *testing.B, size int, extra ...base.Option) {
	quiet := base.WithLogger(slog.New(slog.DiscardHandler))
	opts := append([]base.Option{quiet, base.WithCompression()}, extra...)
	recv, err := base.NewSocket("127.0.0.1:0", opts...)
	if err != nil {
		b.Fatal(err)
	}
	send, err := base.NewSocket("", opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = send.Close(context.Background())
		_ = recv.Close(context.Background())
	}()
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	recv.RegisterHandler(base.HandlerFunc(func(m *base.Message) bool {
		if got.Add(1) == target {
			close(done)
		}
		return true
	}))
	ctx := context.Background()
	conn, err := send.Connect(ctx, recv.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := conn.Send(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
	// The handler runs on a dispatcher worker: when the sender outruns it,
	// the dispatch queue fills and drops (counted), so wait for every
	// message to be handled or dropped, not handled.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for got.Load()+int64(recv.Stats().DispatchDrops) < target {
		select {
		case <-done:
		case <-tick.C:
		}
	}
	b.StopTimer()
	handled := got.Load()
	b.ReportMetric(float64(handled)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(target-handled)/float64(target), "dropped/op")
}

func benchRaw(b *testing.B, size int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		fr := protocol.NewFrameReader(bufio.NewReaderSize(c, 64<<10), protocol.DefaultMaxFrameSize)
		buf := make([]byte, 0, size+1)
		for range b.N {
			// Like base, each message gets a buffer of its own.
			if _, _, err := fr.ReadFrame(nil); err != nil {
				done <- err
				return
			}
		}
		_ = buf
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 64<<10)
	payload := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := protocol.WriteFrame(bw, flags.None, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil && err != io.EOF {
		b.Fatal(fmt.Errorf("reader: %w", err))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkHandshake measures Connect, from the dial to the link being
// usable from both ends, over loopback on each encryption (the dialer and
// the listener share the machine, so this is the CPU of both ends):
//
//	go test ./base -run '^$' -bench Handshake -benchtime 2s
func BenchmarkHandshake(b *testing.B) {
	for _, enc := range []string{protocol.EncryptionPlaintext, protocol.EncryptionTLS} {
		b.Run(enc, func(b *testing.B) {
			opts := []base.Option{base.WithLogger(slog.New(slog.DiscardHandler)),
				base.WithProtocol(protocol.Protocol{Subnet: protocol.DefaultProtocol.Subnet, Encryption: enc})}
			l, err := base.NewSocket("127.0.0.1:0", opts...)
			if err != nil {
				b.Fatal(err)
			}
			d, err := base.NewSocket("", opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				_ = d.Close(context.Background())
				_ = l.Close(context.Background())
			}()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c, err := d.Connect(ctx, l.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = c.Close()
				for len(l.Conns()) > 0 { // the listener's end, before the next dial
					time.Sleep(50 * time.Microsecond)
				}
				b.StartTimer()
			}
		})
	}
}
