//go:build !linux

package sshd

import (
	"errors"
	"os"
)

// ptySupported: "pty-req" is refused off Linux; the OpenSSH client then
// runs the command without a terminal, with a warning.
const ptySupported = false

func openPTY() (master, slave *os.File, err error) {
	return nil, nil, errors.New("pty sessions are only supported on Linux")
}

func setWinsize(*os.File, uint32, uint32) error {
	return errors.New("pty sessions are only supported on Linux")
}
