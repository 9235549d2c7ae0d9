//go:build unix

package diskfault

import (
	"os"
	"syscall"
)

// inode identifies dir: its device and inode number.
func inode(dir string) (uint64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errNoInode
	}
	return uint64(st.Dev)<<48 ^ uint64(st.Ino), nil
}
