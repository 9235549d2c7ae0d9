package diskfault

import (
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/vfs"
)

// faultFS records every failed write on its Fault before Pebble sees the
// error. Pebble's WAL is written behind the commits (unless they sync),
// and once its writer holds an error the next commit to fill a block
// panics with the commit pipeline's lock held: the database can then be
// neither used nor closed. Recorded first, the fault stops the commits
// (Fault.Commit) before that.
type faultFS struct {
	vfs.FS
	f *Fault
}

func (fs faultFS) note(op, name string, err error) error {
	if err != nil {
		fs.f.set(fmt.Sprintf("%s %s: %v", op, name, err))
	}
	return err
}

func (fs faultFS) file(op, name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, fs.note(op, name, err)
	}
	return faultFile{File: f, fs: fs, name: name}, nil
}

func (fs faultFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.file("create", name, f, err)
}

func (fs faultFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, opts...)
	return fs.file("open", name, f, err)
}

func (fs faultFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	if err != nil {
		return nil, err // a read: Open reports it
	}
	return faultFile{File: f, fs: fs, name: name}, nil
}

func (fs faultFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return fs.file("reuse", newname, f, err)
}

func (fs faultFS) Link(oldname, newname string) error {
	return fs.note("link", newname, fs.FS.Link(oldname, newname))
}

func (fs faultFS) Rename(oldname, newname string) error {
	return fs.note("rename", newname, fs.FS.Rename(oldname, newname))
}

func (fs faultFS) MkdirAll(dir string, perm os.FileMode) error {
	return fs.note("mkdir", dir, fs.FS.MkdirAll(dir, perm))
}

// Unwrap is the file system under the recording.
func (fs faultFS) Unwrap() vfs.FS { return fs.FS }

type faultFile struct {
	vfs.File
	fs   faultFS
	name string
}

func (f faultFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, f.fs.note("write", f.name, err)
}

func (f faultFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, f.fs.note("write", f.name, err)
}

func (f faultFile) Preallocate(off, length int64) error {
	return f.fs.note("preallocate", f.name, f.File.Preallocate(off, length))
}

func (f faultFile) Sync() error { return f.fs.note("sync", f.name, f.File.Sync()) }

func (f faultFile) SyncData() error { return f.fs.note("sync", f.name, f.File.SyncData()) }

func (f faultFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	return full, f.fs.note("sync", f.name, err)
}

// Probe writes and syncs a small file in dir of fs (nil: the disk), then
// removes it: nil when the disk takes writes there.
func Probe(fs vfs.FS, dir string) error {
	if fs == nil {
		fs = vfs.Default
	}
	name := fs.PathJoin(dir, probeFile)
	f, err := fs.Create(name)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fs.Remove(name)
	return err
}
