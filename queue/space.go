package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxfront/mxfront/envelope"
)

// Backpressure: below MinFree free bytes on the queue file system, or with
// MessageLimit messages queued, new mail is refused with 452 4.3.1
// "Insufficient system storage" (Postfix smtpd's reply for queue_minfree)
// while the queue keeps delivering, which is what frees space. The SMTP
// server asks at MAIL FROM with the SIZE the client announced (Admit), and
// Create asks again before each message. Notifications the queue makes
// itself are exempt: they are what keeps a deferred recipient from waiting
// forever.

// spaceCheckInterval bounds how often the free space is measured: the
// statfs(2) result is reused for this long, so the accept path pays for at
// most one system call per interval.
const spaceCheckInterval = 100 * time.Millisecond

type space struct {
	mu      sync.Mutex
	checked time.Time
	free    int64
	err     error
	low     atomic.Bool // refusing mail (for log lines at the transitions)
}

// freeSpace returns the bytes available to us on the queue file system.
func (q *Queue) freeSpace() (int64, error) {
	s := &q.space
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); s.checked.IsZero() || now.Sub(s.checked) >= spaceCheckInterval {
		var st unix.Statfs_t
		s.err = unix.Statfs(q.dir, &st)
		s.free = int64(st.Bavail) * int64(st.Bsize)
		s.checked = now
	}
	return s.free, s.err
}

// Admit reports whether the queue accepts a new message of about size
// bytes (0 when unknown) now: nil, or an *envelope.Error with 452 4.3.1
// Insufficient system storage.
func (q *Queue) Admit(ctx context.Context, size int64) error {
	var why error
	if lim := q.cfg.MessageLimit; lim > 0 {
		q.mu.Lock()
		n := len(q.msgs) + q.held
		q.mu.Unlock()
		if n >= lim {
			why = fmt.Errorf("queue: %d messages queued, queue_message_limit is %d", n, lim)
		}
	}
	if why == nil && q.cfg.MinFree > 0 {
		free, err := q.freeSpace()
		if err != nil {
			q.log.Warn("cannot measure queue file system space", "dir", q.dir, "err", err)
		} else if need := q.cfg.MinFree + max(size, 0); free < need {
			why = fmt.Errorf("queue: %d bytes free in %s, need %d (queue_minfree and message size)", free, q.dir, need)
		}
	}
	if why != nil {
		if q.space.low.CompareAndSwap(false, true) {
			q.log.Warn("queue full: new mail is refused with 452 4.3.1 until space returns", "reason", why.Error())
		}
		return &envelope.Error{Reply: envelope.ReplyNoSpace, Err: why}
	}
	if q.space.low.CompareAndSwap(true, false) {
		q.log.Info("queue has room again: new mail is accepted")
	}
	return nil
}
