package sshpool

import (
	"errors"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Sentinel errors; every error the pool returns wraps one of them with %w so
// callers can tell a node that is down (retry later) from one that will never
// work until a person acts (fix the key, the known_hosts line, the config).
var (
	// ErrUnreachable: TCP connect or the handshake failed or timed out.
	ErrUnreachable = errors.New("node unreachable")
	// ErrAuth: the server refused every key we offered.
	ErrAuth = errors.New("authentication failed")
	// ErrHostKeyUnknown: known_hosts has no key for the host and the
	// StrictHostKeyChecking setting forbids adding it.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyChanged: known_hosts holds a different key for the host.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrChannelRefused: the server refused a new channel (MaxSessions).
	ErrChannelRefused = errors.New("channel refused by server")
	// ErrConnectionLost: the connection broke during an operation.
	ErrConnectionLost = errors.New("connection lost")
)

// Retryable reports whether err may go away by itself (a node rebooting, a
// network blip), as opposed to needing a person to change something.
func Retryable(err error) bool {
	switch {
	case errors.Is(err, ErrHostKeyChanged), errors.Is(err, ErrHostKeyUnknown), errors.Is(err, ErrAuth):
		return false
	}
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrConnectionLost)
}

// isBroken reports whether err means the connection itself is gone, so the
// pool should drop it and dial again, as opposed to one refused channel.
func isBroken(err error) bool {
	if err == nil {
		return false
	}
	var oce *ssh.OpenChannelError
	if errors.As(err, &oce) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "use of closed network connection") ||
		strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}
