package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxfront/mxfront/test/harness"
)

// policyConfig is the configuration of the policy end-to-end tests: a
// realistic restriction set at every stage, DNS from an in-process server,
// and the unit (smtp-sink) behind example.com. %[1]s is the test dir,
// %[2]s the DNS server, %[3]s extra top-level lines.
const policyConfig = `myhostname = "mx.example.com"
mynetworks = ["127.0.0.10"]
relay_domains = ["example.com"]
relay_recipient_maps = ["texthash:%[1]s/relay_recipients"]
virtual_alias_maps = ["texthash:%[1]s/virtual"]
transport_maps = ["texthash:%[1]s/transport"]
recipient_delimiter = "+"
queue_directory = "%[1]s/queue"
minimal_backoff_time = "1s"
maximal_backoff_time = "2s"
queue_run_delay = "1s"
dns_servers = ["%[2]s"]
smtpd_peername_lookup = true
smtpd_error_sleep_time = "0s"
unknown_client_reject_code = 550
unknown_address_reject_code = 550
smtpd_client_restrictions = ["permit_mynetworks", "check_client_access texthash:%[1]s/client_access", "reject_unknown_reverse_client_hostname"]
smtpd_helo_restrictions = ["permit_mynetworks", "reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname", "check_helo_access texthash:%[1]s/helo_access"]
smtpd_sender_restrictions = ["reject_non_fqdn_sender", "reject_unknown_sender_domain", "check_sender_access texthash:%[1]s/sender_access", "warn_if_reject", "check_sender_access texthash:%[1]s/warn_access"]
smtpd_recipient_restrictions = ["reject_non_fqdn_recipient", "check_recipient_access texthash:%[1]s/recipient_access"]
smtpd_data_restrictions = ["reject_unauth_pipelining", "reject_multi_recipient_bounce"]
smtpd_end_of_data_restrictions = ["check_sender_access texthash:%[1]s/eod_access"]
header_checks = ["regexp:%[1]s/header_checks"]
body_checks = ["regexp:%[1]s/body_checks"]
%[3]s
[smtpd_restriction_classes]
insiders_only = ["permit_mynetworks", "reject"]

[log]
level = "debug"
`

// policyTables are the tables of policyConfig.
func policyTables(sink *harness.Sink) map[string]string {
	return map[string]string{
		"relay_recipients": "alice@example.com OK\nbob@example.com OK\nboss@example.com OK\ntrap@example.com OK\n",
		"virtual":          "sales@example.com alice@example.com, bob@example.com\n",
		"transport":        sinkTransport(sink, "example.com"),
		"client_access":    "127.0.0.3 REJECT blocked client\n",
		"helo_access":      "spammer.test REJECT we know you\n",
		"sender_access": "bad@good.test REJECT go away\n" +
			"hold@good.test HOLD policy hold\ndiscard@good.test DISCARD\n" +
			"redirect@good.test REDIRECT trap@example.com\nprepend@good.test PREPEND X-Policy: prepended\n",
		"warn_access":      "warned@good.test REJECT only a warning\n",
		"recipient_access": "boss@example.com insiders_only\n",
		"eod_access":       "late@good.test REJECT too late\n",
		"header_checks": "/^Subject:.*viagra/ REJECT no pills\n/^Subject:.*hold-me/ HOLD content hold\n" +
			"/^X-Drop:/ IGNORE\n/^X-Replace:/ REPLACE X-Replaced: yes\n/^Subject:.*defer-me/ DEFER try later\n",
		"body_checks": "/^forbidden phrase/ REJECT body rejected\n",
	}
}

// policyDNS answers for the test clients (127.0.0.x) and sender domains.
func policyDNS(t *testing.T) *harness.DNS {
	rev := func(ip string) string {
		r, err := dns.ReverseAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return harness.StartDNS(t, harness.DNSZones{
		rev("127.0.0.1"):      {PTR: []string{"mail.client.test"}},
		"mail.client.test":    {A: []string{"127.0.0.1"}},
		rev("127.0.0.3"):      {PTR: []string{"blocked.client.test"}},
		"blocked.client.test": {A: []string{"127.0.0.3"}},
		rev("127.0.0.4"):      {Rcode: dns.RcodeServerFailure},
		rev("127.0.0.10"):     {PTR: []string{"trusted.client.test"}},
		"trusted.client.test": {A: []string{"127.0.0.10"}},
		"good.test":           {MX: []harness.DNSMX{{Pref: 10, Host: "mail.good.test"}}},
		"mail.good.test":      {A: []string{"192.0.2.1"}},
		"nullmx.test":         {MX: []harness.DNSMX{{Pref: 0, Host: "."}}},
		"servfail.test":       {Rcode: dns.RcodeServerFailure},
		"mail.remote.test":    {A: []string{"192.0.2.2"}},
	})
}

// startPolicyMX starts the binary with policyConfig (plus extra lines) and
// returns it with the config path.
func startPolicyMX(t *testing.T, sink *harness.Sink, d *harness.DNS, extra string) *mxProc {
	t.Helper()
	dir := t.TempDir()
	for name, content := range policyTables(sink) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return startMXConfig(t, dir, fmt.Sprintf(policyConfig, dir, d.Addr(), extra))
}

// explainResult is the part of `mxfront explain --json` the tests read.
type explainResult struct {
	Accepted bool `json:"accepted"`
	Steps    []struct {
		Stage    string   `json:"stage"`
		Command  string   `json:"command"`
		Reply    string   `json:"reply"`
		Accepted bool     `json:"accepted"`
		Expanded []string `json:"expanded"`
		Routes   []struct {
			Address, Route string
		} `json:"routes"`
		Trace []struct {
			Kind, Restriction, Table, Key, Value, Result, Reply, Text string
			Found                                                     bool
		} `json:"trace"`
	} `json:"steps"`
	Hold, Discard, Redirect string
	Prepend                 []string
}

// explain runs `mxfront explain --json` on m's configuration.
func explain(t *testing.T, m *mxProc, args ...string) explainResult {
	t.Helper()
	out, errOut, code := runBin(t, append([]string{"explain", "-config", m.cfg, "--json"}, args...)...)
	if code == 2 {
		t.Fatalf("explain %q: exit 2: %s", args, errOut)
	}
	var r explainResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("explain %q: %v\n%s", args, err, out)
	}
	if (code == 0) != r.Accepted {
		t.Errorf("explain %q: exit %d but accepted=%v", args, code, r.Accepted)
	}
	return r
}

// decision is the reply explain says the server gives: the first refusal,
// or the last reply.
func (r explainResult) decision() string {
	for _, s := range r.Steps {
		if !s.Accepted {
			return s.Reply
		}
	}
	if len(r.Steps) == 0 {
		return ""
	}
	return r.Steps[len(r.Steps)-1].Reply
}
