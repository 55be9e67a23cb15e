package mx

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
)

// conn wraps every accepted connection before go-smtp sees it. go-smtp reads
// and writes SMTP through it; conn adds what go-smtp lacks (see
// ../shared/go-smtp-notes.md):
//
//   - an idle timeout per read (smtpd_timeout), not one for the whole DATA;
//   - STARTTLS done here (RFC 3207), so the stream stays visible in clear
//     text above TLS, the handshake has its own deadline, and clear-text
//     commands pipelined after STARTTLS are discarded (RFC 3207 §4.2);
//   - a view of the command stream: DATA/BDAT boundaries, verbs counted for
//     the disconnect log line, "RCPT TO:<postmaster>" qualified with myorigin
//     (RFC 5321 §4.5.1: go-smtp refuses it), a command line length limit;
//   - Postfix wording for go-smtp's own protocol replies;
//   - a 421 on shutdown for idle clients, and closing after a final 421.
//
// Replies conn sends itself are only sent when go-smtp has answered every
// earlier command: conn stops handing lines to go-smtp at such a command and
// acts at the next Read, which go-smtp only makes once it is done.
type conn struct {
	raw  net.Conn // the accepted connection
	tls  *tls.Conn
	srv  *Server
	info *connInfo

	mu       sync.Mutex // guards mode and shutdown against Shutdown
	mode     readMode
	shutdown bool
	closing  bool // a final 421 was written: no more reads

	in, out  []byte
	rbuf     []byte
	wbuf     []byte // replies not yet sent
	readErr  error
	dataSt   int
	bdatLeft uint64

	pending     pendingAction
	pendingLine string
	wrote354    bool
	needEhlo    bool // after STARTTLS, until EHLO/HELO
	bannerSent  bool
	inEhloReply bool
	lastArg     string // argument of the last command handed to go-smtp

	// Session hygiene (hygiene.go).
	pendingCmd []byte // command line waiting for go-smtp to catch up
	inBdat     bool   // a BDAT transfer is under way (data restrictions ran)
	bdatDrop   bool   // the BDAT chunk being read was refused: drop it
	pregreet   bool   // the client spoke before the banner
}

type readMode int

const (
	modeCommand readMode = iota
	modeData             // DATA content until CRLF.CRLF
	modeBdat             // BDAT chunk of bdatLeft bytes
)

type pendingAction int

const (
	pendNone    pendingAction = iota
	pendData                  // DATA was handed over: switch to modeData after 354
	pendLocal                 // answer pendingLine ourselves (local reply), then go on
	pendFatal                 // answer pendingLine ourselves and close
	pendCommand               // decide about pendingCmd (conn.command, hygiene.go)
)

// connInfo is per connection state that must survive STARTTLS (go-smtp makes
// a new Session after it) and be shared with the session.
type connInfo struct {
	id       string
	remote   netip.AddrPort
	start    time.Time
	name     chan struct{}    // closed when the reverse lookup is done
	hostname string           // verified client name or "unknown"
	dnsLists *policy.DNSLists // started at accept (mx/rbl.go); read-only after
	peer     policy.Peer      // client names (lookupName), valid once name is closed

	// Session hygiene (hygiene.go).
	pstate        *policy.State // restriction side effects; survives STARTTLS
	anvilKey      netip.Prefix  // client key in the anvil; invalid: not counted
	accessDenied  string        // smtpd_delay_reject = no: refused at connect
	illPipelining atomic.Bool   // the client pipelined where RFC 2920 forbids it
	errors        atomic.Int32  // replies with 4xx/5xx (smtpd_*_error_limit)
	junk          atomic.Int32  // HELO/EHLO/RSET/NOOP/VRFY/ETRN commands
	sess          atomic.Pointer[session]

	mu       sync.Mutex
	helo     string
	ehlo     bool
	tlsState *tls.ConnectionState
	counts   map[string]int
	order    []string
}

func (ci *connInfo) count(verb string) {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if ci.counts == nil {
		ci.counts = map[string]int{}
	}
	if _, ok := ci.counts[verb]; !ok {
		ci.order = append(ci.order, verb)
	}
	ci.counts[verb]++
}

// summary renders "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5" like
// Postfix's disconnect line.
func (ci *connInfo) summary() string {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	var b strings.Builder
	total := 0
	for _, v := range ci.order {
		fmt.Fprintf(&b, "%s=%d ", strings.ToLower(v), ci.counts[v])
		total += ci.counts[v]
	}
	fmt.Fprintf(&b, "commands=%d", total)
	return b.String()
}

// Name returns the client's verified name, waiting for the lookup started
// at accept time.
func (ci *connInfo) clientName() string {
	<-ci.name
	return ci.hostname
}

func (ci *connInfo) tlsInfo() *tls.ConnectionState {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	return ci.tlsState
}

func (ci *connInfo) greeting() (string, bool) {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	return ci.helo, ci.ehlo
}

// maxCommandLine bounds one command line (RFC 5321 §4.5.3.1.4 allows 512
// octets; extensions such as ORCPT need more, Postfix line_length_limit is
// 2048).
const maxCommandLine = 4096

func (c *conn) transport() net.Conn {
	if c.tls != nil {
		return c.tls
	}
	return c.raw
}

// Read implements net.Conn for go-smtp.
func (c *conn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.closing {
			c.flush()
			return 0, errClosing
		}
		if c.tooManyErrors() {
			// smtpd_hard_error_limit: checked before each command.
			c.srv.log.Info("too many errors", "conn", c.info.id, "client", c.info.clientString(), "errors", c.info.errors.Load())
			return 0, c.fatal(envelope.NewReply(421, envelope.Enhanced{4, 7, 0}, c.srv.cfg.Hostname+" Error: too many errors"))
		}
		if err := c.runPending(); err != nil {
			return 0, err
		}
		c.process()
		if len(c.out) > 0 || c.pending != pendNone {
			continue
		}
		if c.readErr != nil {
			return 0, c.readErr
		}
		// go-smtp reads only after it has written its replies, and we are
		// about to wait for the client: send them now, in one write (a
		// 10-line EHLO reply or a pipelined group's replies cost one
		// system call, RFC 2920 §3.1).
		if err := c.flush(); err != nil {
			return 0, err
		}
		if err := c.fill(); err != nil {
			c.readErr = err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// errClosing ends go-smtp's read loop quietly after a final reply.
var errClosing = io.EOF

// fill reads more input with the idle deadline, or answers 421 when the
// server is shutting down and the client is between commands.
func (c *conn) fill() error {
	if c.rbuf == nil {
		c.rbuf = make([]byte, 8*1024)
	}
	// The deadline is set under mu so that interruptIdle cannot be undone.
	c.mu.Lock()
	if c.shutdown && c.mode == modeCommand && len(c.in) == 0 {
		c.mu.Unlock()
		return c.fatal(envelope.ReplyShutdown)
	}
	if t := c.srv.timeout(); t > 0 {
		c.raw.SetReadDeadline(time.Now().Add(t))
	} else {
		c.raw.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	n, err := c.transport().Read(c.rbuf)
	c.in = append(c.in, c.rbuf[:n]...)
	if err != nil {
		c.mu.Lock()
		down := c.shutdown
		c.mu.Unlock()
		var ne net.Error
		if down && errors.As(err, &ne) && ne.Timeout() {
			// Shutdown interrupted an idle read.
			return c.fatal(envelope.ReplyShutdown)
		}
		if errors.As(err, &ne) && ne.Timeout() {
			// smtpd(8): "421 4.4.2 host Error: timeout exceeded".
			c.srv.log.Info("timeout", "client", c.info.clientString(), "after", c.modeName())
			c.writeLine(fmt.Sprintf("421 4.4.2 %s Error: timeout exceeded", c.srv.cfg.Hostname))
			c.flush()
			c.closing = true
			return errClosing
		}
		return err
	}
	return nil
}

func (c *conn) modeName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.mode {
	case modeData:
		return "DATA"
	case modeBdat:
		return "BDAT"
	}
	return "command"
}

// fatal writes a final reply and makes further reads fail.
func (c *conn) fatal(r envelope.Reply) error {
	c.writeLine(replyLine(r))
	c.flush()
	c.closing = true
	return errClosing
}

func replyLine(r envelope.Reply) string {
	return strconv.Itoa(r.Code) + " " + r.Enhanced.String() + " " + r.Text
}

// runPending performs the action deferred until go-smtp answered every
// earlier command.
func (c *conn) runPending() error {
	act, line := c.pending, c.pendingLine
	c.pending, c.pendingLine = pendNone, ""
	switch act {
	case pendData:
		if c.wrote354 {
			c.setMode(modeData)
			c.dataSt = 2 // at beginning of a line: ".\r\n" ends an empty message
		}
		c.wrote354 = false
	case pendCommand:
		cmd := c.pendingCmd
		c.pendingCmd = nil
		return c.command(cmd)
	case pendLocal:
		c.writeLine(line)
	case pendFatal:
		c.writeLine(line)
		c.flush()
		c.closing = true
		return errClosing
	}
	return nil
}

func (c *conn) setMode(m readMode) {
	c.mu.Lock()
	c.mode = m
	c.mu.Unlock()
}

// process moves bytes from in to out according to the mode, stopping at a
// command that needs go-smtp to answer everything before it first.
func (c *conn) process() {
	for len(c.in) > 0 && c.pending == pendNone {
		c.mu.Lock()
		mode := c.mode
		c.mu.Unlock()
		switch mode {
		case modeData:
			c.processData()
		case modeBdat:
			n := uint64(len(c.in))
			if n > c.bdatLeft {
				n = c.bdatLeft
			}
			if !c.bdatDrop {
				c.out = append(c.out, c.in[:n]...)
			}
			c.in = c.in[n:]
			c.bdatLeft -= n
			if c.bdatLeft == 0 {
				c.bdatDrop = false
				c.setMode(modeCommand)
			}
		default:
			if !c.processCommand() {
				return
			}
		}
	}
}

// processData copies DATA content through, watching for the end-of-data
// sequence CRLF "." CRLF exactly as go-smtp recognises it.
func (c *conn) processData() {
	st := c.dataSt
	for i, b := range c.in {
		switch st {
		case 0:
			if b == '\r' {
				st = 1
			}
		case 1:
			switch b {
			case '\n':
				st = 2
			case '\r':
				st = 1
			default:
				st = 0
			}
		case 2:
			switch b {
			case '.':
				st = 3
			case '\r':
				st = 1
			default:
				st = 0
			}
		case 3:
			if b == '\r' {
				st = 4
			} else {
				st = 0
			}
		case 4:
			if b == '\n' {
				c.out = append(c.out, c.in[:i+1]...)
				c.in = c.in[i+1:]
				c.dataSt = 0
				c.setMode(modeCommand)
				return
			}
			if b == '\r' {
				st = 1
			} else {
				st = 0
			}
		}
	}
	c.dataSt = st
	c.out = append(c.out, c.in...)
	c.in = c.in[:0]
}

// processCommand takes one complete command line; it returns false when it
// needs more input. The command is decided upon (conn.command) only when
// go-smtp has answered every earlier one: the error count, the session's
// transaction and the pipelining test are then current.
func (c *conn) processCommand() bool {
	nl := bytes.IndexByte(c.in, '\n')
	if nl < 0 {
		if len(c.in) > maxCommandLine {
			c.in = c.in[:0]
			c.pending, c.pendingLine = pendFatal, "500 5.5.2 Error: line too long"
			return false
		}
		return false
	}
	line := c.in[:nl+1]
	bareLF := nl == 0 || c.in[nl-1] != '\r'
	if len(line) > maxCommandLine {
		c.in = c.in[nl+1:]
		c.pending, c.pendingLine = pendLocal, "500 5.5.2 Error: line too long"
		return false
	}
	if bareLF && c.srv.cfg.BareNewline == BareNewlineReject {
		c.in = c.in[:0]
		c.srv.log.Info("reject", "stage", "command", "client", c.info.clientString(), "reason", "bare <LF> received")
		c.pending, c.pendingLine = pendFatal, "550 5.5.2 Error: bare <LF> received"
		return false
	}
	c.pendingCmd = append(c.pendingCmd[:0], line...)
	c.in = c.in[nl+1:]
	c.pending = pendCommand
	return false
}

// verbName maps a command to the name in the disconnect summary; unknown
// verbs count as "unknown", as in Postfix.
func verbName(v string) string {
	switch v {
	case "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "STARTTLS", "HELP", "EXPN", "ETRN", "AUTH":
		return v
	}
	return "unknown"
}

// bdatSize mirrors go-smtp's BDAT argument parsing, so that conn and go-smtp
// agree on where the chunk ends (RFC 3030 §2).
func bdatSize(arg string) (uint64, bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return 0, false
	}
	if len(f) == 2 && !strings.EqualFold(f[1], "LAST") {
		return 0, false
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	return n, err == nil
}

// qualifyPostmaster rewrites "RCPT TO:<postmaster>" (any case, RFC 5321
// §4.5.1 requires it to be accepted without a domain) to
// "RCPT TO:<postmaster@myorigin>", which is what Postfix's
// append_at_myorigin does.
func qualifyPostmaster(line []byte, myorigin string) []byte {
	if myorigin == "" {
		return line
	}
	s := string(line)
	up := strings.ToUpper(s)
	i := strings.Index(up, "<POSTMASTER>")
	if i < 0 || !strings.HasPrefix(strings.TrimSpace(up[4:i]), "TO:") || strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(up[4:i]), "TO:")) != "" {
		return line
	}
	return []byte(s[:i+len("<postmaster")] + "@" + myorigin + s[i+len("<postmaster"):])
}

// startTLS answers STARTTLS and runs the handshake (RFC 3207).
func (c *conn) startTLS() error {
	c.writeLine("220 2.0.0 Ready to start TLS")
	if err := c.flush(); err != nil {
		return err
	}
	// RFC 3207 §4.2 / CVE-2011-0411: discard clear-text input that came
	// after the STARTTLS command.
	c.in = c.in[:0]
	tc := tls.Server(c.raw, c.srv.cfg.TLSConfig)
	if t := c.srv.timeout(); t > 0 {
		c.raw.SetDeadline(time.Now().Add(t))
	}
	if err := tc.Handshake(); err != nil {
		c.srv.log.Info("TLS handshake failed", "client", c.info.clientString(), "err", err)
		c.closing = true
		return err
	}
	c.raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tls = tc
	c.info.mu.Lock()
	c.info.tlsState = &st
	c.info.helo, c.info.ehlo = "", false
	c.info.mu.Unlock()
	c.needEhlo = true
	c.srv.log.Info("TLS connection established", "client", c.info.clientString(),
		"version", tlsVersion(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return nil
}

// Write implements net.Conn for go-smtp. go-smtp writes one reply line per
// call (textproto flushes per line).
func (c *conn) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	if !strings.HasSuffix(string(p), "\n") || strings.Contains(line, "\n") {
		// Not a single line: pass through untouched.
		return c.writeRaw(p)
	}
	out := c.rewrite(line)
	c.emit(out)
	if strings.HasPrefix(out, "421 ") {
		// A final 421 ends the session (RFC 5321 §3.8): nothing more is
		// read or written.
		c.closing = true
	}
	return len(p), nil
}

// writeLine queues a reply of conn's own (through emit: error count,
// error sleep, reject footer).
func (c *conn) writeLine(s string) {
	c.emit(s + "\r\n")
}

// writeRaw queues output; flush sends it.
func (c *conn) writeRaw(p []byte) (int, error) {
	if c.closing {
		// A final reply was sent: anything go-smtp adds is not sent.
		return len(p), nil
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

func (c *conn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	if t := c.srv.timeout(); t > 0 {
		c.raw.SetWriteDeadline(time.Now().Add(t))
	}
	_, err := c.transport().Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		c.closing = true
	}
	return err
}

// rewrite turns go-smtp's reply wording into Postfix's, adds STARTTLS to the
// EHLO reply, and notes 354 replies. It returns the bytes to send (with
// CRLF).
func (c *conn) rewrite(line string) string {
	if !c.bannerSent && strings.HasPrefix(line, "220 ") {
		c.bannerSent = true
		return c.greeting() + "\r\n"
	}
	if strings.HasPrefix(line, "354 ") {
		c.wrote354 = true
		return "354 End data with <CR><LF>.<CR><LF>\r\n"
	}
	if c.inEhloReply && len(line) > 3 && line[3] == ' ' {
		c.inEhloReply = false
	}
	if c.inEhloReply && line == "250-PIPELINING" && c.srv.cfg.TLSConfig != nil && c.tls == nil {
		return line + "\r\n250-STARTTLS\r\n"
	}
	if r, ok := c.pathSyntax(line); ok {
		line = r
	} else if r, ok := postfixWording[line]; ok {
		line = r
	} else if strings.HasPrefix(line, "250 2.0.0 Roger, accepting mail from ") {
		line = "250 2.1.0 Ok"
	} else if strings.HasPrefix(line, "250 2.0.0 I'll make sure ") {
		line = "250 2.1.5 Ok"
	} else if line == "501 5.5.2 Bad command" || strings.HasPrefix(line, "500 5.5.2 Syntax errors, ") ||
		(strings.HasSuffix(line, " command not implemented") && strings.HasPrefix(line, "502 ")) {
		line = "502 5.5.2 Error: command not recognized"
	} else if strings.HasPrefix(line, "221 ") {
		line = "221 2.0.0 Bye"
	}
	return line + "\r\n"
}

// pathSyntax distinguishes, for go-smtp's single "Was expecting ... syntax"
// reply, a malformed address (Postfix: 501 5.1.7 / 5.1.3, RFC 3463 bad
// sender / destination mailbox address syntax) from a malformed command
// (501 5.5.4).
func (c *conn) pathSyntax(line string) (string, bool) {
	var kw, bad string
	switch line {
	case "501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>":
		kw, bad = "FROM:", "501 5.1.7 Bad sender address syntax"
	case "501 5.5.2 Was expecting RCPT arg syntax of TO:<address>":
		kw, bad = "TO:", "501 5.1.3 Bad recipient address syntax"
	default:
		return "", false
	}
	if a := strings.TrimSpace(c.lastArg); len(a) > len(kw) && strings.EqualFold(a[:len(kw)], kw) && strings.TrimSpace(a[len(kw):]) != "" {
		return bad, true
	}
	return "", false
}

// postfixWording maps go-smtp v0.25.1's fixed replies to Postfix smtpd's.
var postfixWording = map[string]string{
	"502 5.5.1 Missing MAIL FROM command.":                      "503 5.5.1 Error: need MAIL command",
	"502 5.5.1 Missing RCPT TO command.":                        "503 5.5.1 Error: need RCPT command",
	"502 5.5.1 Please introduce yourself first.":                "503 5.5.1 Error: send HELO/EHLO first",
	"501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>": "501 5.5.4 Syntax: MAIL FROM:<address>",
	"501 5.5.2 Was expecting RCPT arg syntax of TO:<address>":   "501 5.5.4 Syntax: RCPT TO:<address>",
	"501 5.5.2 Domain/address argument required for HELO":       "501 5.5.4 Syntax: HELO hostname",
	"552 5.3.4 Max message size exceeded":                       "552 5.3.4 Message size exceeds fixed limit",
	"501 5.5.4 DATA command should not have any arguments":      "501 5.5.4 Syntax: DATA",
	"502 5.5.1 TLS not supported":                               "502 5.5.1 Error: command not implemented",
	"502 5.5.1 Already running in TLS":                          "554 5.5.1 Error: TLS already active",
	"500 5.5.1 Too many errors. Quiting now":                    "421 4.7.0 Error: too many errors",
	"421 4.4.5 Too busy. Try again later.":                      "421 4.3.2 Service currently unavailable",
	"250 2.0.0 Session reset":                                   "250 2.0.0 Ok",
	"250 2.0.0 I have successfully done nothing":                "250 2.0.0 Ok",
	"252 2.5.0 Cannot VRFY user, but will accept message":       "252 2.0.0 Send some mail, I'll try my best",
	"502 5.5.1 MAIL not allowed during message transfer":        "503 5.5.1 Error: MAIL not allowed during BDAT transfer",
	"502 5.5.1 RCPT not allowed during message transfer":        "503 5.5.1 Error: RCPT not allowed during BDAT transfer",
	"502 5.5.1 DATA not allowed during message transfer":        "503 5.5.1 Error: DATA not allowed during BDAT transfer",
	"500 5.5.4 Unknown MAIL FROM argument":                      "555 5.5.4 Unsupported option",
	"500 5.5.4 Unknown RCPT TO argument":                        "555 5.5.4 Unsupported option",
	"501 5.5.4 Unable to parse MAIL ESMTP parameters":           "501 5.5.4 Bad MAIL parameter syntax",
	"501 5.5.4 Unable to parse RCPT ESMTP parameters":           "501 5.5.4 Bad RCPT parameter syntax",
}

// Close implements net.Conn.
func (c *conn) Close() error {
	c.flush()
	if c.tls != nil {
		c.tls.SetWriteDeadline(time.Now().Add(time.Second))
		c.tls.Close()
	}
	c.srv.forget(c)
	return c.raw.Close()
}

func (c *conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// interruptIdle makes an idle client's pending read return, so that it gets
// 421 at shutdown. Clients in DATA/BDAT are left to finish.
func (c *conn) interruptIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shutdown = true
	if c.mode == modeCommand {
		c.raw.SetReadDeadline(time.Now())
	}
}

func (ci *connInfo) clientString() string {
	name := "unknown"
	select {
	case <-ci.name:
		name = ci.hostname
	default:
	}
	return name + "[" + ci.remote.Addr().Unmap().String() + "]"
}
