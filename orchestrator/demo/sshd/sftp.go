package sshd

import (
	"io"
	"os"
	"path"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

// fsHandlers serve the real file system the way OpenSSH's sftp-server
// does. The request server is used rather than sftp.NewServer because the
// latter rewrites relative symlink targets into absolute paths under its
// working directory, which would break every relative link sshq syncs.
// Paths arrive already made absolute against the start directory.
func fsHandlers(home string) sftp.Handlers {
	h := &osFS{home: home}
	return sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h}
}

type osFS struct{ home string }

var (
	_ sftp.OpenFileWriter       = (*osFS)(nil)
	_ sftp.PosixRenameFileCmder = (*osFS)(nil)
	_ sftp.StatVFSFileCmder     = (*osFS)(nil)
	_ sftp.LstatFileLister      = (*osFS)(nil)
	_ sftp.RealPathFileLister   = (*osFS)(nil)
	_ sftp.ReadlinkFileLister   = (*osFS)(nil)
)

func (h *osFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return os.Open(r.Filepath)
}

func (h *osFS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return h.open(r)
}

func (h *osFS) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return h.open(r)
}

func (h *osFS) open(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	pf := r.Pflags()
	var flags int
	switch {
	case pf.Read && (pf.Write || pf.Append):
		flags = os.O_RDWR
	case pf.Write || pf.Append:
		flags = os.O_WRONLY
	default:
		flags = os.O_RDONLY
	}
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	// The request server does not pass the open's attribute flags on, so
	// the mode is sftp-server's default when the client sends none.
	f, err := os.OpenFile(r.Filepath, flags, 0o666)
	if err != nil {
		return nil, err
	}
	if pf.Append {
		// Go refuses WriteAt on an O_APPEND file; appending is what
		// sftp-server does with the offset anyway.
		return appendFile{f}, nil
	}
	return f, nil
}

type appendFile struct{ *os.File }

func (a appendFile) WriteAt(p []byte, _ int64) (int, error) {
	if _, err := a.Seek(0, io.SeekEnd); err != nil {
		return 0, err
	}
	return a.Write(p)
}

func (h *osFS) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		return setstat(r)
	case "Rename":
		// SSH_FXP_RENAME never replaces: sftp-server uses link+unlink.
		// Replacing is what posix-rename is for.
		if _, err := os.Lstat(r.Target); err == nil {
			return &os.LinkError{Op: "rename", Old: r.Filepath, New: r.Target, Err: syscall.EEXIST}
		}
		return os.Rename(r.Filepath, r.Target)
	case "Rmdir":
		return syscall.Rmdir(r.Filepath)
	case "Remove":
		return syscall.Unlink(r.Filepath)
	case "Mkdir":
		return os.Mkdir(r.Filepath, 0o777)
	case "Link":
		return os.Link(r.Filepath, r.Target)
	case "Symlink":
		// Filepath is the link's target, verbatim; Target the new link.
		return os.Symlink(r.Filepath, r.Target)
	}
	return sftp.ErrSSHFxOpUnsupported
}

func setstat(r *sftp.Request) error {
	fl, a := r.AttrFlags(), r.Attributes()
	p := r.Filepath
	if fl.Size {
		if err := os.Truncate(p, int64(a.Size)); err != nil {
			return err
		}
	}
	if fl.Permissions {
		if err := syscall.Chmod(p, a.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: p, Err: err}
		}
	}
	if fl.UidGid {
		if err := os.Chown(p, int(a.UID), int(a.GID)); err != nil {
			return err
		}
	}
	if fl.Acmodtime {
		if err := os.Chtimes(p, time.Unix(int64(a.Atime), 0), time.Unix(int64(a.Mtime), 0)); err != nil {
			return err
		}
	}
	return nil
}

func (h *osFS) PosixRename(r *sftp.Request) error {
	return os.Rename(r.Filepath, r.Target)
}

func (h *osFS) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	return statVFS(r.Filepath)
}

func (h *osFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		f, err := os.Open(r.Filepath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// Readdir lstat()s each entry, as sftp-server does.
		fis, err := f.Readdir(-1)
		if err != nil {
			return nil, err
		}
		return listerAt(fis), nil
	case "Stat":
		fi, err := os.Stat(r.Filepath)
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (h *osFS) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	fi, err := os.Lstat(r.Filepath)
	if err != nil {
		return nil, err
	}
	return listerAt{fi}, nil
}

// RealPath makes p absolute against the home directory, as sftp-server
// does against the login's working directory.
func (h *osFS) RealPath(p string) (string, error) {
	if !path.IsAbs(p) {
		p = path.Join(h.home, p)
	}
	return path.Clean(p), nil
}

func (h *osFS) Readlink(p string) (string, error) {
	return os.Readlink(p)
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(dst []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if off+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}
