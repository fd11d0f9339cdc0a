package harness

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshsock/meshsock/internal/testnet"
)

// The raw-TCP baseline floods the same topology with the least a flood
// needs: frames of a 4-byte big-endian length and the payload, one reader
// and one buffered writer per connection, a per-node bitset by message
// number to stop the flood (the baseline may use the harness's numbers;
// the mesh has to hash envelopes and keep a bounded seen-cache), and a relay
// to every neighbour except the sender. No envelope, no handshake beyond
// the peer's index, no compression, no bounds: it is the floor to compare
// with, not a usable protocol.

const rawMaxFrame = 16 << 20

type rawCluster struct {
	tr    *tracker
	nodes []*rawNode
	wg    sync.WaitGroup
	done  chan struct{}
}

type rawNode struct {
	c     *rawCluster
	idx   int
	ln    net.Listener
	mu    sync.Mutex
	conns []*rawConn
	snap  atomic.Pointer[[]*rawConn]
	seen  []uint64 // bit k: this node has message k
}

type rawConn struct {
	node   *rawNode
	nc     net.Conn
	mu     sync.Mutex
	q      [][]byte
	notify chan struct{}

	framesOut, bytesOut, dups atomic.Uint64
}

func startRaw(ctx context.Context, cfg *Config, topo Topology, tr *tracker) (*rawCluster, error) {
	c := &rawCluster{tr: tr, done: make(chan struct{})}
	words := (cfg.Messages + 63) / 64
	for i := 0; i < cfg.Nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			_ = c.close()
			return nil, err
		}
		n := &rawNode{c: c, idx: i, ln: ln, seen: make([]uint64, words)}
		empty := []*rawConn{}
		n.snap.Store(&empty)
		c.nodes = append(c.nodes, n)
		c.wg.Add(1)
		go n.accept()
	}
	ctx, cancel := context.WithTimeout(ctx, wireTimeout)
	defer cancel()
	err := testnet.Wire(ctx, cfg.Nodes, topo.Edges, func(ctx context.Context, from, to int) error {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", c.nodes[to].ln.Addr().String())
		if err != nil {
			return err
		}
		var hello [4]byte
		binary.BigEndian.PutUint32(hello[:], uint32(from))
		if _, err := nc.Write(hello[:]); err != nil {
			_ = nc.Close()
			return err
		}
		c.nodes[from].add(nc)
		return nil
	})
	if err == nil {
		err = testnet.WaitFor(ctx, func() bool {
			for i, n := range c.nodes {
				if len(*n.snap.Load()) < topo.Degrees[i] {
					return false
				}
			}
			return true
		})
	}
	if err != nil {
		_ = c.close()
		return nil, err
	}
	return c, nil
}

func (n *rawNode) accept() {
	defer n.c.wg.Done()
	for {
		nc, err := n.ln.Accept()
		if err != nil {
			return
		}
		var hello [4]byte
		if _, err := io.ReadFull(nc, hello[:]); err != nil {
			_ = nc.Close()
			continue
		}
		n.add(nc)
	}
}

func (n *rawNode) add(nc net.Conn) {
	rc := &rawConn{node: n, nc: nc, notify: make(chan struct{}, 1)}
	n.mu.Lock()
	select {
	case <-n.c.done:
		n.mu.Unlock()
		_ = nc.Close()
		return
	default:
	}
	n.conns = append(n.conns, rc)
	snap := append([]*rawConn(nil), n.conns...)
	n.snap.Store(&snap)
	n.c.wg.Add(2)
	n.mu.Unlock()
	go rc.read()
	go rc.write()
}

// claim marks message k as had by this node; false if it already was.
func (n *rawNode) claim(k int) bool {
	bit := uint64(1) << (k & 63)
	return atomic.OrUint64(&n.seen[k>>6], bit)&bit == 0
}

// flood queues frame to every neighbour but from.
func (n *rawNode) flood(frame []byte, from *rawConn) {
	for _, c := range *n.snap.Load() {
		if c != from {
			c.push(frame)
		}
	}
}

func (c *rawConn) push(frame []byte) {
	c.mu.Lock()
	c.q = append(c.q, frame)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *rawConn) read() {
	defer c.node.c.wg.Done()
	tr := c.node.c.tr
	br := bufio.NewReaderSize(c.nc, 64<<10)
	scratch := make([]byte, 64<<10)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < PayloadHeader || n > rawMaxFrame {
			return
		}
		if n > len(scratch) {
			scratch = make([]byte, n)
		}
		body := scratch[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		k := int(binary.LittleEndian.Uint32(body))
		if k >= tr.m {
			tr.bogus.Add(1)
			continue
		}
		if !c.node.claim(k) {
			c.dups.Add(1)
			continue
		}
		// The one copy every relayed frame shares.
		own := make([]byte, n)
		copy(own, body)
		c.node.flood(own, c)
		tr.deliver(c.node.idx, own)
	}
}

func (c *rawConn) write() {
	defer c.node.c.wg.Done()
	defer c.nc.Close()
	bw := bufio.NewWriterSize(c.nc, 64<<10)
	var batch [][]byte
	var hdr [4]byte
	for {
		select {
		case <-c.notify:
		case <-c.node.c.done:
			return
		}
		c.mu.Lock()
		batch, c.q = c.q, batch[:0]
		c.mu.Unlock()
		var bytes uint64
		for _, f := range batch {
			binary.BigEndian.PutUint32(hdr[:], uint32(len(f)))
			if _, err := bw.Write(hdr[:]); err != nil {
				return
			}
			if _, err := bw.Write(f); err != nil {
				return
			}
			bytes += uint64(4 + len(f))
		}
		if err := bw.Flush(); err != nil {
			return
		}
		c.framesOut.Add(uint64(len(batch)))
		c.bytesOut.Add(bytes)
		clear(batch)
	}
}

func (c *rawCluster) begin() error { return nil }

func (c *rawCluster) send(_ context.Context, origin, k int, buf []byte) error {
	n := c.nodes[origin]
	if !n.claim(k) {
		return fmt.Errorf("raw: message %d sent twice", k)
	}
	frame := make([]byte, len(buf))
	copy(frame, buf)
	n.flood(frame, nil)
	return nil
}

func (c *rawCluster) counters() (wireCounters, error) {
	var w wireCounters
	for _, n := range c.nodes {
		for _, rc := range *n.snap.Load() {
			w.FramesOut += rc.framesOut.Load()
			w.BytesOut += rc.bytesOut.Load()
			w.FloodDuplicates += rc.dups.Load()
		}
	}
	return w, nil
}

func (c *rawCluster) close() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	for _, n := range c.nodes {
		n.mu.Lock()
	}
	close(c.done)
	for _, n := range c.nodes {
		n.mu.Unlock()
	}
	for _, n := range c.nodes {
		_ = n.ln.Close()
		n.mu.Lock()
		for _, rc := range n.conns {
			_ = rc.nc.SetReadDeadline(time.Now())
		}
		n.mu.Unlock()
	}
	waited := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("raw: goroutines did not stop within 10s")
	}
}
