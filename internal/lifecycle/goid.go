package lifecycle

import (
	"runtime"
	"strconv"
)

// goid returns the runtime's ID of the calling goroutine. Go offers no API
// for it on purpose; it is read from the first line of the goroutine's
// stack trace ("goroutine 123 [running]:"). Close uses it only to avoid
// waiting for the goroutine that called it, and Go once per goroutine it
// starts, so its cost (about a microsecond) is off every per-message path.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) {
		return 0
	}
	b = b[len(prefix):]
	end := 0
	for end < len(b) && b[end] >= '0' && b[end] <= '9' {
		end++
	}
	id, err := strconv.ParseUint(string(b[:end]), 10, 64)
	if err != nil {
		return 0
	}
	return id
}
