package queue

import (
	"os"
	"strings"
	"sync"
)

// Queue files are recycled: when a message is done its file is renamed to
// msg/ID.free instead of being unlinked, and the next Create renames such a
// file to NEWID.tmp and overwrites it (the committed length is fixed with
// ftruncate before the fsync). Creating and freeing an inode cost more than
// a quarter of the CPU of the whole MX at a few thousand messages/s
// (measured with pprof: openat with O_CREAT in a busy directory), while a
// rename within a directory is cheap. A crash never makes a free file look
// like a message: its name says it is free, and recovery takes it back
// into the pool (or removes it).
const (
	freeSuffix = ".free"
	// maxFree bounds the pool: files beyond it are unlinked.
	maxFree = 256
)

type freeList struct {
	mu    sync.Mutex
	names []string // file names in msg/
}

func (l *freeList) pop() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.names) == 0 {
		return "", false
	}
	n := l.names[len(l.names)-1]
	l.names = l.names[:len(l.names)-1]
	return n, true
}

// push offers a name to the pool; false means the pool is full.
func (l *freeList) push(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.names) >= maxFree {
		return false
	}
	l.names = append(l.names, name)
	return true
}

// openTemp opens the temporary file of a new message: a recycled file when
// the pool has one, else a new file. reused tells the caller to truncate
// at Commit.
func (q *Queue) openTemp(path string) (f *os.File, reused bool, err error) {
	for {
		name, ok := q.free.pop()
		if !ok {
			break
		}
		if os.Rename(q.path(dirMsg, name), path) != nil {
			continue // gone (or broken): try the next one
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			os.Remove(path)
			continue
		}
		return f, true, nil
	}
	f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	return f, false, err
}

// release retires the file of a finished message: into the pool when it
// has room, else unlinked. Either way the message is gone from msg/.
func (q *Queue) release(id string) error {
	free := id + freeSuffix
	if q.free.push(free) {
		if err := os.Rename(q.path(dirMsg, id), q.path(dirMsg, free)); err == nil {
			return nil
		}
		q.free.pop() // not renamed: take the name back out (LIFO)
	}
	return os.Remove(q.path(dirMsg, id))
}

// adoptFree is recovery's handling of a free file.
func (q *Queue) adoptFree(name string) {
	if !strings.HasSuffix(name, freeSuffix) || !q.free.push(name) {
		os.Remove(q.path(dirMsg, name))
	}
}
