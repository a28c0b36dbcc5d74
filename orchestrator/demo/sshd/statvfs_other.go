//go:build !linux && !darwin

package sshd

import "github.com/pkg/sftp"

// statVFS: statvfs@openssh.com is answered "unsupported" where the
// standard library's Statfs_t differs per kernel and is not mapped here.
func statVFS(string) (*sftp.StatVFS, error) {
	return nil, sftp.ErrSSHFxOpUnsupported
}
