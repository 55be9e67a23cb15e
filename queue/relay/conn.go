package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
)

// netConn is the net.Conn handed to go-smtp. It counts written bytes (to
// tell a bad greeting from a bad EHLO reply, which go-smtp reports alike),
// gives each write of message content its own deadline
// (smtp_data_xfer_timeout: go-smtp sets none while the body is written),
// and can replay a greeting line (see startTLS).
type netConn struct {
	net.Conn
	prefix []byte
	wrote  int64
	xfer   time.Duration
}

func (c *netConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *netConn) Write(p []byte) (int, error) {
	if c.xfer > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.xfer)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Write(p)
	c.wrote += int64(n)
	return n, err
}

// conn is one SMTP/LMTP session, cached between transactions.
type conn struct {
	c       *smtp.Client
	nc      *netConn
	raw     net.Conn // the socket under any TLS layer
	t       target
	key     string // Route.Key()
	lmtp    bool
	tls     bool
	created time.Time
	reuses  int
	timer   *time.Timer // idle expiry while cached; guarded by Relay.mu

	aborted atomic.Bool // closed because Deliver's ctx ended
	// clean: the last transaction ended with the reply to the final dot,
	// so the session is back in its initial state (RFC 5321 §4.1.1.4).
	clean bool
}

// abort closes the socket so that any blocked read or write returns now.
func (cn *conn) abort() {
	cn.aborted.Store(true)
	cn.raw.Close()
}

func (cn *conn) close() { cn.c.Close() }

// quit ends the session politely (RFC 5321 §4.1.1.10) and closes it.
func (cn *conn) quit() {
	cn.c.CommandTimeout = quitTimeout
	if err := cn.c.Quit(); err != nil {
		cn.c.Close()
	}
}

func newClient(nc *netConn, lmtp bool, timeout time.Duration) *smtp.Client {
	var c *smtp.Client
	if lmtp {
		c = smtp.NewClientLMTP(nc)
	} else {
		c = smtp.NewClient(nc)
	}
	c.CommandTimeout = timeout
	return c
}

// open connects to t and performs the greeting, EHLO/LHLO and, when
// configured, STARTTLS. A failed TLS handshake is retried once in
// plaintext, as Postfix does at smtp_tls_security_level=may.
func (r *Relay) open(ctx context.Context, t target, lmtp bool, key string) (*conn, *failure) {
	cn, f, tlsFailed := r.open1(ctx, t, lmtp, key, r.cfg.TLS != nil)
	if tlsFailed {
		r.log.Info("TLS handshake failed, retrying in plaintext", "relay", t.relay, "err", f.err)
		cn, f, _ = r.open1(ctx, t, lmtp, key, false)
	}
	return cn, f
}

func (r *Relay) open1(ctx context.Context, t target, lmtp bool, key string, useTLS bool) (_ *conn, _ *failure, tlsFailed bool) {
	dctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	raw, err := r.dial(dctx, t.network, t.dialAddr)
	cancel()
	if err != nil {
		text := describeNetErr(err)
		if ctx.Err() != nil {
			text = canceledText(ctx)
		}
		return nil, &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 4, 1},
			fmt.Sprintf("connect to %s: %s", t.relay, text)), err: err}, false
	}
	nc := &netConn{Conn: raw}
	cn := &conn{
		c: newClient(nc, lmtp, r.cfg.HeloTimeout), nc: nc, raw: raw,
		t: t, key: key, lmtp: lmtp, created: time.Now(),
	}
	stop := context.AfterFunc(ctx, cn.abort)
	defer stop()

	f := r.handshake(ctx, cn, useTLS, &tlsFailed)
	if f == nil && cn.aborted.Load() {
		f = r.netFailure(ctx, cn, stageHelo, net.ErrClosed)
	}
	if f != nil {
		cn.close()
		f.connected = true
		return nil, f, tlsFailed
	}
	return cn, nil, false
}

// handshake reads the greeting and sends EHLO/LHLO, then STARTTLS when
// asked.
func (r *Relay) handshake(ctx context.Context, cn *conn, useTLS bool, tlsFailed *bool) *failure {
	if err := cn.c.Hello(r.cfg.Hostname); err != nil {
		return r.helloFailure(ctx, cn, cn.nc.wrote == 0, err)
	}
	if useTLS {
		f, hsFailed := r.startTLS(ctx, cn)
		*tlsFailed = hsFailed
		return f
	}
	return nil
}

// helloFailure maps a failed greeting or EHLO/LHLO, Postfix smtp_helo().
func (r *Relay) helloFailure(ctx context.Context, cn *conn, greeting bool, err error) *failure {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || cn.aborted.Load() {
		st := stageHelo
		if greeting {
			st = stageGreeting
		}
		return r.netFailure(ctx, cn, st, err)
	}
	rep := remoteReply(se)
	text := fmt.Sprintf("host %s refused to talk to me: %s", cn.t.namaddr, serverText(se))
	if greeting || se.Code == 421 || rep.Temporary() {
		// smtp_skip_5xx_greeting=yes: a 5xx banner is treated as 4xx, so
		// that the next host is tried and nothing bounces.
		code := rep.Code // remoteReply made a bogus code 451
		if code/100 == 5 {
			code -= 100
		}
		return &failure{reply: envelope.NewReply(code, rep.Enhanced, text), err: err}
	}
	return &failure{reply: envelope.NewReply(rep.Code, rep.Enhanced, text), err: err, final: true}
}

// startTLS upgrades cn when the server offers STARTTLS (RFC 3207). go-smtp
// has no exported StartTLS on an existing Client, so the command is sent
// here and a new Client is made over the TLS connection; it is fed a
// synthetic 220 line in place of the greeting it expects, and sends a fresh
// EHLO/LHLO as §4.2 requires. Anything the server sent before the
// handshake is discarded with the old Client.
func (r *Relay) startTLS(ctx context.Context, cn *conn) (f *failure, handshakeFailed bool) {
	if ok, _ := cn.c.Extension("STARTTLS"); !ok {
		return nil, false
	}
	nc := cn.nc
	if err := nc.Conn.SetDeadline(time.Now().Add(r.cfg.HeloTimeout)); err != nil {
		return r.netFailure(ctx, cn, stageStartTLS, err), false
	}
	if _, err := io.WriteString(nc, "STARTTLS\r\n"); err != nil {
		return r.netFailure(ctx, cn, stageStartTLS, err), false
	}
	code, text, err := readReply(nc)
	if err != nil {
		return r.netFailure(ctx, cn, stageStartTLS, err), false
	}
	if code != 220 {
		// Opportunistic TLS: carry on in plaintext (Postfix "may").
		r.log.Info("STARTTLS refused, continuing in plaintext", "relay", cn.t.relay, "reply", strconv.Itoa(code)+" "+text)
		nc.Conn.SetDeadline(time.Time{})
		return nil, false
	}
	cfg := r.cfg.TLS.Clone()
	if cfg.ServerName == "" && cn.t.network == "tcp" {
		if _, err := netip.ParseAddr(cn.t.name); err != nil {
			cfg.ServerName = cn.t.name
		}
	}
	tc := tls.Client(cn.raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 7, 5},
			fmt.Sprintf("TLS handshake with %s failed", cn.t.namaddr)), err: err}, ctx.Err() == nil
	}
	tc.SetDeadline(time.Time{})
	nc2 := &netConn{Conn: tc, prefix: []byte("220 " + cn.t.name + " TLS\r\n")}
	c2 := newClient(nc2, cn.lmtp, r.cfg.HeloTimeout)
	if err := c2.Hello(r.cfg.Hostname); err != nil {
		cn.c, cn.nc = c2, nc2
		return r.helloFailure(ctx, cn, false, err), false
	}
	cn.c, cn.nc, cn.tls = c2, nc2, true
	return nil, false
}

// readReply reads one (possibly multi-line) SMTP reply byte by byte, so
// that nothing after it is consumed.
func readReply(r io.Reader) (code int, text string, err error) {
	var line []byte
	b := make([]byte, 1)
	for total := 0; total < 4096; total++ {
		if _, err := io.ReadFull(r, b); err != nil {
			return 0, "", err
		}
		if b[0] != '\n' {
			line = append(line, b[0])
			continue
		}
		l := string(line)
		line = line[:0]
		if len(l) > 0 && l[len(l)-1] == '\r' {
			l = l[:len(l)-1]
		}
		if len(l) < 3 {
			return 0, "", fmt.Errorf("malformed reply line %q", l)
		}
		n, err := strconv.Atoi(l[:3])
		if err != nil || n < 200 || n > 599 {
			return 0, "", fmt.Errorf("malformed reply line %q", l)
		}
		if len(l) > 3 && l[3] == '-' {
			continue
		}
		if len(l) > 4 {
			text = l[4:]
		}
		return n, text, nil
	}
	return 0, "", errors.New("reply too long")
}

// probe checks a cached connection before reuse, as Postfix does with an
// RSET (smtp_rset_timeout). After a transaction that ended with the final
// dot the session is already reset, and a NOOP is enough (one round trip).
// Otherwise RSET ends the open transaction; go-smtp's Reset forgets the
// EHLO, so the EHLO/LHLO is repeated here, under the HELO timeout, rather
// than implicitly before MAIL.
func (r *Relay) probe(ctx context.Context, cn *conn) bool {
	stop := context.AfterFunc(ctx, cn.abort)
	defer stop()
	cn.c.CommandTimeout = r.cfg.RsetTimeout
	if cn.clean {
		return cn.c.Noop() == nil && !cn.aborted.Load()
	}
	if err := cn.c.Reset(); err != nil {
		return false
	}
	cn.c.CommandTimeout = r.cfg.HeloTimeout
	if err := cn.c.Hello(r.cfg.Hostname); err != nil {
		return false
	}
	return !cn.aborted.Load()
}
