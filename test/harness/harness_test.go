package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { Main(m) }

func TestFreePort(t *testing.T) {
	t.Parallel()
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("listen on the free port: %v", err)
	}
	ln.Close()
}

func TestSinkReceivesMessage(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{})
	// A body line starting with "." checks that dot-stuffing is undone.
	out, code := Swaks(t, "--server", s.Addr(), "--helo", "client.test",
		"--from", "alice@remote.test", "--to", "b@example.test,c@example.test",
		"--header", "Subject: harness smoke", "--body", "line one\n.dotted\nlast")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	msgs := s.WaitCount(t, 1, 5*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "alice@remote.test" || m.MailArgs != "<alice@remote.test>" {
		t.Errorf("From = %q, MailArgs = %q", m.From, m.MailArgs)
	}
	if strings.Join(m.Rcpts, ",") != "b@example.test,c@example.test" {
		t.Errorf("Rcpts = %q", m.Rcpts)
	}
	if m.Helo != "client.test" || m.ClientAddr != "127.0.0.1" || m.Proto != "ESMTP" {
		t.Errorf("Helo, ClientAddr, Proto = %q, %q, %q", m.Helo, m.ClientAddr, m.Proto)
	}
	if got := m.Header("Subject"); got != "harness smoke" {
		t.Errorf("Subject = %q", got)
	}
	if !strings.Contains(string(m.Data), "\n\nline one\n.dotted\nlast\n") {
		t.Errorf("Data does not end with the body:\n%s", m.Data)
	}
	if strings.Contains(string(m.Data), "X-Rcpt-Args") || strings.Contains(string(m.Data), "smtp-sink") {
		t.Errorf("Data contains smtp-sink's own records:\n%s", m.Data)
	}
}

func TestSinkStopStart(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{})
	send := func() (string, int) {
		return Swaks(t, "--server", s.Addr(), "--from", "a@remote.test", "--to", "b@example.test")
	}
	if out, code := send(); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	s.Stop()
	if out, code := send(); code != 2 {
		t.Fatalf("with the sink stopped, swaks exit %d, want 2 (connection error):\n%s", code, out)
	}
	s.Start(t)
	if out, code := send(); code != 0 {
		t.Fatalf("after Start, swaks exit %d:\n%s", code, out)
	}
	if msgs := s.WaitCount(t, 2, 5*time.Second); len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2 (one before Stop, one after Start)", len(msgs))
	}
	s.Clear()
	if n := len(s.Messages()); n != 0 {
		t.Errorf("after Clear: %d messages", n)
	}
	s.Stop()
	s.Stop() // idempotent
}

func TestSinkRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     SinkOptions
		wantCode int
		wantText string
		wantMsgs int
	}{
		{"hard RCPT", SinkOptions{HardReject: []string{"RCPT"}}, 24, "500 5.3.0 Error: command failed", 0},
		{"soft RCPT", SinkOptions{SoftReject: []string{"RCPT"}}, 24, "450 4.3.0 Error: command failed", 0},
		{"custom soft reply", SinkOptions{SoftReject: []string{"MAIL"}, SoftReply: "451 4.3.5 try later"}, 23, "451 4.3.5 try later", 0},
		{"hard dot is still dumped", SinkOptions{HardReject: []string{"."}}, 26, "500 5.3.0", 1},
		{"421 at DATA", SinkOptions{Disconnect421: []string{"DATA"}}, 25, "421 ", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := StartSink(t, tc.opts)
			out, code := Swaks(t, "--server", s.Addr(), "--from", "a@remote.test", "--to", "b@example.test")
			if code != tc.wantCode || !strings.Contains(out, tc.wantText) {
				t.Errorf("swaks exit %d, want %d with %q in:\n%s", code, tc.wantCode, tc.wantText, out)
			}
			if tc.wantMsgs > 0 {
				s.WaitCount(t, tc.wantMsgs, 5*time.Second)
			}
			if got := len(s.Messages()); got != tc.wantMsgs {
				t.Errorf("sink has %d messages, want %d", got, tc.wantMsgs)
			}
		})
	}
}

func TestSinkLMTPUnixSocket(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{LMTP: true, Unix: true})
	if !strings.HasPrefix(s.Addr(), "/") || s.Port() != 0 {
		t.Fatalf("Addr = %q, Port = %d; want a socket path and 0", s.Addr(), s.Port())
	}
	out, code := Swaks(t, "--protocol", "LMTP", "--socket", s.Addr(), "--from", "a@remote.test", "--to", "b@example.test,c@example.test")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	m := s.WaitCount(t, 1, 5*time.Second)[0]
	if m.Proto != "LMTP" || len(m.Rcpts) != 2 {
		t.Errorf("Proto = %q, Rcpts = %q; want LMTP and 2 recipients", m.Proto, m.Rcpts)
	}
	s.Stop()
	s.Start(t)
	if out, code := Swaks(t, "--protocol", "LMTP", "--socket", s.Addr(), "--to", "b@example.test"); code != 0 {
		t.Fatalf("after restart, swaks exit %d:\n%s", code, out)
	}
}

func TestSinkPartialTransactionsHidden(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	steps, err := parseDialog("partial", `
S~ ^220
C: EHLO client.test
R~ ^250
C: MAIL FROM:<a@remote.test>
S~ ^250
C: RCPT TO:<b@example.test>
S~ ^250
C: DATA
S~ ^354
`)
	if err != nil {
		t.Fatal(err)
	}
	var tr strings.Builder
	if err := runDialog(c, "partial", steps, &tr); err != nil {
		t.Fatalf("%v\n%s", err, tr.String())
	}
	// More than smtp-sink's write buffer, so part of it reaches the file.
	big := strings.Repeat(strings.Repeat("x", 998)+"\r\n", 200)
	if _, err := c.Write([]byte("Subject: partial\r\n\r\n" + big)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := s.Messages(); len(got) != 0 {
		t.Fatalf("Messages during DATA returned %d messages, want 0", len(got))
	}
	s.Stop() // removes the dump of the interrupted transaction
	if got := s.Messages(); len(got) != 0 {
		t.Fatalf("Messages after Stop returned %d messages, want 0", len(got))
	}
}

func TestDovecotLMTP(t *testing.T) {
	t.Parallel()
	d := StartDovecotLMTP(t, []DovecotUser{
		{Name: "alice@example.test", Password: "secret"},
		{Name: "bob@example.test", Password: "secret", QuotaBytes: 100},
	})
	body := strings.Repeat("This line makes the message larger than bob's quota.\n", 5)
	RunDialogText(t, d.Addr(), "dovecot-quota", `
S~ ^220 .*Dovecot
C: LHLO mx.example.test
R~ ^250 
C: MAIL FROM:<sender@remote.test>
S~ ^250 
C: RCPT TO:<alice@example.test>
S~ ^250 
C: RCPT TO:<nobody@example.test>
S~ ^550 5\.1\.1 
C: RCPT TO:<bob@example.test>
S~ ^250 
C: DATA
S~ ^354 
C: Subject: lmtp smoke
C:
`+"C: "+strings.ReplaceAll(strings.TrimSpace(body), "\n", "\nC: ")+`
C: .
S~ ^250 2\.0\.0 <alice@example\.test> 
S~ ^552 5\.2\.2 <bob@example\.test> 
C: QUIT
S~ ^221 
`)
	msgs := d.WaitCount(t, "alice@example.test", 1, 5*time.Second)
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "Subject: lmtp smoke") {
		t.Fatalf("alice's Maildir: %d messages; first:\n%s", len(msgs), firstData(msgs))
	}
	if got := d.Maildir("bob@example.test"); len(got) != 0 {
		t.Errorf("bob (over quota) has %d messages, want 0", len(got))
	}

	// The unix socket delivers too.
	out, code := Swaks(t, "--protocol", "LMTP", "--socket", d.Socket(), "--from", "s@remote.test", "--to", "alice@example.test")
	if code != 0 {
		t.Fatalf("LMTP over %s: swaks exit %d:\n%s", d.Socket(), code, out)
	}
	d.WaitCount(t, "alice@example.test", 2, 5*time.Second)

	d.Stop()
	if out, code := Swaks(t, "--protocol", "LMTP", "--server", d.Addr(), "--to", "alice@example.test"); code != 2 {
		t.Fatalf("with Dovecot stopped, swaks exit %d, want 2:\n%s", code, out)
	}
	d.Start(t)
	if out, code := Swaks(t, "--protocol", "LMTP", "--server", d.Addr(), "--to", "alice@example.test"); code != 0 {
		t.Fatalf("after Start, swaks exit %d:\n%s", code, out)
	}
	d.WaitCount(t, "alice@example.test", 3, 5*time.Second)
}

func firstData(msgs []MaildirMessage) string {
	if len(msgs) == 0 {
		return "(none)"
	}
	return string(msgs[0].Data)
}

const slapdSeed = `dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=foo,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: foo
cn: Foo Bar
sn: Bar
mail: foo.bar@example.test
maildrop: foo.bar@h42.mail.example.test
maildrop: foo.archive@h43.mail.example.test
`

func TestSlapd(t *testing.T) {
	t.Parallel()
	s := StartSlapd(t, slapdSeed)
	if !strings.HasPrefix(s.URL(), "ldap://127.0.0.1:") {
		t.Fatalf("URL = %q", s.URL())
	}
	check := func(filter string, want ...string) {
		t.Helper()
		out := s.Search(t, filter, "maildrop")
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("search %s: missing %q in:\n%s", filter, w, out)
			}
		}
	}
	// caseIgnoreIA5Match on mail and maildrop.
	check("(mail=FOO.BAR@example.test)", "maildrop: foo.bar@h42.mail.example.test", "maildrop: foo.archive@h43.mail.example.test")
	check("(maildrop=foo.bar@H42.mail.example.test)", "dn: uid=foo,ou=people,dc=example,dc=test")

	// A crash: the directory is unreachable, then back with the same data.
	s.Kill()
	if out, err := runTool(nil, s.tools["ldapsearch"], "-x", "-o", "nettimeout=2", "-H", s.URL(), "-b", SlapdSuffix, "(uid=foo)"); err == nil {
		t.Fatalf("ldapsearch succeeded with slapd killed:\n%s", out)
	}
	s.Start(t)
	check("(mail=foo.bar@example.test)", "maildrop: foo.bar@h42.mail.example.test")

	s.Add(t, `dn: uid=new,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: new
cn: New
sn: New
mailLocalAddress: new@example.test
mailRoutingAddress: new@h7.mail.example.test
`)
	s.Modify(t, `dn: uid=foo,ou=people,dc=example,dc=test
changetype: modify
delete: maildrop
maildrop: foo.archive@h43.mail.example.test
`)
	s.Stop()
	s.Start(t)
	out := s.Search(t, "(mailLocalAddress=new@example.test)", "mailRoutingAddress")
	if !strings.Contains(out, "mailRoutingAddress: new@h7.mail.example.test") {
		t.Errorf("entry added before Stop/Start is gone:\n%s", out)
	}
	if out := s.Search(t, "(uid=foo)", "maildrop"); strings.Contains(out, "archive") {
		t.Errorf("modified value still present:\n%s", out)
	}
}

func TestSlapdExtraSchema(t *testing.T) {
	t.Parallel()
	const schema = "/etc/ldap/schema/dyngroup.schema"
	if _, err := os.Stat(schema); err != nil {
		t.Skipf("%s not present", schema)
	}
	s := StartSlapd(t, "", schema)
	s.Add(t, `dn: cn=dyn,dc=example,dc=test
objectClass: groupOfURLs
cn: dyn
memberURL: ldap:///dc=example,dc=test??sub?(uid=*)
`)
	if out := s.Search(t, "(objectClass=groupOfURLs)", "cn"); !strings.Contains(out, "cn: dyn") {
		t.Fatalf("search:\n%s", out)
	}
}

func TestDNS(t *testing.T) {
	t.Parallel()
	longTXT := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 600)
	rev, err := dns.ReverseAddr("192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	d := StartDNS(t, DNSZones{
		"example.test": {
			A:   []string{"192.0.2.1"},
			MX:  []DNSMX{{10, "mx1.example.test"}, {20, "mx2.example.test."}},
			TXT: []string{"v=spf1 ip4:192.0.2.0/24 -all"},
		},
		"Sel._DomainKey.Example.Test.": {TXT: []string{longTXT}},
		"v6.example.test":              {AAAA: []string{"2001:db8::1"}},
		rev:                            {PTR: []string{"mx.remote.test"}},
		"broken.test":                  {Rcode: dns.RcodeServerFailure},
		"dead.dnsbl.test":              {Drop: true},
		"alias.example.test":           {CNAME: "example.test"},
	})
	c := &dns.Client{Timeout: 2 * time.Second}
	query := func(net, name string, qtype uint16) *dns.Msg {
		t.Helper()
		c := *c
		c.Net = net
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		r, _, err := c.Exchange(m, d.Addr())
		if err != nil {
			t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
		}
		return r
	}
	tests := []struct {
		name      string
		qtype     uint16
		wantRcode int
		want      []string // substrings of the answer section
	}{
		{"example.test", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.1"}},
		{"EXAMPLE.test", dns.TypeMX, dns.RcodeSuccess, []string{"10 mx1.example.test.", "20 mx2.example.test."}},
		{"example.test", dns.TypeTXT, dns.RcodeSuccess, []string{`"v=spf1 ip4:192.0.2.0/24 -all"`}},
		{"example.test", dns.TypeAAAA, dns.RcodeSuccess, nil}, // NODATA
		{"v6.example.test", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::1"}},
		{rev, dns.TypePTR, dns.RcodeSuccess, []string{"mx.remote.test."}},
		{"alias.example.test", dns.TypeA, dns.RcodeSuccess, []string{"CNAME\texample.test."}},
		{"missing.example.test", dns.TypeA, dns.RcodeNameError, nil},
		{"broken.test", dns.TypeA, dns.RcodeServerFailure, nil},
	}
	for _, tc := range tests {
		r := query("udp", tc.name, tc.qtype)
		if r.Rcode != tc.wantRcode {
			t.Errorf("%s %s: rcode %s, want %s", tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.wantRcode])
		}
		var ans []string
		for _, rr := range r.Answer {
			ans = append(ans, rr.String())
		}
		all := strings.Join(ans, "\n")
		if len(tc.want) == 0 && len(ans) != 0 {
			t.Errorf("%s %s: answers %q, want none", tc.name, dns.TypeToString[tc.qtype], all)
		}
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s %s: answer %q lacks %q", tc.name, dns.TypeToString[tc.qtype], all, w)
			}
		}
	}

	// A TXT record longer than 512 bytes: truncated over UDP without
	// EDNS0, complete over TCP, its 255-byte strings joining back.
	if r := query("udp", "sel._domainkey.example.test", dns.TypeTXT); !r.Truncated {
		t.Errorf("long TXT over UDP: TC not set (answer %v)", r.Answer)
	}
	r := query("tcp", "sel._domainkey.example.test", dns.TypeTXT)
	if len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != longTXT {
		t.Errorf("long TXT over TCP = %v", r.Answer)
	}

	// Drop: no answer at all.
	m := new(dns.Msg)
	m.SetQuestion("dead.dnsbl.test.", dns.TypeA)
	if _, _, err := (&dns.Client{Timeout: 300 * time.Millisecond}).Exchange(m, d.Addr()); err == nil {
		t.Errorf("dead.dnsbl.test answered, want a timeout")
	}
	if n := d.Queries("DEAD.dnsbl.test"); n != 1 {
		t.Errorf("Queries(dead.dnsbl.test) = %d, want 1", n)
	}

	// Set and Delete at run time; the net.Resolver goes to this server.
	d.Set("2.0.0.127.zen.test", DNSAnswer{A: []string{"127.0.0.2"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := d.Resolver().LookupHost(ctx, "2.0.0.127.zen.test")
	if err != nil || len(addrs) != 1 || addrs[0] != "127.0.0.2" {
		t.Errorf("Resolver().LookupHost = %v, %v; want [127.0.0.2]", addrs, err)
	}
	mxs, err := d.Resolver().LookupMX(ctx, "example.test")
	if err != nil || len(mxs) != 2 || mxs[0].Host != "mx1.example.test." {
		t.Errorf("Resolver().LookupMX = %v, %v", mxs, err)
	}
	d.Delete("2.0.0.127.zen.test")
	if r := query("udp", "2.0.0.127.zen.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Delete: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestParseDialogErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, text, want string
	}{
		{"unknown directive", "S~ ^220\nX: hello\n", "d:2: unknown directive"},
		{"bad regexp", "S~ ^220 (\n", "d:1: bad regexp"},
		{"empty", "# only a comment\n\n", "empty dialog"},
		{"one char", "C\n", "d:1: unknown directive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDialog("d", tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseDialog error = %v, want %q", err, tc.want)
			}
		})
	}
	steps, err := parseDialog("d", "C: MAIL FROM:<a@b> \r\nC:\nTLS\nEOF\n")
	if err != nil {
		t.Fatal(err)
	}
	if steps[0].text != "MAIL FROM:<a@b> " || steps[1].op != "C:" || steps[1].text != "" || steps[2].op != "TLS" || steps[3].op != "EOF" {
		t.Fatalf("steps = %+v", steps)
	}
}

func TestDialogAgainstSink(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{Hostname: "unit1.example.test"})
	RunDialog(t, s.Addr(), filepath.Join("testdata", "sink.dialog"))
	m := s.WaitCount(t, 1, 5*time.Second)[0]
	if m.From != "a@remote.test" || m.Header("Subject") != "dialog" {
		t.Errorf("message: From %q, Subject %q", m.From, m.Header("Subject"))
	}
	if want := "Subject: dialog\n\n.a line starting with a dot, stuffed\n"; string(m.Data) != want {
		t.Errorf("Data = %q, want %q", m.Data, want)
	}

	// A wrong expectation fails with the file position and what came.
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	steps, err := parseDialog("wrong.dialog", "S~ ^220 \nC: NOOP\nS: 250 2.0.0 Not what it says\n")
	if err != nil {
		t.Fatal(err)
	}
	var tr strings.Builder
	err = runDialog(c, "wrong.dialog", steps, &tr)
	if err == nil || !strings.Contains(err.Error(), `wrong.dialog:3: got "250 2.0.0 Ok", want "250 2.0.0 Not what it says"`) {
		t.Errorf("runDialog error = %v", err)
	}
}

func TestDialogEOF(t *testing.T) {
	t.Parallel()
	s := StartSink(t, SinkOptions{Disconnect421: []string{"MAIL"}})
	RunDialogText(t, s.Addr(), "eof", `
S~ ^220 
C: HELO client.test
S~ ^250 
C: MAIL FROM:<a@remote.test>
S~ ^421 
EOF
`)
}

func TestBuildBinary(t *testing.T) {
	root, err := moduleRoot(goTool())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "mxfront")); err != nil {
		t.Skip("cmd/mxfront does not exist yet")
	}
	p := BuildBinary(t)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("BuildBinary = %q: %v", p, err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Fatalf("BuildBinary = %q: mode %v, not executable", p, fi.Mode())
	}
	if again := BuildBinary(t); again != p {
		t.Errorf("second BuildBinary = %q, want the same %q", again, p)
	}
}

// recordTB records Skipf/Fatalf instead of ending the real test.
type recordTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordTB) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissingProgram checks the rule: skip without CI, fail under CI.
// Not parallel: it sets CI.
func TestMissingProgram(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recordTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			requireProgram(r, "mxfront-harness-no-such-program", "nothing")
			r.msg = "requireProgram returned"
		}()
		<-done
		wantSkip := ci == ""
		if r.skipped != wantSkip || r.failed == wantSkip || !strings.Contains(r.msg, "mxfront-harness-no-such-program is not installed") {
			t.Errorf("CI=%q: skipped %v, failed %v, message %q", ci, r.skipped, r.failed, r.msg)
		}
	}
	if p, ok := lookProgram("sh"); !ok || !filepath.IsAbs(p) {
		t.Errorf(`lookProgram("sh") = %q, %v`, p, ok)
	}
}

// TestTakenPortDetected checks that each starter recognises a port taken
// by someone else (the case StartX retries with another port, and
// Start after Stop reports).
func TestTakenPortDetected(t *testing.T) {
	t.Parallel()
	occupy := func(t *testing.T, addr string) {
		t.Helper()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("occupy %s: %v", addr, err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	t.Run("sink", func(t *testing.T) {
		t.Parallel()
		s := StartSink(t, SinkOptions{})
		s.Stop()
		occupy(t, s.Addr())
		if err := s.start(); err != errPortTaken {
			t.Fatalf("start on a taken port: %v, want errPortTaken", err)
		}
	})
	t.Run("slapd", func(t *testing.T) {
		t.Parallel()
		s := StartSlapd(t, "")
		s.Stop()
		occupy(t, s.Addr())
		if err := s.launch(requireProgram(t, "slapd", "slapd")); err != errPortTaken {
			t.Fatalf("launch on a taken port: %v, want errPortTaken", err)
		}
	})
	t.Run("dovecot", func(t *testing.T) {
		t.Parallel()
		d := StartDovecotLMTP(t, []DovecotUser{{Name: "alice@example.test"}})
		d.Stop()
		occupy(t, d.Addr())
		if err := d.launch(requireProgram(t, "dovecot", "dovecot-core")); err != errPortTaken {
			t.Fatalf("launch on a taken port: %v, want errPortTaken", err)
		}
	})
}
