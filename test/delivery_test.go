package test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// TestDeliverToSMTPUnit: swaks → mxfront → smtp-sink, the first whole slice.
func TestDeliverToSMTPUnit(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{
		recipients: "alice@example.com OK\n",
		transport:  sinkTransport(sink, "example.com"),
	})
	out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "alice+news@example.com",
		"--header", "Subject: e2e one")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	mustContain(t, "swaks", out, "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: queued as ")
	msgs := sink.WaitCount(t, 1, 20*time.Second)
	got := msgs[0]
	if got.From != "sender@remote.test" || strings.Join(got.Rcpts, ",") != "alice+news@example.com" {
		t.Fatalf("envelope at the unit: from %q rcpts %q", got.From, got.Rcpts)
	}
	if got.Helo != "mx.example.com" {
		t.Errorf("EHLO to the unit: %q", got.Helo)
	}
	recv := got.Header("Received")
	for _, w := range []string{"from mail.remote.test (unknown [127.0.0.1])", "by mx.example.com (mxfront) with ESMTP id ", "for <alice+news@example.com>"} {
		if !strings.Contains(recv, w) {
			t.Errorf("Received: %q lacks %q", recv, w)
		}
	}
	if got.Header("Subject") != "e2e one" {
		t.Errorf("Subject %q", got.Header("Subject"))
	}
	m.waitLog("status=sent", 1, 10*time.Second)
	m.waitLog("msg=removed", 1, 10*time.Second)
}

func TestRejectsInSession(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{
		recipients:   "alice@example.com OK\n@gone.example.com OK\n",
		transport:    sinkTransport(sink, "example.com") + "gone.example.com error:5.1.2 this domain has moved\n",
		relayDomains: `"example.com", "gone.example.com"`,
	})
	for _, tc := range []struct {
		to, want string
		code     int
	}{
		{"nobody@example.com", "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table", 24},
		{"someone@elsewhere.test", "554 5.7.1 <someone@elsewhere.test>: Relay access denied", 24},
		{"user%elsewhere.test@example.com", "554 5.7.1 <user%elsewhere.test@example.com>: Relay access denied", 24},
		{"x@gone.example.com", "550 5.1.2 <x@gone.example.com>: Recipient address rejected: this domain has moved", 24},
		{"bad@exa..mple.com", "501 5.1.3 Bad recipient address syntax", 24},
	} {
		out, code := swaks(t, m, "--from", "sender@remote.test", "--to", tc.to)
		if code != tc.code {
			t.Errorf("%s: swaks exit %d, want %d", tc.to, code, tc.code)
		}
		mustContain(t, tc.to, out, tc.want)
	}
	out, code := swaks(t, m, "--from", "bad@@remote..test", "--to", "alice@example.com")
	if code != 23 {
		t.Errorf("bad sender: exit %d", code)
	}
	mustContain(t, "bad sender", out, "501 5.1.7 Bad sender address syntax")
	// Postfix-style reject log line with stage, client, helo, from, to, code.
	if !strings.Contains(m.log.String(), `msg=reject`) || !strings.Contains(m.log.String(), `stage=RCPT client=unknown[127.0.0.1] helo=mail.remote.test from=sender@remote.test to=nobody@example.com code=550 dsn=5.1.1`) {
		t.Errorf("reject log line missing:\n%s", m.log.String())
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d messages reached the unit", n)
	}
}

// TestAliasRewriteAndRouting is the seed 000 design with table files:
// foo.bar@example.com → foo.bar@h42.mail.example.com, routed by the unit
// domain to a real Dovecot LMTP server, and 1:N aliases split per unit.
func TestAliasRewriteAndRouting(t *testing.T) {
	dove := harness.StartDovecotLMTP(t, []harness.DovecotUser{{Name: "foo.bar@h42.mail.example.com"}})
	sink := harness.StartSink(t, harness.SinkOptions{})
	dh, dp, _ := net.SplitHostPort(dove.Addr())
	m := startMX(t, mxOptions{
		recipients: "bob@example.com OK\n",
		virtual:    "foo.bar@example.com foo.bar@h42.mail.example.com\nteam@example.com foo.bar@example.com, bob@example.com\n",
		transport:  fmt.Sprintf("h42.mail.example.com lmtp:inet:%s:%s\n", dh, dp) + sinkTransport(sink, "example.com"),
	})
	out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "foo.bar@example.com", "--header", "Subject: to the maildrop")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	got := dove.WaitCount(t, "foo.bar@h42.mail.example.com", 1, 20*time.Second)
	if !strings.Contains(string(got[0].Data), "Subject: to the maildrop") || !strings.Contains(string(got[0].Data), "Delivered-To: foo.bar@h42.mail.example.com") {
		t.Fatalf("stored at unit 42:\n%s", got[0].Data)
	}
	m.waitLog("orig_to=<foo.bar@example.com>", 1, 10*time.Second)

	// One RCPT, two units.
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "team@example.com", "--header", "Subject: team"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	dove.WaitCount(t, "foo.bar@h42.mail.example.com", 2, 20*time.Second)
	msgs := sink.WaitCount(t, 1, 20*time.Second)
	if strings.Join(msgs[0].Rcpts, ",") != "bob@example.com" {
		t.Fatalf("sink rcpts %q", msgs[0].Rcpts)
	}
}

// TestLMTPPerRecipientQuota: Dovecot refuses one recipient over quota after
// DATA; only that one bounces (a DSN with Dovecot's text to the sender),
// the other is delivered once.
func TestLMTPPerRecipientQuota(t *testing.T) {
	dove := harness.StartDovecotLMTP(t, []harness.DovecotUser{
		{Name: "alice@example.com"},
		{Name: "bob@example.com", QuotaBytes: 100},
	})
	senderSink := harness.StartSink(t, harness.SinkOptions{})
	dh, dp, _ := net.SplitHostPort(dove.Addr())
	m := startMX(t, mxOptions{
		recipients: "alice@example.com OK\nbob@example.com OK\n",
		transport:  fmt.Sprintf("example.com lmtp:inet:%s:%s\n", dh, dp) + sinkTransport(senderSink, "remote.test"),
	})
	body := strings.Repeat("this line makes the message bigger than bob's quota\n", 20)
	out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "alice@example.com,bob@example.com",
		"--header", "Subject: quota test", "--body", body)
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	dove.WaitCount(t, "alice@example.com", 1, 20*time.Second)
	dsns := senderSink.WaitCount(t, 1, 20*time.Second)
	d := dsns[0]
	if d.From != "" || strings.Join(d.Rcpts, ",") != "sender@remote.test" {
		t.Fatalf("DSN envelope: from %q to %q", d.From, d.Rcpts)
	}
	text := string(d.Data)
	mustContain(t, "DSN", text,
		"multipart/report", "report-type=delivery-status",
		"Final-Recipient: rfc822; bob@example.com", "Action: failed", "Status: 5.2.2",
		"Quota exceeded", "Subject: quota test")
	if strings.Contains(text, "Final-Recipient: rfc822; alice@example.com") {
		t.Errorf("DSN names the delivered recipient:\n%s", text)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(dove.Maildir("alice@example.com")); n != 1 {
		t.Errorf("alice has %d messages, want exactly 1", n)
	}
	if n := len(dove.Maildir("bob@example.com")); n != 0 {
		t.Errorf("bob has %d messages", n)
	}
	// The same with RFC 3461 parameters (queue_dsn_test.go).
	lmtpQuotaWithDSN(t, m, dove, senderSink)
}

// TestUnitDownThenUp: mail for a unit that is down is queued and retried,
// never bounced; it arrives once the unit is back.
func TestUnitDownThenUp(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	senderSink := harness.StartSink(t, harness.SinkOptions{})
	sink.Stop()
	m := startMX(t, mxOptions{
		recipients: "alice@example.com OK\n",
		transport:  sinkTransport(sink, "example.com") + sinkTransport(senderSink, "remote.test"),
	})
	for i := 0; i < 3; i++ {
		if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "alice@example.com", "--header", fmt.Sprintf("Subject: while down %d", i)); code != 0 {
			t.Fatalf("swaks exit %d:\n%s", code, out)
		}
	}
	// At least two failed attempts per message (backoff is 1s..2s).
	m.waitLog("status=deferred", 6, 30*time.Second)
	if strings.Contains(m.log.String(), "status=bounced") {
		t.Fatal("a message bounced while the unit was down")
	}
	mustContain(t, "deferral log", m.log.String(), "dsn=4.4.1", "Connection refused")
	sink.Start(t)
	msgs := sink.WaitCount(t, 3, 30*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(senderSink.Messages()); n != 0 {
		t.Fatalf("%d DSNs sent to the sender", n)
	}
}

// TestBareLFSmuggling: an SMTP smuggling attempt (<LF>.<CR><LF>) stays
// content: the unit receives one message, with the would-be command as text.
func TestBareLFSmuggling(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	// The script pipelines everything, banner included, which
	// smtpd_forbid_unauth_pipelining (default yes) would refuse.
	m := startMX(t, mxOptions{recipients: "alice@example.com OK\n", transport: sinkTransport(sink, "example.com"),
		extra: "smtpd_forbid_unauth_pipelining = false"})
	c, err := net.Dial("tcp", m.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	script := "EHLO mail.remote.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
	smuggled := "Subject: smuggle\r\n\r\nhello\n.\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n"
	replies := dialogue(t, c, script, 4)
	if !strings.HasPrefix(replies[len(replies)-1], "354 ") {
		t.Fatalf("replies %q", replies)
	}
	c.Write([]byte(smuggled))
	r := dialogue(t, c, "", 2)
	if !strings.HasPrefix(r[0], "250 2.0.0 Ok: queued as ") || !strings.HasPrefix(r[1], "221 ") {
		t.Fatalf("replies %q", r)
	}
	msgs := sink.WaitCount(t, 1, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := len(sink.Messages()); n != 1 {
		t.Fatalf("the unit received %d messages, want 1", n)
	}
	if !strings.Contains(string(msgs[0].Data), "MAIL FROM:<evil@remote.test>") || msgs[0].From != "sender@remote.test" {
		t.Fatalf("message:\n%s", msgs[0].Data)
	}
}

// dialogue writes script and reads n reply lines (final lines only).
func dialogue(t *testing.T, c net.Conn, script string, n int) []string {
	t.Helper()
	if script != "" {
		if _, err := c.Write([]byte(script)); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	buf := make([]byte, 1)
	var line []byte
	for len(out) < n {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("read: %v (got %q)", err, out)
		}
		line = append(line, buf[0])
		if buf[0] == '\n' {
			l := strings.TrimRight(string(line), "\r\n")
			line = line[:0]
			if len(l) >= 4 && l[3] == '-' {
				continue
			}
			if strings.HasPrefix(l, "220 ") {
				continue
			}
			out = append(out, l)
		}
	}
	return out
}

// TestPostmasterWithoutDomain: RFC 5321 §4.5.1 — RCPT TO:<postmaster> is
// accepted even with no alias configured: it is qualified with myorigin
// (postmaster@mx.example.com) and, having no local delivery, sent on to
// postmaster@$mydomain, which routes to the domain's unit.
func TestPostmasterWithoutDomain(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{recipients: "alice@example.com OK\n", transport: sinkTransport(sink, "example.com")})
	out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "postmaster")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	mustContain(t, "swaks", out, "RCPT TO:<postmaster>", "250 2.1.5 Ok")
	msgs := sink.WaitCount(t, 1, 20*time.Second)
	if strings.Join(msgs[0].Rcpts, ",") != "postmaster@example.com" {
		t.Fatalf("delivered to %q", msgs[0].Rcpts)
	}
	m.waitLog("orig_to=<postmaster@mx.example.com>", 1, 10*time.Second)
}
