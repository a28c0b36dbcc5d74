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
		Frsize:  uint64(st.Bsize), // no fragment size on macOS
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Favail:  st.Ffree,
		Fsid:    uint64(uint32(st.Fsid.Val[1]))<<32 | uint64(uint32(st.Fsid.Val[0])),
		Flag:    uint64(st.Flags),
		Namemax: 1024, // MAXPATHLEN
	}, nil
}
