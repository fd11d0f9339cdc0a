package protocol

import (
	"flag"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// update rewrites the golden files under testdata/golden from the Go code:
//
//	go test ./protocol -run Golden -update
var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bytesAllocatedPerRun returns the average number of heap bytes f allocates
// per call, like testing.AllocsPerRun but counting bytes rather than objects.
func bytesAllocatedPerRun(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}
