// Package nettable implements Postfix's client tables for lookup servers a
// site runs itself:
//
//   - tcp:host:port — tcp_table(5): request "get SP key NL", reply one line
//     "200 value", "500 text" (not found) or "400 text" (try again), with
//     %XX encoding of '%', white space and non-printing characters;
//   - socketmap:inet:host:port:name and socketmap:unix:/path:name —
//     socketmap_table(5) (Sendmail's socket map): request and reply are
//     netstrings, "name SP key" and "OK value", "NOTFOUND ", "TEMP
//     reason", "TIMEOUT reason" or "PERM reason".
//
// Register both with Openers. Outcomes are those of every mxfront table: a
// value, not found, or an error, and every kind of failure (connection
// refused, timeout, a malformed reply, 400, TEMP, TIMEOUT, PERM) is an
// error, which callers turn into 451 4.3.0, never a 5xx.
//
// As with ldap: tables (see package ldaptable), results are cached for
// Config.CacheTTL / NegativeCacheTTL (errors never), identical lookups in
// flight are merged, each lookup ends at the caller's deadline and at
// Config.Timeout, connections are kept open and reused (Config.PoolSize at
// most, each carrying one request at a time, as the protocols require), a
// request that fails on a reused connection is retried once on a new one,
// and a server that refuses connections or times out is skipped for a
// backoff (1 s doubling to 10 s), during which lookups fail at once.
//
// Like Postfix, both are pattern tables: they are asked the full lookup key
// only, never partial keys such as a parent domain or "@domain"
// (tcp_table(5): "Postfix will not generate partial search keys"). Keys are
// sent as given, not case-folded.
package nettable

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/table/internal/remote"
)

// Defaults for Config fields that are zero, and DefaultConfig's cache.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultPoolSize         = 4
	DefaultIdleTimeout      = 60 * time.Second
	DefaultCacheTTL         = 60 * time.Second
	DefaultNegativeCacheTTL = 10 * time.Second
)

// Config tunes the tables an Openers map opens.
type Config struct {
	// Timeout bounds connecting plus one request and reply; 0 means
	// DefaultTimeout. (Postfix uses a fixed 100 s; at RCPT time that is a
	// session stalled for longer than a client waits.)
	Timeout time.Duration
	// PoolSize is the most connections open to the server at once, and so
	// the most concurrent requests; 0 means DefaultPoolSize.
	PoolSize int
	// IdleTimeout closes a connection unused for this long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// CacheTTL and NegativeCacheTTL are how long found and not-found
	// results are reused; 0 caches nothing of that kind.
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	// CacheMaxEntries bounds the cache; 0 means remote.DefaultMaxEntries
	// (100000).
	CacheMaxEntries int
}

// DefaultConfig is the configuration mxfront uses unless told otherwise:
// the default timeout and pool, and a result cache.
func DefaultConfig() Config {
	return Config{CacheTTL: DefaultCacheTTL, NegativeCacheTTL: DefaultNegativeCacheTTL}
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PoolSize <= 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	return c
}

// Openers returns the "tcp" and "socketmap" openers for
// table.Options.Openers.
func Openers(cfg Config) map[string]func(string, table.Options) (table.Table, error) {
	return map[string]func(string, table.Options) (table.Table, error){
		"tcp": func(name string, opts table.Options) (table.Table, error) {
			t, err := OpenTCP(name, cfg, opts.Logger)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		"socketmap": func(name string, opts table.Options) (table.Table, error) {
			t, err := OpenSocketmap(name, cfg, opts.Logger)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
	}
}

// protocol is one of the two wire formats.
type protocol interface {
	// write sends the request for key.
	write(w *bufio.Writer, key string) error
	// read reads one reply. A *serverError is a well-formed reply saying
	// the lookup failed (the connection stays usable); any other error
	// means the connection is broken.
	read(r *bufio.Reader) (value string, found bool, err error)
}

// protoError is a reply that breaks the protocol; the connection is
// closed, but the server is not considered down.
type protoError struct{ msg string }

func (e *protoError) Error() string { return "protocol error: " + e.msg }

func protoErrorf(format string, args ...any) error {
	return &protoError{fmt.Sprintf(format, args...)}
}

// serverError is an error reply from the server.
type serverError struct{ msg string }

func (e *serverError) Error() string { return e.msg }

// Table is a tcp: or socketmap: table. Its methods are safe for concurrent
// use.
type Table struct {
	spec          string
	network, addr string
	proto         protocol
	cfg           Config
	log           *slog.Logger
	health        remote.Health
	cache         *remote.Lookup
	tokens        chan struct{} // one per open connection

	mu     sync.Mutex
	idle   []*conn // most recently used last
	closed bool
}

type conn struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	last time.Time
}

func newTable(spec, network, addr string, p protocol, cfg Config, log *slog.Logger) *Table {
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.withDefaults()
	return &Table{
		spec: spec, network: network, addr: addr, proto: p, cfg: cfg, log: log,
		cache: remote.New(remote.Config{
			TTL:         cfg.CacheTTL,
			NegativeTTL: cfg.NegativeCacheTTL,
			MaxEntries:  cfg.CacheMaxEntries,
			Timeout:     cfg.Timeout,
		}),
		tokens: make(chan struct{}, cfg.PoolSize),
	}
}

// Spec returns "tcp:host:port" or "socketmap:...".
func (t *Table) Spec() string { return t.spec }

// IsPattern reports true: these tables get the full key only (Postfix
// DICT_FLAG_PATTERN).
func (t *Table) IsPattern() bool { return true }

// Lookup implements table.Table.
func (t *Table) Lookup(ctx context.Context, key string) (string, bool, error) {
	if key == "" {
		return "", false, nil
	}
	res, _, err := t.cache.Do(ctx, key, func(ctx context.Context) (remote.Result, error) {
		v, ok, err := t.query(ctx, key)
		return remote.Result{Value: v, Found: ok}, err
	})
	if err != nil {
		return "", false, fmt.Errorf("%s: lookup %q: %w", t.spec, key, err)
	}
	return res.Value, res.Found, nil
}

var errClosed = errors.New("table is closed")

// query asks the server, on a pooled connection.
func (t *Table) query(ctx context.Context, key string) (string, bool, error) {
	select {
	case t.tokens <- struct{}{}:
	case <-ctx.Done():
		return "", false, t.ctxErr(ctx, "waiting for a connection")
	}
	defer func() { <-t.tokens }()
	for attempt := 0; ; attempt++ {
		c, reused, err := t.take(ctx)
		if err != nil {
			return "", false, err
		}
		v, ok, err := t.exchange(ctx, c, key)
		var se *serverError
		if err == nil || errors.As(err, &se) {
			t.put(c)
			return v, ok, err
		}
		c.nc.Close()
		if ctx.Err() != nil {
			return "", false, t.ctxErr(ctx, "request")
		}
		var pe *protoError
		if errors.As(err, &pe) {
			// The server is up but said something we cannot read: no
			// retry, no backoff (other keys may well work).
			t.log.Warn("lookup server sent a malformed reply", "table", t.spec, "key", key, "err", err)
			return "", false, err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("request timed out after %v", t.cfg.Timeout)
			t.markDown(err)
			return "", false, err
		}
		if reused && attempt == 0 {
			// The server may have closed an idle persistent
			// connection; Postfix retries too.
			t.log.Debug("network table connection lost, retrying on a new one", "table", t.spec, "err", err)
			continue
		}
		t.markDown(err)
		return "", false, err
	}
}

// ctxErr turns the end of ctx into an error, putting the server in backoff
// when the table's own timeout (not a caller leaving) ended it.
func (t *Table) ctxErr(ctx context.Context, what string) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, remote.ErrTimeout) {
		err := fmt.Errorf("%s timed out after %v", what, t.cfg.Timeout)
		t.markDown(err)
		return err
	}
	return fmt.Errorf("%s: %w", what, cause)
}

func (t *Table) markDown(err error) {
	backoff, wasUp := t.health.Fail(time.Now(), err)
	if wasUp {
		t.log.Warn("lookup server is down, skipping it", "table", t.spec, "err", err, "retry_in", backoff.String())
	}
}

// take returns an idle connection or a new one.
func (t *Table) take(ctx context.Context) (*conn, bool, error) {
	now := time.Now()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, false, errClosed
	}
	for len(t.idle) > 0 {
		c := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if now.Sub(c.last) < t.cfg.IdleTimeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.nc.Close()
	}
	t.mu.Unlock()
	if !t.health.Try(now) {
		_, last := t.health.Down()
		return nil, false, fmt.Errorf("server down, not retried yet (last error: %v)", last)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, t.network, t.addr)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), remote.ErrTimeout) {
			t.health.Abandon()
			return nil, false, t.ctxErr(ctx, "connect")
		}
		t.markDown(err)
		return nil, false, err
	}
	if t.health.Succeed() {
		t.log.Info("lookup server is back", "table", t.spec)
	}
	return &conn{nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}, false, nil
}

// put returns a connection to the idle list.
func (t *Table) put(c *conn) {
	c.last = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.nc.Close()
		return
	}
	t.idle = append(t.idle, c)
}

// exchange sends one request and reads the reply, within ctx.
func (t *Table) exchange(ctx context.Context, c *conn, key string) (string, bool, error) {
	// A safety net: the lookup's context normally ends first (at
	// Config.Timeout or the caller's deadline).
	c.nc.SetDeadline(time.Now().Add(t.cfg.Timeout + time.Second))
	// A past deadline interrupts a blocked read or write when ctx ends.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := t.proto.write(c.w, key); err != nil {
		return "", false, err
	}
	if err := c.w.Flush(); err != nil {
		return "", false, err
	}
	v, ok, err := t.proto.read(c.r)
	if err == nil && c.r.Buffered() > 0 {
		// More than one reply to one request: out of step.
		return "", false, protoErrorf("unexpected data after the reply")
	}
	return v, ok, err
}

// Reload empties the cache (SIGHUP), so that changes on the server are
// seen at once.
func (t *Table) Reload() error {
	t.cache.Flush()
	return nil
}

// Close closes the idle connections; lookups after Close fail.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, c := range t.idle {
		c.nc.Close()
	}
	t.idle = nil
	return nil
}

// OpenTCP opens "tcp:host:port"; name is "host:port" ("[::1]:port" for
// IPv6). No connection is made before the first lookup.
func OpenTCP(name string, cfg Config, log *slog.Logger) (*Table, error) {
	host, port, err := net.SplitHostPort(name)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("want tcp:host:port, not tcp:%s", name)
	}
	return newTable("tcp:"+name, "tcp", net.JoinHostPort(host, port), tcpProto{}, cfg, log), nil
}

// OpenSocketmap opens "socketmap:inet:host:port:name" or
// "socketmap:unix:/path:name"; name is everything after "socketmap:".
func OpenSocketmap(name string, cfg Config, log *slog.Logger) (*Table, error) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 || i == len(name)-1 {
		return nil, fmt.Errorf("want socketmap:inet:host:port:name or socketmap:unix:/path:name, not socketmap:%s (no map name)", name)
	}
	endpoint, mapName := name[:i], name[i+1:]
	if strings.ContainsAny(mapName, " \t") {
		return nil, fmt.Errorf("socketmap:%s: the map name must not contain white space", name)
	}
	kind, where, _ := strings.Cut(endpoint, ":")
	switch kind {
	case "inet":
		host, port, err := net.SplitHostPort(where)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("want socketmap:inet:host:port:name, not socketmap:%s", name)
		}
		return newTable("socketmap:"+name, "tcp", net.JoinHostPort(host, port), socketmapProto{name: mapName}, cfg, log), nil
	case "unix":
		if where == "" {
			return nil, fmt.Errorf("want socketmap:unix:/path:name, not socketmap:%s", name)
		}
		return newTable("socketmap:"+name, "unix", where, socketmapProto{name: mapName}, cfg, log), nil
	}
	return nil, fmt.Errorf("want socketmap:inet:host:port:name or socketmap:unix:/path:name, not socketmap:%s", name)
}
