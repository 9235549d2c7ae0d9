//go:build !unix

package diskfault

import "os"

// inode is 0 where the platform has no inode numbers: the marker file
// still tells a directory deleted and created again.
func inode(dir string) (uint64, error) {
	_, err := os.Stat(dir)
	return 0, err
}
