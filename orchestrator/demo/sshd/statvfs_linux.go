package sshd

import (
	"os"
	"syscall"

	"github.com/pkg/sftp"
)

func statVFS(p string) (*sftp.StatVFS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return nil, &os.PathError{Op: "statvfs", Path: p, Err: err}
	}
	return &sftp.StatVFS{
		Bsize:   uint64(st.Bsize),
		Frsize:  uint64(st.Frsize),
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Favail:  st.Ffree,
		Fsid:    uint64(uint32(st.Fsid.X__val[0]))<<32 | uint64(uint32(st.Fsid.X__val[1])),
		Flag:    uint64(st.Flags),
		Namemax: uint64(st.Namelen),
	}, nil
}
