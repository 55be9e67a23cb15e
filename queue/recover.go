package queue

import (
	"container/heap"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// recoveryWorkers bounds the files validated in parallel at Open.
const recoveryWorkers = 8

// recover rebuilds the schedule from the spool (called by Open, before
// anything else can touch the queue).
func (q *Queue) recover() error {
	// incoming/: anything here was never committed, so no client got a
	// 250 for it.
	ents, err := os.ReadDir(q.path(dirIncoming, ""))
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, e := range ents {
		if err := os.Remove(q.path(dirIncoming, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("queue: remove incomplete file: %w", err)
		}
		q.log.Info("removed incomplete queue file", "id", e.Name(), "dir", dirIncoming)
	}
	// hold/ and corrupt/: only their IDs matter here (and hold/'s state
	// files, see reunite).
	held, heldStates := map[string]bool{}, map[string]bool{}
	for _, sub := range []string{dirHold, dirCorrupt} {
		ents, err := os.ReadDir(q.path(sub, ""))
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		for _, e := range ents {
			id := strings.TrimSuffix(e.Name(), stateSuffix)
			q.ids.floor(id)
			if sub == dirHold && validID(id) {
				if id == e.Name() {
					q.held++
					held[id] = true
				} else {
					heldStates[id] = true
				}
			}
		}
	}

	ents, err = os.ReadDir(q.path(dirMsg, ""))
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	var ids []string
	states := make(map[string]bool)
	for _, e := range ents {
		name := e.Name()
		switch {
		case validID(name):
			ids = append(ids, name)
		case strings.HasSuffix(name, freeSuffix):
			q.adoptFree(name)
		case strings.HasSuffix(name, tmpSuffix) && validID(strings.TrimSuffix(name, tmpSuffix)):
			// Never committed: no client got a 250 for it.
			if err := os.Remove(q.path(dirMsg, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("queue: remove incomplete file: %w", err)
			}
			q.log.Info("removed incomplete queue file", "id", strings.TrimSuffix(name, tmpSuffix), "dir", dirMsg)
		case strings.HasSuffix(name, stateSuffix) && validID(strings.TrimSuffix(name, stateSuffix)):
			states[strings.TrimSuffix(name, stateSuffix)] = true
		default:
			q.log.Warn("unexpected file in queue directory ignored", "file", name, "dir", dirMsg)
		}
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		q.ids.floor(ids[len(ids)-1])
	}
	if err := q.reunite(ids, states, held, heldStates); err != nil {
		return err
	}

	// Validate in parallel; the schedule is built in ID order below.
	type loaded struct {
		m        *message
		replaces string
		err      error
	}
	out := make([]loaded, len(ids))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(recoveryWorkers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m, replaces, err := q.loadMessage(dirMsg, ids[i], states[ids[i]])
				out[i] = loaded{m, replaces, err}
			}
		}()
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()

	// A requeued message supersedes the one it was made from: a crash
	// between committing the new file and removing the old one must not
	// deliver the old recipients again.
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	superseded := map[string]bool{}
	for _, l := range out {
		if l.err != nil || l.replaces == "" || !validID(l.replaces) {
			continue
		}
		old := l.replaces
		if _, ok := index[old]; ok {
			superseded[old] = true
		} else if held[old] {
			q.deleteFiles(dirHold, old, nil)
			q.held--
			q.log.Info("removed", "id", old, "reason", "superseded by requeued message "+l.m.id)
		}
	}

	now := q.now()
	var nready, ndeferred, ndamaged int
	for i, id := range ids {
		delete(states, id)
		m, err := out[i].m, out[i].err
		if superseded[id] {
			q.deleteFiles(dirMsg, id, nil)
			q.log.Info("removed", "id", id, "reason", "superseded by a requeued message")
			continue
		}
		switch {
		case errors.Is(err, ErrCorrupt):
			q.moveCorrupt(id, err)
			ndamaged++
			continue
		case err != nil:
			// Not damage (permissions, I/O): leave the file for the
			// next start and say so loudly.
			q.log.Error("cannot read queue file; left in place", "id", id, "err", err)
			continue
		}
		if m.pending() == 0 {
			// Crashed during removal.
			os.Remove(q.path(dirMsg, id))
			os.Remove(q.path(dirMsg, id+stateSuffix))
			q.log.Info("removed", "id", id)
			continue
		}
		q.msgs[id] = m
		if m.next.After(now) {
			m.state = stateDeferred
			heap.Push(&q.deferred, m)
			ndeferred++
		} else {
			q.makeDue(m)
			nready++
		}
	}
	for id := range states {
		os.Remove(q.path(dirMsg, id+stateSuffix))
		q.log.Info("removed orphaned queue state file", "id", id)
	}
	if err := q.commit.sync(q.msgDir); err != nil {
		return fmt.Errorf("queue: fsync %s: %w", dirMsg, err)
	}
	q.log.Info("queue recovered", "dir", q.dir, "ready", nready, "deferred", ndeferred,
		"hold", q.held, "damaged", ndamaged)
	return nil
}

// reunite gives each state file back to its message when a crash fell
// between the two renames of a hold or release (spool.go): a state file in
// msg/ whose message is in hold/ moves there, and the reverse. Orphans in
// hold/ are removed; those in msg/ are left for recover.
func (q *Queue) reunite(ids []string, states, held, heldStates map[string]bool) error {
	inMsg := make(map[string]bool, len(ids))
	for _, id := range ids {
		inMsg[id] = true
	}
	moved := false
	for id := range states {
		if !inMsg[id] && held[id] && !heldStates[id] {
			if err := os.Rename(q.path(dirMsg, id+stateSuffix), q.path(dirHold, id+stateSuffix)); err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			delete(states, id)
			moved = true
			q.log.Info("queue state file moved to its message", "id", id, "dir", dirHold)
		}
	}
	for id := range heldStates {
		switch {
		case held[id]:
		case inMsg[id] && !states[id]:
			if err := os.Rename(q.path(dirHold, id+stateSuffix), q.path(dirMsg, id+stateSuffix)); err != nil {
				return fmt.Errorf("queue: %w", err)
			}
			states[id] = true
			moved = true
			q.log.Info("queue state file moved to its message", "id", id, "dir", dirMsg)
		default:
			os.Remove(q.path(dirHold, id+stateSuffix))
			q.log.Info("removed orphaned queue state file", "id", id, "dir", dirHold)
		}
	}
	if moved {
		if err := q.commit.syncDir(q.holdDir); err != nil {
			return fmt.Errorf("queue: fsync %s: %w", dirHold, err)
		}
	}
	return nil
}

// loadMessage validates sub/ID and replays its state file. It also returns
// the ID of the message this one replaces (requeue), if any.
func (q *Queue) loadMessage(sub, id string, hasState bool) (*message, string, error) {
	f, err := os.Open(q.path(sub, id))
	if err != nil {
		return nil, "", err
	}
	sf, err := readSpoolFile(f, id)
	f.Close()
	if err != nil {
		return nil, "", err
	}
	m, err := q.replay(sub, id, sf, hasState)
	return m, sf.meta.Replaces, err
}

// replay builds the scheduler record of a validated message file from its
// state file.
func (q *Queue) replay(sub, id string, sf *spoolFile, hasState bool) (*message, error) {
	env := sf.meta.Env
	m := &message{
		id:         id,
		received:   env.Received,
		queued:     sf.meta.Queued,
		nullSender: env.From.IsNull(),
		done:       make([]bool, len(env.Rcpts)),
		contentLen: sf.contentLen,
		crcContent: sf.crcContent,
		heapIdx:    -1,
	}
	if !hasState {
		return m, nil
	}
	path := q.path(sub, id+stateSuffix)
	sfile, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	defer sfile.Close()
	st, err := readState(sfile)
	if err != nil {
		return nil, err
	}
	if st.torn {
		// A crash interrupted an append: that record never counted.
		if err := sfile.Truncate(st.goodLen); err != nil {
			return nil, err
		}
		if err := q.syncFile(sfile); err != nil {
			return nil, err
		}
		q.log.Warn("incomplete queue state record removed", "id", id)
	}
	if st.bad > 0 {
		q.log.Warn("damaged queue state records skipped", "id", id, "count", st.bad)
	}
	for _, rec := range st.recs {
		switch rec.T {
		case recordDone:
			for _, r := range rec.Rcpts {
				if r < 0 || r >= len(m.done) {
					q.log.Warn("queue state record names a recipient that does not exist", "id", id, "rcpt", r)
					continue
				}
				m.done[r] = true
			}
		case recordDefer:
			m.attempts = rec.Attempts
			m.next = rec.Next
			m.flags &^= flagRequeue // an attempt since the request
			m.dests = m.dests[:0]
			for _, r := range rec.Reasons {
				if r.Dest != "" && !slices.Contains(m.dests, r.Dest) {
					m.dests = append(m.dests, q.keys.get(r.Dest))
				}
			}
		case recordFlush, recordRelease:
			m.next = time.Time{}
		case recordRequeue:
			m.flags |= flagRequeue
			m.next = time.Time{}
		case recordWarned:
			m.flags |= flagWarned
		}
	}
	if len(m.dests) == 0 {
		m.dests = nil
	}
	return m, nil
}
