package queue

import (
	"os"
	"sync"
	"sync/atomic"
)

// committer is the group committer. Callers fsync their own files first
// (parallel fsyncs from many sessions are merged by the file system journal);
// the committer then takes every request that is ready, performs the renames
// of the batch, fsyncs each directory the batch touched once, and releases
// all its callers together. Concurrent commits share the directory fsync;
// nobody skips it.
//
// The committer goroutine runs only while there is work: the first request
// starts it and it exits when it finds the list empty, so a Queue needs no
// Close to avoid leaking it.
type committer struct {
	rename  func(oldpath, newpath string) error
	syncDir func(*os.File) error

	mu      sync.Mutex
	pending []*commitOp
	running bool

	batches atomic.Int64 // directory-sync rounds, for tests and benchmarks
}

type commitOp struct {
	from, to string   // rename from -> to, when from != ""
	dir      *os.File // directory to fsync: the one that holds "to", or the one changed by the caller
	done     chan error
}

// rename moves from to to (in dir) and makes the move durable.
func (c *committer) renameDurable(from, to string, dir *os.File) error {
	return c.submit(&commitOp{from: from, to: to, dir: dir})
}

// sync makes changes the caller already made in dir (file creation or
// removal) durable.
func (c *committer) sync(dir *os.File) error {
	return c.submit(&commitOp{dir: dir})
}

func (c *committer) submit(op *commitOp) error {
	op.done = make(chan error, 1)
	c.mu.Lock()
	c.pending = append(c.pending, op)
	if !c.running {
		c.running = true
		go c.loop()
	}
	c.mu.Unlock()
	return <-op.done
}

func (c *committer) loop() {
	for {
		c.mu.Lock()
		batch := c.pending
		c.pending = nil
		if len(batch) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.run(batch)
	}
}

func (c *committer) run(batch []*commitOp) {
	errs := make([]error, len(batch))
	var dirs []*os.File
	for i, op := range batch {
		if op.from != "" {
			if errs[i] = c.rename(op.from, op.to); errs[i] != nil {
				continue
			}
		}
		seen := false
		for _, d := range dirs {
			seen = seen || d == op.dir
		}
		if !seen {
			dirs = append(dirs, op.dir)
		}
	}
	dirErr := make(map[*os.File]error, len(dirs))
	for _, d := range dirs {
		dirErr[d] = c.syncDir(d)
	}
	c.batches.Add(1)
	for i, op := range batch {
		if errs[i] == nil {
			if err := dirErr[op.dir]; err != nil {
				errs[i] = err
				if op.from != "" {
					// Not known to be durable: take it back so that
					// neither the scheduler nor a later recovery sees a
					// message whose client got an error.
					os.Remove(op.to)
				}
			}
		}
		op.done <- errs[i]
	}
}
