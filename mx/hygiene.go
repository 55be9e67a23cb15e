package mx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
)

// Hygiene is Postfix smtpd's protection against misbehaving clients. The
// zero value switches everything off; package cmd fills in Postfix's
// defaults.
type Hygiene struct {
	// SoftErrorLimit is smtpd_soft_error_limit: once a client has made
	// this many errors, every reply is delayed by ErrorSleepTime. 0: never.
	SoftErrorLimit int
	// HardErrorLimit is smtpd_hard_error_limit: at this many errors the
	// session ends with "421 4.7.0 host Error: too many errors". 0: no
	// limit. A delivered message forgives earlier errors.
	HardErrorLimit int
	// ErrorSleepTime is smtpd_error_sleep_time.
	ErrorSleepTime time.Duration
	// JunkCommandLimit is smtpd_junk_command_limit: beyond this many
	// HELO, EHLO, RSET, NOOP, VRFY and ETRN commands each one counts as an
	// error. 0: no limit.
	JunkCommandLimit int
	// DisableVRFY is disable_vrfy_command: VRFY gets 502 5.5.1.
	DisableVRFY bool
	// HeloRequired is smtpd_helo_required: VRFY needs HELO/EHLO first
	// (MAIL always does: go-smtp requires it).
	HeloRequired bool
	// ForbidUnauthPipelining is smtpd_forbid_unauth_pipelining: a client
	// that sends commands ahead of replies where RFC 2920 does not allow it
	// (after EHLO, HELO, STARTTLS, DATA, NOOP or VRFY, before the banner,
	// or at all without EHLO) gets "554 5.5.0 Error: SMTP protocol
	// synchronization" and is disconnected. Off, the violation is only
	// remembered for reject_unauth_pipelining.
	ForbidUnauthPipelining bool
	// RejectFooter is smtpd_reject_footer: text appended to every 4xx and
	// 5xx reply, as further reply lines ("\n" in the text breaks lines;
	// "\c" at its start appends to the last line instead). $client_address,
	// $client_port, $localtime and $server_name are expanded.
	RejectFooter string
	// StrictRFC821Envelopes is strict_rfc821_envelopes: MAIL FROM and RCPT
	// TO addresses must be enclosed in <>.
	StrictRFC821Envelopes bool
	// ForbiddenCommands is smtpd_forbidden_commands: verbs that end the
	// session with "221 2.7.0 Error: I can break rules, too. Goodbye." (a
	// web browser or proxy talking to port 25). A verb that looks like a
	// header ("Subject:") always does.
	ForbiddenCommands []string

	// ConnectionCountLimit, ConnectionRateLimit, MessageRateLimit and
	// RecipientRateLimit are smtpd_client_connection_count_limit,
	// smtpd_client_connection_rate_limit, smtpd_client_message_rate_limit
	// and smtpd_client_recipient_rate_limit, per client and (rates) per
	// RateTimeUnit (anvil_rate_time_unit, 0 = 60s). 0: no limit.
	ConnectionCountLimit int
	ConnectionRateLimit  int
	MessageRateLimit     int
	RecipientRateLimit   int
	RateTimeUnit         time.Duration
	// IPv4PrefixLength and IPv6PrefixLength are
	// smtpd_client_ipv4_prefix_length and smtpd_client_ipv6_prefix_length:
	// the client addresses counted together (0 = 32 and 84).
	IPv4PrefixLength int
	IPv6PrefixLength int
	// LimitExceptions is smtpd_client_event_limit_exceptions: clients
	// that are not counted. Nil: none.
	LimitExceptions func(ctx context.Context, ip netip.Addr) bool
}

func (h *Hygiene) check() error {
	for _, v := range []struct {
		name string
		n    int
	}{{"SoftErrorLimit", h.SoftErrorLimit}, {"HardErrorLimit", h.HardErrorLimit}, {"JunkCommandLimit", h.JunkCommandLimit},
		{"ConnectionCountLimit", h.ConnectionCountLimit}, {"ConnectionRateLimit", h.ConnectionRateLimit},
		{"MessageRateLimit", h.MessageRateLimit}, {"RecipientRateLimit", h.RecipientRateLimit}} {
		if v.n < 0 {
			return fmt.Errorf("mx: Hygiene.%s must not be negative", v.name)
		}
	}
	if h.IPv4PrefixLength < 0 || h.IPv4PrefixLength > 32 {
		return errors.New("mx: Hygiene.IPv4PrefixLength must be 0 to 32")
	}
	if h.IPv6PrefixLength < 0 || h.IPv6PrefixLength > 128 {
		return errors.New("mx: Hygiene.IPv6PrefixLength must be 0 to 128")
	}
	for i, v := range h.ForbiddenCommands {
		h.ForbiddenCommands[i] = strings.ToUpper(v)
	}
	return nil
}

// policyCheckTimeout bounds the restrictions of one command.
const policyCheckTimeout = rcptCheckTimeout

// greeting is the banner, or what replaces it: the anvil's refusal, or
// with smtpd_delay_reject = no the smtpd_client_restrictions rejection. A
// client that talks before it (RFC 5321 §4.3.1: the client waits for the
// greeting) is noted for smtpd_forbid_unauth_pipelining.
func (c *conn) greeting() string {
	h := &c.srv.cfg.Hygiene
	ip := c.info.remote.Addr().Unmap()
	if a := c.srv.anvil; a != nil && ip.IsValid() && (h.LimitExceptions == nil || !h.LimitExceptions(c.srv.ctx, ip)) {
		key, count, rate := a.connect(ip)
		c.info.anvilKey = key
		what := ""
		switch {
		case h.ConnectionCountLimit > 0 && count > h.ConnectionCountLimit:
			what = "Connection concurrency limit exceeded"
		case h.ConnectionRateLimit > 0 && rate > h.ConnectionRateLimit:
			what = "Connection rate limit exceeded"
			count = rate
		}
		if what != "" {
			c.srv.log.Warn(what, "conn", c.info.id, "count", count, "client", ip.String(), "prefix", key.String())
			return fmt.Sprintf("421 4.7.0 %s Error: too many connections from %s", c.srv.cfg.Hostname, ip)
		}
	}
	if !c.srv.policy.DelayReject() {
		req := c.info.request(c.srv)
		ctx, cancel := context.WithTimeout(c.srv.ctx, policyCheckTimeout)
		err := c.srv.policy.CheckConnect(ctx, req)
		cancel()
		if err != nil {
			line := smtpLine(toSMTP(err))
			c.logReject("CONNECT", req, err)
			c.info.accessDenied = req.Client.Name + "[" + ip.String() + "]"
			if line == "" {
				line = "554 5.7.1 Access denied"
			}
			return line
		}
	}
	if h.ForbidUnauthPipelining && c.peekInput() {
		c.pregreet = true // judged at the first command
	}
	return c.srv.banner()
}

// command decides about one command line, with every earlier command
// answered: hand it to go-smtp, or answer it here.
func (c *conn) command(line []byte) error {
	text := strings.TrimRight(string(line), "\r\n")
	verb, arg, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	if c.needEhlo {
		switch verb {
		case "EHLO", "HELO", "QUIT", "NOOP", "RSET":
			c.needEhlo = verb != "EHLO" && verb != "HELO"
		default:
			// RFC 3207 §4.2: the client must start over with EHLO.
			c.writeLine("503 5.5.1 Error: send HELO/EHLO first")
			return nil
		}
	}
	c.info.count(verbName(verb))
	c.lastArg = arg
	h := &c.srv.cfg.Hygiene
	if after, ok := c.illegalPipelining(verb, text); ok {
		c.info.illPipelining.Store(true)
		next := printableInput(c.in, 100)
		if after == "CONNECT" {
			next = printableInput([]byte(text), 100)
		}
		c.srv.log.Info("improper command pipelining", "conn", c.info.id, "after", after, "client", c.info.clientString(), "next", next)
		if h.ForbidUnauthPipelining {
			c.in = c.in[:0]
			return c.fatal(envelope.NewReply(554, envelope.Enhanced{5, 5, 0}, "Error: SMTP protocol synchronization"))
		}
	}
	if verb == "" {
		c.writeLine("500 5.5.2 Error: bad syntax")
		return nil
	}
	if c.forbidden(verb) {
		c.srv.log.Warn("non-SMTP command", "conn", c.info.id, "client", c.info.clientString(), "command", printableInput([]byte(text), 100))
		c.in = c.in[:0]
		c.writeLine("221 2.7.0 Error: I can break rules, too. Goodbye.")
		c.flush()
		c.closing = true
		return errClosing
	}
	if c.info.accessDenied != "" && verb != "QUIT" {
		c.writeLine("503 5.7.0 Error: access denied for " + c.info.accessDenied)
		return nil
	}
	switch verb {
	case "EHLO", "HELO":
		c.junkCommand()
		c.inBdat = false
		helo := strings.TrimSpace(arg)
		if helo != "" && !c.srv.policy.DelayReject() {
			req := c.info.request(c.srv)
			req.Client.Helo = helo
			ctx, cancel := context.WithTimeout(c.srv.ctx, policyCheckTimeout)
			err := c.srv.policy.CheckHelo(ctx, req)
			cancel()
			if err != nil {
				c.logReject(verb, req, err)
				c.writeLine(smtpLine(toSMTP(err)))
				return nil
			}
		}
		c.info.mu.Lock()
		c.info.helo = helo
		c.info.ehlo = verb == "EHLO"
		c.info.mu.Unlock()
		c.info.pstate.ResetHelo()
		c.inEhloReply = verb == "EHLO"
	case "MAIL":
		c.inBdat = false
		if h.StrictRFC821Envelopes && !strictPath(arg, "FROM:") {
			c.logProtocol("MAIL", "Illegal address syntax", text)
			c.writeLine("501 5.1.7 Bad sender address syntax")
			return nil
		}
	case "RCPT":
		if h.StrictRFC821Envelopes && !strictPath(arg, "TO:") {
			c.logProtocol("RCPT", "Illegal address syntax", text)
			c.writeLine("501 5.1.3 Bad recipient address syntax")
			return nil
		}
		line = qualifyPostmaster(line, c.srv.cfg.MyOrigin)
	case "DATA":
		if reply := c.dataRestrictions(); reply != "" {
			c.writeLine(reply)
			return nil
		}
		c.out = append(c.out, line...)
		c.pending = pendData
		return nil
	case "BDAT":
		n, sizeOK := bdatSize(arg)
		if !c.inBdat && sizeOK {
			if reply := c.dataRestrictions(); reply != "" {
				// Refused before the first chunk: its bytes are read and
				// dropped (RFC 3030 §2).
				c.bdatLeft, c.bdatDrop = n, true
				if n > 0 {
					c.setMode(modeBdat)
				}
				c.writeLine(reply)
				return nil
			}
		}
		if sizeOK {
			c.inBdat = !strings.EqualFold(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(arg), strconv.FormatUint(n, 10))), "LAST")
			c.bdatLeft = n
			c.out = append(c.out, line...)
			if n > 0 {
				c.setMode(modeBdat)
			}
			return nil
		}
	case "STARTTLS":
		if c.srv.cfg.TLSConfig != nil && c.tls == nil && strings.TrimSpace(arg) == "" {
			return c.startTLS()
		}
	case "VRFY":
		c.junkCommand()
		c.vrfy(arg)
		return nil
	case "RSET":
		c.junkCommand()
		c.inBdat = false
	case "NOOP":
		c.junkCommand()
	case "ETRN":
		c.junkCommand()
		c.writeLine("502 5.5.1 Error: command not implemented")
		return nil
	case "QUIT", "AUTH":
	default:
		c.writeLine("502 5.5.2 Error: command not recognized")
		return nil
	}
	c.out = append(c.out, line...)
	return nil
}

// lastCommands may only be the last command of a pipelined group (RFC
// 2920 §3.1; Postfix SMTPD_CMD_FLAG_LAST).
var lastCommands = map[string]bool{"EHLO": true, "HELO": true, "STARTTLS": true, "DATA": true, "NOOP": true, "VRFY": true}

// illegalPipelining reports a command followed by input the client sent
// before our reply where RFC 2920 does not allow it: after a "last"
// command, at all before EHLO, or before the banner.
func (c *conn) illegalPipelining(verb, text string) (after string, bad bool) {
	if c.pregreet {
		c.pregreet = false
		return "CONNECT", true
	}
	if _, esmtp := c.info.greeting(); esmtp && !lastCommands[verb] {
		return "", false
	}
	if len(c.in) > 0 || c.peekInput() {
		return verb, true
	}
	return "", false
}

// peekInput reports input waiting in the socket, without reading it.
func (c *conn) peekInput() bool {
	sc, ok := c.raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return n > 0
}

func (c *conn) forbidden(verb string) bool {
	if strings.HasSuffix(verb, ":") && len(verb) > 1 {
		return true // a header: the client sends a message as commands
	}
	for _, f := range c.srv.cfg.Hygiene.ForbiddenCommands {
		if verb == f {
			return true
		}
	}
	return false
}

// strictPath checks strict_rfc821_envelopes: "FROM:<addr>" with nothing but
// ESMTP parameters after the closing bracket.
func strictPath(arg, kw string) bool {
	a := strings.TrimSpace(arg)
	if len(a) < len(kw) || !strings.EqualFold(a[:len(kw)], kw) {
		return true // a syntax error go-smtp reports
	}
	a = strings.TrimSpace(a[len(kw):])
	if !strings.HasPrefix(a, "<") {
		return false
	}
	end := strings.IndexByte(a, '>')
	return end > 0 && (end == len(a)-1 || a[end+1] == ' ')
}

// junkCommand counts a HELO/EHLO/RSET/NOOP/VRFY/ETRN; beyond
// smtpd_junk_command_limit each one is an error.
func (c *conn) junkCommand() {
	n := c.info.junk.Add(1)
	if lim := c.srv.cfg.Hygiene.JunkCommandLimit; lim > 0 && int(n)-1 > lim {
		c.info.errors.Add(1)
	}
}

// vrfy answers VRFY (RFC 5321 §3.5.1) as Postfix does: the recipient
// restrictions decide, and a known address gets 252.
func (c *conn) vrfy(arg string) {
	h := &c.srv.cfg.Hygiene
	if h.DisableVRFY {
		c.writeLine("502 5.5.1 VRFY command is disabled")
		return
	}
	if helo, _ := c.info.greeting(); h.HeloRequired && helo == "" {
		c.writeLine("503 5.5.1 Error: send HELO/EHLO first")
		return
	}
	a := strings.TrimSpace(arg)
	if a == "" {
		c.writeLine("501 5.5.4 Syntax: VRFY address")
		return
	}
	s := strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	if strings.EqualFold(s, "postmaster") {
		s += "@" + c.srv.cfg.MyOrigin
	}
	addr, err := envelope.ParseAddress(s, true)
	if err != nil || addr.IsNull() {
		c.writeLine("501 5.1.3 Bad recipient address syntax")
		return
	}
	req := c.info.request(c.srv)
	req.Rcpt = addr
	ctx, cancel := context.WithTimeout(c.srv.ctx, policyCheckTimeout)
	defer cancel()
	if _, err := c.srv.policy.CheckRcpt(ctx, req); err != nil {
		c.logReject("VRFY", req, err)
		c.writeLine(smtpLine(toSMTP(err)))
		return
	}
	c.writeLine("252 2.0.0 " + a)
}

// dataRestrictions runs smtpd_data_restrictions for DATA or the first BDAT
// of a transaction; it returns the rejection reply, or "" to let go-smtp
// go on (including its own 503 when there is no transaction).
func (c *conn) dataRestrictions() string {
	s := c.info.sess.Load()
	if s == nil || s.from == nil || len(s.rcpts) == 0 {
		return ""
	}
	var rcpt envelope.Address
	if len(s.rcptOrig) == 1 {
		rcpt = s.rcptOrig[0]
	}
	req := s.request(rcpt)
	ctx, cancel := context.WithTimeout(s.ctx, policyCheckTimeout)
	defer cancel()
	if err := c.srv.policy.CheckData(ctx, req); err != nil {
		s.logReject("DATA", s.toList(), err)
		return smtpLine(toSMTP(err))
	}
	return ""
}

// emit queues one reply (with CRLF): a client that made
// smtpd_soft_error_limit errors waits smtpd_error_sleep_time first, and a
// 4xx/5xx reply counts as an error and gets smtpd_reject_footer.
func (c *conn) emit(out string) {
	h := &c.srv.cfg.Hygiene
	if h.SoftErrorLimit > 0 && h.ErrorSleepTime > 0 && int(c.info.errors.Load()) >= h.SoftErrorLimit && !strings.HasPrefix(out, "421 ") {
		t := time.NewTimer(h.ErrorSleepTime)
		select {
		case <-t.C:
		case <-c.srv.ctx.Done():
			t.Stop()
		}
	}
	if len(out) > 4 && (out[0] == '4' || out[0] == '5') && out[3] == ' ' && strings.Count(out, "\n") == 1 {
		c.info.errors.Add(1)
		if h.RejectFooter != "" {
			out = c.footer(strings.TrimRight(out, "\r\n")) + "\r\n"
		}
	}
	c.writeRaw([]byte(out))
}

// footer appends smtpd_reject_footer to a reply line: each footer line gets
// the reply's code and enhanced status code.
func (c *conn) footer(line string) string {
	code, rest := line[:3], line[4:]
	prefix := code
	if first, _, _ := strings.Cut(rest, " "); first != "" {
		if _, ok := envelope.ParseEnhanced(first); ok {
			prefix += " " + first
		}
	}
	// The two characters \n break lines, as in main.cf; so does a real
	// newline (a TOML "\n").
	f := strings.ReplaceAll(c.expandFooter(c.srv.cfg.Hygiene.RejectFooter), "\n", `\n`)
	lines := []string{line}
	if strings.HasPrefix(f, `\c`) {
		parts := strings.Split(f[2:], `\n`)
		lines[0] += parts[0]
		for _, p := range parts[1:] {
			lines = append(lines, prefix+" "+p)
		}
	} else {
		for _, p := range strings.Split(f, `\n`) {
			lines = append(lines, prefix+" "+p)
		}
	}
	for i := 0; i < len(lines)-1; i++ {
		lines[i] = lines[i][:3] + "-" + lines[i][4:]
	}
	return strings.Join(lines, "\r\n")
}

// expandFooter replaces the smtpd_reject_footer $names.
func (c *conn) expandFooter(f string) string {
	if !strings.Contains(f, "$") {
		return f
	}
	ap := c.info.remote
	r := strings.NewReplacer(
		"${client_address}", ap.Addr().Unmap().String(), "$client_address", ap.Addr().Unmap().String(),
		"${client_port}", strconv.Itoa(int(ap.Port())), "$client_port", strconv.Itoa(int(ap.Port())),
		"${localtime}", time.Now().Format(time.Stamp), "$localtime", time.Now().Format(time.Stamp),
		"${server_name}", c.srv.cfg.Hostname, "$server_name", c.srv.cfg.Hostname,
	)
	return r.Replace(f)
}

// tooManyErrors reports smtpd_hard_error_limit reached.
func (c *conn) tooManyErrors() bool {
	lim := c.srv.cfg.Hygiene.HardErrorLimit
	return lim > 0 && int(c.info.errors.Load()) >= lim
}

// forgive resets the error and junk counts after a delivered message, as
// Postfix does.
func (ci *connInfo) forgive() {
	ci.errors.Store(0)
	ci.junk.Store(0)
}

// request is the policy view of the connection (no transaction): CONNECT,
// HELO and VRFY.
func (ci *connInfo) request(s *Server) *policy.Request {
	helo, ehlo := ci.greeting()
	cl := envelope.Client{Addr: ci.remote.Addr().Unmap(), Name: ci.clientName(), Helo: helo, Proto: "SMTP"}
	if ehlo {
		cl.Proto = "ESMTP"
	}
	if st := ci.tlsInfo(); st != nil {
		cl.Proto += "S"
		cl.TLS = tlsDescription(st)
	}
	return &policy.Request{
		Client:    cl,
		Peer:      ci.peer,
		Pipelined: ci.illPipelining.Load(),
		DNSLists:  ci.dnsLists,
		State:     ci.pstate,
		Log:       s.log.With("conn", ci.id),
	}
}

// request is the policy view of a command in the session's transaction.
func (s *session) request(rcpt envelope.Address) *policy.Request {
	r := s.info.request(s.srv)
	r.Client = s.client()
	r.Log = s.log
	if s.from != nil {
		f := *s.from
		r.From = &f
	}
	r.Rcpt = rcpt
	r.RcptCount = s.nrcpt
	r.SMTPUTF8 = s.mailOpts.UTF8
	return r
}

// logReject logs a rejection made by conn itself, like session.logReject.
func (c *conn) logReject(stage string, req *policy.Request, err error) {
	r := envelope.ReplyOf(err)
	from := ""
	if req.From != nil {
		from = req.From.String()
	}
	attrs := []any{"conn", c.info.id, "stage", stage, "client", c.info.clientString(), "helo", req.Client.Helo, "from", from,
		"to", req.Rcpt.String(), "code", r.Code, "dsn", r.Enhanced.String(), "reason", r.Text}
	var ee *envelope.Error
	if errors.As(err, &ee) && ee.Err != nil {
		attrs = append(attrs, "err", ee.Err.Error())
	}
	c.srv.log.Info("reject", attrs...)
}

// logProtocol logs a refused malformed command (Postfix "warning: Illegal
// address syntax from client in MAIL command").
func (c *conn) logProtocol(stage, what, text string) {
	c.srv.log.Info("reject", "conn", c.info.id, "stage", stage, "client", c.info.clientString(), "reason", what, "command", printableInput([]byte(text), 100))
}

// smtpLine formats a go-smtp reply as one line (multi-line text is
// flattened).
func smtpLine(e *smtp.SMTPError) string {
	if e == nil {
		return ""
	}
	msg := strings.ReplaceAll(e.Message, "\n", " ")
	if e.EnhancedCode == smtp.NoEnhancedCode || e.EnhancedCode == (smtp.EnhancedCode{}) {
		return strconv.Itoa(e.Code) + " " + msg
	}
	ec := e.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, ec[0], ec[1], ec[2], msg)
}

// printableInput renders client input for a log line.
func printableInput(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, string(b))
}

// messageRate counts a MAIL command against smtpd_client_message_rate_limit.
func (s *session) messageRate() error {
	a, k, lim := s.srv.anvil, s.info.anvilKey, s.srv.cfg.Hygiene.MessageRateLimit
	if a == nil || !k.IsValid() || lim <= 0 {
		return nil
	}
	if n := a.mail(k); n > lim {
		ip := s.info.remote.Addr().Unmap()
		s.log.Warn("Message delivery request rate limit exceeded", "count", n, "client", s.info.clientString())
		e := envelope.Errorf(450, envelope.Enhanced{4, 7, 1}, "Error: too much mail from %s", ip)
		s.logReject("MAIL", "", e)
		return e
	}
	return nil
}

// recipientRate counts a RCPT command against
// smtpd_client_recipient_rate_limit.
func (s *session) recipientRate() error {
	a, k, lim := s.srv.anvil, s.info.anvilKey, s.srv.cfg.Hygiene.RecipientRateLimit
	if a == nil || !k.IsValid() || lim <= 0 {
		return nil
	}
	if n := a.rcpt(k); n > lim {
		ip := s.info.remote.Addr().Unmap()
		s.log.Warn("Recipient address rate limit exceeded", "count", n, "client", s.info.clientString())
		return envelope.Errorf(450, envelope.Enhanced{4, 7, 1}, "Error: too many recipients from %s", ip)
	}
	return nil
}

// endOfData runs smtpd_end_of_data_restrictions.
func (s *session) endOfData(req *policy.Request) error {
	ctx, cancel := context.WithTimeout(s.ctx, policyCheckTimeout)
	defer cancel()
	return s.srv.policy.CheckEOD(ctx, req)
}

// redirect applies an access(5) or header_checks REDIRECT: the message goes
// to that address (after virtual_alias_maps) instead of its recipients.
func (s *session) redirect(env *envelope.Envelope, to string) error {
	if to == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, policyCheckTimeout)
	defer cancel()
	targets, err := s.srv.policy.Redirect(ctx, to)
	if err != nil {
		return envelope.Wrap(err, 451, envelope.Enhanced{4, 3, 0}, "Error: queue file write error")
	}
	orig := env.Rcpts
	env.Rcpts = env.Rcpts[:0:0]
	for _, t := range targets {
		env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: t, Orig: t})
	}
	s.log.Info("redirect", "client", s.info.clientString(), "from", env.From.String(), "to", s.toList(),
		"nrcpt", len(orig), "redirect", joinAddrs(targets))
	return nil
}

func joinAddrs(as []envelope.Address) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}
