package nar

import (
	"bufio"
	"io"
	"syscall"
)

func mkfifo(p string) error { return syscall.Mkfifo(p, 0o644) }

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
