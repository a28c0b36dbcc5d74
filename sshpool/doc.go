// Package sshpool keeps one authenticated, kept-alive SSH connection per node
// and is the only way sshq reaches a node: it runs commands with deadlines,
// opens SFTP clients, verifies host keys against known_hosts as OpenSSH does,
// authenticates with the agent and IdentityFile keys, follows ProxyJump
// chains, and caps the channels open on each connection below sshd's
// MaxSessions.
package sshpool
