package queue

import (
	"os"
	"slices"
	"sync"
	"sync/atomic"
)

// committer is the group committer. Each batch is every request that is
// ready when the previous batch ends. For a batch it makes the new message
// files' data durable (one syncfs(2) for the whole batch, or one fsync per
// file in parallel), then renames them into place, then fsyncs each
// directory the batch touched once, and releases all its callers together:
// temp file, fsync, rename, directory fsync, in that order, for every
// message; concurrent sessions share the fsyncs and nobody skips one.
// Requests that only need a directory fsync (removals, state files) ride
// along.
//
// Measured on this ext4 (2 CPUs, 20 sessions): callers doing their own
// fsync and rename before a shared directory fsync reached ~1 000
// messages/s, because every per-file fsync flushed the device cache and
// every rename waited for a journal commit; aligned batches with one
// syncfs reach 3 000-4 000 messages/s (BenchmarkCommitParallel).
//
// The committer goroutine runs only while there is work: the first request
// starts it and it exits when it finds the list empty, so a Queue needs no
// Close to avoid leaking it.
type committer struct {
	rename  func(oldpath, newpath string) error
	syncDir func(*os.File) error
	// syncFS, when set, makes the data of a whole batch of new files
	// durable with one call (syncfs(2) on the spool's file system) instead
	// of one fsync per file: one device cache flush for the batch. nil:
	// per-file fsync only.
	syncFS func(*os.File) error

	mu      sync.Mutex
	pending []*commitOp
	running bool

	batches atomic.Int64 // directory-sync rounds, for tests and benchmarks
}

type commitOp struct {
	dir  *os.File // directory to fsync
	done chan error

	// For a new message file (commitFile): fsync file, close it, rename
	// from to to, all before the directory fsync.
	file     *os.File
	syncFile func(*os.File) error
	from, to string
	err      error
}

// commitFile makes a written temporary file durable under its final name,
// strictly in the order file fsync, rename, directory fsync, and returns
// when all three are done. Concurrent callers are served in one batch: the
// committer fsyncs their files in parallel, renames them while the journal
// is idle, and fsyncs the directory once. Aligning the batch this way
// needs two journal commits per batch instead of two or three per message
// (measured here: callers doing their own fsync and rename reached ~1 000
// messages/s with 20 sessions). The file is closed in every case. On error
// nothing is left under the final name.
func (c *committer) commitFile(f *os.File, syncFile func(*os.File) error, from, to string, dir *os.File) error {
	return c.submit(&commitOp{dir: dir, file: f, syncFile: syncFile, from: from, to: to})
}

// sync makes changes the caller already made in dir (file creation,
// rename, removal) durable.
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
	// 1. make every new file's data durable: with one syncfs for a batch of
	// several files, else one fsync per file, in parallel (the journal
	// merges their commits, but each may still flush the device cache).
	files := 0
	for _, op := range batch {
		if op.file != nil {
			files++
		}
	}
	viaFS := false
	if c.syncFS != nil && files > 1 {
		for _, op := range batch {
			if op.file != nil {
				viaFS = c.syncFS(op.file) == nil
				break
			}
		}
	}
	var wg sync.WaitGroup
	for _, op := range batch {
		if op.file == nil {
			continue
		}
		if viaFS {
			op.err = op.file.Close()
			continue
		}
		wg.Add(1)
		go func(op *commitOp) {
			defer wg.Done()
			op.err = op.syncFile(op.file)
			if err := op.file.Close(); op.err == nil {
				op.err = err
			}
		}(op)
	}
	wg.Wait()
	// 2. rename them into place.
	for _, op := range batch {
		if op.file != nil && op.err == nil {
			op.err = c.rename(op.from, op.to)
		}
	}
	// 3. one fsync per directory.
	var dirs []*os.File
	for _, op := range batch {
		if !slices.Contains(dirs, op.dir) {
			dirs = append(dirs, op.dir)
		}
	}
	dirErr := make(map[*os.File]error, len(dirs))
	for _, d := range dirs {
		dirErr[d] = c.syncDir(d)
	}
	c.batches.Add(1)
	for _, op := range batch {
		err := op.err
		if err == nil {
			err = dirErr[op.dir]
			if err != nil && op.file != nil {
				// Not durable: take it back out, the client gets an error.
				os.Remove(op.to)
			}
		}
		if err != nil && op.file != nil {
			os.Remove(op.from)
		}
		op.done <- err
	}
}
