package test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/test/harness"
)

// End-to-end tests of ldap: tables (issue 5) with a real slapd: the seed
// designs 000, 001 and 003, a directory outage, injection attempts, the
// cache and `mxfront query`.

// ldapSeed is the directory of these tests: seed 000 users (mail ->
// maildrop, maildrop.schema), seed 001 users (mailHost), seed 003 aliases
// (mailLocalAddress -> mailRoutingAddress, misc.schema), and two entries
// sharing one address. %[1]s is the unit host address for mailHost.
const ldapSeed = `dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=foo.bar,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
objectClass: inetLocalMailRecipient
uid: foo.bar
cn: Foo Bar
sn: Bar
mail: foo.bar@example.com
maildrop: foo.bar@h42.mail.example.com
mailHost: %[1]s

dn: uid=jane,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
objectClass: inetLocalMailRecipient
uid: jane
cn: Jane
sn: Doe
mail: jane@example.com
maildrop: jane@h42.mail.example.com
mailHost: %[1]s
mailLocalAddress: jane@example.com
mailLocalAddress: j.doe@example.com
mailRoutingAddress: jane@unit3.example.com

dn: uid=pipe,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: pipe
cn: Pipe
sn: User
mail: pipe@example.com
maildrop: |/usr/bin/procmail

dn: uid=twin1,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: twin1
cn: Twin
sn: One
mail: twin@example.com
maildrop: twin1@h42.mail.example.com

dn: uid=twin2,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: twin2
cn: Twin
sn: Two
mail: twin@example.com
maildrop: twin2@h42.mail.example.com
`

// ldapSeed000CF is seed 000's virtual_alias_maps query; %[1]s is the
// server URL, %[2]s extra lines. "domain" keeps the maildrops themselves
// (h42.mail.example.com), which virtual(5) expansion looks up again, from
// costing a query.
const ldapSeed000CF = `server_host = %[1]s
search_base = dc=example,dc=test
domain = example.com
query_filter = (&(mail=%%s)(!(|(maildrop=*|*)(maildrop=*:*)(maildrop=*/*))))
result_attribute = maildrop
size_limit = 1
timeout = 5
%[2]s`

// ldapCF writes an ldap_table(5) file into dir.
func ldapCF(t *testing.T, dir, name, body string, args ...any) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(fmt.Sprintf(body, args...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ldapRcpts sends each RCPT in its own session (so that Postfix-style
// error sleeps do not add up) and returns the replies as "CODE X.Y.Z text"
// ("250" when accepted).
func ldapRcpts(t *testing.T, m *mxProc, rcpts ...string) []string {
	t.Helper()
	var out []string
	for _, r := range rcpts {
		out = append(out, ldapRcpt(t, m, r))
	}
	return out
}

func ldapRcpt(t *testing.T, m *mxProc, rcpt string) string {
	t.Helper()
	c, err := smtp.Dial(m.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout = 30 * time.Second
	if err := c.Hello("mail.remote.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt(rcpt, nil)
	c.Quit()
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return "250"
	case errors.As(err, &se):
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	t.Fatalf("RCPT %s: %v", rcpt, err)
	return ""
}

func ldapUnknown(a string) string {
	return "550 5.1.1 <" + a + ">: Recipient address rejected: User unknown in relay recipient table"
}

func ldapTempfail(a string) string { return "451 4.3.0 <" + a + ">: Temporary lookup failure" }

// TestLDAPSeed000: virtual_alias_maps = ldap: with the seed 000 filter;
// transport_maps routes the unit domain h42.mail.example.com to unit 42
// (smtp-sink). The message reaches unit 42 with the envelope recipient
// rewritten to the maildrop. Unknown users, entries whose maildrop is a
// pipe and injection attempts get 550 5.1.1; two entries for one address
// get 451 4.3.0 and a clear log line.
func TestLDAPSeed000(t *testing.T) {
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, "127.0.0.1"))
	unit42 := harness.StartSink(t, harness.SinkOptions{})
	dir := t.TempDir()
	cf := ldapCF(t, dir, "ldap-virtual.cf", ldapSeed000CF, slapd.URL(), "")
	m := startMX(t, mxOptions{
		aliasMaps: fmt.Sprintf("%q", "ldap:"+cf),
		transport: sinkTransport(unit42, "h42.mail.example.com"),
	})
	out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "Foo.Bar@example.com", "--header", "Subject: seed 000")
	if code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	msgs := unit42.WaitCount(t, 1, 20*time.Second)
	if got := strings.Join(msgs[0].Rcpts, ","); got != "foo.bar@h42.mail.example.com" {
		t.Fatalf("unit 42 got RCPT %q, want the maildrop", got)
	}
	if msgs[0].Header("Subject") != "seed 000" {
		t.Errorf("Subject %q", msgs[0].Header("Subject"))
	}
	m.waitLog("orig_to=<Foo.Bar@example.com>", 1, 10*time.Second)

	injections := []string{
		"*@example.com", "f*@example.com", "foo.bar*@example.com",
		`"*)(mail=*"@example.com`, `"foo.bar)(|(mail=*"@example.com`,
		`"\\2a"@example.com`, `"x\\"@example.com`, `"(objectClass=*)"@example.com`,
	}
	rcpts := append([]string{"nobody@example.com", "pipe@example.com", "twin@example.com"}, injections...)
	got := ldapRcpts(t, m, rcpts...)
	want := []string{ldapUnknown("nobody@example.com"), ldapUnknown("pipe@example.com"), ldapTempfail("twin@example.com")}
	for range injections {
		// A widened query would find foo.bar (250) or several entries
		// (451 with size_limit = 1); the escaped one finds nothing.
		want = append(want, "550 5.1.1")
	}
	for i := range rcpts {
		if got[i] != want[i] && !(want[i] == "550 5.1.1" && strings.HasPrefix(got[i], "550 5.1.1 ")) {
			t.Errorf("RCPT %s: %q, want %q", rcpts[i], got[i], want[i])
		}
	}
	// A NUL never reaches the directory: the address is refused as
	// malformed.
	if got := ldapRcpt(t, m, "foo.bar\x00*@example.com"); !strings.HasPrefix(got, "501 5.1.3 ") {
		t.Errorf("RCPT with NUL: %q", got)
	}
	log := m.log.String()
	if !strings.Contains(log, "query matched more entries than size_limit") || !strings.Contains(log, "uid=twin1,ou=people,dc=example,dc=test") {
		t.Errorf("no clear log line for the duplicate entries")
	}
	if n := len(unit42.Messages()); n != 1 {
		t.Errorf("unit 42 has %d messages", n)
	}
}

// TestLDAPSeed001Transport: relay_recipient_maps and transport_maps are
// LDAP queries; the route comes from the user's mailHost with result_format
// smtp:[%s]:PORT. With the directory down at delivery time the message is
// deferred, never bounced, and delivered when it is back.
func TestLDAPSeed001Transport(t *testing.T) {
	unit := harness.StartSink(t, harness.SinkOptions{})
	host, port, _ := net.SplitHostPort(unit.Addr())
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, host))
	dir := t.TempDir()
	rcptCF := ldapCF(t, dir, "ldap-recipients.cf", `server_host = %s
search_base = ou=people,dc=example,dc=test
query_filter = (mail=%%s)
result_attribute = mail
domain = example.com
`, slapd.URL())
	transportCF := ldapCF(t, dir, "ldap-transport.cf", `server_host = %s
search_base = ou=people,dc=example,dc=test
query_filter = (&(objectClass=inetLocalMailRecipient)(mail=%%s))
result_attribute = mailHost
result_format = smtp:[%%s]:%s
domain = example.com
size_limit = 1
cache_ttl = 0
negative_cache_ttl = 0
`, slapd.URL(), port)
	m := startMX(t, mxOptions{
		recipientMaps: fmt.Sprintf("%q", "ldap:"+rcptCF),
		transportMaps: fmt.Sprintf("%q", "ldap:"+transportCF),
		extra:         `smtp_host_down_time = "1s"`,
	})
	if got := ldapRcpts(t, m, "nobody@example.com"); got[0] != ldapUnknown("nobody@example.com") {
		t.Errorf("unknown user: %q", got[0])
	}
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "jane@example.com", "--header", "Subject: seed 001"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	msgs := unit.WaitCount(t, 1, 20*time.Second)
	if got := strings.Join(msgs[0].Rcpts, ","); got != "jane@example.com" {
		t.Fatalf("unit got %q", got)
	}
	m.waitLog(fmt.Sprintf("relay=%s[%s]:%s", host, host, port), 1, 10*time.Second)

	// The unit is down, so the message stays queued; then the directory
	// goes down too: the next attempts cannot route it and defer it.
	unit.Stop()
	unit.Clear()
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "foo.bar@example.com", "--header", "Subject: outage"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	m.waitLog("status=deferred", 1, 20*time.Second)
	slapd.Kill()
	m.waitLog("dsn=4.3.0 status=deferred", 1, 20*time.Second)
	unit.Start(t)
	slapd.Start(t)
	msgs = unit.WaitCount(t, 1, 30*time.Second)
	if got := strings.Join(msgs[len(msgs)-1].Rcpts, ","); got != "foo.bar@example.com" {
		t.Fatalf("after the outage the unit got %q", got)
	}
	if log := m.log.String(); strings.Contains(log, "status=bounced") {
		t.Errorf("a directory outage bounced mail:\n%s", log)
	}
}

// TestLDAPSeed003: mailLocalAddress -> mailRoutingAddress aliases (Debian's
// misc.schema).
func TestLDAPSeed003(t *testing.T) {
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, "127.0.0.1"))
	unit3 := harness.StartSink(t, harness.SinkOptions{})
	dir := t.TempDir()
	cf := ldapCF(t, dir, "ldap-aliases.cf", `server_host = %s
search_base = ou=people,dc=example,dc=test
scope = one
query_filter = (&(objectClass=inetLocalMailRecipient)(mailLocalAddress=%%s))
result_attribute = mailRoutingAddress
size_limit = 1
`, slapd.URL())
	m := startMX(t, mxOptions{
		aliasMaps: fmt.Sprintf("%q", "ldap:"+cf),
		transport: sinkTransport(unit3, "unit3.example.com"),
	})
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "j.doe@example.com"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	msgs := unit3.WaitCount(t, 1, 20*time.Second)
	if got := strings.Join(msgs[0].Rcpts, ","); got != "jane@unit3.example.com" {
		t.Fatalf("unit 3 got %q", got)
	}
	if got := ldapRcpts(t, m, "foo.bar@example.com"); got[0] != ldapUnknown("foo.bar@example.com") {
		t.Errorf("no mailLocalAddress: %q", got[0])
	}
}

// TestLDAPOutage: slapd killed mid-test. Recipients not in the cache get
// 451 4.3.0 (fast), never a 5xx, a cached one is still accepted, and
// everything works again when slapd is back.
func TestLDAPOutage(t *testing.T) {
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, "127.0.0.1"))
	unit42 := harness.StartSink(t, harness.SinkOptions{})
	dir := t.TempDir()
	cf := ldapCF(t, dir, "ldap-virtual.cf", ldapSeed000CF, slapd.URL(), "cache_ttl = 10m\nnegative_cache_ttl = 0\n")
	m := startMX(t, mxOptions{
		aliasMaps: fmt.Sprintf("%q", "ldap:"+cf),
		transport: sinkTransport(unit42, "h42.mail.example.com"),
	})
	if got := ldapRcpts(t, m, "foo.bar@example.com", "nobody@example.com"); got[0] != "250" || got[1] != ldapUnknown("nobody@example.com") {
		t.Fatalf("before the outage: %q", got)
	}

	slapd.Kill()
	rcpts := []string{"jane@example.com", "nobody@example.com", "foo.bar@example.com"}
	for round := range 3 {
		start := time.Now()
		got := ldapRcpts(t, m, rcpts...)
		want := []string{ldapTempfail("jane@example.com"), ldapTempfail("nobody@example.com"), "250"}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("round %d, slapd down, RCPT %s: %q, want %q", round, rcpts[i], got[i], want[i])
			}
			if strings.HasPrefix(got[i], "5") {
				t.Errorf("a 5xx while the directory is down: %q", got[i])
			}
		}
		if d := time.Since(start); round > 0 && d > 3*time.Second {
			t.Errorf("round %d took %v with the directory down", round, d)
		}
	}
	if !strings.Contains(m.log.String(), "ldap server is down") {
		t.Errorf("no log line for the dead server")
	}
	// A message for the cached user is accepted and delivered meanwhile.
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "foo.bar@example.com"); code != 0 {
		t.Fatalf("cached user during the outage: swaks exit %d:\n%s", code, out)
	}
	unit42.WaitCount(t, 1, 20*time.Second)

	slapd.Start(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := ldapRcpts(t, m, "jane@example.com", "nobody@example.com")
		for _, g := range got {
			if strings.HasPrefix(g, "5") && g != ldapUnknown("nobody@example.com") {
				t.Fatalf("5xx during recovery: %q", g)
			}
		}
		if got[0] == "250" && got[1] == ldapUnknown("nobody@example.com") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery within 30 s: %q", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(m.log.String(), "ldap server is back") {
		t.Errorf("no log line for the recovery")
	}
}

// TestLDAPCacheAndReload: a found user stays accepted for cache_ttl after
// leaving the directory; SIGHUP empties the cache.
func TestLDAPCacheAndReload(t *testing.T) {
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, "127.0.0.1"))
	dir := t.TempDir()
	cf := ldapCF(t, dir, "ldap-virtual.cf", ldapSeed000CF, slapd.URL(), "cache_ttl = 10m\nnegative_cache_ttl = 10m\n")
	m := startMX(t, mxOptions{aliasMaps: fmt.Sprintf("%q", "ldap:"+cf)})
	if got := ldapRcpts(t, m, "jane@example.com", "new@example.com"); got[0] != "250" || got[1] != ldapUnknown("new@example.com") {
		t.Fatalf("first: %q", got)
	}
	slapd.Modify(t, "dn: uid=jane,ou=people,dc=example,dc=test\nchangetype: delete\n")
	slapd.Add(t, "dn: uid=new,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nobjectClass: mailDropRecipient\nuid: new\ncn: New\nsn: New\nmail: new@example.com\nmaildrop: new@h42.mail.example.com\n")
	if got := ldapRcpts(t, m, "jane@example.com", "new@example.com"); got[0] != "250" || got[1] != ldapUnknown("new@example.com") {
		t.Errorf("cached answers: %q", got)
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m.waitLog("tables reloaded", 1, 10*time.Second)
	if got := ldapRcpts(t, m, "jane@example.com", "new@example.com"); got[0] != ldapUnknown("jane@example.com") || got[1] != "250" {
		t.Errorf("after SIGHUP: %q", got)
	}
}

// TestLDAPQueryCommand: mxfront query ldap:FILE KEY asks the live server,
// like postmap -q: exit 0 and the value, 1 not found, 2 on error.
func TestLDAPQueryCommand(t *testing.T) {
	slapd := harness.StartSlapd(t, fmt.Sprintf(ldapSeed, "127.0.0.1"))
	cf := ldapCF(t, t.TempDir(), "ldap-virtual.cf", ldapSeed000CF, slapd.URL(), "")
	out, _, code := runBin(t, "query", "ldap:"+cf, "foo.bar@example.com")
	if code != 0 || out != "foo.bar@h42.mail.example.com\n" {
		t.Fatalf("found: exit %d %q", code, out)
	}
	if out, _, code := runBin(t, "query", "ldap:"+cf, "nobody@example.com"); code != 1 || out != "" {
		t.Fatalf("not found: exit %d %q", code, out)
	}
	if _, errOut, code := runBin(t, "query", "ldap:"+cf, "twin@example.com"); code != 2 || !strings.Contains(errOut, "more entries than size_limit") {
		t.Fatalf("two entries: exit %d %q", code, errOut)
	}
	slapd.Kill()
	if _, errOut, code := runBin(t, "query", "ldap:"+cf, "foo.bar@example.com"); code != 2 || !strings.Contains(errOut, "lookup error") {
		t.Fatalf("slapd down: exit %d %q", code, errOut)
	}
}
