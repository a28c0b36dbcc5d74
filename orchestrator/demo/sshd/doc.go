// Package sshd is a small SSH server that runs inside the sshq process, so
// `sshq demo` can stand up a local cluster of nodes on loopback addresses
// (127.0.0.x) on a machine with no sshd and no root.
//
// It is meant to be indistinguishable from OpenSSH's sshd for everything
// sshq does on a node, and nothing more:
//
//   - public-key authentication only, against Config.AuthorizedKeys; the
//     user name the client sends is accepted as is (it is the local user);
//   - "session" channels, at most Config.MaxSessions open per connection
//     (default 10, OpenSSH's MaxSessions); one more is refused as
//     "administratively prohibited", which is what sshd answers;
//   - "exec" runs `bash -c <command>` (argv[0] "bash", as sshd does), in
//     Config.Home, with exactly Config.Env plus USER, LOGNAME and
//     SHELL=/bin/bash plus what the client sent in "env" requests (sshd with
//     AcceptEnv *); with a pty also TERM and SSH_TTY. stderr travels as
//     extended data; the end is reported as "exit-status", or "exit-signal"
//     when a signal killed the command, before EOF and close;
//   - without a pty each command runs in its own process group; with a pty
//     ("pty-req", "window-change") in its own session with the pty as its
//     controlling terminal, so `ssh -t node tmux attach` works. "signal"
//     requests go to that whole group, and so does SIGHUP when the client
//     closes the channel or drops the connection while the command runs;
//   - "shell" runs a non-login bash: a login shell would read /etc/profile,
//     which resets PATH and would hide the node's simulated nvidia-smi;
//   - "subsystem" sftp is served by github.com/pkg/sftp's request server
//     over the real file system, rooted at / and starting in Config.Home,
//     with OpenSSH's extensions posix-rename, statvfs and hardlink. Symlink
//     targets are stored verbatim (relative ones stay relative), and a plain
//     rename refuses to replace an existing file, as OpenSSH's does;
//   - "keepalive@openssh.com" global requests are answered; port forwarding,
//     agent and X11 forwarding are refused.
//
// Output pipes are drained to EOF before the exit status is sent, like sshd:
// a command that leaves a background process holding its stdout keeps the
// channel open, exactly as it would on a real node. Processes that detach
// into their own session (tmux) survive Close; Close kills every process
// group it started itself.
//
// Terminal modes sent in "pty-req" are not applied (the pty keeps Linux's
// defaults), and there is no pty support off Linux.
package sshd
