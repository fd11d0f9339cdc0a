//go:build linux && !(mips || mipsle || mips64 || mips64le)

package base

// soReusePort is SO_REUSEPORT, which package syscall does not define on
// Linux.
const soReusePort = 0xf
