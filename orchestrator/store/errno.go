package store

import "syscall"

// The errors of a write that fails for want of room or right, as the
// operating system names them.
var (
	errNoSpace  error = syscall.ENOSPC
	errQuota    error = syscall.EDQUOT
	errFileSize error = syscall.EFBIG
	errReadOnly error = syscall.EROFS
)
