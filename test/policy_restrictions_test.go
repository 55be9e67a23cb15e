package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// policyCase is one SMTP transaction decided by the restrictions: the same
// case is sent to the live server with swaks and given to `mxfront
// explain`, and both must give want.
type policyCase struct {
	name         string
	client, helo string // client address 127.0.0.x; HELO name
	from         string
	to           []string
	want         string // the deciding reply; "250 2.0.0 Ok: queued" when accepted
	swaksExit    int
}

// policyCases pin each stage's restrictions end to end.
var policyCases = []policyCase{
	{name: "accepted", client: "127.0.0.1", helo: "mail.client.test", from: "a@good.test", to: []string{"alice@example.com"},
		want: "250 2.0.0 Ok: queued"},
	// Client restrictions (at RCPT: smtpd_delay_reject = yes).
	{name: "no PTR", client: "127.0.0.2", helo: "mail.client.test", from: "a@good.test", to: []string{"alice@example.com"},
		want: "550 5.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.2]", swaksExit: 24},
	{name: "PTR lookup fails: defer", client: "127.0.0.4", helo: "mail.client.test", from: "a@good.test", to: []string{"alice@example.com"},
		want: "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.4]", swaksExit: 24},
	{name: "check_client_access", client: "127.0.0.3", helo: "mail.client.test", from: "a@good.test", to: []string{"alice@example.com"},
		want: "554 5.7.1 <blocked.client.test[127.0.0.3]>: Client host rejected: blocked client", swaksExit: 24},
	// HELO restrictions.
	{name: "reject_invalid_helo_hostname", client: "127.0.0.1", helo: "bad_helo!", from: "a@good.test", to: []string{"alice@example.com"},
		want: "501 5.5.2 <bad_helo!>: Helo command rejected: Invalid name", swaksExit: 24},
	{name: "reject_non_fqdn_helo_hostname", client: "127.0.0.1", helo: "localhost", from: "a@good.test", to: []string{"alice@example.com"},
		want: "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", swaksExit: 24},
	{name: "check_helo_access", client: "127.0.0.1", helo: "mx.spammer.test", from: "a@good.test", to: []string{"alice@example.com"},
		want: "554 5.7.1 <mx.spammer.test>: Helo command rejected: we know you", swaksExit: 24},
	{name: "mynetworks skips HELO checks", client: "127.0.0.10", helo: "localhost", from: "a@good.test", to: []string{"alice@example.com"},
		want: "250 2.0.0 Ok: queued"},
	// Sender restrictions.
	{name: "reject_non_fqdn_sender", client: "127.0.0.1", helo: "mail.client.test", from: "a@localhost", to: []string{"alice@example.com"},
		want: "504 5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address", swaksExit: 24},
	{name: "reject_unknown_sender_domain", client: "127.0.0.1", helo: "mail.client.test", from: "a@nx.test", to: []string{"alice@example.com"},
		want: "550 5.1.8 <a@nx.test>: Sender address rejected: Domain not found", swaksExit: 24},
	{name: "reject_unknown_sender_domain, DNS failure defers", client: "127.0.0.1", helo: "mail.client.test", from: "a@servfail.test", to: []string{"alice@example.com"},
		want: "450 4.1.8 <a@servfail.test>: Sender address rejected: Domain not found", swaksExit: 24},
	{name: "reject_unknown_sender_domain, null MX", client: "127.0.0.1", helo: "mail.client.test", from: "a@nullmx.test", to: []string{"alice@example.com"},
		want: "550 5.7.27 <a@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail (nullMX)", swaksExit: 24},
	{name: "check_sender_access", client: "127.0.0.1", helo: "mail.client.test", from: "bad@good.test", to: []string{"alice@example.com"},
		want: "554 5.7.1 <bad@good.test>: Sender address rejected: go away", swaksExit: 24},
	{name: "warn_if_reject only logs", client: "127.0.0.1", helo: "mail.client.test", from: "warned@good.test", to: []string{"alice@example.com"},
		want: "250 2.0.0 Ok: queued"},
	// Recipient restrictions.
	{name: "restriction class via access table", client: "127.0.0.1", helo: "mail.client.test", from: "a@good.test", to: []string{"boss@example.com"},
		want: "554 5.7.1 <boss@example.com>: Recipient address rejected: Access denied", swaksExit: 24},
	{name: "restriction class, insider", client: "127.0.0.10", helo: "trusted.client.test", from: "a@good.test", to: []string{"boss@example.com"},
		want: "250 2.0.0 Ok: queued"},
	{name: "unknown recipient", client: "127.0.0.1", helo: "mail.client.test", from: "a@good.test", to: []string{"nobody@example.com"},
		want: "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table", swaksExit: 24},
	{name: "relay attempt", client: "127.0.0.1", helo: "mail.client.test", from: "a@good.test", to: []string{"x@elsewhere.test"},
		want: "554 5.7.1 <x@elsewhere.test>: Relay access denied", swaksExit: 24},
	{name: "reject_non_fqdn_recipient", client: "127.0.0.10", helo: "trusted.client.test", from: "a@good.test", to: []string{"x@localhost"},
		want: "504 5.5.2 <x@localhost>: Recipient address rejected: need fully-qualified address", swaksExit: 24},
	// DATA and end-of-data restrictions.
	{name: "reject_multi_recipient_bounce", client: "127.0.0.1", helo: "mail.client.test", from: "<>", to: []string{"alice@example.com", "bob@example.com"},
		want: "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce", swaksExit: 25},
	{name: "smtpd_end_of_data_restrictions", client: "127.0.0.1", helo: "mail.client.test", from: "late@good.test", to: []string{"alice@example.com"},
		want: "554 5.7.1 <late@good.test>: Sender address rejected: too late", swaksExit: 26},
}

// TestPolicyStages sends every case with swaks (from its 127.0.0.x
// address) and checks the reply, the reject log line, and that `mxfront
// explain` gives the same decision.
func TestPolicyStages(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	d := policyDNS(t)
	m := startPolicyMX(t, sink, d, "")
	accepted := 0
	for _, tc := range policyCases {
		args := []string{"--server", m.addr(), "--local-interface", tc.client, "--helo", tc.helo, "--from", tc.from,
			"--to", strings.Join(tc.to, ","), "--timeout", "20", "--header", "Subject: " + tc.name}
		out, code := harness.Swaks(t, args...)
		if code != tc.swaksExit {
			t.Errorf("%s: swaks exit %d, want %d\n%s", tc.name, code, tc.swaksExit, out)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: swaks did not get %q:\n%s", tc.name, tc.want, out)
		}
		if tc.swaksExit == 0 {
			accepted++
		}
		ex := []string{"--client", tc.client, "--helo", tc.helo, "--from", tc.from}
		for _, r := range tc.to {
			ex = append(ex, "--to", r)
		}
		if got := explain(t, m, ex...).decision(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: explain says %q, the server %q", tc.name, got, tc.want)
		}
	}
	sink.WaitCount(t, accepted, 20*time.Second)
	log := m.log.String()
	mustContain(t, "reject log", log,
		`msg=reject conn=`,
		`stage=RCPT client=blocked.client.test[127.0.0.3] helo=mail.client.test from=a@good.test to=alice@example.com code=554 dsn=5.7.1 reason="<blocked.client.test[127.0.0.3]>: Client host rejected: blocked client"`,
		`stage=DATA client=`, `helo=mail.client.test from="" to=alice@example.com,bob@example.com code=550 dsn=5.5.3 reason="<DATA>: Data command rejected: Multi-recipient bounce"`,
		`msg=reject_warning conn=`,
		`helo=mail.client.test from=warned@good.test to=alice@example.com reason="554 5.7.1 <warned@good.test>: Sender address rejected: only a warning"`)
}

// TestPolicyActions: access(5) HOLD, DISCARD, REDIRECT and PREPEND, and
// header_checks/body_checks, end to end with the unit (smtp-sink).
func TestPolicyActions(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	d := policyDNS(t)
	m := startPolicyMX(t, sink, d, "")
	send := func(from, subject string, extra ...string) (string, int) {
		args := []string{"--server", m.addr(), "--helo", "mail.client.test", "--from", from, "--to", "alice@example.com",
			"--timeout", "20", "--header", "Subject: " + subject}
		return harness.Swaks(t, append(args, extra...)...)
	}
	// Rejected content.
	out, code := send("a@good.test", "cheap viagra")
	if code != 26 || !strings.Contains(out, "550 5.7.1 no pills") {
		t.Errorf("header_checks REJECT: exit %d\n%s", code, out)
	}
	out, code = send("a@good.test", "please defer-me")
	if code != 26 || !strings.Contains(out, "451 4.7.1 try later") {
		t.Errorf("header_checks DEFER: exit %d\n%s", code, out)
	}
	out, code = send("a@good.test", "body", "--body", "first line\nforbidden phrase here\n")
	if code != 26 || !strings.Contains(out, "550 5.7.1 body rejected") {
		t.Errorf("body_checks REJECT: exit %d\n%s", code, out)
	}
	// Accepted and changed.
	if out, code := send("prepend@good.test", "prepend", "--header", "X-Drop: me", "--header", "X-Replace: me"); code != 0 {
		t.Fatalf("prepend: exit %d\n%s", code, out)
	}
	if out, code := send("redirect@good.test", "redirect"); code != 0 {
		t.Fatalf("redirect: exit %d\n%s", code, out)
	}
	msgs := sink.WaitCount(t, 2, 20*time.Second)
	for _, msg := range msgs {
		switch msg.Header("Subject") {
		case "prepend":
			if msg.Header("X-Policy") != "prepended" || msg.Header("X-Drop") != "" || msg.Header("X-Replaced") != "yes" || msg.Header("X-Replace") != "" {
				t.Errorf("PREPEND/IGNORE/REPLACE:\n%s", msg.Data)
			}
			head, _, _ := strings.Cut(string(msg.Data), "\n\n")
			if !strings.HasPrefix(head, "X-Policy: prepended\nReceived: ") {
				t.Errorf("PREPEND goes above Received:\n%s", head)
			}
		case "redirect":
			if strings.Join(msg.Rcpts, ",") != "trap@example.com" {
				t.Errorf("REDIRECT: delivered to %q", msg.Rcpts)
			}
		default:
			t.Errorf("unexpected message %q", msg.Header("Subject"))
		}
	}
	// Accepted and not delivered.
	sink.Clear()
	for _, c := range []struct{ from, subject string }{{"hold@good.test", "hold"}, {"a@good.test", "please hold-me"}, {"discard@good.test", "discard"}} {
		if out, code := send(c.from, c.subject); code != 0 || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
			t.Errorf("%s: exit %d\n%s", c.subject, code, out)
		}
	}
	m.waitLog("msg=discard", 2, 10*time.Second) // the policy line and the session line
	time.Sleep(1500 * time.Millisecond)         // a queue run
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("%d held or discarded messages delivered", n)
	}
	held, _ := os.ReadDir(filepath.Join(m.dir, "queue", "hold"))
	if len(held) != 2 {
		t.Errorf("hold queue has %d messages, want 2", len(held))
	}
	mustContain(t, "log", m.log.String(), `msg=hold`, `reason="<hold@good.test>: Sender address policy hold"`,
		`msg=discard`, `msg=redirect`)

	// explain shows the same actions.
	ex := explain(t, m, "--client", "127.0.0.1", "--helo", "mail.client.test", "--from", "hold@good.test", "--to", "alice@example.com")
	if ex.Hold != "<hold@good.test>: Sender address policy hold" || !ex.Accepted {
		t.Errorf("explain HOLD: %+v", ex)
	}
	ex = explain(t, m, "--client", "127.0.0.1", "--helo", "mail.client.test", "--from", "redirect@good.test", "--to", "alice@example.com")
	if ex.Redirect != "trap@example.com" {
		t.Errorf("explain REDIRECT: %+v", ex)
	}
	msgFile := filepath.Join(t.TempDir(), "msg")
	os.WriteFile(msgFile, []byte("Subject: cheap viagra\n\nhello\n"), 0o644)
	ex = explain(t, m, "--client", "127.0.0.1", "--helo", "mail.client.test", "--from", "a@good.test", "--to", "alice@example.com", "--data", msgFile)
	if got := ex.decision(); got != "550 5.7.1 no pills" || ex.Accepted {
		t.Errorf("explain header_checks: %q", got)
	}
}

// TestExplainCommand: the text and JSON output show the stages, each
// restriction with its result, the table and key that matched, the alias
// expansion and the route.
func TestExplainCommand(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	d := policyDNS(t)
	m := startPolicyMX(t, sink, d, "")
	out, errOut, code := runBin(t, "explain", "-config", m.cfg, "--client", "127.0.0.3", "--helo", "mail.client.test",
		"--from", "a@good.test", "--to", "sales@example.com")
	if code != 1 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	mustContain(t, "explain text", out,
		"client 127.0.0.3: name blocked.client.test (ok)",
		"RCPT TO:<sales@example.com>",
		"smtpd_client_restrictions (3 restriction(s))",
		"permit_mynetworks -> DUNNO",
		fmt.Sprintf(`lookup texthash:%s/client_access "127.0.0.3": found "REJECT blocked client"`, m.dir),
		"-> REJECT 554 5.7.1 <blocked.client.test[127.0.0.3]>: Client host rejected: blocked client",
		"=> 554 5.7.1 <blocked.client.test[127.0.0.3]>: Client host rejected: blocked client",
		"result: not accepted")
	out, _, code = runBin(t, "explain", "-config", m.cfg, "--client", "127.0.0.1", "--rdns", "mail.client.test", "--helo", "mail.client.test",
		"--from", "a@good.test", "--to", "sales@example.com")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	mustContain(t, "explain text", out,
		"virtual_alias_maps: sales@example.com -> alice@example.com, bob@example.com",
		fmt.Sprintf("route alice@example.com -> smtp:[127.0.0.1]:%d", sink.Port()),
		"=> 250 2.1.5 Ok", "result: accepted")
	ex := explain(t, m, "--client", "127.0.0.1", "--helo", "mail.client.test", "--from", "a@good.test", "--to", "sales@example.com", "--to", "x@elsewhere.test")
	var rcpts []string
	for _, s := range ex.Steps {
		if s.Stage == "RCPT" {
			rcpts = append(rcpts, s.Reply)
			if s.Accepted && (len(s.Routes) != 2 || s.Routes[1].Route != fmt.Sprintf("smtp:[127.0.0.1]:%d", sink.Port())) {
				t.Errorf("routes %+v", s.Routes)
			}
		}
	}
	if strings.Join(rcpts, "|") != "250 2.1.5 Ok|554 5.7.1 <x@elsewhere.test>: Relay access denied" || !ex.Accepted {
		t.Errorf("two recipients: %q accepted=%v", rcpts, ex.Accepted)
	}
	if _, errOut, code := runBin(t, "explain", "-config", m.cfg, "--client", "not-an-ip", "--to", "a@example.com"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("bad client: exit %d %s", code, errOut)
	}
}
