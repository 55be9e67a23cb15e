package policy

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/routing"
	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/test/harness"
)

// testDNS is the in-process DNS server of these tests.
func testDNS(t *testing.T) *harness.DNS {
	t.Helper()
	return harness.StartDNS(t, harness.DNSZones{
		"mail.good.test":     {A: []string{"192.0.2.10"}},
		"good.test":          {MX: []harness.DNSMX{{Pref: 10, Host: "mail.good.test"}}},
		"aonly.test":         {A: []string{"192.0.2.11"}},
		"nullmx.test":        {MX: []harness.DNSMX{{Pref: 0, Host: "."}}},
		"servfail.test":      {Rcode: dns.RcodeServerFailure},
		"mail.nullmx.test":   {A: []string{"192.0.2.12"}, MX: []harness.DNSMX{{Pref: 0, Host: "."}}},
		"xn--bcher-kva.test": {A: []string{"192.0.2.13"}},
		// Client names.
		dnsRev("192.0.2.10"):   {PTR: []string{"mail.good.test"}},
		dnsRev("192.0.2.20"):   {PTR: []string{"forged.good.test"}},
		"forged.good.test":     {A: []string{"192.0.2.99"}},
		dnsRev("192.0.2.30"):   {Rcode: dns.RcodeServerFailure},
		dnsRev("192.0.2.40"):   {PTR: []string{"tempname.test"}},
		"tempname.test":        {Rcode: dns.RcodeServerFailure},
		dnsRev("2001:db8::10"): {PTR: []string{"v6.good.test"}},
		"v6.good.test":         {AAAA: []string{"2001:db8::10"}},
	})
}

func dnsRev(ip string) string {
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return r
}

type testEnv struct {
	t   *testing.T
	set *table.Set
	dns *harness.DNS
	log *bytes.Buffer
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	set := table.NewSet(table.Options{})
	t.Cleanup(func() { set.Close() })
	return &testEnv{t: t, set: set, dns: testDNS(t), log: &bytes.Buffer{}}
}

// policy builds a Policy for example.com (relay, recipients alice, bob,
// @sub.example.com) and mx.example.com (local), mynetworks 192.0.2.0/28.
func (e *testEnv) policy(mod func(*Config)) *Policy {
	t := e.t
	t.Helper()
	p, err := e.tryPolicy(mod)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *testEnv) tryPolicy(mod func(*Config)) (*Policy, error) {
	t := e.t
	t.Helper()
	open := func(spec string) table.Table {
		tb, err := e.set.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	nets, _ := table.NewNetList([]string{"192.0.2.0/28"}, e.set)
	dest, _ := table.NewDomainList([]string{"mx.example.com"}, e.set, false)
	relay, _ := table.NewDomainList([]string{"example.com"}, e.set, true)
	r, err := routing.New(routing.Config{
		VirtualAliasMaps:   []table.Table{open("inline:{ postmaster@mx.example.com=alice@example.com, sales@example.com=bob@example.com }")},
		TransportMaps:      []table.Table{open("inline:{ example.com=smtp:[unit1], {gone.example.com=error:5.1.6 moved away} }")},
		RecipientDelimiter: "+",
		RelayDomains:       relay,
		MyOrigin:           "mx.example.com",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		MyNetworks:                    nets,
		MyDestination:                 dest,
		RelayDomains:                  relay,
		RelayRecipientMaps:            []table.Table{open("inline:{ alice@example.com=OK, bob@example.com=OK, @sub.example.com=OK, @gone.example.com=OK }")},
		RecipientDelimiter:            "+",
		ParentDomainMatchesSubdomains: true,
		Tables:                        e.set,
		Router:                        r,
		Resolver:                      e.dns.Resolver(),
	}
	if mod != nil {
		mod(&cfg)
	}
	return New(cfg, slog.New(slog.NewTextHandler(e.log, nil)))
}

// req is a request builder: client 203.0.113.9 (unknown), HELO
// mail.remote.test, MAIL FROM a@remote.test, RCPT TO b@example.com.
type req struct {
	client, helo, from, rcpt string
	peer                     *Peer
	rcptCount                int
	pipelined                bool
	tls                      bool
	state                    *State
}

func (r req) build() *Request {
	if r.client == "" {
		r.client = "203.0.113.9"
	}
	if r.helo == "" {
		r.helo = "mail.remote.test"
	}
	peer := Peer{Name: "unknown", ReverseName: "unknown"}
	if r.peer != nil {
		peer = *r.peer
	}
	q := &Request{
		Client:    envelope.Client{Addr: netip.MustParseAddr(r.client), Name: peer.Name, Helo: r.helo, Proto: "ESMTP"},
		Peer:      peer,
		RcptCount: r.rcptCount,
		Pipelined: r.pipelined,
		State:     r.state,
	}
	if r.tls {
		q.Client.TLS = "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"
	}
	switch r.from {
	case "-": // no MAIL
	case "<>":
		q.From = &envelope.Address{}
	case "":
		a := envelope.MustParse("a@remote.test")
		q.From = &a
	default:
		a := envelope.MustParse(r.from)
		q.From = &a
	}
	if r.rcpt == "" {
		r.rcpt = "bob@example.com"
	}
	if r.rcpt != "-" {
		q.Rcpt = envelope.MustParse(r.rcpt)
	}
	return q
}

// rcpt runs CheckRcpt and renders the outcome as "OK" or the reply.
func rcpt(p *Policy, r req) string {
	_, err := p.CheckRcpt(context.Background(), r.build())
	if err != nil {
		return envelope.ReplyOf(err).String()
	}
	return "OK"
}

func lists(client, helo, sender, recipient []string) func(*Config) {
	return func(c *Config) {
		c.ClientRestrictions, c.HeloRestrictions, c.SenderRestrictions, c.RecipientRestrictions = client, helo, sender, recipient
	}
}

func L(items ...string) []string { return items }

// TestRestrictions pins code, enhanced code and text of every restriction.
func TestRestrictions(t *testing.T) {
	e := newEnv(t)
	good := &Peer{Name: "mail.good.test", NameStatus: PeerOK, ReverseName: "mail.good.test", ReverseStatus: PeerOK}
	temp := &Peer{Name: "unknown", NameStatus: PeerTemp, ReverseName: "unknown", ReverseStatus: PeerTemp}
	forged := &Peer{Name: "unknown", NameStatus: PeerPerm, ReverseName: "forged.good.test", ReverseStatus: PeerOK}
	access := "inline:{ {203.0.113.9=REJECT spam source}, {198.51.100=REJECT net block}, {bad.test=REJECT bad name}, " +
		"{dunno.test=DUNNO}, {192.0.2.50=550 5.1.1 no such client}, {192.0.2.51=450 come back later}, 192.0.2.52=DEFER, " +
		"{192.0.2.53=REJECT 5.7.9 custom dsn}, 192.0.2.54=OK, 192.0.2.55=12345, 192.0.2.56=RELAY, 192.0.2.57=DUNNO, " +
		"{192.0.2.58=DEFER_IF_PERMIT maybe later}, {192.0.2.59=DEFER_IF_REJECT not sure}, 192.0.2.60=strict, " +
		"192.0.2.61=reject_unknown_client_hostname, 192.0.2.62=check_client_access, {192.0.2.63=check_client_access x:y}, " +
		"192.0.2.64=no_such_restriction, {2001:db8:1=REJECT v6 net} }"
	cases := []struct {
		name string
		mod  func(*Config)
		r    req
		want string
	}{
		// Generic.
		{"reject", lists(L("reject"), nil, nil, nil), req{}, "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"},
		{"reject in helo", lists(nil, L("reject"), nil, nil), req{}, "554 5.7.1 <mail.remote.test>: Helo command rejected: Access denied"},
		{"reject in sender", lists(nil, nil, L("reject"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: Access denied"},
		{"reject in recipient", lists(nil, nil, nil, L("reject")), req{}, "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"},
		{"reject_code", func(c *Config) { c.RecipientRestrictions = L("reject"); c.Codes.Reject = 550 }, req{}, "550 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"},
		{"defer", lists(nil, L("defer"), nil, nil), req{}, "450 4.3.2 <mail.remote.test>: Helo command rejected: Try again later"},
		{"permit ends a list, not the stages", lists(L("permit", "reject"), nil, L("reject"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: Access denied"},
		{"defer_if_permit", lists(L("defer_if_permit"), nil, nil, nil), req{}, "450 4.7.0 <unknown[203.0.113.9]>: Client host rejected: defer_if_permit requested"},
		{"defer_if_permit, then reject", lists(L("defer_if_permit"), nil, L("reject"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: Access denied"},
		{"defer_if_reject, then reject", lists(nil, nil, nil, L("defer_if_reject", "reject")), req{}, "450 4.7.0 <bob@example.com>: Recipient address rejected: defer_if_reject requested"},
		{"defer_if_reject, then permit", lists(nil, nil, nil, L("defer_if_reject", "permit")), req{}, "OK"},
		{"defer_if_reject does not cross stages", lists(L("defer_if_reject"), nil, L("reject"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: Access denied"},
		{"warn_if_reject", lists(L("warn_if_reject", "reject"), nil, nil, nil), req{}, "OK"},
		{"warn_if_reject, one only", lists(L("warn_if_reject", "reject", "reject"), nil, nil, nil), req{}, "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"},
		{"warn_if_reject before a class", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"strict": L("reject_unknown_client_hostname", "reject")}
			c.ClientRestrictions = L("warn_if_reject", "strict")
		}, req{}, "OK"},
		{"warn_if_reject, DNS deferral", lists(nil, nil, L("warn_if_reject", "reject_unknown_sender_domain"), nil), req{from: "a@servfail.test"}, "OK"},
		{"reject_unauth_pipelining", lists(nil, nil, nil, L("reject_unauth_pipelining")), req{pipelined: true}, "503 5.5.0 <bob@example.com>: Recipient address rejected: Improper use of SMTP command pipelining"},
		{"reject_unauth_pipelining, in order", lists(nil, nil, nil, L("reject_unauth_pipelining")), req{}, "OK"},
		{"reject_plaintext_session", lists(L("reject_plaintext_session"), nil, nil, nil), req{}, "450 4.7.1 Session encryption is required"},
		{"reject_plaintext_session, TLS", lists(L("reject_plaintext_session"), nil, nil, nil), req{tls: true}, "OK"},

		// Client.
		{"permit_mynetworks", lists(L("permit_mynetworks", "reject"), nil, nil, nil), req{client: "192.0.2.5"}, "OK"},
		{"permit_mynetworks, stranger", lists(L("permit_mynetworks", "reject"), nil, nil, nil), req{}, "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"},
		{"permit_mynetworks, v4-mapped", lists(L("permit_mynetworks", "reject"), nil, nil, nil), req{client: "::ffff:192.0.2.5"}, "OK"},
		{"reject_unknown_client_hostname", lists(L("reject_unknown_client_hostname"), nil, nil, nil), req{}, "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]"},
		{"reject_unknown_client_hostname, forged", lists(L("reject_unknown_client_hostname"), nil, nil, nil), req{peer: forged}, "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]"},
		{"reject_unknown_client_hostname, 550", func(c *Config) { c.ClientRestrictions = L("reject_unknown_client"); c.Codes.UnknownClient = 550 }, req{}, "550 5.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]"},
		{"reject_unknown_client_hostname, DNS failure", func(c *Config) {
			c.ClientRestrictions = L("reject_unknown_client_hostname")
			c.Codes.UnknownClient = 550
		}, req{peer: temp}, "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]"},
		{"reject_unknown_client_hostname, known", lists(L("reject_unknown_client_hostname"), nil, nil, nil), req{peer: good}, "OK"},
		{"reject_unknown_reverse_client_hostname", lists(L("reject_unknown_reverse_client_hostname"), nil, nil, nil), req{}, "450 4.7.1 Client host rejected: cannot find your reverse hostname, [203.0.113.9]"},
		{"reject_unknown_reverse_client_hostname, forged has a PTR", lists(L("reject_unknown_reverse_client_hostname"), nil, nil, nil), req{peer: forged}, "OK"},
		{"check_client_access address", lists(L("check_client_access", access), nil, nil, nil), req{}, "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: spam source"},
		{"check_client_access network", lists(L("check_client_access", access), nil, nil, nil), req{client: "198.51.100.7"}, "554 5.7.1 <unknown[198.51.100.7]>: Client host rejected: net block"},
		{"check_client_access IPv6 network", lists(L("check_client_access", access), nil, nil, nil), req{client: "2001:db8:1::5"}, "554 5.7.1 <unknown[2001:db8:1::5]>: Client host rejected: v6 net"},
		{"check_client_access parent domain", lists(L("check_client_access", access), nil, nil, nil),
			req{client: "192.0.2.77", peer: &Peer{Name: "host.bad.test", NameStatus: PeerOK}}, "554 5.7.1 <host.bad.test[192.0.2.77]>: Client host rejected: bad name"},
		{"check_client_access: DUNNO for the name ends the search", lists(L("check_client_access", access), nil, nil, nil),
			req{peer: &Peer{Name: "dunno.test", NameStatus: PeerOK}}, "OK"},
		{"bare table is check_client_access", lists(L(access), nil, nil, nil), req{}, "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: spam source"},

		// Access results.
		{"access 5NN with DSN", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.50"}, "550 5.0.0 <unknown[192.0.2.50]>: Client host rejected: no such client"},
		{"access 4NN", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.51"}, "450 4.7.1 <unknown[192.0.2.51]>: Client host rejected: come back later"},
		{"access DEFER", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.52"}, "450 4.7.1 <unknown[192.0.2.52]>: Client host rejected: Access denied"},
		{"access REJECT with DSN", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.53"}, "554 5.7.9 <unknown[192.0.2.53]>: Client host rejected: custom dsn"},
		{"access OK", lists(L("check_client_access", access, "reject"), nil, nil, nil), req{client: "192.0.2.54"}, "OK"},
		{"access numeric is OK", lists(L("check_client_access", access, "reject"), nil, nil, nil), req{client: "192.0.2.55"}, "OK"},
		{"access RELAY is OK", lists(L("check_client_access", access, "reject"), nil, nil, nil), req{client: "192.0.2.56"}, "OK"},
		{"access DUNNO goes on", lists(L("check_client_access", access, "reject"), nil, nil, nil), req{client: "192.0.2.57"}, "554 5.7.1 <unknown[192.0.2.57]>: Client host rejected: Access denied"},
		{"access DEFER_IF_PERMIT", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.58"}, "450 4.7.1 <unknown[192.0.2.58]>: Client host rejected: maybe later"},
		{"access DEFER_IF_REJECT", lists(L("check_client_access", access, "reject"), nil, nil, nil), req{client: "192.0.2.59"}, "450 4.7.1 <unknown[192.0.2.59]>: Client host rejected: not sure"},
		{"access restriction class", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"strict": L("reject")}
			c.ClientRestrictions = L("check_client_access", access)
		}, req{client: "192.0.2.60"}, "554 5.7.1 <unknown[192.0.2.60]>: Client host rejected: Access denied"},
		{"access restriction list", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.61"}, "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.61]"},
		{"access result without its table", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.62"}, "451 4.3.5 Server configuration error"},
		{"access result with a table", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.63"}, "451 4.3.5 Server configuration error"},
		{"access result unknown restriction", lists(L("check_client_access", access), nil, nil, nil), req{client: "192.0.2.64"}, "451 4.3.5 Server configuration error"},
		{"access table failure", lists(L("check_client_access", "fail:ldap"), nil, nil, nil), req{}, "451 4.3.5 <unknown[203.0.113.9]>: Client host rejected: Server configuration error"},
		{"mynetworks table failure", func(c *Config) {
			c.MyNetworks, _ = table.NewNetList([]string{"fail:nets"}, e.set)
			c.ClientRestrictions = L("permit_mynetworks")
		}, req{}, "451 4.3.0 <unknown[203.0.113.9]>: Temporary lookup failure"},

		// HELO.
		{"reject_invalid_helo_hostname", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "bad_helo!"}, "501 5.5.2 <bad_helo!>: Helo command rejected: Invalid name"},
		{"reject_invalid_hostname alias", lists(nil, L("reject_invalid_hostname"), nil, nil), req{helo: "-x.test"}, "501 5.5.2 <-x.test>: Helo command rejected: Invalid name"},
		{"reject_invalid_helo_hostname, literal", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "[300.1.1.1]"}, "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"},
		{"reject_invalid_helo_hostname, good literal", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "[192.0.2.1]"}, "OK"},
		{"reject_invalid_helo_hostname, bare IP", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "192.0.2.1"}, "OK"},
		{"reject_invalid_helo_hostname, trailing dot", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "mail.remote.test."}, "OK"},
		{"reject_invalid_helo_hostname, all-numeric", lists(nil, L("reject_invalid_helo_hostname"), nil, nil), req{helo: "123.456"}, "501 5.5.2 <123.456>: Helo command rejected: Invalid name"},
		{"reject_non_fqdn_helo_hostname", lists(nil, L("reject_non_fqdn_helo_hostname"), nil, nil), req{helo: "localhost"}, "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"},
		{"reject_non_fqdn_hostname alias", lists(nil, L("reject_non_fqdn_hostname"), nil, nil), req{helo: "mail.remote.test"}, "OK"},
		{"reject_unknown_helo_hostname", lists(nil, L("reject_unknown_helo_hostname"), nil, nil), req{helo: "nx.test"}, "450 4.7.1 <nx.test>: Helo command rejected: Host not found"},
		{"reject_unknown_helo_hostname, A", lists(nil, L("reject_unknown_helo_hostname"), nil, nil), req{helo: "mail.good.test"}, "OK"},
		{"reject_unknown_helo_hostname, MX only", lists(nil, L("reject_unknown_helo_hostname"), nil, nil), req{helo: "good.test"}, "OK"},
		{"reject_unknown_helo_hostname, null MX is a name", lists(nil, L("reject_unknown_helo_hostname"), nil, nil), req{helo: "nullmx.test"}, "OK"},
		{"reject_unknown_helo_hostname, DNS failure", lists(nil, L("reject_unknown_helo_hostname"), nil, nil), req{helo: "servfail.test"}, "450 4.7.1 <servfail.test>: Helo command rejected: Host not found"},
		{"reject_unknown_helo_hostname, DNS failure then reject", lists(nil, L("reject_unknown_helo_hostname", "reject"), nil, nil), req{helo: "servfail.test"}, "554 5.7.1 <servfail.test>: Helo command rejected: Access denied"},
		{"reject_unknown_helo_hostname, DNS failure then permit", lists(nil, L("reject_unknown_helo_hostname", "permit"), nil, nil), req{helo: "servfail.test"}, "450 4.7.1 <servfail.test>: Helo command rejected: Host not found"},
		{"reject_unknown_helo_hostname, 550", func(c *Config) { c.HeloRestrictions = L("reject_unknown_hostname"); c.Codes.UnknownHostname = 550 }, req{helo: "nx.test"}, "550 5.7.1 <nx.test>: Helo command rejected: Host not found"},
		{"reject_unknown_helo_hostname, no resolver defers", func(c *Config) { c.HeloRestrictions = L("reject_unknown_helo_hostname"); c.Resolver = nil }, req{helo: "mail.good.test"}, "450 4.7.1 <mail.good.test>: Helo command rejected: Host not found"},
		{"permit_naked_ip_address", lists(nil, L("permit_naked_ip_address", "reject"), nil, nil), req{helo: "192.0.2.1"}, "OK"},
		{"permit_naked_ip_address, name", lists(nil, L("permit_naked_ip_address", "reject"), nil, nil), req{}, "554 5.7.1 <mail.remote.test>: Helo command rejected: Access denied"},
		{"check_helo_access", lists(nil, L("check_helo_access", "inline:{ {remote.test=REJECT go away} }"), nil, nil), req{}, "554 5.7.1 <mail.remote.test>: Helo command rejected: go away"},
		{"check_helo_access, no parent match", func(c *Config) {
			c.HeloRestrictions = L("check_helo_access", "inline:{ {remote.test=REJECT go away} }")
			c.ParentDomainMatchesSubdomains = false
		}, req{}, "OK"},
		{"check_helo_access, dot form", func(c *Config) {
			c.HeloRestrictions = L("check_helo_access", "inline:{ {.remote.test=REJECT dotted} }")
			c.ParentDomainMatchesSubdomains = false
		}, req{}, "554 5.7.1 <mail.remote.test>: Helo command rejected: dotted"},

		// Sender.
		{"reject_non_fqdn_sender", lists(nil, nil, L("reject_non_fqdn_sender"), nil), req{from: "a@localhost"}, "504 5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address"},
		{"reject_non_fqdn_sender, null sender", lists(nil, nil, L("reject_non_fqdn_sender"), nil), req{from: "<>"}, "OK"},
		{"reject_unknown_sender_domain", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@nx.test"}, "450 4.1.8 <a@nx.test>: Sender address rejected: Domain not found"},
		{"reject_unknown_sender_domain, 550", func(c *Config) {
			c.SenderRestrictions = L("reject_unknown_sender_domain")
			c.Codes.UnknownAddress = 550
		}, req{from: "a@nx.test"}, "550 5.1.8 <a@nx.test>: Sender address rejected: Domain not found"},
		{"reject_unknown_sender_domain, null MX", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@nullmx.test"}, "550 5.7.27 <a@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail (nullMX)"},
		{"reject_unknown_sender_domain, MX", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@good.test"}, "OK"},
		{"reject_unknown_sender_domain, A only", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@aonly.test"}, "OK"},
		{"reject_unknown_sender_domain, IDN", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@bücher.test"}, "OK"},
		{"reject_unknown_sender_domain, DNS failure", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@servfail.test"}, "450 4.1.8 <a@servfail.test>: Sender address rejected: Domain not found"},
		{"reject_unknown_sender_domain, DNS failure then permit", lists(nil, nil, L("reject_unknown_sender_domain", "permit"), nil), req{from: "a@servfail.test"}, "450 4.1.8 <a@servfail.test>: Sender address rejected: Domain not found"},
		{"reject_unknown_sender_domain, DNS failure, defer", func(c *Config) {
			c.SenderRestrictions = L("reject_unknown_sender_domain", "reject")
			c.Codes.UnknownAddressTempfail = TempfailDefer
		}, req{from: "a@servfail.test"}, "450 4.1.8 <a@servfail.test>: Sender address rejected: Domain not found"},
		{"reject_unknown_sender_domain, local domain", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "a@mx.example.com"}, "OK"},
		{"reject_unknown_sender_domain, null sender", lists(nil, nil, L("reject_unknown_sender_domain"), nil), req{from: "<>"}, "OK"},
		{"reject_unlisted_sender", lists(nil, nil, L("reject_unlisted_sender"), nil), req{from: "nobody@example.com"}, "550 5.1.0 <nobody@example.com>: Sender address rejected: User unknown in relay recipient table"},
		{"reject_unlisted_sender, listed", lists(nil, nil, L("reject_unlisted_sender"), nil), req{from: "alice@example.com"}, "OK"},
		{"smtpd_reject_unlisted_sender", func(c *Config) { c.RejectUnlistedSender = true }, req{from: "root@mx.example.com"}, "550 5.1.0 <root@mx.example.com>: Sender address rejected: User unknown in local recipient table"},
		{"check_sender_access address", lists(nil, nil, L("check_sender_access", "inline:{ {a@remote.test=REJECT you} }"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: you"},
		{"check_sender_access domain", lists(nil, nil, L("check_sender_access", "inline:{ {remote.test=REJECT domain} }"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: domain"},
		{"check_sender_access parent domain", lists(nil, nil, L("check_sender_access", "inline:{ {test=REJECT tld} }"), nil), req{from: "a@x.remote.test"}, "554 5.7.1 <a@x.remote.test>: Sender address rejected: tld"},
		{"check_sender_access user@", lists(nil, nil, L("check_sender_access", "inline:{ {a@=REJECT user} }"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: user"},
		{"check_sender_access extension", lists(nil, nil, L("check_sender_access", "inline:{ {a@remote.test=REJECT base} }"), nil), req{from: "a+x@remote.test"}, "554 5.7.1 <a+x@remote.test>: Sender address rejected: base"},
		{"check_sender_access null sender", lists(nil, nil, L("check_sender_access", "inline:{ {<>=REJECT no bounces} }"), nil), req{from: "<>"}, "554 5.7.1 <>: Sender address rejected: no bounces"},
		{"check_sender_access DSN fix", lists(nil, nil, L("check_sender_access", "inline:{ {a@remote.test=550 5.1.1 gone} }"), nil), req{}, "550 5.1.0 <a@remote.test>: Sender address rejected: gone"},
		{"check_sender_access regexp full address only", lists(nil, nil, L("check_sender_access", "regexp:{ {/^a@remote\\.test$/ REJECT rx} }"), nil), req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: rx"},
		{"sender address grants no relay", lists(nil, nil, L("check_sender_access", "inline:{ a@remote.test=OK }"), nil), req{rcpt: "x@elsewhere.test"}, "554 5.7.1 <x@elsewhere.test>: Relay access denied"},

		// Recipient.
		{"reject_unauth_destination", nil, req{rcpt: "x@elsewhere.test"}, "554 5.7.1 <x@elsewhere.test>: Relay access denied"},
		{"relay_domains_reject_code", func(c *Config) { c.Codes.RelayDomains = 550 }, req{rcpt: "x@elsewhere.test"}, "550 5.7.1 <x@elsewhere.test>: Relay access denied"},
		{"defer_unauth_destination", func(c *Config) { c.RelayRestrictions = L("defer_unauth_destination") }, req{rcpt: "x@elsewhere.test"}, "454 4.7.1 <x@elsewhere.test>: Relay access denied"},
		{"permit_auth_destination", func(c *Config) { c.RelayRestrictions = L("permit_auth_destination", "reject") }, req{}, "OK"},
		{"HELO name grants no relay", lists(nil, L("check_helo_access", "inline:{ mail.remote.test=OK }"), nil, nil), req{rcpt: "x@elsewhere.test"}, "554 5.7.1 <x@elsewhere.test>: Relay access denied"},
		{"reject_unlisted_recipient", lists(nil, nil, nil, L("reject_unlisted_recipient", "permit")), req{rcpt: "nobody@example.com"}, "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table"},
		{"check_recipient_maps alias", lists(nil, nil, nil, L("check_recipient_maps")), req{rcpt: "root@mx.example.com"}, "550 5.1.1 <root@mx.example.com>: Recipient address rejected: User unknown in local recipient table"},
		{"implicit reject_unlisted_recipient", nil, req{rcpt: "nobody@example.com"}, "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table"},
		{"unknown_relay_recipient_reject_code", func(c *Config) { c.Codes.UnknownRelayRcpt = 450 }, req{rcpt: "nobody@example.com"}, "450 4.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table"},
		{"smtpd_reject_unlisted_recipient = no", func(c *Config) { c.AcceptUnlistedRecipient = true }, req{rcpt: "nobody@example.com"}, "OK"},
		{"alias is a valid recipient", nil, req{rcpt: "sales@example.com"}, "OK"},
		{"postmaster", nil, req{rcpt: "postmaster@mx.example.com"}, "OK"},
		{"error: route", nil, req{rcpt: "x@gone.example.com"}, "550 5.1.6 <x@gone.example.com>: Recipient address rejected: moved away"},
		{"reject_non_fqdn_recipient", lists(nil, nil, nil, L("reject_non_fqdn_recipient")), req{client: "192.0.2.5", rcpt: "b@localhost"},
			"504 5.5.2 <b@localhost>: Recipient address rejected: need fully-qualified address"},
		{"reject_unknown_recipient_domain", func(c *Config) {
			c.RecipientRestrictions = L("reject_unknown_recipient_domain")
			c.RelayRestrictions = L("permit_mynetworks", "reject")
		}, req{client: "192.0.2.5", rcpt: "b@nx.test"}, "450 4.1.2 <b@nx.test>: Recipient address rejected: Domain not found"},
		{"reject_unknown_recipient_domain, null MX", func(c *Config) {
			c.RecipientRestrictions = L("reject_unknown_recipient_domain")
			c.RelayRestrictions = L("permit_mynetworks", "reject")
		}, req{client: "192.0.2.5", rcpt: "b@nullmx.test"}, "556 5.1.10 <b@nullmx.test>: Recipient address rejected: Domain nullmx.test does not accept mail (nullMX)"},
		{"reject_unknown_recipient_domain, local", lists(nil, nil, nil, L("reject_unknown_recipient_domain")), req{rcpt: "postmaster@mx.example.com"}, "OK"},
		{"check_recipient_access", lists(nil, nil, nil, L("check_recipient_access", "inline:{ {bob@example.com=REJECT not here} }")), req{}, "554 5.7.1 <bob@example.com>: Recipient address rejected: not here"},
		{"check_recipient_access OK skips reject_unlisted only in order", lists(nil, nil, nil, L("check_recipient_access", "inline:{ nobody@example.com=OK }")), req{rcpt: "nobody@example.com"}, "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table"},
		{"reject_multi_recipient_bounce", lists(nil, nil, nil, L("reject_multi_recipient_bounce")), req{from: "<>", rcptCount: 1}, "550 5.5.3 <bob@example.com>: Recipient address rejected: Multi-recipient bounce"},
		{"reject_multi_recipient_bounce, first", lists(nil, nil, nil, L("reject_multi_recipient_bounce")), req{from: "<>"}, "OK"},

		// Restriction classes.
		{"class", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"strict": L("reject_unknown_client_hostname")}
			c.ClientRestrictions = L("strict")
		}, req{}, "450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]"},
		{"nested classes", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"outer": L("inner"), "inner": L("reject")}
			c.SenderRestrictions = L("outer")
		}, req{}, "554 5.7.1 <a@remote.test>: Sender address rejected: Access denied"},
		{"access table selects a class per recipient", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"insiders_only": L("permit_mynetworks", "reject")}
			c.RecipientRestrictions = L("check_recipient_access", "inline:{ bob@example.com=insiders_only }")
		}, req{}, "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"},
		{"access table selects a class, insider", func(c *Config) {
			c.RestrictionClasses = map[string][]string{"insiders_only": L("permit_mynetworks", "reject")}
			c.RecipientRestrictions = L("check_recipient_access", "inline:{ bob@example.com=insiders_only }")
		}, req{client: "192.0.2.5"}, "OK"},
	}
	for _, tc := range cases {
		p := e.policy(tc.mod)
		if got := rcpt(p, tc.r); got != tc.want {
			t.Errorf("%s:\n got  %s\n want %s", tc.name, got, tc.want)
		}
	}
	if !strings.Contains(e.log.String(), "msg=reject_warning") || !strings.Contains(e.log.String(), `reason="554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied"`) {
		t.Errorf("no reject_warning log line:\n%s", e.log.String())
	}
}

// TestAccessSideEffects: HOLD, DISCARD, WARN, PREPEND and REDIRECT.
func TestAccessSideEffects(t *testing.T) {
	e := newEnv(t)
	acc := "inline:{ {a@remote.test=HOLD looks odd}, b@remote.test=HOLD, {c@remote.test=DISCARD go away}, {d@remote.test=WARN careful}, " +
		"{e@remote.test=PREPEND X-Checked: yes}, {f@remote.test=REDIRECT quarantine@example.com}, {g@remote.test=PREPEND not a header}, " +
		"{h@remote.test=INFO note this} }"
	p := e.policy(func(c *Config) { c.SenderRestrictions = L("check_sender_access", acc, "reject_unauth_destination") })
	run := func(from string) (*State, string) {
		st := &State{}
		got := rcpt(p, req{from: from, state: st})
		return st, got
	}
	if st, got := run("a@remote.test"); got != "OK" || st.Hold() != "<a@remote.test>: Sender address looks odd" {
		t.Errorf("HOLD text: %s %q", got, st.Hold())
	}
	if st, got := run("b@remote.test"); got != "OK" || st.Hold() != "<b@remote.test>: Sender address triggers HOLD action" {
		t.Errorf("HOLD: %s %q", got, st.Hold())
	}
	// DISCARD permits (even a relay attempt: the message goes nowhere)
	// and stops the evaluation.
	st := &State{}
	if got := rcpt(p, req{from: "c@remote.test", rcpt: "x@elsewhere.test", state: st}); got != "OK" {
		t.Errorf("DISCARD: %s", got)
	}
	if d, why := st.Discard(); !d || why != "<c@remote.test>: Sender address go away" {
		t.Errorf("DISCARD state %v %q", d, why)
	}
	if got := rcpt(p, req{from: "c@remote.test", rcpt: "nobody@example.com", state: st}); got != "OK" {
		t.Errorf("after DISCARD: %s", got)
	}
	if _, got := run("d@remote.test"); got != "OK" || !strings.Contains(e.log.String(), `msg=warn`) || !strings.Contains(e.log.String(), "careful") {
		t.Errorf("WARN: %s\n%s", got, e.log.String())
	}
	st, got := run("e@remote.test")
	rcpt(p, req{from: "e@remote.test", rcpt: "alice@example.com", state: st})
	if got != "OK" || strings.Join(st.Prepend(), "|") != "X-Checked: yes" {
		t.Errorf("PREPEND once: %s %q", got, st.Prepend())
	}
	if st, _ := run("g@remote.test"); len(st.Prepend()) != 0 {
		t.Errorf("PREPEND without header syntax: %q", st.Prepend())
	}
	if st, got := run("f@remote.test"); got != "OK" || st.Redirect() != "quarantine@example.com" {
		t.Errorf("REDIRECT: %s %q", got, st.Redirect())
	}
	if got, err := p.Redirect(context.Background(), "sales@example.com"); err != nil || len(got) != 1 || got[0].String() != "bob@example.com" {
		t.Errorf("Redirect expansion: %v %v", got, err)
	}
	st.ResetTransaction()
	if st.Redirect() != "" || st.Hold() != "" {
		t.Error("ResetTransaction kept state")
	}
}

// TestStages: smtpd_delay_reject = no, DATA and END-OF-DATA.
func TestStages(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p := e.policy(func(c *Config) {
		c.NoDelayReject = true
		c.ClientRestrictions = L("check_client_access", "inline:{ {203.0.113.9=REJECT client}, {192.0.2.58=DEFER_IF_PERMIT later} }")
		c.HeloRestrictions = L("check_helo_access", "inline:{ {bad.test=REJECT helo} }")
		c.SenderRestrictions = L("check_sender_access", "inline:{ {bad@remote.test=REJECT sender} }")
	})
	if p.DelayReject() {
		t.Fatal("DelayReject")
	}
	reply := func(err error) string {
		if err == nil {
			return "OK"
		}
		return envelope.ReplyOf(err).String()
	}
	if got := reply(p.CheckConnect(ctx, req{from: "-", rcpt: "-"}.build())); got != "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: client" {
		t.Errorf("connect: %s", got)
	}
	if got := reply(p.CheckHelo(ctx, req{client: "198.51.100.1", helo: "x.bad.test", from: "-", rcpt: "-"}.build())); got != "554 5.7.1 <x.bad.test>: Helo command rejected: helo" {
		t.Errorf("helo: %s", got)
	}
	if got := reply(p.CheckMail(ctx, req{client: "198.51.100.1", from: "bad@remote.test", rcpt: "-"}.build())); got != "554 5.7.1 <bad@remote.test>: Sender address rejected: sender" {
		t.Errorf("mail: %s", got)
	}
	// At RCPT the client list is not evaluated again.
	if got := rcpt(p, req{}); got != "OK" {
		t.Errorf("rcpt re-ran the client restrictions: %s", got)
	}
	// A defer_if_permit of the connect stage is honoured at RCPT.
	st := &State{}
	r := req{client: "192.0.2.58", from: "-", rcpt: "-", state: st}
	if err := p.CheckConnect(ctx, r.build()); err != nil {
		t.Fatal(err)
	}
	if got := rcpt(p, req{client: "192.0.2.58", state: st}); got != "450 4.7.1 <unknown[192.0.2.58]>: Client host rejected: later" {
		t.Errorf("deferral carried: %s", got)
	}

	p = e.policy(func(c *Config) {
		c.DataRestrictions = L("reject_unauth_pipelining", "reject_multi_recipient_bounce", "check_client_access", "inline:{ {198.51.100.2=REJECT data} }")
		c.EODRestrictions = L("check_sender_access", "inline:{ {late@remote.test=REJECT too late} }")
	})
	dataReq := func(r req) *Request { r.rcpt = "-"; return r.build() }
	if got := reply(p.CheckData(ctx, dataReq(req{pipelined: true}))); got != "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining" {
		t.Errorf("data pipelining: %s", got)
	}
	if got := reply(p.CheckData(ctx, dataReq(req{from: "<>", rcptCount: 2}))); got != "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce" {
		t.Errorf("data multi bounce: %s", got)
	}
	if got := reply(p.CheckData(ctx, dataReq(req{from: "<>", rcptCount: 1}))); got != "OK" {
		t.Errorf("data one bounce: %s", got)
	}
	if got := reply(p.CheckData(ctx, dataReq(req{client: "198.51.100.2"}))); got != "554 5.7.1 <unknown[198.51.100.2]>: Client host rejected: data" {
		t.Errorf("data client: %s", got)
	}
	if got := reply(p.CheckEOD(ctx, dataReq(req{from: "late@remote.test"}))); got != "554 5.7.1 <late@remote.test>: Sender address rejected: too late" {
		t.Errorf("eod: %s", got)
	}
	p = e.policy(func(c *Config) {
		c.DataRestrictions = L("inline:{ 203.0.113.9=REJECT }")
		c.EODRestrictions = L("reject")
	})
	if got := reply(p.CheckData(ctx, dataReq(req{}))); got != "451 4.3.5 Server configuration error" {
		t.Errorf("bare table in data restrictions: %s", got)
	}
	if got := reply(p.CheckEOD(ctx, dataReq(req{}))); got != "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied" {
		t.Errorf("eod reject: %s", got)
	}
}

// TestConfigErrors: mistakes are found by New, with the list named.
func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{lists(nil, L("reject_unknown_helo"), nil, nil), `smtpd_helo_restrictions: unknown restriction "reject_unknown_helo"`},
		{lists(L("check_client_access"), nil, nil, nil), "smtpd_client_restrictions: check_client_access needs an argument"},
		{lists(L("check_client_access", "reject"), nil, nil, nil), `smtpd_client_restrictions: restriction check_client_access: bad argument "reject": need maptype:mapname`},
		{lists(nil, nil, L("check_sender_access", "nosuch:/x"), nil), "smtpd_sender_restrictions: check_sender_access: unsupported table type"},
		{func(c *Config) { c.RelayRestrictions = L("permit_mynetworks") }, "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of"},
		{func(c *Config) { c.RelayRestrictions = L("permit", "reject_unauth_destination") }, "specify at least one working instance of"},
		{func(c *Config) { c.RelayRestrictions = L("warn_if_reject", "reject_unauth_destination") }, "specify at least one working instance of"},
		{func(c *Config) { c.RestrictionClasses = map[string][]string{"reject": L("permit")} }, `class "reject" has the name of a built-in restriction`},
		{func(c *Config) { c.RestrictionClasses = map[string][]string{"empty": nil} }, `restriction class "empty" needs a definition`},
		{func(c *Config) { c.RestrictionClasses = map[string][]string{"c": L("reject_bogus")} }, `smtpd_restriction_classes: c: unknown restriction "reject_bogus"`},
		{lists(nil, nil, nil, L("sleep", "x")), "sleep must be followed by a number of seconds"},
		{func(c *Config) { c.Codes.UnknownAddressTempfail = "maybe" }, `tempfail action "maybe"`},
	} {
		_, err := e.tryPolicy(tc.mod)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	// A relay policy held by a class is fine.
	if _, err := e.tryPolicy(func(c *Config) {
		c.RestrictionClasses = map[string][]string{"relay": L("permit_mynetworks", "reject_unauth_destination")}
		c.RelayRestrictions = L("relay")
	}); err != nil {
		t.Errorf("class with reject_unauth_destination: %v", err)
	}
}

// TestLookupPeer: forward-confirmed reverse DNS, as Postfix's smtpd_peer.c.
func TestLookupPeer(t *testing.T) {
	d := testDNS(t)
	ctx := context.Background()
	for _, tc := range []struct {
		ip   string
		want Peer
	}{
		{"192.0.2.10", Peer{Name: "mail.good.test", NameStatus: PeerOK, ReverseName: "mail.good.test", ReverseStatus: PeerOK}},
		{"::ffff:192.0.2.10", Peer{Name: "mail.good.test", NameStatus: PeerOK, ReverseName: "mail.good.test", ReverseStatus: PeerOK}},
		{"2001:db8::10", Peer{Name: "v6.good.test", NameStatus: PeerOK, ReverseName: "v6.good.test", ReverseStatus: PeerOK}},
		{"192.0.2.20", Peer{Name: "unknown", NameStatus: PeerPerm, ReverseName: "forged.good.test", ReverseStatus: PeerOK}},
		{"192.0.2.30", Peer{Name: "unknown", NameStatus: PeerTemp, ReverseName: "unknown", ReverseStatus: PeerTemp}},
		{"192.0.2.40", Peer{Name: "unknown", NameStatus: PeerTemp, ReverseName: "tempname.test", ReverseStatus: PeerOK}},
		{"192.0.2.99", Peer{Name: "unknown", NameStatus: PeerPerm, ReverseName: "unknown", ReverseStatus: PeerPerm}},
	} {
		if got := LookupPeer(ctx, d.Resolver(), netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.ip, got, tc.want)
		}
	}
}

func TestHostnames(t *testing.T) {
	for _, tc := range []struct {
		s    string
		host bool
		addr bool
	}{
		{"mail.example.com", true, false}, {"a_b.example", true, false}, {"x", true, false},
		{"-a.example", false, false}, {"a-.example", false, false}, {"a..b", false, false}, {"", false, false},
		{"1.2.3.4", false, true}, {"123", false, false}, {"2001:db8::1", false, true}, {"ex ample", false, false},
		{strings.Repeat("a", 64) + ".test", false, false},
	} {
		if got := validHostname(tc.s, false); got != tc.host {
			t.Errorf("validHostname(%q) = %v", tc.s, got)
		}
		if got := validHostaddr(tc.s); got != tc.addr {
			t.Errorf("validHostaddr(%q) = %v", tc.s, got)
		}
	}
	for in, want := range map[string]string{"bücher": "bcher-kva", "münchen": "mnchen-3ya", "日本語": "wgv71a119e"} {
		if got, ok := punycode(in); !ok || got != want {
			t.Errorf("punycode(%q) = %q", in, got)
		}
	}
}
