//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package base

import "syscall"

const soReusePort = syscall.SO_REUSEPORT
