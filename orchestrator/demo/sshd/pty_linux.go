//go:build linux

package sshd

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// ptySupported: pseudo-terminals come from /dev/ptmx with the standard
// library alone, so no pty module is needed.
const ptySupported = true

// openPTY opens a new pseudo-terminal pair. The master stays in Go's
// poller (no Fd() call), so closing it ends a blocked Read.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a pty: %w", err)
	}
	var n uint32
	err = ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(new(int32)))
	if err == nil {
		err = ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&n))
	}
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlocking the pty: %w", err)
	}
	name := "/dev/pts/" + strconv.Itoa(int(n))
	slave, err = os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("opening %s: %w", name, err)
	}
	return master, slave, nil
}

// setWinsize sets the terminal size; the kernel sends SIGWINCH to the
// terminal's foreground process group.
func setWinsize(master *os.File, cols, rows uint32) error {
	ws := struct{ Row, Col, X, Y uint16 }{Row: clamp16(rows), Col: clamp16(cols)}
	return ioctl(master, syscall.TIOCSWINSZ, unsafe.Pointer(&ws))
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
