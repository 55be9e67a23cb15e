package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/routing"
	"github.com/mxfront/mxfront/table"
)

func newPolicy(t *testing.T, rcptMaps ...string) *Policy {
	t.Helper()
	set := table.NewSet(table.Options{})
	t.Cleanup(func() { set.Close() })
	open := func(spec string) table.Table {
		tb, err := set.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		return tb
	}
	nets, err := table.NewNetList([]string{"127.0.0.0/8", "[::1]/128", "192.0.2.0/24"}, set)
	if err != nil {
		t.Fatal(err)
	}
	dest, err := table.NewDomainList([]string{"mx.example.com", "localhost"}, set, false)
	if err != nil {
		t.Fatal(err)
	}
	relay, err := table.NewDomainList([]string{"example.com"}, set, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := routing.New(routing.Config{
		VirtualAliasMaps:   []table.Table{open("inline:{ foo.bar@example.com=foo.bar@h42.mail.example.com, postmaster@mx.example.com=alice@example.com, dead@example.com=x@gone.example.com }")},
		TransportMaps:      []table.Table{open("inline:{ example.com=smtp:[unit1], h42.mail.example.com=lmtp:inet:unit42:24, {gone.example.com=error:5.1.2 gone} }")},
		RecipientDelimiter: "+",
		RelayDomains:       relay,
		MyOrigin:           "mx.example.com",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var maps []table.Table
	for _, m := range rcptMaps {
		maps = append(maps, open(m))
	}
	p, err := New(Config{
		MyNetworks:         nets,
		MyDestination:      dest,
		RelayDomains:       relay,
		RelayRecipientMaps: maps,
		RecipientDelimiter: "+",
		Tables:             set,
		Router:             r,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func check(p *Policy, client, rcpt string) (string, []string) {
	a, err := envelope.ParseAddress(rcpt, true)
	if err != nil {
		return "parse: " + err.Error(), nil
	}
	from := envelope.MustParse("a@example.com") // a local sender grants nothing
	v, err := p.CheckRcpt(context.Background(), &Request{
		Client: envelope.Client{Addr: netip.MustParseAddr(client), Helo: "mail.example.com"},
		From:   &from,
		Rcpt:   a,
	})
	if err != nil {
		return envelope.ReplyOf(err).String(), nil
	}
	var out []string
	for _, x := range v.Expanded {
		out = append(out, x.String())
	}
	return "OK", out
}

const stranger = "203.0.113.9"

func TestRecipientVerification(t *testing.T) {
	p := newPolicy(t, "inline:{ alice@example.com=OK, bob@example.com=OK, @sub.example.com=OK }")
	for _, tc := range []struct {
		client, rcpt, want, expanded string
	}{
		{stranger, "alice@example.com", "OK", "alice@example.com"},
		{stranger, "Alice@Example.COM", "OK", "Alice@example.com"},
		{stranger, "alice+tag@example.com", "OK", "alice+tag@example.com"},
		{stranger, "anyone@sub.example.com", "OK", "anyone@sub.example.com"},
		{stranger, "foo.bar@example.com", "OK", "foo.bar@h42.mail.example.com"},
		{stranger, "nobody@example.com", "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in relay recipient table", ""},
		// Local (mydestination) addresses must be aliased; postmaster always passes.
		{stranger, "root@mx.example.com", "550 5.1.1 <root@mx.example.com>: Recipient address rejected: User unknown in local recipient table", ""},
		{stranger, "postmaster@mx.example.com", "OK", "alice@example.com"},
		{stranger, "PostMaster@localhost", "OK", "PostMaster@localhost"},
		// error: transport refused at RCPT time.
		{stranger, "dead@example.com", "550 5.1.2 <dead@example.com>: Recipient address rejected: gone", ""},
		{stranger, "b@remote.test", "554 5.7.1 <b@remote.test>: Relay access denied", ""},
		{"192.0.2.7", "b@remote.test", "OK", "b@remote.test"},
		{"::1", "b@remote.test", "OK", "b@remote.test"},
		{"::ffff:127.0.0.1", "b@remote.test", "OK", "b@remote.test"},
	} {
		got, exp := check(p, tc.client, tc.rcpt)
		if got != tc.want || strings.Join(exp, ",") != tc.expanded {
			t.Errorf("%s -> %s: got %q %v, want %q %q", tc.client, tc.rcpt, got, exp, tc.want, tc.expanded)
		}
	}
}

func TestLookupFailureIsTemporary(t *testing.T) {
	p := newPolicy(t, "fail:ldap")
	got, _ := check(p, stranger, "alice@example.com")
	if got != "451 4.3.0 <alice@example.com>: Temporary lookup failure" {
		t.Fatalf("got %q", got)
	}
}

// TestRelaySafety pins every trick that must not make us relay for a
// stranger (Postfix's reject_unauth_destination with
// allow_untrusted_routing = no).
func TestRelaySafety(t *testing.T) {
	p := newPolicy(t) // no relay_recipient_maps: every example.com user exists
	denied := func(r string) string { return "554 5.7.1 <" + r + ">: Relay access denied" }
	for _, tc := range []struct{ rcpt, want string }{
		{"user%remote.test@example.com", denied(`user%remote.test@example.com`)},           // percent hack
		{"remote.test!user@example.com", denied(`remote.test!user@example.com`)},           // bang path
		{"user@remote.test@example.com", denied(`"user@remote.test"@example.com`)},         // quoted local part with @
		{"user@[203.0.113.1]", denied("user@[203.0.113.1]")},                               // address literal
		{"user@remote.test.", denied("user@remote.test")},                                  // trailing dot
		{"user@REMOTE.test", denied("user@remote.test")},                                   // mixed case
		{"user@example.com.remote.test", denied("user@example.com.remote.test")},           // suffix trick
		{"user@remoteexample.com", denied("user@remoteexample.com")},                       // not a subdomain
		{"user@example.com", "OK"},                                                         // our domain
		{"user@Example.COM.", "OK"},                                                        // our domain, normalised
		{"user@sub.example.com", "OK"},                                                     // parent_domain_matches_subdomains
		{"@remote.test:user@example.com", "parse: source routes are not allowed"},          // source route
		{"user@example.com@remote.test", denied(`"user@example.com"@remote.test`)},         // user@local@remote
		{"\"user@remote.test\"@example.com", denied(`"\"user@remote.test\""@example.com`)}, // literal quotes
		{"user%remote.test%example.com@example.com", denied("user%remote.test%example.com@example.com")},
	} {
		got, _ := check(p, stranger, tc.rcpt)
		if got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.rcpt, got, tc.want)
		}
	}
}

func TestUnknownRestriction(t *testing.T) {
	set := table.NewSet(table.Options{})
	r, _ := routing.New(routing.Config{}, nil)
	_, err := New(Config{Router: r, Tables: set, RecipientRestrictions: []string{"permit_mynetworks", "reject_unauth_destinaton"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `smtpd_recipient_restrictions: unknown restriction "reject_unauth_destinaton"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestRestrictionOrder(t *testing.T) {
	set := table.NewSet(table.Options{})
	r, _ := routing.New(routing.Config{}, nil)
	rd, _ := table.NewDomainList([]string{"example.com"}, set, true)
	mk := func(relay ...string) *Policy {
		p, err := New(Config{Router: r, Tables: set, RelayDomains: rd, RelayRestrictions: relay}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := New(Config{Router: r, Tables: set, RelayDomains: rd, RelayRestrictions: []string{"permit", "reject"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "specify at least one working instance of: reject_unauth_destination") {
		t.Errorf("permit first is an open relay, must be refused: %v", err)
	}
	if got, _ := check(mk("reject"), stranger, "a@example.com"); got != "554 5.7.1 <a@example.com>: Recipient address rejected: Access denied" {
		t.Errorf("reject: %q", got)
	}
	if got, _ := check(mk("defer_unauth_destination"), stranger, "a@remote.test"); got != "454 4.7.1 <a@remote.test>: Relay access denied" {
		t.Errorf("defer_unauth_destination: %q", got)
	}
	if got, _ := check(mk("permit_auth_destination", "reject"), stranger, "a@example.com"); got != "OK" {
		t.Errorf("permit_auth_destination: %q", got)
	}
}
