// Package queue is mxfront's durable mail queue: the spool that every
// accepted message is written to before the SMTP server answers 250, the
// scheduler that hands queued mail to a Deliverer with per-destination
// concurrency limits and exponential backoff, and the bounce generator that
// returns RFC 3464 delivery status notifications to senders.
//
// "A 250 is a promise": a message is acknowledged only after its file and
// the directory entry naming it have been fsynced (Incoming.Commit), and
// every later change (a recipient delivered or bounced, an attempt counted)
// is made durable before the queue relies on it. After a crash a recipient
// may be delivered twice only if the crash fell between the next hop's 2xx
// and our write of that fact; nothing is ever lost.
//
// Postfix is the model: parameter names (queue_directory,
// minimal_backoff_time, maximal_queue_lifetime, ...), defaults, log lines
// and bounce texts follow postconf(5), qmgr(8) and bounce(8).
package queue

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// Config configures a Queue. Zero values select the documented defaults,
// which are Postfix's.
type Config struct {
	// Dir is the queue directory (queue_directory). Required.
	Dir string
	// MinimalBackoff is minimal_backoff_time, the smallest delay between
	// attempts for a deferred message; zero means 300s.
	MinimalBackoff time.Duration
	// MaximalBackoff is maximal_backoff_time; zero means 4000s.
	MaximalBackoff time.Duration
	// MaxLifetime is maximal_queue_lifetime: a message still deferred
	// after this long is returned to its sender; zero means 5 days.
	MaxLifetime time.Duration
	// BounceLifetime is bounce_queue_lifetime, the same for mail from the
	// null sender (bounces); zero means 5 days.
	BounceLifetime time.Duration
	// QueueRunDelay is queue_run_delay: how often deferred mail is scanned
	// for messages whose next attempt is due; zero means 300s.
	QueueRunDelay time.Duration
	// RecipientLimit is default_destination_recipient_limit, the most
	// recipients in one delivery transaction; zero means 50.
	RecipientLimit int
	// ConcurrencyLimit is default_destination_concurrency_limit, the most
	// parallel transactions to one destination (Route.Key); zero means 20.
	ConcurrencyLimit int
	// ProcessLimit bounds the delivery transactions in progress overall;
	// zero means 100.
	ProcessLimit int
	// ActiveLimit is qmgr_message_active_limit, the most messages in
	// delivery at once (the rest wait with only a small record in memory);
	// zero means 20000.
	ActiveLimit int
	// Hostname is myhostname, used in DSNs (Reporting-MTA, From:
	// MAILER-DAEMON@Hostname); empty means os.Hostname().
	Hostname string
	// BounceSizeLimit is bounce_size_limit: a bounced message larger than
	// this is returned as headers only (text/rfc822-headers), as Postfix
	// does to keep the MIME structure intact; zero means 50000 bytes.
	BounceSizeLimit int

	// InitialConcurrency is initial_destination_concurrency: a destination
	// starts with this many parallel transactions and grows towards
	// ConcurrencyLimit by one per window of successful transactions (slow
	// start, Postfix qmgr(8) "concurrency scheduler"); zero means 5.
	InitialConcurrency int
	// FailedCohortLimit is
	// default_destination_concurrency_failed_cohort_limit: after this many
	// "cohorts" (a cohort is as many transactions as the current
	// concurrency window) that reached no server, the destination is dead
	// for MinimalBackoff and its mail is deferred without an attempt;
	// zero means 1.
	FailedCohortLimit int
	// RateDelay is default_destination_rate_delay: the pause between two
	// transactions to one destination. A non-zero value limits every
	// destination to one transaction at a time (as in Postfix). Zero: no
	// pause.
	RateDelay time.Duration
	// DeferTransports is defer_transports: mail whose route uses one of
	// these transports ("smtp", "lmtp") is deferred without an attempt
	// until a flush (Flush, `mxfront queue flush`, SIGUSR1) forces it.
	DeferTransports []string
	// DelayWarning is delay_warning_time: a sender whose message is still
	// deferred after this long gets one "delayed mail" notification for
	// the recipients whose NOTIFY allows it (RFC 3461 DELAY). Zero (the
	// Postfix default) sends none.
	DelayWarning time.Duration
	// TwoBounceRecipient is 2bounce_notice_recipient: where a bounce that
	// cannot be delivered (mail from the null sender) is reported. The
	// zero Address means postmaster@Hostname.
	TwoBounceRecipient envelope.Address
	// DoubleBounceSender is double_bounce_sender, the envelope sender of
	// those reports; undeliverable mail from it is discarded, so a report
	// can never loop. The zero Address means double-bounce@Hostname.
	DoubleBounceSender envelope.Address
	// MinFree is the free space (bytes) the queue file system must keep:
	// below MinFree plus the announced message size, Admit and Create
	// refuse new mail with 452 4.3.1 (Postfix queue_minfree; cmd passes
	// max(queue_minfree, 1.5 × message_size_limit) as Postfix smtpd
	// does). Zero: only a real ENOSPC refuses mail.
	MinFree int64
	// MessageLimit caps the messages in the queue (all states); beyond it
	// new mail gets 452 4.3.1 (queue_message_limit, an mxfront
	// extension). Zero: no cap. Notifications generated by the queue
	// itself are never refused.
	MessageLimit int

	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// Defaults, from postconf(5).
const (
	DefaultMinimalBackoff   = 300 * time.Second
	DefaultMaximalBackoff   = 4000 * time.Second
	DefaultMaxLifetime      = 5 * 24 * time.Hour
	DefaultBounceLifetime   = 5 * 24 * time.Hour
	DefaultQueueRunDelay    = 300 * time.Second
	DefaultRecipientLimit   = 50
	DefaultConcurrencyLimit = 20
	DefaultProcessLimit     = 100
	DefaultActiveLimit      = 20000
	DefaultBounceSizeLimit  = 50000
	// DefaultInitialConcurrency is initial_destination_concurrency.
	DefaultInitialConcurrency = 5
	// DefaultFailedCohortLimit is
	// default_destination_concurrency_failed_cohort_limit.
	DefaultFailedCohortLimit = 1
)

func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("queue: queue_directory is not set")
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"minimal_backoff_time", &c.MinimalBackoff, DefaultMinimalBackoff},
		{"maximal_backoff_time", &c.MaximalBackoff, DefaultMaximalBackoff},
		{"maximal_queue_lifetime", &c.MaxLifetime, DefaultMaxLifetime},
		{"bounce_queue_lifetime", &c.BounceLifetime, DefaultBounceLifetime},
		{"queue_run_delay", &c.QueueRunDelay, DefaultQueueRunDelay},
	}
	for _, d := range durs {
		if *d.v < 0 {
			return c, fmt.Errorf("queue: %s must not be negative (%v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MinimalBackoff > c.MaximalBackoff {
		return c, fmt.Errorf("queue: minimal_backoff_time (%v) is larger than maximal_backoff_time (%v)",
			c.MinimalBackoff, c.MaximalBackoff)
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"default_destination_recipient_limit", &c.RecipientLimit, DefaultRecipientLimit},
		{"default_destination_concurrency_limit", &c.ConcurrencyLimit, DefaultConcurrencyLimit},
		{"process limit", &c.ProcessLimit, DefaultProcessLimit},
		{"qmgr_message_active_limit", &c.ActiveLimit, DefaultActiveLimit},
		{"bounce_size_limit", &c.BounceSizeLimit, DefaultBounceSizeLimit},
		{"initial_destination_concurrency", &c.InitialConcurrency, DefaultInitialConcurrency},
		{"default_destination_concurrency_failed_cohort_limit", &c.FailedCohortLimit, DefaultFailedCohortLimit},
		{"queue_message_limit", &c.MessageLimit, 0},
	}
	for _, d := range ints {
		if *d.v < 0 {
			return c, fmt.Errorf("queue: %s must not be negative (%d)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"default_destination_rate_delay", c.RateDelay}, {"delay_warning_time", c.DelayWarning}} {
		if d.v < 0 {
			return c, fmt.Errorf("queue: %s must not be negative (%v)", d.name, d.v)
		}
	}
	if c.MinFree < 0 {
		return c, fmt.Errorf("queue: queue_minfree must not be negative (%d)", c.MinFree)
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("queue: myhostname is not set and os.Hostname failed: %w", err)
		}
		c.Hostname = h
	}
	if c.TwoBounceRecipient.IsNull() {
		c.TwoBounceRecipient = envelope.Address{Local: "postmaster", Domain: c.Hostname}
	}
	if c.DoubleBounceSender.IsNull() {
		c.DoubleBounceSender = envelope.Address{Local: "double-bounce", Domain: c.Hostname}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Stats counts queued messages.
type Stats struct {
	Active   int // being delivered, or due and waiting for a delivery slot
	Deferred int // waiting for their next attempt
	Hold     int // on hold (not scheduled)
	Total    int // Active + Deferred + Hold
}

// Queue is a durable mail queue. Create it with Open, run deliveries with
// Run, accept messages with Create/Commit from any number of goroutines.
type Queue struct {
	cfg       Config
	router    Router
	expander  Expander // router's alias expansion, when it has one (requeue, notifications)
	deliverer Deliverer
	log       *slog.Logger
	offline   bool // OpenOffline: for the queue tools; never delivers

	dir                         string
	msgDir, holdDir, corruptDir *os.File // open for fsync
	lock                        *os.File

	commit committer
	ids    idGen
	bufs   sync.Pool // *bufio.Writer for Incoming
	free   freeList  // recycled queue files (recycle.go)

	// syncFile makes a file's data durable; a field so tests can inject
	// failures.
	syncFile func(*os.File) error

	space   space      // free-space check for Admit (space.go)
	holdsMu sync.Mutex // serialises writers of Dir/holds (units.go)

	sched // scheduler state, guarded by sched.mu
}

// Open opens (creating if needed) the spool in cfg.Dir, takes its lock, and
// recovers the messages in it: half-written files from a crash are removed,
// damaged ones are moved to Dir/corrupt/, and committed ones are scheduled
// for delivery when Run starts.
func Open(cfg Config, router Router, d Deliverer, logger *slog.Logger) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if router == nil || d == nil {
		return nil, errors.New("queue: Router and Deliverer are required")
	}
	return open(cfg, router, d, logger)
}

// OpenOffline opens the spool for the queue tools while the daemon is not
// running: it takes the spool lock (so the daemon cannot start meanwhile,
// and the tools cannot run beside a daemon), recovers the spool as Open
// does, and then serves List, Show, Apply and the unit operations. It
// never delivers: Run fails. Flush and requeue are recorded in the state
// files and take effect when the daemon starts.
func OpenOffline(cfg Config, logger *slog.Logger) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.Dir); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return open(cfg, nil, nil, logger)
}

func open(cfg Config, router Router, d Deliverer, logger *slog.Logger) (*Queue, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := &Queue{
		cfg:       cfg,
		router:    router,
		deliverer: d,
		log:       logger,
		offline:   router == nil,
		dir:       cfg.Dir,
		syncFile:  (*os.File).Sync,
	}
	q.expander, _ = router.(Expander)
	q.commit.rename = os.Rename
	q.commit.syncDir = (*os.File).Sync
	q.commit.syncFS = func(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
	q.sched.init()
	for _, sub := range []string{"", dirIncoming, dirMsg, dirHold, dirCorrupt} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	if err := q.takeLock(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			q.Close()
		}
	}()
	for _, p := range []struct {
		f   **os.File
		sub string
	}{{&q.msgDir, dirMsg}, {&q.holdDir, dirHold}, {&q.corruptDir, dirCorrupt}} {
		f, err := os.Open(filepath.Join(cfg.Dir, p.sub))
		if err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		*p.f = f
	}
	if err := q.loadUnitHolds(); err != nil {
		return nil, err
	}
	if err := q.recover(); err != nil {
		return nil, err
	}
	ok = true
	return q, nil
}

// takeLock makes sure only one process works on the spool: two schedulers
// on one spool would deliver everything twice.
func (q *Queue) takeLock() error {
	path := filepath.Join(q.dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("queue: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("queue: %s is in use by another mxfront process", q.dir)
		}
		return fmt.Errorf("queue: lock %s: %w", path, err)
	}
	q.lock = f
	return nil
}

// Close releases the spool lock and open directories. Call it after Run
// has returned; Commit fails afterwards. Queued mail stays on disk.
func (q *Queue) Close() error {
	q.mu.Lock()
	q.closed = true
	if q.wake != nil {
		q.wake.Stop()
	}
	q.mu.Unlock()
	for _, f := range []*os.File{q.msgDir, q.holdDir, q.corruptDir} {
		if f != nil {
			f.Close()
		}
	}
	if q.lock != nil {
		return q.lock.Close() // releases the flock
	}
	return nil
}

func (q *Queue) now() time.Time { return q.cfg.Now() }

func (q *Queue) path(sub, id string) string { return filepath.Join(q.dir, sub, id) }

// ioError gives a spool I/O failure the reply the SMTP client gets:
// 452 4.3.1 when the disk (or quota) is full, else 451 4.3.0.
func ioError(op, id string, err error) error {
	reply := envelope.ReplyLocalError
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		reply = envelope.ReplyNoSpace
	}
	return &envelope.Error{Reply: reply, Err: fmt.Errorf("queue: %s %s: %w", op, id, err)}
}
