// Package logattr holds slog attributes the layers share.
package logattr

import (
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
)

// maxFrames bounds the frames a stack attribute lists.
const maxFrames = 32

// Stack returns the calling goroutine's stack as a group attribute
// "stack" with one attribute per frame ("0", "1", ...), each
// "function file:line". A text handler prints one readable key=value per
// frame, a JSON handler an object, where a debug.Stack string would be one
// long line full of escaped newlines. The list starts skip frames above
// Stack's caller: in a deferred recover, skip 2 passes over the deferred
// function and runtime.gopanic and starts at the frame that panicked.
func Stack(skip int) slog.Attr {
	pcs := make([]uintptr, maxFrames)
	n := runtime.Callers(skip+2, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var attrs []any
	for i := 0; ; i++ {
		f, more := frames.Next()
		attrs = append(attrs, slog.String(strconv.Itoa(i), fmt.Sprintf("%s %s:%d", f.Function, f.File, f.Line)))
		if !more {
			break
		}
	}
	return slog.Group("stack", attrs...)
}

// Discard is the layers' default logger: the library is silent unless the
// user passes one.
var Discard = slog.New(slog.DiscardHandler)
