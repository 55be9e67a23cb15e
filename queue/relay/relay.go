// Package relay delivers queued mail to the next hop over SMTP (RFC 5321) or
// LMTP (RFC 2033). It is mxfront's counterpart of the Postfix smtp(8) and
// lmtp(8) clients: the same host selection (MX lookup, failover), timeouts,
// connection cache, and reply texts, on top of github.com/emersion/go-smtp.
//
// Relay implements queue.Deliverer. Every outcome becomes a per-recipient
// envelope.Reply: 2xx when the next hop took responsibility, 5xx when it (or
// the DNS) refused for good, 4xx for everything else, including local and
// network trouble.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

// Config configures a Relay. The zero value of every field except Hostname
// is the Postfix default named in its comment.
type Config struct {
	// Hostname is the name we send in EHLO/LHLO (Postfix myhostname,
	// smtp_helo_name). Required.
	Hostname string

	// ConnectTimeout bounds the TCP or UNIX-domain connect
	// (smtp_connect_timeout); zero means 30s.
	ConnectTimeout time.Duration
	// HeloTimeout bounds the wait for the greeting banner and the EHLO/LHLO
	// reply, and the STARTTLS exchange (smtp_helo_timeout,
	// smtp_starttls_timeout); zero means 300s.
	HeloTimeout time.Duration
	// MailTimeout, RcptTimeout and DataInitTimeout bound the replies to MAIL
	// FROM, RCPT TO and DATA (smtp_mail_timeout, smtp_rcpt_timeout,
	// smtp_data_init_timeout); zero means 300s each.
	MailTimeout, RcptTimeout, DataInitTimeout time.Duration
	// DataXferTimeout is how long one write of message content may stall
	// (smtp_data_xfer_timeout); zero means 180s.
	DataXferTimeout time.Duration
	// DataDoneTimeout bounds the wait for the reply(ies) after the final
	// "." (smtp_data_done_timeout); zero means 600s.
	DataDoneTimeout time.Duration
	// RsetTimeout bounds the RSET probe sent before a cached connection is
	// reused (smtp_rset_timeout); zero means 20s.
	RsetTimeout time.Duration

	// ConnectionCacheTimeLimit is how long an idle connection is kept for
	// reuse (smtp_connection_cache_time_limit); zero means 2s.
	ConnectionCacheTimeLimit time.Duration
	// ConnectionReuseCountLimit is how many times a connection may be
	// reused (smtp_connection_reuse_count_limit); zero means no limit.
	ConnectionReuseCountLimit int
	// ConnectionReuseTimeLimit is how long after it was opened a
	// connection may still be returned to the cache
	// (smtp_connection_reuse_time_limit); zero means 300s.
	ConnectionReuseTimeLimit time.Duration

	// MXAddressLimit caps the addresses tried per next-hop host, after MX
	// and address lookups (smtp_mx_address_limit); zero means 5.
	MXAddressLimit int

	// HostDownTime is how long a next-hop address that could not be
	// connected to (or that refused the session at the greeting or EHLO)
	// is marked down: deliveries try the route's other hosts first and
	// come back to it only when those fail, until the time is up and one
	// delivery tries it again (smtp_host_down_time, an mxfront
	// extension); zero means 60s.
	HostDownTime time.Duration

	// TLS enables opportunistic STARTTLS (RFC 3207; Postfix
	// smtp_tls_security_level=may): when the server offers STARTTLS the
	// conversation continues encrypted, and when the handshake fails the
	// delivery is retried in plaintext once. Nil never sends STARTTLS. An
	// empty ServerName is set to the next-hop host name.
	TLS *tls.Config

	// Resolver is used for MX and address lookups; nil means
	// net.DefaultResolver.
	Resolver MXResolver
	// Dialer opens connections ("tcp" or "unix"); nil means a net.Dialer.
	// The context carries the connect timeout.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// MXResolver is the part of *net.Resolver the relay uses. Errors should be
// *net.DNSError: IsNotFound marks a name that does not exist (NXDOMAIN or
// no records), anything else is taken as temporary.
type MXResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Postfix defaults (postconf(5)).
const (
	defConnectTimeout  = 30 * time.Second
	defCommandTimeout  = 300 * time.Second
	defDataXferTimeout = 180 * time.Second
	defDataDoneTimeout = 600 * time.Second
	defRsetTimeout     = 20 * time.Second
	defCacheTimeLimit  = 2 * time.Second
	defReuseTimeLimit  = 300 * time.Second
	defMXAddressLimit  = 5
	defHostDownTime    = 60 * time.Second

	// quitTimeout bounds the QUIT sent when a cached connection is
	// closed. Postfix does not wait for the QUIT reply at all
	// (smtp_skip_quit_response=yes); go-smtp always does, so keep it short.
	quitTimeout = 5 * time.Second

	// Default ports: smtp 25 (RFC 5321 §4.5.4.2 "port 25"), lmtp 24 (the
	// port Postfix lmtp(8) and Dovecot use; RFC 2033 §5 forbids 25).
	portSMTP = 25
	portLMTP = 24
)

// Relay is an SMTP/LMTP client with a connection cache. It is safe for
// concurrent use; concurrent deliveries to one destination use separate
// connections.
type Relay struct {
	cfg  Config
	log  *slog.Logger
	res  MXResolver
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	idle   map[string][]*conn // by Route.Key(); most recently used last
	closed bool

	health health // hosts marked down (health.go)
}

var _ queue.Deliverer = (*Relay)(nil)

// New checks cfg, fills in defaults and returns a Relay. A nil logger
// discards log output.
func New(cfg Config, logger *slog.Logger) (*Relay, error) {
	if cfg.Hostname == "" {
		return nil, errors.New("relay: Hostname (myhostname) is required")
	}
	if strings.ContainsFunc(cfg.Hostname, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("relay: Hostname %q contains white space or control characters", cfg.Hostname)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ConnectTimeout", &cfg.ConnectTimeout, defConnectTimeout},
		{"HeloTimeout", &cfg.HeloTimeout, defCommandTimeout},
		{"MailTimeout", &cfg.MailTimeout, defCommandTimeout},
		{"RcptTimeout", &cfg.RcptTimeout, defCommandTimeout},
		{"DataInitTimeout", &cfg.DataInitTimeout, defCommandTimeout},
		{"DataXferTimeout", &cfg.DataXferTimeout, defDataXferTimeout},
		{"DataDoneTimeout", &cfg.DataDoneTimeout, defDataDoneTimeout},
		{"RsetTimeout", &cfg.RsetTimeout, defRsetTimeout},
		{"ConnectionCacheTimeLimit", &cfg.ConnectionCacheTimeLimit, defCacheTimeLimit},
		{"ConnectionReuseTimeLimit", &cfg.ConnectionReuseTimeLimit, defReuseTimeLimit},
		{"HostDownTime", &cfg.HostDownTime, defHostDownTime},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("relay: %s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.ConnectionReuseCountLimit < 0 {
		return nil, fmt.Errorf("relay: ConnectionReuseCountLimit %d is negative", cfg.ConnectionReuseCountLimit)
	}
	if cfg.MXAddressLimit < 0 {
		return nil, fmt.Errorf("relay: MXAddressLimit %d is negative", cfg.MXAddressLimit)
	}
	if cfg.MXAddressLimit == 0 {
		cfg.MXAddressLimit = defMXAddressLimit
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{cfg: cfg, log: logger, res: cfg.Resolver, dial: cfg.Dialer, idle: make(map[string][]*conn)}
	if r.res == nil {
		r.res = net.DefaultResolver
	}
	if r.dial == nil {
		var d net.Dialer
		r.dial = d.DialContext
	}
	return r, nil
}

// Deliver makes one delivery attempt for d: it reuses a cached connection
// to d.Route when there is one, else tries the route's hosts in order
// (resolving MX records where asked), and moves on to the next host while
// recipients have only temporary failures, as Postfix does for backup MX
// hosts. It returns one Result per d.Rcpts entry, in order.
func (r *Relay) Deliver(ctx context.Context, d *queue.Delivery) []queue.Result {
	tx := newTxn(d)
	log := r.log.With("queue_id", d.Env.ID, "route", d.Route.String())

	switch d.Route.Transport {
	case envelope.TransportSMTP, envelope.TransportLMTP:
	case envelope.TransportError, envelope.TransportRetry:
		// The queue normally settles these itself; answer sensibly anyway.
		rep := d.Route.Reply
		if rep.IsZero() {
			rep = envelope.NewReply(451, envelope.Enhanced{4, 3, 5}, "mail transport unavailable")
		}
		tx.failAll(rep, nil)
		return tx.results()
	default:
		tx.failAll(envelope.NewReply(451, envelope.Enhanced{4, 3, 5},
			"mail transport unavailable: unsupported transport "+d.Route.Transport), nil)
		return tx.results()
	}
	if len(tx.rcpts) == 0 {
		return tx.results()
	}
	if len(d.Route.Hosts) == 0 {
		tx.failAll(envelope.NewReply(451, envelope.Enhanced{4, 3, 5},
			"mail transport unavailable: no next-hop host for "+d.Route.String()), nil)
		return tx.results()
	}

	key := d.Route.Key()
	tried := make(map[string]bool) // dial addresses used in this attempt (Postfix cache_used)

	// A cached connection first (Postfix smtp_reuse_nexthop): it avoids DNS
	// lookups and the connection set-up. One whose RSET probe fails is
	// dropped without counting as an attempt.
	for !tx.done() && ctx.Err() == nil {
		cn := r.takeIdle(key)
		if cn == nil {
			break
		}
		if !r.probe(ctx, cn) {
			log.Debug("cached connection is dead, discarding", "relay", cn.t.relay)
			cn.close()
			continue
		}
		tried[cn.t.dialAddr] = true
		r.use(ctx, tx, cn, log)
		break
	}

	lmtp := d.Route.Transport == envelope.TransportLMTP
	defPort := portSMTP
	if lmtp {
		defPort = portLMTP
	}
	finished := func() bool { return tx.done() || tx.stop || ctx.Err() != nil }
	try := func(t target) {
		tried[t.dialAddr] = true
		cn, f := r.open(ctx, t, lmtp, key)
		if f != nil {
			log.Info("host failed", "host", t.relay, "reply", f.reply.String(), "err", f.err)
			relay := "none"
			if f.connected {
				relay = t.relay
			}
			if f.final {
				tx.failPending(f.reply, relay, f.err)
			} else {
				tx.siteFail(f.reply, relay, f.err, true)
				if ctx.Err() == nil {
					r.markDown(t, f.reply, log)
				}
			}
			return
		}
		r.markUp(t, log)
		r.use(ctx, tx, cn, log)
	}
	// Hosts marked down (health.go) are tried only when the others could
	// not take the mail.
	var down []target
hosts:
	for _, h := range d.Route.Hosts {
		if finished() {
			break
		}
		targets, f := r.resolve(ctx, h, defPort)
		if f != nil {
			log.Info("next-hop lookup failed", "host", h.Name, "reply", f.reply.String(), "err", f.err)
			tx.siteFail(f.reply, "none", f.err, true)
			continue
		}
		for _, t := range targets {
			if finished() {
				break hosts
			}
			if tried[t.dialAddr] {
				continue
			}
			if r.isDown(t) {
				down = append(down, t)
				continue
			}
			try(t)
		}
	}
	for _, t := range down {
		if finished() {
			break
		}
		if !tried[t.dialAddr] {
			try(t)
		}
	}
	if err := ctx.Err(); err != nil {
		tx.fillUnset(envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, canceledText(ctx)), err)
	}
	return tx.results()
}

// use runs one transaction on cn and then caches or closes it. Deliver's
// ctx aborts the conversation by closing the socket.
func (r *Relay) use(ctx context.Context, tx *txn, cn *conn, log *slog.Logger) {
	stop := context.AfterFunc(ctx, cn.abort)
	reusable := r.transact(ctx, tx, cn)
	if !stop() {
		reusable = false
	}
	if !reusable {
		cn.close()
		return
	}
	r.release(cn, log)
}

// Close closes all cached connections (sending QUIT) and stops caching.
// Deliver still works after Close, without a cache.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	var all []*conn
	for k, l := range r.idle {
		all = append(all, l...)
		delete(r.idle, k)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, cn := range all {
		cn.timer.Stop()
		wg.Go(cn.quit)
	}
	wg.Wait()
	return nil
}

// takeIdle removes and returns the most recently cached connection for key.
func (r *Relay) takeIdle(key string) *conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.idle[key]
	if len(l) == 0 {
		return nil
	}
	cn := l[len(l)-1]
	l[len(l)-1] = nil
	if len(l) == 1 {
		delete(r.idle, key)
	} else {
		r.idle[key] = l[:len(l)-1]
	}
	cn.timer.Stop() // if it already fired, expire finds cn gone and does nothing
	cn.reuses++
	return cn
}

// release returns cn to the cache unless a reuse limit says otherwise
// (Postfix smtp_connection_reuse_count_limit, _time_limit). An idle
// connection is closed after ConnectionCacheTimeLimit.
func (r *Relay) release(cn *conn, log *slog.Logger) {
	if n := r.cfg.ConnectionReuseCountLimit; n > 0 && cn.reuses >= n {
		log.Debug("connection reuse count limit reached", "relay", cn.t.relay, "reuses", cn.reuses)
		cn.quit()
		return
	}
	if time.Since(cn.created) >= r.cfg.ConnectionReuseTimeLimit {
		log.Debug("connection reuse time limit reached", "relay", cn.t.relay)
		cn.quit()
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cn.quit()
		return
	}
	r.idle[cn.key] = append(r.idle[cn.key], cn)
	cn.timer = time.AfterFunc(r.cfg.ConnectionCacheTimeLimit, func() { r.expire(cn) })
	r.mu.Unlock()
}

// expire closes cn if it is still idle in the cache.
func (r *Relay) expire(cn *conn) {
	r.mu.Lock()
	l := r.idle[cn.key]
	i := 0
	for i < len(l) && l[i] != cn {
		i++
	}
	if i == len(l) {
		r.mu.Unlock()
		return // taken by a Deliver meanwhile
	}
	l = append(l[:i], l[i+1:]...)
	if len(l) == 0 {
		delete(r.idle, cn.key)
	} else {
		r.idle[cn.key] = l
	}
	r.mu.Unlock()
	cn.quit()
}

// idleCount reports the number of cached connections (for tests).
func (r *Relay) idleCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.idle {
		n += len(l)
	}
	return n
}

// canceledText describes why ctx ended, for replies.
func canceledText(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "delivery time limit exceeded"
	}
	return "delivery canceled"
}
