package policy

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/rbl"
	"github.com/mxfront/mxfront/routing"
	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/test/harness"
)

// rblZones are the lists of the DNS list tests. The RFC 5782 test entries
// are there so that the health test passes.
func rblZones() harness.DNSZones {
	a := func(code, txt string) harness.DNSAnswer {
		x := harness.DNSAnswer{A: []string{code}}
		if txt != "" {
			x.TXT = []string{txt}
		}
		return x
	}
	return harness.DNSZones{
		"2.0.0.127.bl.test":         a("127.0.0.2", "test"),
		"9.113.0.203.bl.test":       a("127.0.0.4", "Listed: https://bl.test/q?203.0.113.9"),
		"8.113.0.203.bl.test":       a("127.0.0.20", ""),
		"7.113.0.203.bl.test":       a("127.0.0.3", ""),
		"2.0.0.127.wl.test":         a("127.0.10.2", ""),
		"9.113.0.203.wl.test":       a("127.0.10.2", ""),
		"2.0.0.127.zen.test":        a("127.0.0.2", ""),
		"9.113.0.203.zen.test":      a("127.0.0.10", "zen reason"),
		"6.113.0.203.zen.test":      a("127.0.0.4", "zen reason"),
		"6.113.0.203.wl.test":       a("127.0.9.1", ""),
		"5.113.0.203.bl.test":       a("127.0.0.2", ""),
		"5.113.0.203.wl.test":       a("127.0.9.1", ""),
		"test.dbl.test":             a("127.0.1.2", ""),
		"spam.example.dbl.test":     a("127.0.1.2", "dbl reason"),
		"2.0.0.127.fail.test":       {Rcode: dns.RcodeServerFailure},
		"9.113.0.203.fail.test":     {Rcode: dns.RcodeServerFailure},
		"spam.example.faildbl.test": {Rcode: dns.RcodeServerFailure},
		"test.rhswl.test":           a("127.0.2.2", ""),
		"good.example.rhswl.test":   a("127.0.2.2", ""),
	}
}

type rblEnv struct {
	dns    *harness.DNS
	client *rbl.Client
	set    *table.Set
	log    *bytes.Buffer
}

func newRBLEnv(t *testing.T) *rblEnv {
	t.Helper()
	d := harness.StartDNS(t, rblZones())
	res, err := rbl.NewResolvers([]string{d.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := rbl.New(rbl.Config{Exchanger: res, Timeout: time.Second, HealthInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	set := table.NewSet(table.Options{})
	t.Cleanup(func() { set.Close() })
	return &rblEnv{dns: d, client: c, set: set, log: &bytes.Buffer{}}
}

// policy returns a Policy with the given recipient restrictions and DNS
// list settings (Client filled in).
func (e *rblEnv) policy(t *testing.T, d DNSBL, relay []string, restrictions ...string) *Policy {
	t.Helper()
	p, err := e.newPolicy(d, relay, restrictions...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *rblEnv) newPolicy(d DNSBL, relay []string, restrictions ...string) (*Policy, error) {
	if d.Client == nil {
		d.Client = e.client
	}
	nets, _ := table.NewNetList([]string{"127.0.0.0/8", "192.0.2.0/24"}, e.set)
	relayDomains, _ := table.NewDomainList([]string{"example.com"}, e.set, true)
	r, _ := routing.New(routing.Config{RelayDomains: relayDomains}, nil)
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, e.log}, nil))
	return New(Config{
		MyNetworks:            nets,
		RelayDomains:          relayDomains,
		RelayRestrictions:     relay,
		RecipientRestrictions: restrictions,
		Tables:                e.set,
		Router:                r,
		DNSBL:                 d,
	}, logger)
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// rblReq is a request from client ip, named name (verified) and rev
// (PTR), with HELO helo, from sender to rcpt.
type rblReq struct {
	ip, name, rev, helo, from, rcpt string
}

func (q rblReq) request() *Request {
	if q.ip == "" {
		q.ip = "203.0.113.9"
	}
	if q.helo == "" {
		q.helo = "mail.remote.test"
	}
	if q.from == "" {
		q.from = "sender@remote.test"
	}
	if q.rcpt == "" {
		q.rcpt = "alice@example.com"
	}
	from, err := envelope.ParseAddress(q.from, false)
	if q.from == "<>" || err != nil {
		from = envelope.Address{}
	}
	peer := Peer{Name: "unknown", ReverseName: "unknown"}
	if q.name != "" {
		peer.Name, peer.NameStatus = q.name, PeerOK
	}
	if q.rev != "" {
		peer.ReverseName, peer.ReverseStatus = q.rev, PeerOK
	}
	return &Request{
		Client: envelope.Client{Addr: netip.MustParseAddr(q.ip), Helo: q.helo},
		Peer:   peer,
		From:   &from,
		Rcpt:   envelope.MustParse(q.rcpt),
	}
}

func rcptResult(p *Policy, req *Request) string {
	_, err := p.CheckRcpt(context.Background(), req)
	if err != nil {
		return envelope.ReplyOf(err).String()
	}
	return "OK"
}

// TestRBLReplies pins the reply of every DNS list reject path.
func TestRBLReplies(t *testing.T) {
	e := newRBLEnv(t)
	for _, tc := range []struct {
		name  string
		restr []string
		req   rblReq
		want  string
	}{
		{"listed with TXT", []string{"reject_rbl_client", "bl.test"}, rblReq{},
			"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test; Listed: https://bl.test/q?203.0.113.9"},
		{"listed without TXT", []string{"reject_rbl_client", "bl.test"}, rblReq{ip: "203.0.113.7"},
			"554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using bl.test"},
		{"filter matches", []string{"reject_rbl_client", "bl.test=127.0.0.[2..11]"}, rblReq{},
			"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test; Listed: https://bl.test/q?203.0.113.9"},
		{"filter list matches", []string{"reject_rbl_client", "BL.test=127.0.0.[2;4;10]"}, rblReq{},
			"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test; Listed: https://bl.test/q?203.0.113.9"},
		{"filter does not match", []string{"reject_rbl_client", "bl.test=127.0.0.[2..11]"}, rblReq{ip: "203.0.113.8"}, "OK"},
		{"not listed", []string{"reject_rbl_client", "bl.test"}, rblReq{ip: "203.0.113.1"}, "OK"},
		{"SERVFAIL is not a listing", []string{"reject_rbl_client", "fail.test"}, rblReq{}, "OK"},
		{"rhsbl client", []string{"reject_rhsbl_client", "dbl.test"}, rblReq{name: "spam.example"},
			"554 5.7.1 Service unavailable; Client host [spam.example] blocked using dbl.test; dbl reason"},
		{"rhsbl client unknown", []string{"reject_rhsbl_client", "dbl.test"}, rblReq{rev: "spam.example"}, "OK"},
		{"rhsbl reverse client", []string{"reject_rhsbl_reverse_client", "dbl.test"}, rblReq{rev: "spam.example"},
			"554 5.7.1 Service unavailable; Unverified Client host [spam.example] blocked using dbl.test; dbl reason"},
		{"rhsbl helo", []string{"reject_rhsbl_helo", "dbl.test"}, rblReq{helo: "Spam.Example"},
			"554 5.7.1 Service unavailable; Helo command [Spam.Example] blocked using dbl.test; dbl reason"},
		{"rhsbl helo literal", []string{"reject_rhsbl_helo", "dbl.test"}, rblReq{helo: "[203.0.113.9]"}, "OK"},
		{"rhsbl helo not a host name", []string{"reject_rhsbl_helo", "dbl.test"}, rblReq{helo: "bad_name.example"}, "OK"},
		{"rhsbl helo numeric", []string{"reject_rhsbl_helo", "dbl.test"}, rblReq{helo: "203.0.113.9"}, "OK"},
		{"rhsbl sender", []string{"reject_rhsbl_sender", "dbl.test"}, rblReq{from: "x@spam.example"},
			"554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using dbl.test; dbl reason"},
		{"rhsbl null sender", []string{"reject_rhsbl_sender", "dbl.test"}, rblReq{from: "<>"}, "OK"},
		{"rhsbl SERVFAIL", []string{"reject_rhsbl_sender", "faildbl.test"}, rblReq{from: "x@spam.example"}, "OK"},
	} {
		p := e.policy(t, DNSBL{}, nil, tc.restr...)
		if got := rcptResult(p, tc.req.request()); got != tc.want {
			t.Errorf("%s:\n got  %q\n want %q", tc.name, got, tc.want)
		}
	}
	// reject_rhsbl_recipient for a domain we serve.
	p := e.policy(t, DNSBL{}, nil, "reject_rhsbl_recipient", "dbl.test")
	e.dns.Set("example.com.dbl.test", harness.DNSAnswer{A: []string{"127.0.1.2"}})
	if got := rcptResult(p, rblReq{}.request()); got != "554 5.7.1 Service unavailable; Recipient address [alice@example.com] blocked using dbl.test" {
		t.Errorf("rhsbl recipient: %q", got)
	}
	for _, name := range []string{"bad_name.example.dbl.test", "203.0.113.9.dbl.test", "[203.0.113.9].dbl.test"} {
		if n := e.dns.Queries(name); n != 0 {
			t.Errorf("%s was queried", name)
		}
	}
}

// TestRBLReplyTemplates: rbl_reply_maps (by "zone=filter", then zone),
// maps_rbl_reject_code, dnsbl_reply_map, and a broken template.
func TestRBLReplyTemplates(t *testing.T) {
	e := newRBLEnv(t)
	open := func(spec string) table.Table {
		tb, err := e.set.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	// Keys with "=" need a file (texthash: "key value" lines).
	file := filepath.Join(t.TempDir(), "rbl_reply")
	if err := os.WriteFile(file, []byte(`bl.test=127.0.0.[2..11]  550 5.7.2 $client_address is on $rbl_domain${rbl_reason?: $rbl_reason}
zen.test                 $rbl_code Blocked by $rbl_domain${rbl_reason:, no reason}
wl.test                  451 4.7.1 Try later $rbl_what
fail.test                oops $nosuchvar
`), 0o644); err != nil {
		t.Fatal(err)
	}
	maps := []table.Table{open("texthash:" + file)}
	for _, tc := range []struct {
		d     DNSBL
		restr string
		ip    string
		want  string
	}{
		{DNSBL{ReplyMaps: maps}, "bl.test=127.0.0.[2..11]", "",
			"550 5.7.2 203.0.113.9 is on bl.test: Listed: https://bl.test/q?203.0.113.9"},
		{DNSBL{ReplyMaps: maps}, "bl.test", "", // no "bl.test" key: default
			"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test; Listed: https://bl.test/q?203.0.113.9"},
		{DNSBL{ReplyMaps: maps, RejectCode: 550}, "zen.test=127.0.0.10", "", // falls back to the zone key
			"550 5.7.1 Blocked by zen.test"},
		{DNSBL{ReplyMaps: maps, ReplyMap: open("inline:{ bl.test=public.example }")}, "bl.test", "203.0.113.7",
			"554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using public.example"},
		{DNSBL{ReplyMaps: maps}, "wl.test", "", "451 4.7.1 Try later 203.0.113.9"},
		{DNSBL{DefaultReply: "$rbl_code 5.7.9 Go away, [$client_address] ($rbl_domain)"}, "bl.test", "203.0.113.7",
			"554 5.7.9 Go away, [203.0.113.7] ($rbl_domain)"},
	} {
		p := e.policy(t, tc.d, nil, "reject_rbl_client", tc.restr)
		req := rblReq{ip: tc.ip}.request()
		if got := rcptResult(p, req); got != strings.ReplaceAll(tc.want, "($rbl_domain)", "(bl.test)") {
			t.Errorf("%s: got %q, want %q", tc.restr, got, tc.want)
		}
	}
	// zen.test lists 203.0.113.9 with a TXT: ${rbl_reason:...} is empty.
	p := e.policy(t, DNSBL{ReplyMaps: maps}, nil, "reject_rbl_client", "zen.test")
	if got := rcptResult(p, rblReq{}.request()); got != "554 5.7.1 Blocked by zen.test" {
		t.Errorf("zen: %q", got)
	}
	// A template that does not expand: the default reply, and a warning.
	e.dns.Set("9.113.0.203.fail.test", harness.DNSAnswer{A: []string{"127.0.0.2"}})
	p = e.policy(t, DNSBL{ReplyMaps: maps}, nil, "reject_rbl_client", "fail.test")
	if got := rcptResult(p, rblReq{}.request()); got != "554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using fail.test" {
		t.Errorf("bad template: %q", got)
	}
	if !strings.Contains(e.log.String(), "bad rbl_reply_maps template") {
		t.Errorf("no warning for a bad template:\n%s", e.log)
	}
	// A table error is a server error, never a rejection.
	p = e.policy(t, DNSBL{ReplyMaps: []table.Table{open("fail:replies")}}, nil, "reject_rbl_client", "bl.test")
	if got := rcptResult(p, rblReq{}.request()); got != "451 4.3.5 Server configuration error" {
		t.Errorf("reply map failure: %q", got)
	}
}

// TestRBLWarnIfReject: warn_if_reject in front of a DNS list logs and
// goes on.
func TestRBLWarnIfReject(t *testing.T) {
	e := newRBLEnv(t)
	p := e.policy(t, DNSBL{}, nil, "warn_if_reject", "reject_rbl_client", "bl.test", "reject_rhsbl_sender", "dbl.test")
	if got := rcptResult(p, rblReq{from: "x@spam.example"}.request()); got != "554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using dbl.test; dbl reason" {
		t.Errorf("got %q", got)
	}
	if !strings.Contains(e.log.String(), "reject_warning") || !strings.Contains(e.log.String(), "blocked using bl.test") {
		t.Errorf("no reject_warning:\n%s", e.log)
	}
}

// TestDNSWL: permit_dnswl_client and permit_rhswl_client permit a listed
// client, never a relay attempt, and a list that does not answer turns a
// later rejection into a deferral (Postfix DEFER_IF_REJECT).
func TestDNSWL(t *testing.T) {
	e := newRBLEnv(t)
	p := e.policy(t, DNSBL{}, nil, "permit_dnswl_client", "wl.test=127.0.[0..255].[1..3]", "reject_rbl_client", "bl.test")
	if got := rcptResult(p, rblReq{}.request()); got != "OK" {
		t.Errorf("allowlisted: %q", got)
	}
	if got := rcptResult(p, rblReq{ip: "203.0.113.7"}.request()); !strings.HasPrefix(got, "554 5.7.1 Service unavailable; Client host [203.0.113.7]") {
		t.Errorf("not allowlisted: %q", got)
	}
	// Never a relay: the allowlist does not apply to other destinations.
	relay := e.policy(t, DNSBL{}, []string{"permit_dnswl_client", "wl.test", "reject_unauth_destination"})
	if got := rcptResult(relay, rblReq{rcpt: "x@remote.test"}.request()); got != "554 5.7.1 <x@remote.test>: Relay access denied" {
		t.Errorf("relay attempt: %q", got)
	}
	rhswl := e.policy(t, DNSBL{}, []string{"permit_rhswl_client", "rhswl.test", "reject_unauth_destination"})
	if got := rcptResult(rhswl, rblReq{name: "good.example", rcpt: "x@remote.test"}.request()); got != "554 5.7.1 <x@remote.test>: Relay access denied" {
		t.Errorf("rhswl relay attempt: %q", got)
	}
	rhswl = e.policy(t, DNSBL{}, nil, "permit_rhswl_client", "rhswl.test", "reject_rbl_client", "bl.test")
	if got := rcptResult(rhswl, rblReq{name: "good.example"}.request()); got != "OK" {
		t.Errorf("rhswl: %q", got)
	}
	// The allowlist is down: a rejection in the same list defers.
	down := e.policy(t, DNSBL{}, nil, "permit_dnswl_client", "fail.test", "reject_rbl_client", "bl.test")
	if got := rcptResult(down, rblReq{}.request()); got != "450 4.7.1 <203.0.113.9>: Client host rejected: Service unavailable" {
		t.Errorf("allowlist down: %q", got)
	}
	if got := rcptResult(down, rblReq{ip: "203.0.113.1"}.request()); got != "OK" {
		t.Errorf("allowlist down, not listed: %q", got)
	}
}

// TestDNSBLScore: reject_dnsbl_score and its trace for explain.
func TestDNSBLScore(t *testing.T) {
	e := newRBLEnv(t)
	var sites []rbl.Site
	for _, s := range []string{"zen.test=127.0.0.[2..11]*3", "bl.test*1", "wl.test=127.0.[0..255].[1..3]*-2"} {
		site, err := rbl.ParseSite(s)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, site)
	}
	p := e.policy(t, DNSBL{Sites: sites, Threshold: 3, AllowlistThreshold: -1,
		ReplyMap: mustOpen(t, e.set, "inline:{ zen.test=zen.public }")}, nil, "reject_dnsbl_score", "reject_rbl_client", "bl.test")
	for _, tc := range []struct{ ip, want string }{
		// zen 3 + bl 1 - wl 2 = 2: below the threshold, then bl.test refuses.
		{"203.0.113.9", "554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test; Listed: https://bl.test/q?203.0.113.9"},
		{"203.0.113.6", "OK"}, // zen 3 - wl 2 = 1
		{"203.0.113.5", "OK"}, // bl 1 - wl 2 = -1: allowlisted, bl.test never asked
		{"203.0.113.1", "OK"},
	} {
		if got := rcptResult(p, rblReq{ip: tc.ip}.request()); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.ip, got, tc.want)
		}
	}
	e.dns.Set("6.113.0.203.wl.test", harness.DNSAnswer{}) // no longer allowlisted, but cached
	e.dns.Set("4.113.0.203.zen.test", harness.DNSAnswer{A: []string{"127.0.0.4"}, TXT: []string{"zen reason"}})
	var trace []string
	req := rblReq{ip: "203.0.113.4"}.request()
	req.Trace = func(ev TraceEvent) {
		trace = append(trace, strings.Join([]string{ev.Kind, ev.Restriction, ev.Table, ev.Key, ev.Value, ev.Text, ev.Result, ev.Reply}, "|"))
	}
	if got := rcptResult(p, req); got != "554 5.7.1 Service unavailable; Client host [203.0.113.4] blocked using zen.public; zen reason" {
		t.Errorf("score 3: %q", got)
	}
	all := strings.Join(trace, "\n")
	for _, want := range []string{
		"lookup|reject_dnsbl_score|dnsbl_sites zen.test=127.0.0.[2..11]*3|4.113.0.203.zen.test|127.0.0.4; +3, total 3|+3, total 3|",
		"lookup|reject_dnsbl_score|dnsbl_sites bl.test*1|4.113.0.203.bl.test||not listed; +0, total 3|",
		"lookup|reject_dnsbl_score|dnsbl_sites wl.test=127.0.[0..255].[1..3]*-2|4.113.0.203.wl.test||not listed; +0, total 3|",
		"note|reject_dnsbl_score||||DNSBL score 3 (dnsbl_threshold 3, dnsbl_allowlist_threshold -1)|",
		"restriction|reject_dnsbl_score|||||REJECT|554 5.7.1 Service unavailable; Client host [203.0.113.4] blocked using zen.public; zen reason",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("trace lacks %q:\n%s", want, all)
		}
	}
}

func mustOpen(t *testing.T, set *table.Set, spec string) table.Table {
	t.Helper()
	tb, err := set.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestRBLConfigErrors: bad arguments are startup errors naming the list.
func TestRBLConfigErrors(t *testing.T) {
	e := newRBLEnv(t)
	for _, tc := range []struct {
		d     DNSBL
		restr []string
		want  string
	}{
		{DNSBL{}, []string{"reject_rbl_client", "bl.test=127.0.0"}, `smtpd_recipient_restrictions: reject_rbl_client bl.test=127.0.0: bad filter "127.0.0"`},
		{DNSBL{}, []string{"reject_rhsbl_sender", "bad zone"}, `smtpd_recipient_restrictions: reject_rhsbl_sender bad zone: bad DNS list zone name "bad zone"`},
		{DNSBL{}, []string{"reject_dnsbl_score"}, "smtpd_recipient_restrictions: reject_dnsbl_score: dnsbl_sites is empty"},
		{DNSBL{DefaultReply: "Service unavailable"}, nil, "default_rbl_reply: reply \"Service unavailable\" does not start with a 4xx or 5xx code"},
		{DNSBL{DefaultReply: "$rbl_code $nope"}, nil, `default_rbl_reply: unknown template variable "nope"`},
	} {
		_, err := e.newPolicy(tc.d, nil, tc.restr...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.restr, err, tc.want)
		}
	}
	// No resolver: a DNS list restriction cannot work.
	nets, _ := table.NewNetList(nil, e.set)
	r, _ := routing.New(routing.Config{}, nil)
	_, err := New(Config{MyNetworks: nets, Router: r, Tables: e.set, RecipientRestrictions: []string{"reject_rbl_client", "bl.test"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "reject_rbl_client: no DNS resolver") {
		t.Errorf("no client: %v", err)
	}
}

// TestStartDNSLists: lookups start at connect time, in parallel, and are
// used by the restrictions; mynetworks clients are not looked up.
func TestStartDNSLists(t *testing.T) {
	e := newRBLEnv(t)
	site, _ := rbl.ParseSite("zen.test*3")
	p := e.policy(t, DNSBL{Sites: []rbl.Site{site}}, nil, "permit_mynetworks", "reject_rbl_client", "bl.test", "reject_dnsbl_score")
	if dl := p.StartDNSLists(netip.MustParseAddr("192.0.2.1")); dl != nil {
		<-dl.ready
		if dl.pending != nil {
			t.Error("a mynetworks client was looked up")
		}
	}
	if n := e.dns.Queries("1.2.0.192.bl.test") + e.dns.Queries("1.2.0.192.zen.test"); n != 0 {
		t.Errorf("%d queries for a mynetworks client", n)
	}
	ip := netip.MustParseAddr("203.0.113.9")
	dl := p.StartDNSLists(ip)
	deadline := time.Now().Add(5 * time.Second)
	for e.dns.Queries("9.113.0.203.bl.test") == 0 || e.dns.Queries("9.113.0.203.zen.test") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("StartDNSLists sent no queries")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The session's answers hold even when the list changes.
	e.dns.Set("9.113.0.203.bl.test", harness.DNSAnswer{})
	req := rblReq{}.request()
	req.DNSLists = dl
	if got := rcptResult(p, req); !strings.HasPrefix(got, "554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using bl.test") {
		t.Errorf("got %q", got)
	}
	// A request for another address does not use them.
	req = rblReq{ip: "203.0.113.1"}.request()
	req.DNSLists = dl
	if got := rcptResult(p, req); got != "OK" {
		t.Errorf("other address: %q", got)
	}
}

func TestExpandReply(t *testing.T) {
	vars := func(n string) (string, bool) {
		switch n {
		case "a":
			return "A", true
		case "empty":
			return "", true
		}
		return "", false
	}
	for in, want := range map[string]string{
		"x $a y":            "x A y",
		"${a}b":             "Ab",
		"$(a)b":             "Ab",
		"$$a":               "$a",
		"${a?set}":          "set",
		"${empty?set}":      "",
		"${empty:unset $a}": "unset A",
		"${a:unset}":        "",
		"${a?{$a}}":         "{A}",
	} {
		got, err := expandReply(in, vars)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"$", "${a", "$nope", "${nope?x}", "$ x"} {
		if _, err := expandReply(bad, vars); err == nil {
			t.Errorf("expand(%q) accepted", bad)
		}
	}
}
