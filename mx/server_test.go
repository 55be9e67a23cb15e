package mx

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
)

// fakeSpool keeps committed messages in memory.
type fakeSpool struct {
	mu        sync.Mutex
	n         int
	msgs      []fakeMsg
	commitErr error
	aborted   int
}

type fakeMsg struct {
	env  envelope.Envelope
	data string
}

type fakeIncoming struct {
	s  *fakeSpool
	id string
	b  strings.Builder
}

func (s *fakeSpool) Create(context.Context) (Incoming, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return &fakeIncoming{s: s, id: fmt.Sprintf("Q%04d", s.n)}, nil
}

func (in *fakeIncoming) ID() string                  { return in.id }
func (in *fakeIncoming) Write(p []byte) (int, error) { return in.b.Write(p) }
func (in *fakeIncoming) Abort() {
	in.s.mu.Lock()
	in.s.aborted++
	in.s.mu.Unlock()
}
func (in *fakeIncoming) Commit(_ context.Context, env *envelope.Envelope) error {
	in.s.mu.Lock()
	defer in.s.mu.Unlock()
	if in.s.commitErr != nil {
		return in.s.commitErr
	}
	env.ID = in.id
	env.Size = int64(in.b.Len())
	in.s.msgs = append(in.s.msgs, fakeMsg{*env, in.b.String()})
	return nil
}

func (s *fakeSpool) messages() []fakeMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakeMsg(nil), s.msgs...)
}

// fakeChecker accepts @example.com recipients except unknown@, refuses
// others as relay, and fails for tempfail@.
type fakeChecker struct{}

func (fakeChecker) CheckRcpt(_ context.Context, req *policy.Request) (*policy.RcptVerdict, error) {
	switch {
	case req.Rcpt.Key() == "tempfail@example.com":
		return nil, errors.New("ldap: connection refused to 10.1.2.3 /etc/secret")
	case req.Rcpt.Key() == "unknown@example.com":
		return nil, envelope.Errorf(550, envelope.Enhanced{5, 1, 1}, "%s: Recipient address rejected: User unknown in relay recipient table", req.Rcpt.Bracketed())
	case req.Rcpt.Domain == "example.com", req.Rcpt.Domain == "mx.example.com":
		return &policy.RcptVerdict{Expanded: []envelope.Address{req.Rcpt}}, nil
	}
	return nil, envelope.Errorf(554, envelope.Enhanced{5, 7, 1}, "%s: Relay access denied", req.Rcpt.Bracketed())
}

type testServer struct {
	srv   *Server
	spool *fakeSpool
	addr  string
}

func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{
		Hostname:         "mx.example.com",
		MessageSizeLimit: 100000,
		RecipientLimit:   3,
		Timeout:          5 * time.Second,
		HopcountLimit:    5,
	}
	if mod != nil {
		mod(&cfg)
	}
	return serve(t, cfg, fakeChecker{})
}

// serve starts a Server with cfg and ch on 127.0.0.1:0, a fresh fake spool,
// and shuts it down when the test ends.
func serve(t *testing.T, cfg Config, ch Checker) *testServer {
	t.Helper()
	sp := &fakeSpool{}
	s, err := New(cfg, sp, ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &testServer{srv: s, spool: sp, addr: ln.Addr().String()}
}

// client is a raw SMTP client for dialogs.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	cl.expect("220 mx.example.com ESMTP mxfront")
	return cl
}

// reply reads one (possibly multi-line) reply and returns its lines.
func (c *client) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (so far %q)", err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// cmd sends a line and returns the last line of the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	r := c.reply()
	return r[len(r)-1]
}

func (c *client) expect(want string) {
	c.t.Helper()
	r := c.reply()
	if got := r[len(r)-1]; got != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

func (c *client) must(line, want string) {
	c.t.Helper()
	if got := c.cmd(line); got != want {
		c.t.Fatalf("%s: got %q, want %q", line, got, want)
	}
}

func (c *client) mustPrefix(line, want string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%s: got %q, want prefix %q", line, got, want)
	}
	return got
}

func TestEhloExtensions(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.TLSConfig = testTLSConfig(t) })
	c := dial(t, ts.addr)
	c.send("EHLO client.test\r\n")
	r := strings.Join(c.reply(), "\n")
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 100000", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS"} {
		if !strings.Contains(r, "250-"+ext+"\n") && !strings.HasSuffix(r, "250 "+ext) {
			t.Errorf("EHLO reply lacks %s:\n%s", ext, r)
		}
	}
	// Without a certificate there is no STARTTLS.
	ts2 := startServer(t, nil)
	c2 := dial(t, ts2.addr)
	c2.send("EHLO client.test\r\n")
	if r := strings.Join(c2.reply(), "\n"); strings.Contains(r, "STARTTLS") {
		t.Errorf("STARTTLS advertised without TLS config:\n%s", r)
	}
	c2.must("STARTTLS", "502 5.5.1 Error: command not implemented")
}

func TestDialogReplies(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	// Postfix's replies for protocol errors (RFC 5321 §4.3.2 sequencing).
	c.must("MAIL FROM:<a@remote.test>", "503 5.5.1 Error: send HELO/EHLO first")
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("RCPT TO:<b@example.com>", "503 5.5.1 Error: need MAIL command")
	c.must("DATA", "503 5.5.1 Error: need RCPT command")
	c.must("MAIL FROM:<a@remote.test> SIZE=200000", "552 5.3.4 Message size exceeds fixed limit")
	c.must("MAIL FROM:<a@remote..test>", "501 5.1.7 Bad sender address syntax")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("MAIL FROM:<a@remote.test>", "503 5.5.1 Error: nested MAIL command")
	c.must("DATA", "503 5.5.1 Error: need RCPT command")
	c.must("RCPT TO:<b@exa mple.com>", "501 5.1.3 Bad recipient address syntax")
	c.must("RCPT TO:<b@example..com>", "501 5.1.3 Bad recipient address syntax")
	c.must("RCPT TO:<üser@example.com>", "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
	c.must("RCPT TO:<unknown@example.com>", "550 5.1.1 <unknown@example.com>: Recipient address rejected: User unknown in relay recipient table")
	c.must("RCPT TO:<x@remote.test>", "554 5.7.1 <x@remote.test>: Relay access denied")
	// An internal error never leaks its text and is temporary.
	c.must("RCPT TO:<tempfail@example.com>", "451 4.3.0 Error: internal error, please try again later")
	c.must("RCPT TO:<b1@example.com>", "250 2.1.5 Ok")
	c.must("RCPT TO:<b2@example.com>", "250 2.1.5 Ok")
	c.must("RCPT TO:<b3@example.com>", "250 2.1.5 Ok")
	c.must("RCPT TO:<b4@example.com>", "452 4.5.3 Error: too many recipients")
	c.must("RSET", "250 2.0.0 Ok")
	c.must("NOOP", "250 2.0.0 Ok")
	c.must("FOO", "502 5.5.2 Error: command not recognized")
	c.must("QUIT", "221 2.0.0 Bye")
}

func TestPostmasterWithoutDomain(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<>", "250 2.1.0 Ok")
	// RFC 5321 §4.5.1: <postmaster> without a domain must be accepted.
	c.must("RCPT TO:<Postmaster>", "250 2.1.5 Ok")
	c.must("DATA", "354 End data with <CR><LF>.<CR><LF>")
	c.mustPrefix("Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0 Ok: queued as Q")
	m := ts.spool.messages()
	if len(m) != 1 || m[0].env.Rcpts[0].Addr.String() != "Postmaster@mx.example.com" || !m[0].env.From.IsNull() {
		t.Fatalf("got %+v", m)
	}
}

func sendMessage(t *testing.T, c *client, body string) string {
	t.Helper()
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<b@example.com>", "250 2.1.5 Ok")
	c.must("DATA", "354 End data with <CR><LF>.<CR><LF>")
	c.send(body)
	r := c.reply()
	return r[len(r)-1]
}

func TestDataQueuedWithReceivedHeader(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	long := strings.Repeat("x", 5000) // beyond go-smtp's default 2000
	got := sendMessage(t, c, "Subject: t\r\n\r\n"+long+"\r\n..dot\r\n.\r\n")
	if !strings.HasPrefix(got, "250 2.0.0 Ok: queued as Q0001") {
		t.Fatalf("got %q", got)
	}
	m := ts.spool.messages()[0]
	wantPrefix := "Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.example.com (mxfront) with ESMTP id Q0001\r\n\tfor <b@example.com>; "
	if !strings.HasPrefix(m.data, wantPrefix) {
		t.Fatalf("Received header:\n%q\nwant prefix\n%q", m.data, wantPrefix)
	}
	if !strings.HasSuffix(m.data, "\r\n\r\n"+long+"\r\n.dot\r\n") {
		t.Fatalf("content not intact: %q", m.data[len(m.data)-40:])
	}
	if m.env.Client.Helo != "client.test" || m.env.Client.Proto != "ESMTP" {
		t.Fatalf("client %+v", m.env.Client)
	}
	// The connection is still usable after the long line.
	c.must("NOOP", "250 2.0.0 Ok")
}

func TestBareNewlineNormalize(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	// SMTP smuggling attempt: <LF>.<CR><LF> does not end the data, and the
	// bare LFs are queued as CRLF so no backend can see a terminator.
	got := sendMessage(t, c, "Subject: t\r\n\r\nline1\nline2\n.\r\nMAIL FROM:<evil@x>\r\nbare\rcr\r\n.\r\n")
	if !strings.HasPrefix(got, "250 2.0.0 Ok: queued") {
		t.Fatalf("got %q", got)
	}
	m := ts.spool.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages, want 1", len(m))
	}
	body := m[0].data[strings.Index(m[0].data, "Subject:"):]
	want := "Subject: t\r\n\r\nline1\r\nline2\r\n.\r\nMAIL FROM:<evil@x>\r\nbare\r\ncr\r\n"
	if body != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestBareNewlineReject(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.BareNewline = BareNewlineReject })
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	got := sendMessage(t, c, "Subject: t\r\n\r\nline1\nline2\n.\r\nMAIL FROM:<evil@x>\r\n\r\n.\r\n")
	if got != "550 5.5.2 Error: bare <LF> received" {
		t.Fatalf("got %q", got)
	}
	if n := len(ts.spool.messages()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
	// The smuggled command is still content, never a command.
	c.must("RSET", "250 2.0.0 Ok")
}

func TestBDAT(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<b@example.com>", "250 2.1.5 Ok")
	chunk1 := "Subject: chunk\r\n\r\nRCPT TO:<postmaster>\r\n"
	c.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
	if r := c.reply(); r[0] != "250 2.0.0 Continue" && !strings.HasPrefix(r[0], "250 ") {
		t.Fatalf("got %q", r)
	}
	chunk2 := "no final newline"
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
	if r := c.reply(); !strings.HasPrefix(r[0], "250 2.0.0 Ok: queued as") {
		t.Fatalf("got %q", r)
	}
	m := ts.spool.messages()[0]
	// Content inside BDAT is never rewritten, and a final CRLF is added.
	if !strings.HasSuffix(m.data, "\r\nRCPT TO:<postmaster>\r\nno final newline\r\n") {
		t.Fatalf("content %q", m.data)
	}
	c.must("NOOP", "250 2.0.0 Ok")
}

func TestMessageTooBig(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MessageSizeLimit = 1000 })
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	got := sendMessage(t, c, "Subject: big\r\n\r\n"+strings.Repeat("y", 2000)+"\r\n.\r\n")
	if got != "552 5.3.4 Error: message file too big" {
		t.Fatalf("got %q", got)
	}
	if len(ts.spool.messages()) != 0 || ts.spool.aborted != 1 {
		t.Fatalf("queued %d, aborted %d", len(ts.spool.messages()), ts.spool.aborted)
	}
	c.must("NOOP", "250 2.0.0 Ok")
}

func TestTooManyHops(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	hops := strings.Repeat("Received: from a by b; Sun, 22 Nov 2026 10:00:00 +0000\r\n", 5)
	if got := sendMessage(t, c, hops+"Subject: loop\r\n\r\nx\r\n.\r\n"); got != "554 5.4.0 Error: too many hops" {
		t.Fatalf("got %q", got)
	}
	// One less passes: 4 + ours = 5 = hopcount_limit.
	hops = strings.Repeat("Received: from a by b; Sun, 22 Nov 2026 10:00:00 +0000\r\n", 4)
	if got := sendMessage(t, c, hops+"Subject: ok\r\n\r\nReceived: in body is fine\r\n.\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("got %q", got)
	}
}

func TestCommitFailureIsTemporary(t *testing.T) {
	ts := startServer(t, nil)
	ts.spool.commitErr = errors.New("write /var/spool/mxfront/incoming/x: no space left on device")
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	if got := sendMessage(t, c, "Subject: t\r\n\r\nx\r\n.\r\n"); got != "451 4.3.0 Error: internal error, please try again later" {
		t.Fatalf("got %q", got)
	}
	ts.spool.commitErr = &envelope.Error{Reply: envelope.ReplyNoSpace}
	if got := sendMessage(t, c, "Subject: t\r\n\r\nx\r\n.\r\n"); got != "452 4.3.1 Insufficient system storage" {
		t.Fatalf("got %q", got)
	}
}

func TestToSMTPMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("secret internal detail"), "451 4.3.0 Error: internal error, please try again later"},
		{fmt.Errorf("wrapped: %w", envelope.Errorf(550, envelope.Enhanced{5, 1, 1}, "unknown")), "550 5.1.1 unknown"},
		{smtp.ErrDataTooLarge, "552 5.3.4 Error: message file too big"},
		{&envelope.Error{Reply: envelope.NewReply(450, envelope.Enhanced{5, 7, 1}, "class fixed")}, "450 4.7.1 class fixed"},
	} {
		se := toSMTP(tc.err)
		got := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		if got != tc.want {
			t.Errorf("toSMTP(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestIdleTimeoutIsPerRead(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<b@example.com>", "250 2.1.5 Ok")
	c.must("DATA", "354 End data with <CR><LF>.<CR><LF>")
	// A slow but steady upload lasting longer than the timeout succeeds.
	c.send("Subject: slow\r\n\r\n")
	for i := 0; i < 6; i++ {
		time.Sleep(100 * time.Millisecond)
		c.send("line\r\n")
	}
	c.send(".\r\n")
	if r := c.reply(); !strings.HasPrefix(r[0], "250 2.0.0 Ok: queued") {
		t.Fatalf("got %q", r)
	}
	// An idle client is dropped with Postfix's reply.
	c.expect("421 4.4.2 mx.example.com Error: timeout exceeded")
}

func TestShutdownTempfailsIdleSessions(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	c.expect("421 4.3.2 Service shutting down, closing transmission channel")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func TestShutdownLetsDataFinish(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<b@example.com>", "250 2.1.5 Ok")
	c.must("DATA", "354 End data with <CR><LF>.<CR><LF>")
	c.send("Subject: in flight\r\n\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	time.Sleep(200 * time.Millisecond)
	c.send("rest\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r[0], "250 2.0.0 Ok: queued") {
		t.Fatalf("got %q", r)
	}
	c.expect("421 4.3.2 Service shutting down, closing transmission channel")
	<-done
}

func TestStartTLS(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.TLSConfig = testTLSConfig(t) })
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	// A command pipelined after STARTTLS in clear text must be discarded
	// (RFC 3207 §4.2, CVE-2011-0411).
	c.send("STARTTLS\r\nRSET\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	c.must("MAIL FROM:<a@remote.test>", "503 5.5.1 Error: send HELO/EHLO first")
	c.send("EHLO client.test\r\n")
	if r := strings.Join(c.reply(), "\n"); strings.Contains(r, "STARTTLS") {
		t.Fatalf("STARTTLS offered again:\n%s", r)
	}
	if got := sendMessage(t, c, "Subject: tls\r\n\r\nx\r\n.\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("got %q", got)
	}
	m := ts.spool.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages (the injected RSET must not have run as a command)", len(m))
	}
	if m[0].env.Client.Proto != "ESMTPS" || !strings.Contains(m[0].data, "(using TLSv1.3 with cipher ") {
		t.Fatalf("proto %q, data %q", m[0].env.Client.Proto, m[0].data)
	}
}

func TestLongCommandLine(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("NOOP "+strings.Repeat("z", 5000), "500 5.5.2 Error: line too long")
	c.must("NOOP", "250 2.0.0 Ok")
}

func TestGoSMTPClient(t *testing.T) {
	// The go-smtp client (what other MTAs look like) with SMTPUTF8 and DSN
	// parameters.
	ts := startServer(t, nil)
	cl, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Mail("ü@remote.test", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rcpt("b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, err := cl.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: ü\r\n\r\nbody\r\n")
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.StatusText, "2.0.0 Ok: queued as ") {
		t.Fatalf("status %q", resp.StatusText)
	}
	m := ts.spool.messages()[0]
	if !m.env.SMTPUTF8 || m.env.From.Local != "ü" || m.env.Client.Proto != "UTF8SMTP" {
		t.Fatalf("env %+v", m.env)
	}
}

func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.example.com"},
		DNSNames:     []string{"mx.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
