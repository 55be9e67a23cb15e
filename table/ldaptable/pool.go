package ldaptable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mxfront/mxfront/table/internal/remote"
)

// pool keeps up to cfg.PoolSize connections open. go-ldap has no pool and
// no reconnect (its issues #33, #197, #383), but one *ldap.Conn carries
// concurrent requests (message IDs), so a few connections used round-robin
// are enough. A broken connection is replaced in the background while the
// others carry on; when none is left, a lookup waits for a new one, which
// is tried on the servers in order, skipping those in backoff (see
// remote.Health), so with every server down a lookup fails at once.
type pool struct {
	cfg    *Config
	spec   string
	log    *slog.Logger
	health []*remote.Health // per cfg.Servers entry

	ctx    context.Context // ends when the pool is closed
	cancel context.CancelFunc

	failbackAfter time.Duration // defaultFailbackAfter; shorter in tests

	mu     sync.Mutex
	slots  []slot
	next   int
	closed bool
}

type slot struct {
	conn *pconn
	dial *dialing
}

// dialing is a connection attempt in progress for a slot.
type dialing struct {
	done chan struct{}
	conn *pconn
	err  error
}

// pconn is one pooled connection.
type pconn struct {
	lc     *ldap.Conn
	raw    net.Conn
	server int // index in cfg.Servers
	born   time.Time
	broken atomic.Bool
}

func (c *pconn) usable() bool { return !c.broken.Load() && !c.lc.IsClosing() }

// close closes the socket first, which ends any blocked read or write,
// then lets go-ldap wind down its goroutines.
func (c *pconn) close() {
	if c.broken.Swap(true) {
		return
	}
	c.raw.Close()
	go c.lc.Close()
}

func newPool(cfg *Config, spec string, log *slog.Logger) *pool {
	p := &pool{cfg: cfg, spec: spec, log: log, slots: make([]slot, cfg.PoolSize), failbackAfter: defaultFailbackAfter}
	for range cfg.Servers {
		p.health = append(p.health, &remote.Health{})
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

var errPoolClosed = errors.New("table is closed")

// get returns a usable connection, waiting at most until ctx ends for one
// to be made.
func (p *pool) get(ctx context.Context) (*pconn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	n := len(p.slots)
	start := p.next
	p.next = (p.next + 1) % n
	var live *pconn
	var wait *dialing
	empty := -1
	now := time.Now()
	for i := range n {
		s := &p.slots[(start+i)%n]
		if s.conn != nil && !s.conn.usable() {
			s.conn.close()
			s.conn = nil
		}
		if s.conn != nil && live != nil && p.failback(s.conn, now) {
			// Another connection carries the lookups meanwhile.
			c := s.conn
			s.conn = nil
			time.AfterFunc(p.cfg.Timeout+time.Second, c.close)
		}
		switch {
		case s.conn != nil:
			if live == nil {
				live = s.conn
			}
		case s.dial != nil:
			if wait == nil {
				wait = s.dial
			}
		case empty < 0:
			empty = (start + i) % n
		}
	}
	if live != nil {
		// Refill an empty slot in the background, unless every server
		// is backing off anyway.
		if empty >= 0 && p.anyServerTryable() {
			p.startDial(empty)
		}
		p.mu.Unlock()
		return live, nil
	}
	if wait == nil {
		wait = p.startDial(empty)
	}
	p.mu.Unlock()
	select {
	case <-wait.done:
		if wait.err != nil {
			return nil, wait.err
		}
		return wait.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for an LDAP connection: %w", context.Cause(ctx))
	}
}

// defaultFailbackAfter is the age after which a connection to a server
// other than the first is retired when a server before it may be back.
const defaultFailbackAfter = time.Minute

// failback reports whether c, a connection to a later server_host, should
// be retired so that its slot reconnects, in order, to an earlier server
// that may be back (it is healthy or its backoff is over). Without this a
// pool would stay on the failover server until its connections broke.
func (p *pool) failback(c *pconn, now time.Time) bool {
	if c.server == 0 || now.Sub(c.born) < p.failbackAfter {
		return false
	}
	for _, h := range p.health[:c.server] {
		if h.Due(now) {
			return true
		}
	}
	return false
}

// anyServerTryable reports whether some server is not in backoff (without
// claiming a probe).
func (p *pool) anyServerTryable() bool {
	for _, h := range p.health {
		if down, _ := h.Down(); !down {
			return true
		}
	}
	return false
}

// startDial starts connecting slot i; p.mu is held.
func (p *pool) startDial(i int) *dialing {
	d := &dialing{done: make(chan struct{})}
	p.slots[i].dial = d
	go func() {
		c, err := p.connect()
		p.mu.Lock()
		p.slots[i].dial = nil
		if err == nil && p.closed {
			c.close()
			c, err = nil, errPoolClosed
		}
		if err == nil {
			p.slots[i].conn = c
		}
		p.mu.Unlock()
		d.conn, d.err = c, err
		close(d.done)
	}()
	return d
}

// connect tries the servers in order (ldap_table(5) server_host: "trying
// them in order should the first one fail"), skipping those in backoff,
// each attempt bounded by the timeout.
func (p *pool) connect() (*pconn, error) {
	var errs []error
	for i, u := range p.cfg.Servers {
		h := p.health[i]
		if !h.Try(time.Now()) {
			_, last := h.Down()
			errs = append(errs, fmt.Errorf("%s: down (%v)", u, last))
			continue
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		c, err := p.connectOne(ctx, i, u)
		cancel()
		if err == nil {
			if h.Succeed() {
				p.log.Info("ldap server is back", "table", p.spec, "server", u)
			}
			return c, nil
		}
		if p.ctx.Err() != nil {
			h.Abandon()
			return nil, errPoolClosed
		}
		p.markDown(i, err)
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, fmt.Errorf("no LDAP server available: %w", errors.Join(errs...))
}

// markDown records a failure of server i and logs when it goes down.
func (p *pool) markDown(i int, err error) {
	backoff, wasUp := p.health[i].Fail(time.Now(), err)
	if wasUp {
		p.log.Warn("ldap server is down, skipping it", "table", p.spec, "server", p.cfg.Servers[i], "err", err, "retry_in", backoff.String())
	} else {
		p.log.Debug("ldap server still down", "table", p.spec, "server", p.cfg.Servers[i], "err", err, "retry_in", backoff.String())
	}
}

// connectOne dials server u and runs STARTTLS and the bind, all within
// ctx (the configured timeout).
func (p *pool) connectOne(ctx context.Context, idx int, u string) (*pconn, error) {
	network, addr, host, ldaps, err := splitURL(u)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	// Every step below blocks on the socket: the deadline and the close on
	// ctx's end bound them all.
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	fail := func(err error) (*pconn, error) {
		stop()
		raw.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return nil, err
	}
	var conn net.Conn = raw
	if ldaps {
		tc := tls.Client(raw, p.tlsFor(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("TLS handshake: %w", err))
		}
		conn = tc
	}
	lc := ldap.NewConn(conn, ldaps)
	lc.Start()
	// A bound for every request on this connection, should a context not
	// end (go-ldap's default is to wait forever). Searches normally end
	// earlier, at the lookup's own timeout (remote.ErrTimeout), which is
	// what puts a hung server in backoff.
	lc.SetTimeout(p.cfg.Timeout + time.Second)
	c := &pconn{lc: lc, raw: raw, server: idx, born: time.Now()}
	if p.cfg.StartTLS {
		if err := lc.StartTLS(p.tlsFor(host)); err != nil {
			c.close()
			return fail(fmt.Errorf("STARTTLS: %w", err))
		}
	}
	if p.cfg.Bind && p.cfg.BindDN != "" {
		if err := lc.Bind(p.cfg.BindDN, p.cfg.BindPW); err != nil {
			c.close()
			return fail(fmt.Errorf("bind as %q: %w", p.cfg.BindDN, err))
		}
	}
	if !stop() {
		c.close()
		return fail(context.Cause(ctx))
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

// tlsFor returns the TLS configuration for a server host name.
func (p *pool) tlsFor(host string) *tls.Config {
	cfg := p.cfg.TLS
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	return cfg
}

// splitURL returns the dial network and address of an LDAP URL as made by
// serverURL.
func splitURL(u string) (network, addr, host string, ldaps bool, err error) {
	scheme, rest, _ := strings.Cut(u, "://")
	switch scheme {
	case "ldapi":
		path, err := url.PathUnescape(rest)
		if err != nil {
			return "", "", "", false, err
		}
		if path == "" {
			path = "/var/run/slapd/ldapi"
		}
		return "unix", path, "", false, nil
	case "ldap", "ldaps":
		h, port, err := net.SplitHostPort(rest)
		if err != nil {
			h = rest
			port = "389"
			if scheme == "ldaps" {
				port = "636"
			}
		}
		return "tcp", net.JoinHostPort(h, port), h, scheme == "ldaps", nil
	}
	return "", "", "", false, fmt.Errorf("unsupported LDAP URL %q", u)
}

// search runs req on a pooled connection, within ctx. A connection that
// fails (closed by the server, network error) is dropped and the search is
// retried once on another, as Postfix does after LDAP_SERVER_DOWN. When
// ctx reaches the table's own timeout the connection is dropped too and
// its server put in backoff, so that the next lookups fail over (or fail
// fast) instead of each waiting for a hung server.
func (p *pool) search(ctx context.Context, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx)
		if err != nil {
			return nil, err
		}
		res, err := c.search(ctx, req)
		if err == nil || !connFailure(err) && ctx.Err() == nil {
			return res, err
		}
		server := p.cfg.Servers[c.server]
		if ctx.Err() != nil {
			if errors.Is(context.Cause(ctx), remote.ErrTimeout) {
				// A hung server hangs every connection to it.
				c.close()
				p.dropServer(c.server)
				p.markDown(c.server, fmt.Errorf("search timed out after %v", p.cfg.Timeout))
				return nil, fmt.Errorf("%s: search timed out after %v", server, p.cfg.Timeout)
			}
			// Every caller left; the connection is fine.
			return nil, fmt.Errorf("%s: %w", server, context.Cause(ctx))
		}
		c.close()
		if attempt > 0 {
			return nil, fmt.Errorf("%s: %w", server, err)
		}
		p.log.Debug("ldap connection lost, retrying on another", "table", p.spec, "server", server, "err", err)
	}
}

// connFailure reports whether err means the connection is unusable.
func connFailure(err error) bool {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return true
	}
	switch le.ResultCode {
	case ldap.ErrorNetwork, ldap.LDAPResultServerDown, ldap.LDAPResultUnavailable,
		ldap.LDAPResultBusy, ldap.LDAPResultProtocolError, ldap.ErrorUnexpectedResponse,
		ldap.LDAPResultConnectError, ldap.LDAPResultTimeout:
		return true
	}
	return false
}

// search runs one search on the connection. go-ldap's Search cannot be
// cancelled, so it runs in its own goroutine, bounded by the connection's
// request timeout, and the caller leaves when ctx ends.
func (c *pconn) search(ctx context.Context, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	type out struct {
		res *ldap.SearchResult
		err error
	}
	ch := make(chan out, 1)
	go func() {
		res, err := c.lc.Search(req)
		ch <- out{res, err}
	}()
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// dropServer closes every pooled connection to server i.
func (p *pool) dropServer(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for j := range p.slots {
		if c := p.slots[j].conn; c != nil && c.server == i {
			c.close()
			p.slots[j].conn = nil
		}
	}
}

// close closes every connection and stops background dials.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.cancel()
	for i := range p.slots {
		if c := p.slots[i].conn; c != nil {
			c.close()
			p.slots[i].conn = nil
		}
	}
}
