package mx

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
)

// The rest of Checker for fakeChecker: every stage passes.
func (fakeChecker) DelayReject() bool                                            { return true }
func (fakeChecker) CheckConnect(context.Context, *policy.Request) error          { return nil }
func (fakeChecker) CheckHelo(context.Context, *policy.Request) error             { return nil }
func (fakeChecker) CheckMail(context.Context, *policy.Request) error             { return nil }
func (fakeChecker) CheckData(context.Context, *policy.Request) error             { return nil }
func (fakeChecker) CheckEOD(context.Context, *policy.Request) error              { return nil }
func (fakeChecker) Redirect(context.Context, string) ([]envelope.Address, error) { return nil, nil }
func (fakeChecker) NewContentFilter(context.Context, io.Writer, *policy.Request) *policy.ContentFilter {
	return nil
}

// hygChecker is fakeChecker with configurable stage results.
type hygChecker struct {
	fakeChecker
	noDelay    bool
	connectErr error
	heloErr    error
	mailErr    error
	dataErr    error
	pipelined  *atomic.Bool // set when a RCPT request says Pipelined
}

func (h hygChecker) DelayReject() bool { return !h.noDelay }
func (h hygChecker) CheckConnect(context.Context, *policy.Request) error {
	return h.connectErr
}
func (h hygChecker) CheckHelo(_ context.Context, r *policy.Request) error {
	if r.Client.Helo == "bad.helo.test" {
		return h.heloErr
	}
	return nil
}
func (h hygChecker) CheckMail(context.Context, *policy.Request) error { return h.mailErr }
func (h hygChecker) CheckData(context.Context, *policy.Request) error { return h.dataErr }
func (h hygChecker) CheckRcpt(ctx context.Context, r *policy.Request) (*policy.RcptVerdict, error) {
	if h.pipelined != nil && r.Pipelined {
		h.pipelined.Store(true)
	}
	return h.fakeChecker.CheckRcpt(ctx, r)
}

// slowResolver answers name lookups after a delay (no names).
type slowResolver struct{ d time.Duration }

func (s slowResolver) LookupAddr(ctx context.Context, _ string) ([]string, error) {
	time.Sleep(s.d)
	return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}
func (s slowResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}

func startHyg(t *testing.T, ch Checker, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{Hostname: "mx.example.com", MessageSizeLimit: 100000, RecipientLimit: 30, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	return serve(t, cfg, ch)
}

// rawDial connects without reading the banner.
func rawDial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// closed reports that the server closed the connection.
func (c *client) closed() bool {
	c.t.Helper()
	_, err := c.r.ReadString('\n')
	return err != nil
}

func TestUnknownAndForbiddenCommands(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.ForbiddenCommands = []string{"CONNECT", "GET", "POST"} })
	c := dial(t, ts.addr)
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	c.must("EXPN staff", "502 5.5.2 Error: command not recognized")
	c.must("", "500 5.5.2 Error: bad syntax")
	c.must("ETRN example.com", "502 5.5.1 Error: command not implemented")
	// go-smtp's own limit of 3 errors no longer applies.
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("GET / HTTP/1.1", "221 2.7.0 Error: I can break rules, too. Goodbye.")
	if !c.closed() {
		t.Fatal("connection not closed after a forbidden command")
	}
	c = dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("Subject: hello", "221 2.7.0 Error: I can break rules, too. Goodbye.")
}

func TestErrorLimits(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) {
		c.Hygiene.HardErrorLimit = 3
		c.Hygiene.SoftErrorLimit = 2
		c.Hygiene.ErrorSleepTime = 300 * time.Millisecond
	})
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	start := time.Now()
	c.must("NOOP", "250 2.0.0 Ok")
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("delayed below the soft limit: %v", d)
	}
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<x@elsewhere.test>", "554 5.7.1 <x@elsewhere.test>: Relay access denied")
	start = time.Now()
	c.must("RCPT TO:<unknown@example.com>", "550 5.1.1 <unknown@example.com>: Recipient address rejected: User unknown in relay recipient table")
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("no error sleep at the soft limit: %v", d)
	}
	// The third error ends the session before the next command is read.
	c.expect("421 4.7.0 mx.example.com Error: too many errors")
	if !c.closed() {
		t.Fatal("not closed")
	}

	// A delivered message forgives the errors.
	ts = startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.HardErrorLimit = 3 })
	c = dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.must("DATA", "354 End data with <CR><LF>.<CR><LF>")
	c.mustPrefix("Subject: x\r\n\r\nbody\r\n.", "250 2.0.0 Ok: queued as ")
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	c.must("FROB", "502 5.5.2 Error: command not recognized")
	c.must("QUIT", "221 2.0.0 Bye")
}

func TestJunkCommands(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) {
		c.Hygiene.JunkCommandLimit = 3
		c.Hygiene.HardErrorLimit = 2
	})
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000") // junk 1
	c.must("NOOP", "250 2.0.0 Ok")                // 2
	c.must("RSET", "250 2.0.0 Ok")                // 3
	c.must("NOOP", "250 2.0.0 Ok")                // 4
	c.must("NOOP", "250 2.0.0 Ok")                // 5: beyond the limit, error 1
	c.must("NOOP", "250 2.0.0 Ok")                // 6: error 2
	c.expect("421 4.7.0 mx.example.com Error: too many errors")
}

func TestVRFY(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.HeloRequired = true })
	c := dial(t, ts.addr)
	c.must("VRFY alice@example.com", "503 5.5.1 Error: send HELO/EHLO first")
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("VRFY", "501 5.5.4 Syntax: VRFY address")
	c.must("VRFY <bad@exa..mple>", "501 5.1.3 Bad recipient address syntax")
	c.must("VRFY alice@example.com", "252 2.0.0 alice@example.com")
	c.must("VRFY <unknown@example.com>", "550 5.1.1 <unknown@example.com>: Recipient address rejected: User unknown in relay recipient table")
	c.must("VRFY x@elsewhere.test", "554 5.7.1 <x@elsewhere.test>: Relay access denied")
	c.must("VRFY tempfail@example.com", "451 4.3.0 Error: internal error, please try again later")

	ts = startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.DisableVRFY = true })
	c = dial(t, ts.addr)
	c.must("VRFY alice@example.com", "502 5.5.1 VRFY command is disabled")
}

func TestRejectFooter(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) {
		c.Hygiene.RejectFooter = `For assistance, call 555-0101.\nClient: $client_address, server: $server_name`
	})
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.send("RCPT TO:<unknown@example.com>\r\n")
	got := strings.Join(c.reply(), "\n")
	want := "550-5.1.1 <unknown@example.com>: Recipient address rejected: User unknown in relay recipient table\n" +
		"550-5.1.1 For assistance, call 555-0101.\n" +
		"550 5.1.1 Client: 127.0.0.1, server: mx.example.com"
	if got != want {
		t.Errorf("footer:\n%s\nwant\n%s", got, want)
	}
	c.send("FROB\r\n")
	if got := strings.Join(c.reply(), "\n"); !strings.HasPrefix(got, "502-5.5.2 Error: command not recognized\n502-5.5.2 For assistance") {
		t.Errorf("footer on a protocol error:\n%s", got)
	}
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")

	ts = startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.RejectFooter = `\c (see https://example.com/help)` })
	c = dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<x@elsewhere.test>", "554 5.7.1 <x@elsewhere.test>: Relay access denied (see https://example.com/help)")
}

func TestStrictRFC821Envelopes(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.StrictRFC821Envelopes = true })
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:a@remote.test", "501 5.1.7 Bad sender address syntax")
	c.must("MAIL FROM:<a@remote.test> SIZE=10", "250 2.1.0 Ok")
	c.must("RCPT TO:alice@example.com", "501 5.1.3 Bad recipient address syntax")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	ts = startHyg(t, fakeChecker{}, nil)
	c = dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:a@remote.test", "250 2.1.0 Ok")
}

func TestUnauthPipelining(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.ForbidUnauthPipelining = true })
	// Pipelining after EHLO is fine; DATA must end a group.
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 End data with <CR><LF>.<CR><LF>")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	if r := c.reply(); !strings.HasPrefix(r[0], "250 2.0.0 Ok: queued as ") {
		t.Fatalf("%q", r)
	}
	c.expect("221 2.0.0 Bye")

	c = dial(t, ts.addr)
	c.send("EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\n")
	c.expect("554 5.5.0 Error: SMTP protocol synchronization")
	if !c.closed() {
		t.Fatal("not closed")
	}
	c = dial(t, ts.addr)
	c.mustPrefix("HELO client.test", "250 ")
	c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.com>\r\n")
	c.expect("554 5.5.0 Error: SMTP protocol synchronization")
	c = dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.send("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
	c.expect("554 5.5.0 Error: SMTP protocol synchronization")

	// Before the banner: the client speaks first. The name lookup (done
	// before the banner with smtpd_delay_reject = no) gives it time.
	ts = startHyg(t, hygChecker{noDelay: true}, func(c *Config) {
		c.Hygiene.ForbidUnauthPipelining = true
		c.PeernameLookup, c.Resolver = true, slowResolver{300 * time.Millisecond}
	})
	c = rawDial(t, ts.addr)
	c.send("EHLO client.test\r\n")
	c.expect("220 mx.example.com ESMTP mxfront")
	c.expect("554 5.5.0 Error: SMTP protocol synchronization")

	// Not forbidden: remembered for reject_unauth_pipelining.
	var flag atomic.Bool
	ts = startHyg(t, hygChecker{pipelined: &flag}, nil)
	c = dial(t, ts.addr)
	c.mustPrefix("HELO client.test", "250 ")
	c.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.com>\r\n")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	if !flag.Load() {
		t.Error("Request.Pipelined not set")
	}
}

func TestClientLimits(t *testing.T) {
	ts := startHyg(t, fakeChecker{}, func(c *Config) {
		c.Hygiene.ConnectionCountLimit = 1
		c.Hygiene.MessageRateLimit = 1
		c.Hygiene.RecipientRateLimit = 2
	})
	c := dial(t, ts.addr)
	c2 := rawDial(t, ts.addr)
	c2.expect("421 4.7.0 mx.example.com Error: too many connections from 127.0.0.1")
	if !c2.closed() {
		t.Fatal("not closed")
	}
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.must("RCPT TO:<alice@example.com>", "450 4.7.1 Error: too many recipients from 127.0.0.1")
	c.must("RSET", "250 2.0.0 Ok")
	c.must("MAIL FROM:<a@remote.test>", "450 4.7.1 Error: too much mail from 127.0.0.1")
	c.must("QUIT", "221 2.0.0 Bye")
	c.closed()
	// The count is released at disconnect.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c3 := rawDial(t, ts.addr)
		l := c3.reply()[0]
		if strings.HasPrefix(l, "220 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused: %s", l)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ts = startHyg(t, fakeChecker{}, func(c *Config) { c.Hygiene.ConnectionRateLimit = 2 })
	dial(t, ts.addr)
	dial(t, ts.addr)
	c = rawDial(t, ts.addr)
	c.expect("421 4.7.0 mx.example.com Error: too many connections from 127.0.0.1")

	// Exceptions are not counted.
	ts = startHyg(t, fakeChecker{}, func(c *Config) {
		c.Hygiene.ConnectionCountLimit = 1
		c.Hygiene.LimitExceptions = func(context.Context, netip.Addr) bool { return true }
	})
	dial(t, ts.addr)
	dial(t, ts.addr)
}

func TestAnvil(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAnvil(Hygiene{ConnectionCountLimit: 1, RateTimeUnit: time.Minute})
	a.now = func() time.Time { return now }
	k1, n, r := a.connect(netip.MustParseAddr("2001:db8::1"))
	k2, n2, r2 := a.connect(netip.MustParseAddr("2001:db8::ffff:1")) // same /84
	k3, n3, _ := a.connect(netip.MustParseAddr("2001:db8:0:0:1000::1"))
	if k1 != k2 || n != 1 || n2 != 2 || r2 != 2 || r != 1 {
		t.Errorf("IPv6 /84 aggregation: %v %v %d %d %d %d", k1, k2, n, n2, r, r2)
	}
	if k3 == k1 || n3 != 1 {
		t.Errorf("another /84: %v %d", k3, n3)
	}
	if k, _, _ := a.connect(netip.MustParseAddr("::ffff:192.0.2.1")); k.String() != "192.0.2.1/32" {
		t.Errorf("v4-mapped: %v", k)
	}
	a.disconnect(k1)
	a.disconnect(k1)
	if _, n, r := a.connect(netip.MustParseAddr("2001:db8::2")); n != 1 || r != 3 {
		t.Errorf("after disconnect: count %d rate %d", n, r)
	}
	if m := a.mail(k1); m != 1 {
		t.Errorf("mail rate %d", m)
	}
	now = now.Add(61 * time.Second)
	if _, _, r := a.connect(netip.MustParseAddr("2001:db8::2")); r != 1 {
		t.Errorf("rate after the time unit: %d", r)
	}
	a.disconnect(k1)
	a.disconnect(k1)
	a.disconnect(k3)
	now = now.Add(2 * time.Minute)
	a.mail(netip.MustParsePrefix("192.0.2.9/32"))
	if n := a.size(); n != 2 {
		t.Errorf("idle entries not swept: %d", n)
	}
	if newAnvil(Hygiene{}) != nil {
		t.Error("an anvil without limits")
	}
}

func TestDelayRejectNo(t *testing.T) {
	deny := envelope.Errorf(554, envelope.Enhanced{5, 7, 1}, "<unknown[127.0.0.1]>: Client host rejected: Access denied")
	ts := startHyg(t, hygChecker{noDelay: true, connectErr: deny}, nil)
	c := rawDial(t, ts.addr)
	c.expect("554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied")
	c.must("EHLO client.test", "503 5.7.0 Error: access denied for unknown[127.0.0.1]")
	c.must("MAIL FROM:<a@remote.test>", "503 5.7.0 Error: access denied for unknown[127.0.0.1]")
	c.must("QUIT", "221 2.0.0 Bye")

	helo := envelope.Errorf(554, envelope.Enhanced{5, 7, 1}, "<bad.helo.test>: Helo command rejected: go away")
	mail := envelope.Errorf(554, envelope.Enhanced{5, 7, 1}, "<a@remote.test>: Sender address rejected: no")
	ts = startHyg(t, hygChecker{noDelay: true, heloErr: helo, mailErr: mail}, nil)
	c = dial(t, ts.addr)
	c.must("EHLO bad.helo.test", "554 5.7.1 <bad.helo.test>: Helo command rejected: go away")
	c.must("MAIL FROM:<a@remote.test>", "503 5.5.1 Error: send HELO/EHLO first")
	c.must("EHLO good.test", "250 SIZE 100000")
	c.must("MAIL FROM:<a@remote.test>", "554 5.7.1 <a@remote.test>: Sender address rejected: no")
	c.must("RCPT TO:<alice@example.com>", "503 5.5.1 Error: need MAIL command")
}

func TestDataRestrictions(t *testing.T) {
	deny := envelope.Errorf(554, envelope.Enhanced{5, 7, 1}, "<DATA>: Data command rejected: Access denied")
	ts := startHyg(t, hygChecker{dataErr: deny}, nil)
	c := dial(t, ts.addr)
	c.must("EHLO client.test", "250 SIZE 100000")
	c.must("DATA", "503 5.5.1 Error: need RCPT command")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.must("DATA", "554 5.7.1 <DATA>: Data command rejected: Access denied")
	// BDAT: the refused chunk is read and dropped.
	c.send("BDAT 12 LAST\r\nSubject: x\r\n")
	c.expect("554 5.7.1 <DATA>: Data command rejected: Access denied")
	c.must("RSET", "250 2.0.0 Ok")
	c.must("NOOP", "250 2.0.0 Ok")
	if n := len(ts.spool.messages()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}
