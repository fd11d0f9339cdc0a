package base

import (
	"testing"

	"github.com/meshsock/meshsock/flags"
)

// rwFrame is a retained frame of size bytes written at time at.
func rwFrame(no uint64, size int, at int64) retainedFrame {
	return retainedFrame{frameNo: no, env: make([]byte, size), at: at, method: flags.Snappy}
}

// rwCheck checks the window's frame numbers, oldest first, and its bytes.
func rwCheck(t *testing.T, rw *resendWindow, bytes int, want ...uint64) {
	t.Helper()
	var got []uint64
	sum := 0
	for i := range rw.n {
		f := rw.ring[(rw.head+i)%len(rw.ring)]
		got = append(got, f.frameNo)
		sum += frameBytes(f.env)
	}
	if len(got) != len(want) {
		t.Fatalf("window holds frames %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("window holds frames %v, want %v", got, want)
		}
	}
	if rw.bytes != bytes || sum != bytes {
		t.Fatalf("window counts %d bytes (frames hold %d), want %d", rw.bytes, sum, bytes)
	}
}

func TestResendWindowBounds(t *testing.T) {
	const maxFrames, maxBytes = 4, 1000
	var rw resendWindow
	// By frames: the oldest goes first.
	for i := range uint64(6) {
		rw.add(rwFrame(i, 10, 0), maxFrames, maxBytes)
	}
	rwCheck(t, &rw, 40, 2, 3, 4, 5)
	// By bytes: a large frame pushes out as many old ones as it needs.
	rw.add(rwFrame(9, 975, 0), maxFrames, maxBytes)
	rwCheck(t, &rw, 995, 4, 5, 9)
	rw.add(rwFrame(10, 10, 0), maxFrames, maxBytes)
	rwCheck(t, &rw, 995, 5, 9, 10)
	// A frame beyond the bound on its own is not kept, and costs nothing.
	rw.add(rwFrame(11, maxBytes+1, 0), maxFrames, maxBytes)
	rwCheck(t, &rw, 995, 5, 9, 10)
	if _, ok := rw.take(11); ok {
		t.Error("took a frame larger than the bound")
	}
	// Taken once: its bytes are released at once and a second take misses.
	f, ok := rw.take(9)
	if !ok || f.frameNo != 9 || len(f.env) != 975 || f.method != flags.Snappy {
		t.Fatalf("take(9) = %+v, %v", f, ok)
	}
	if rw.bytes != 20 {
		t.Errorf("after a take the window counts %d bytes, want 20", rw.bytes)
	}
	if _, ok := rw.take(9); ok {
		t.Error("a frame was taken twice")
	}
	for _, no := range []uint64{0, 4, 6, 12} { // forgotten, skipped, not yet sent
		if _, ok := rw.take(no); ok {
			t.Errorf("took frame %d, which the window does not hold", no)
		}
	}
	if _, ok := rw.take(10); !ok {
		t.Error("frame 10 is retained but take missed it")
	}
}

func TestResendWindowExpires(t *testing.T) {
	var rw resendWindow
	for i := range uint64(40) { // grows the ring past its first size
		rw.add(rwFrame(i, 100, int64(i)), 1024, 1<<20)
	}
	if len(rw.ring) < 40 || len(rw.ring) > 64 {
		t.Errorf("ring of %d frames for 40 retained", len(rw.ring))
	}
	rw.expire(30) // frames written before 30 go
	want := make([]uint64, 0, 10)
	for i := range uint64(10) {
		want = append(want, 30+i)
	}
	rwCheck(t, &rw, 1000, want...)
	for i := range uint64(30) { // wraps around the end of the ring
		rw.add(rwFrame(40+i, 100, int64(40+i)), 1024, 1<<20)
	}
	if rw.head+rw.n <= len(rw.ring) {
		t.Fatalf("the ring did not wrap (head %d, %d frames, ring %d)", rw.head, rw.n, len(rw.ring))
	}
	for _, no := range []uint64{30, 35, 63, 64, 69} {
		if _, ok := rw.take(no); !ok {
			t.Errorf("take missed frame %d in a wrapped ring", no)
		}
	}
	rw.expire(1 << 40)
	rwCheck(t, &rw, 0)
	if rw.ring != nil {
		t.Errorf("an empty window keeps a ring of %d frames", len(rw.ring))
	}
	rw.add(rwFrame(50, 100, 50), 1024, 1<<20)
	rwCheck(t, &rw, 100, 50)
}
