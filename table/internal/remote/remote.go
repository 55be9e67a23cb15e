// Package remote holds what mxfront's network lookup tables (ldap:, tcp:,
// socketmap:) share: a result cache with positive and negative TTLs,
// merging of identical in-flight lookups, a per-lookup deadline, and the
// health bookkeeping that lets a dead server be skipped quickly.
//
// None of it changes a lookup's meaning: found, not found and error stay
// distinct, and errors are never cached, so a directory outage can only
// ever produce a temporary failure (451 4.3.0) upstream.
package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxEntries bounds a cache whose Config.MaxEntries is zero.
const DefaultMaxEntries = 100000

// ErrTimeout is the cause of a lookup context that reached the table's own
// timeout (Config.Timeout). A table that sees it should treat the server as
// unhealthy; compare with context.Cause.
var ErrTimeout = errors.New("lookup timed out")

// ErrAbandoned is the cause of a lookup context whose every caller has
// given up (their contexts ended): the result is no longer wanted. It says
// nothing about the server.
var ErrAbandoned = errors.New("lookup abandoned by all callers")

// Result is a lookup result: Found with Value, or not found.
type Result struct {
	Value string
	Found bool
}

// Config configures a Lookup. The zero value caches nothing and gives each
// lookup no deadline of its own beyond the callers' contexts.
type Config struct {
	// TTL is how long a found result is reused; 0 disables positive
	// caching.
	TTL time.Duration
	// NegativeTTL is how long a "not found" result is reused; 0 disables
	// negative caching.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache; 0 means DefaultMaxEntries. When full,
	// an expired entry or else an arbitrary one is evicted per insert.
	MaxEntries int
	// Timeout bounds each lookup (the function passed to Do) independently
	// of its callers; its context then ends with cause ErrTimeout. 0 means
	// no bound of its own.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Lookup is the front of a remote table: a cache, then at most one
// running lookup per key, shared by every caller asking for that key.
// Its methods are safe for concurrent use.
type Lookup struct {
	cfg Config

	mu      sync.Mutex
	entries map[string]entry
	flights map[string]*flight
	gen     uint64 // bumped by Flush; older flights do not fill the cache
}

type entry struct {
	res     Result
	expires time.Time
}

// flight is one running lookup and the callers waiting for it.
type flight struct {
	done    chan struct{}
	res     Result
	err     error
	waiters int
	cancel  context.CancelCauseFunc
}

// New returns a Lookup.
func New(cfg Config) *Lookup {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Lookup{cfg: cfg, entries: map[string]entry{}, flights: map[string]*flight{}}
}

// Do returns the result for key: from the cache when it holds an unexpired
// result, else from fn, run once for all concurrent callers with the same
// key. fn runs in its own goroutine with a context that keeps ctx's
// values, ends after Config.Timeout (cause ErrTimeout) and is cancelled
// when every waiting caller has left (cause ErrAbandoned). Each caller
// waits at most until its own ctx ends, and then gets ctx's error, so a
// session's deadline is always honoured. Errors are not cached.
func (l *Lookup) Do(ctx context.Context, key string, fn func(ctx context.Context) (Result, error)) (res Result, cached bool, err error) {
	if err := ctx.Err(); err != nil {
		return Result{}, false, err
	}
	l.mu.Lock()
	if e, ok := l.entries[key]; ok {
		if l.cfg.Now().Before(e.expires) {
			l.mu.Unlock()
			return e.res, true, nil
		}
		delete(l.entries, key)
	}
	f, ok := l.flights[key]
	if !ok {
		f = l.start(ctx, key, fn)
	}
	f.waiters++
	l.mu.Unlock()

	select {
	case <-f.done:
		return f.res, false, f.err
	case <-ctx.Done():
		l.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel(ErrAbandoned)
			// A caller arriving later starts afresh rather than joining
			// a cancelled lookup.
			if l.flights[key] == f {
				delete(l.flights, key)
			}
		}
		l.mu.Unlock()
		// The flight may have finished at the same moment; prefer its
		// answer when it is one.
		select {
		case <-f.done:
			if f.err == nil {
				return f.res, false, nil
			}
		default:
		}
		return Result{}, false, fmt.Errorf("waiting for lookup: %w", context.Cause(ctx))
	}
}

// start begins a flight for key; l.mu is held.
func (l *Lookup) start(ctx context.Context, key string, fn func(ctx context.Context) (Result, error)) *flight {
	fctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stopTimer := func() bool { return false }
	if l.cfg.Timeout > 0 {
		t := time.AfterFunc(l.cfg.Timeout, func() { cancel(ErrTimeout) })
		stopTimer = t.Stop
	}
	f := &flight{done: make(chan struct{}), cancel: cancel}
	l.flights[key] = f
	gen := l.gen
	go func() {
		res, err := fn(fctx)
		stopTimer()
		if err == nil && fctx.Err() != nil {
			// fn ignored its context; its late answer is still right.
			err = nil
		}
		l.mu.Lock()
		if l.flights[key] == f {
			delete(l.flights, key)
		}
		if err == nil && gen == l.gen {
			l.store(key, res)
		}
		f.res, f.err = res, err
		l.mu.Unlock()
		cancel(nil)
		close(f.done)
	}()
	return f
}

// store caches res under key; l.mu is held.
func (l *Lookup) store(key string, res Result) {
	ttl := l.cfg.NegativeTTL
	if res.Found {
		ttl = l.cfg.TTL
	}
	if ttl <= 0 {
		return
	}
	now := l.cfg.Now()
	if _, ok := l.entries[key]; !ok && len(l.entries) >= l.cfg.MaxEntries {
		l.evict(now)
	}
	l.entries[key] = entry{res: res, expires: now.Add(ttl)}
}

// evict removes one entry: the first expired one among a few visited, else
// the first visited (map order is unspecified, so that is arbitrary).
func (l *Lookup) evict(now time.Time) {
	const visit = 8
	n := 0
	victim := ""
	for k, e := range l.entries {
		if !now.Before(e.expires) {
			victim = k
			break
		}
		if n == 0 {
			victim = k
		}
		if n++; n >= visit {
			break
		}
	}
	delete(l.entries, victim)
}

// Flush empties the cache; lookups running now will not fill it.
func (l *Lookup) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = map[string]entry{}
	l.gen++
}

// Len returns the number of cached results (expired ones included until
// they are looked up or evicted).
func (l *Lookup) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
