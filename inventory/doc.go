// Package inventory turns the user's OpenSSH client config into the nodes of
// the cluster: it reads ~/.ssh/config (and what it Includes), lists the
// concrete host aliases, decides which of them are sshq nodes, and resolves
// each node's connection settings as OpenSSH itself would.
//
// Resolution uses `ssh -G ALIAS` whenever an OpenSSH client is installed, so
// Match blocks, tokens, canonicalisation and the first-value-wins order are
// OpenSSH's own. Without an ssh binary it falls back to
// github.com/kevinburke/ssh_config, whose limits are: Match blocks are
// skipped (one warning), an Include inside a Host block stays active after
// the included file ends, and CanonicalizeHostname is not applied.
package inventory
