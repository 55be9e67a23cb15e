package test

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxfront/mxfront/test/harness"
)

// DNS list end-to-end tests: the real binary, its lists served by an
// in-process miekg/dns server, clients played by swaks from 127.0.0.x
// addresses (Linux routes all of 127.0.0.0/8 to lo). 127.0.0.1 and
// 127.0.0.2 are the RFC 5782 test addresses and are not used as clients.

// listed is an A record answer with a reason.
func listed(code, txt string) harness.DNSAnswer {
	a := harness.DNSAnswer{A: []string{code}}
	if txt != "" {
		a.TXT = []string{txt}
	}
	return a
}

// rfc5782 adds the test entry every healthy IP list has.
func rfc5782(zones harness.DNSZones, zone string) {
	zones["2.0.0.127."+zone] = listed("127.0.0.2", "RFC 5782 test entry")
}

type rblMX struct {
	*mxProc
	dns  *harness.DNS
	sink *harness.Sink
}

// startRBLMX starts the DNS server, a sink for accepted mail, and mxfront
// with dns_servers pointing at the DNS server and extra config lines.
func startRBLMX(t *testing.T, zones harness.DNSZones, extra string) *rblMX {
	t.Helper()
	d := harness.StartDNS(t, zones)
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{
		recipients: "alice@example.com OK\n",
		transport:  sinkTransport(sink, "example.com"),
		extra:      fmt.Sprintf("dns_servers = [%q]\n%s", d.Addr(), extra),
	})
	return &rblMX{m, d, sink}
}

// from runs swaks from client address ip.
func (m *rblMX) from(t *testing.T, ip string, args ...string) (string, int) {
	t.Helper()
	base := []string{"--local-interface", ip, "--to", "alice@example.com"}
	if !containsArg(args, "--from") {
		base = append(base, "--from", "sender@remote.test")
	}
	return swaks(t, m.mxProc, append(base, args...)...)
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

func wantRefused(t *testing.T, ip, out string, code int, reply string) {
	t.Helper()
	if code != 24 {
		t.Errorf("%s: swaks exit %d, want 24 (RCPT refused)", ip, code)
	}
	mustContain(t, ip, out, "<** "+reply+"\n")
}

func wantAccepted(t *testing.T, ip, out string, code int) {
	t.Helper()
	if code != 0 {
		t.Errorf("%s: swaks exit %d, want 0:\n%s", ip, code, out)
	}
	mustContain(t, ip, out, "250 2.0.0 Ok: queued as ")
}

// TestRBLListedClientRefused: reject_rbl_client with a filter refuses a
// listed client with Postfix's default_rbl_reply and the list's TXT
// reason; lookups start when the connection is accepted.
func TestRBLListedClientRefused(t *testing.T) {
	zones := harness.DNSZones{
		"5.0.0.127.bl.test": listed("127.0.0.4", "Listed: see https://bl.test/lookup?ip=127.0.0.5"),
		"6.0.0.127.bl.test": listed("127.0.0.20", ""), // outside the filter
		"7.0.0.127.bl.test": listed("127.0.0.3", ""),  // listed, no TXT
	}
	rfc5782(zones, "bl.test")
	m := startRBLMX(t, zones, `smtpd_recipient_restrictions = ["reject_rbl_client bl.test=127.0.0.[2..11]"]`)

	out, code := m.from(t, "127.0.0.5")
	wantRefused(t, "127.0.0.5", out, code,
		"554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test; Listed: see https://bl.test/lookup?ip=127.0.0.5")
	out, code = m.from(t, "127.0.0.7")
	wantRefused(t, "127.0.0.7", out, code, "554 5.7.1 Service unavailable; Client host [127.0.0.7] blocked using bl.test")
	out, code = m.from(t, "127.0.0.6")
	wantAccepted(t, "127.0.0.6", out, code)
	out, code = m.from(t, "127.0.0.8") // not listed
	wantAccepted(t, "127.0.0.8", out, code)
	m.sink.WaitCount(t, 2, 20*time.Second)
	mustContain(t, "log", m.log.String(),
		`stage=RCPT client=unknown[127.0.0.5] helo=mail.remote.test from=sender@remote.test to=alice@example.com code=554 dsn=5.7.1 reason="Service unavailable; Client host [127.0.0.5] blocked using bl.test; Listed:`)

	// A client that connects and says nothing is looked up all the same:
	// the query starts at accept time, not at RCPT.
	if n := m.dns.Queries("9.0.0.127.bl.test"); n != 0 {
		t.Fatalf("queries before connecting: %d", n)
	}
	out, code = swaks(t, m.mxProc, "--local-interface", "127.0.0.9", "--to", "alice@example.com", "--quit-after", "CONNECT")
	if code != 0 {
		t.Fatalf("connect only: exit %d\n%s", code, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.dns.Queries("9.0.0.127.bl.test") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no DNS list query for a client that only connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRBLAllowlistedClientPasses: permit_dnswl_client before
// reject_rbl_client lets an allowlisted client through despite a listing.
func TestRBLAllowlistedClientPasses(t *testing.T) {
	zones := harness.DNSZones{
		"5.0.0.127.bl.test": listed("127.0.0.2", "listed"),
		"6.0.0.127.bl.test": listed("127.0.0.2", "listed"),
		"5.0.0.127.wl.test": listed("127.0.10.2", ""),
		"6.0.0.127.wl.test": listed("127.0.10.0", ""), // trust level 0: filtered out
	}
	rfc5782(zones, "bl.test")
	rfc5782(zones, "wl.test")
	m := startRBLMX(t, zones, `smtpd_recipient_restrictions = ["permit_dnswl_client wl.test=127.0.[0..255].[1..3]", "reject_rbl_client bl.test"]`)
	out, code := m.from(t, "127.0.0.5")
	wantAccepted(t, "127.0.0.5", out, code)
	out, code = m.from(t, "127.0.0.6")
	wantRefused(t, "127.0.0.6", out, code, "554 5.7.1 Service unavailable; Client host [127.0.0.6] blocked using bl.test; listed")
	m.sink.WaitCount(t, 1, 20*time.Second)
}

// TestRBLScore: reject_dnsbl_score with postscreen-style weights; a secret
// zone name never appears in the reply (dnsbl_reply_map).
func TestRBLScore(t *testing.T) {
	zones := harness.DNSZones{
		"5.0.0.127.bl.test":          listed("127.0.0.2", ""),                         // 1: passes
		"6.0.0.127.key123.zen.test":  listed("127.0.0.4", "https://zen.test/query/6"), // 3: refused
		"7.0.0.127.key123.zen.test":  listed("127.0.0.4", ""),                         // 3-2: passes
		"7.0.0.127.wl.test":          listed("127.0.9.2", ""),
		"8.0.0.127.key123.zen.test":  listed("127.0.0.10", "zen"), // 3+1: refused
		"8.0.0.127.bl.test":          listed("127.0.0.2", "bl"),
		"9.0.0.127.wl.test":          listed("127.0.9.2", ""), // -2: allowlisted
		"9.0.0.127.other.test":       listed("127.0.0.2", ""),
		"10.0.0.127.other.test":      listed("127.0.0.2", "other"),
		"11.0.0.127.key123.zen.test": listed("127.0.0.99", ""), // filter: 0
	}
	for _, z := range []string{"bl.test", "key123.zen.test", "wl.test", "other.test"} {
		rfc5782(zones, z)
	}
	m := startRBLMX(t, zones, `
dnsbl_sites = ["key123.zen.test=127.0.0.[2..11]*3", "bl.test*1", "wl.test=127.0.[0..255].[1..3]*-2"]
dnsbl_threshold = 3
dnsbl_allowlist_threshold = -1
dnsbl_reply_map = "inline:{ key123.zen.test=zen.test }"
smtpd_recipient_restrictions = ["reject_dnsbl_score", "reject_rbl_client other.test"]
`)
	for _, tc := range []struct{ ip, refused string }{
		{"127.0.0.5", ""},
		{"127.0.0.6", "554 5.7.1 Service unavailable; Client host [127.0.0.6] blocked using zen.test; https://zen.test/query/6"},
		{"127.0.0.7", ""},
		{"127.0.0.8", "554 5.7.1 Service unavailable; Client host [127.0.0.8] blocked using zen.test; zen"},
		{"127.0.0.9", ""}, // listed in other.test, but allowlisted by its score
		{"127.0.0.10", "554 5.7.1 Service unavailable; Client host [127.0.0.10] blocked using other.test; other"},
		{"127.0.0.11", ""},
	} {
		out, code := m.from(t, tc.ip)
		if tc.refused == "" {
			wantAccepted(t, tc.ip, out, code)
		} else {
			wantRefused(t, tc.ip, out, code, tc.refused)
		}
		if strings.Contains(out, "key123") {
			t.Errorf("%s: the secret zone name is in the dialog:\n%s", tc.ip, out)
		}
	}
	m.sink.WaitCount(t, 4, 20*time.Second)
	if strings.Contains(m.log.String(), `reason="Service unavailable; Client host [127.0.0.6] blocked using key123`) {
		t.Error("the secret zone name is in the reject log line")
	}

	// explain shows each list's answer, the weights and the total.
	out, err := exec.Command(m.bin, "explain", "-config", m.cfg, "--client", "127.0.0.8", "--helo", "mail.remote.test",
		"--from", "sender@remote.test", "--to", "alice@example.com").CombinedOutput()
	if err == nil {
		t.Errorf("explain exit 0 for a refused client:\n%s", out)
	}
	mustContain(t, "explain", string(out),
		`lookup dnsbl_sites key123.zen.test=127.0.0.[2..11]*3 "8.0.0.127.key123.zen.test": found "127.0.0.10; +3, total 3"`,
		`lookup dnsbl_sites bl.test*1 "8.0.0.127.bl.test": found "127.0.0.2; +1, total 4"`,
		`lookup dnsbl_sites wl.test=127.0.[0..255].[1..3]*-2 "8.0.0.127.wl.test": not listed; +0, total 4`,
		`DNSBL score 4 (dnsbl_threshold 3, dnsbl_allowlist_threshold -1)`,
		`-> REJECT 554 5.7.1 Service unavailable; Client host [127.0.0.8] blocked using zen.test; zen`)
}

// TestRBLFailingZones: a zone that never answers costs one dnsbl_timeout
// and then is skipped; a SERVFAIL zone counts as not listed; a zone that
// lists everything is disabled by the health test. None of them refuses
// mail, and a healthy zone next to them still does.
func TestRBLFailingZones(t *testing.T) {
	zones := harness.DNSZones{
		"1.0.0.127.broken.test": listed("127.0.0.2", "everything"),
		"2.0.0.127.broken.test": listed("127.0.0.2", "everything"),
		"6.0.0.127.bl.test":     listed("127.0.0.2", "really listed"),
	}
	rfc5782(zones, "bl.test")
	for i := 1; i <= 20; i++ {
		zones[fmt.Sprintf("%d.0.0.127.dead.test", i)] = harness.DNSAnswer{Drop: true}
		zones[fmt.Sprintf("%d.0.0.127.servfail.test", i)] = harness.DNSAnswer{Rcode: dns.RcodeServerFailure}
		if i > 2 {
			zones[fmt.Sprintf("%d.0.0.127.broken.test", i)] = listed("127.0.0.2", "everything")
		}
	}
	m := startRBLMX(t, zones, `
dnsbl_timeout = "2s"
smtpd_recipient_restrictions = ["reject_rbl_client dead.test", "reject_rbl_client servfail.test", "reject_rbl_client broken.test", "reject_rbl_client bl.test"]
`)
	m.waitLog(`dnsbl zone disabled: failed the RFC 5782 health test; it counts as not listed" zone=broken.test`, 1, 10*time.Second)

	// Three clients at once: each waits for dead.test once, then the
	// breaker opens.
	var wg sync.WaitGroup
	for _, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			out, code := m.from(t, ip)
			wantAccepted(t, ip, out, code)
			if took := time.Since(start); took > 6*time.Second {
				t.Errorf("%s: session took %v with dnsbl_timeout 2s", ip, took)
			}
		}()
	}
	wg.Wait()
	m.waitLog(`dnsbl zone not responding: skipped, counts as not listed" zone=dead.test`, 1, 5*time.Second)
	mustContain(t, "log", m.log.String(),
		`msg="dnsbl lookup failed" zone=dead.test query=3.0.0.127.dead.test err="no answer within dnsbl_timeout"`,
		`msg="dnsbl lookup failed" zone=servfail.test query=3.0.0.127.servfail.test err="DNS error: SERVFAIL"`)

	// Now dead.test is skipped: no more waiting.
	start := time.Now()
	out, code := m.from(t, "127.0.0.7")
	wantAccepted(t, "127.0.0.7", out, code)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("session with the breaker open took %v", took)
	}
	out, code = m.from(t, "127.0.0.6")
	wantRefused(t, "127.0.0.6", out, code, "554 5.7.1 Service unavailable; Client host [127.0.0.6] blocked using bl.test; really listed")
	m.sink.WaitCount(t, 4, 20*time.Second)
}

// TestRHSBL: sender and HELO domains in a domain list; names that are not
// host names are not queried.
func TestRHSBL(t *testing.T) {
	zones := harness.DNSZones{
		"test.dbl.test":         listed("127.0.1.2", ""),
		"spam.example.dbl.test": listed("127.0.1.2", "dbl says no"),
	}
	m := startRBLMX(t, zones, `smtpd_recipient_restrictions = ["reject_rhsbl_helo dbl.test", "reject_rhsbl_sender dbl.test"]`)
	out, code := m.from(t, "127.0.0.5", "--from", "x@Spam.Example")
	wantRefused(t, "sender", out, code, "554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using dbl.test; dbl says no")
	out, code = m.from(t, "127.0.0.5", "--helo", "spam.example")
	wantRefused(t, "helo", out, code, "554 5.7.1 Service unavailable; Helo command [spam.example] blocked using dbl.test; dbl says no")
	out, code = m.from(t, "127.0.0.5", "--helo", "[127.0.0.5]")
	wantAccepted(t, "literal helo", out, code)
	out, code = m.from(t, "127.0.0.5", "--from", "<>")
	wantAccepted(t, "null sender", out, code)
	m.sink.WaitCount(t, 2, 20*time.Second)
}
