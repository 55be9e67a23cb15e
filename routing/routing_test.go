package routing

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

func newResolver(t *testing.T, mod func(*Config)) *Resolver {
	t.Helper()
	set := table.NewSet(table.Options{})
	t.Cleanup(func() { set.Close() })
	va, err := set.Open("texthash:testdata/virtual")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := set.Open("texthash:testdata/transport")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		VirtualAliasMaps:   []table.Table{va},
		TransportMaps:      []table.Table{tr},
		RecipientDelimiter: "+",
		MyOrigin:           "mx.example.com",
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRouteLookupOrder(t *testing.T) {
	r := newResolver(t, nil)
	for _, tc := range []struct{ rcpt, want string }{
		{"exact+tag@example.com", "smtp:[exact-tag.unit]:2525"}, // full address first
		{"exact+other@example.com", "smtp:[exact.unit]"},        // then user@domain without the extension
		{"Exact@EXAMPLE.com", "smtp:[exact.unit]"},              // case-insensitive
		{"x@h42.mail.example.com", "lmtp:inet:127.0.0.1:24"},    // domain
		{"x@a.sub.example.com", "smtp:[parent.unit]:25"},        // .parent matches subdomains
		{"x@b.a.sub.example.com", "smtp:[parent.unit]:25"},      // at any depth
		{"x@sub.example.com", "smtp:[star.unit]"},               // but not the parent itself
		{"x@default-nh.example.com", "smtp:[only-nexthop.unit]"},
		{"x@default-tr.example.com", "smtp:default-tr.example.com"},
		{"x@nowhere.test", "smtp:[star.unit]"}, // "*"
	} {
		rt, err := r.Route(context.Background(), envelope.MustParse(tc.rcpt))
		if err != nil {
			t.Errorf("%s: %v", tc.rcpt, err)
			continue
		}
		if rt.String() != tc.want {
			t.Errorf("Route(%s) = %s, want %s", tc.rcpt, rt, tc.want)
		}
	}
}

func TestRouteHosts(t *testing.T) {
	r := newResolver(t, nil)
	for _, tc := range []struct {
		rcpt  string
		hosts []envelope.Host
		reply string
	}{
		{rcpt: "exact+tag@example.com", hosts: []envelope.Host{{Network: "tcp", Name: "exact-tag.unit", Port: 2525}}},
		{rcpt: "x@h42.mail.example.com", hosts: []envelope.Host{{Network: "tcp", Name: "127.0.0.1", Port: 24}}},
		{rcpt: "x@sock.example.com", hosts: []envelope.Host{{Network: "unix", Name: "/run/dovecot/lmtp"}}},
		{rcpt: "x@multi.example.com", hosts: []envelope.Host{{Network: "tcp", Name: "u42a", Port: 25}, {Network: "tcp", Name: "u42b", Port: 25}}},
		{rcpt: "x@mx.example.net", hosts: []envelope.Host{{Network: "tcp", Name: "mx.example.net", MX: true}}},
		{rcpt: "x@gone.example.com", reply: "550 5.1.2 domain is gone"},
		{rcpt: "x@later.example.com", reply: "450 4.3.5 unit in maintenance"},
	} {
		rt, err := r.Route(context.Background(), envelope.MustParse(tc.rcpt))
		if err != nil {
			t.Fatalf("%s: %v", tc.rcpt, err)
		}
		if !reflect.DeepEqual(rt.Hosts, tc.hosts) {
			t.Errorf("%s: hosts %+v, want %+v", tc.rcpt, rt.Hosts, tc.hosts)
		}
		if tc.reply != "" && rt.Reply.String() != tc.reply {
			t.Errorf("%s: reply %q, want %q", tc.rcpt, rt.Reply, tc.reply)
		}
	}
}

func TestDefaultTransports(t *testing.T) {
	set := table.NewSet(table.Options{})
	rd, err := table.NewDomainList([]string{"example.com"}, set, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{RelayDomains: rd, RelayTransport: "lmtp:unix:/run/lmtp", RelayHost: "[smarthost.test]:587"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string]string{
		"a@example.com":     "lmtp:unix:/run/lmtp",
		"a@sub.example.com": "lmtp:unix:/run/lmtp",
		"a@remote.test":     "smtp:[smarthost.test]:587",
	} {
		rt, err := r.Route(context.Background(), envelope.MustParse(rcpt))
		if err != nil || rt.String() != want {
			t.Errorf("Route(%s) = %s, %v; want %s", rcpt, rt, err, want)
		}
	}
	if _, err := New(Config{DefaultTransport: "pigeon"}, nil); err == nil {
		t.Error("unknown default_transport accepted")
	}
}

func TestParseRouteErrors(t *testing.T) {
	rcpt := envelope.MustParse("a@example.com")
	for _, v := range []string{"pigeon:[x]", "smtp:[x", "smtp:[x]junk", "smtp:[x]:99999", "lmtp:unix:relative", "smtp:/path", "nocolon"} {
		if rt, err := ParseRoute(v, rcpt); err == nil {
			t.Errorf("ParseRoute(%q) = %v, want error", v, rt)
		}
	}
}

func expand(t *testing.T, r *Resolver, a string) ([]string, bool, error) {
	t.Helper()
	out, found, err := r.Expand(context.Background(), envelope.MustParse(a))
	var s []string
	for _, x := range out {
		s = append(s, x.String())
	}
	return s, found, err
}

func TestExpand(t *testing.T) {
	r := newResolver(t, nil)
	for _, tc := range []struct {
		in    string
		want  string
		found bool
	}{
		{"foo.bar@example.com", "foo.bar@h42.mail.example.com", true},
		{"Foo.Bar@Example.com", "foo.bar@h42.mail.example.com", true},
		// propagate_unmatched_extensions: the extension follows the alias.
		{"foo.bar+news@example.com", "foo.bar+news@h42.mail.example.com", true},
		{"sales@example.com", "alice@example.com bob@example.com", true},
		{"team@example.com", "alice@example.com bob@example.com carol@other.test", true},
		// An address that lists itself is delivered, and not expanded again.
		{"self@example.com", "self@example.com archive@example.com", true},
		{"anyone@catchall.test", "catch@example.com", true},
		{"bare@example.com", "local@mx.example.com", true},
		{"nobody@example.com", "nobody@example.com", false},
	} {
		got, found, err := expand(t, r, tc.in)
		if err != nil {
			t.Errorf("Expand(%s): %v", tc.in, err)
			continue
		}
		if strings.Join(got, " ") != tc.want || found != tc.found {
			t.Errorf("Expand(%s) = %v %v, want %s %v", tc.in, got, found, tc.want, tc.found)
		}
	}
}

func TestExpandLimits(t *testing.T) {
	r := newResolver(t, func(c *Config) { c.RecursionLimit = 20 })
	if _, _, err := expand(t, r, "loop1@example.com"); !errors.Is(err, ErrAliasLoop) {
		t.Errorf("loop: err = %v, want ErrAliasLoop", err)
	}
	r = newResolver(t, func(c *Config) { c.ExpansionLimit = 2 })
	if _, _, err := expand(t, r, "team@example.com"); !errors.Is(err, ErrAliasExpansion) {
		t.Errorf("expansion: err = %v, want ErrAliasExpansion", err)
	}
}

func TestLookupErrorIsNotNotFound(t *testing.T) {
	set := table.NewSet(table.Options{})
	fail, err := set.Open("fail:directory")
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{VirtualAliasMaps: []table.Table{fail}, TransportMaps: []table.Table{fail}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Expand(context.Background(), envelope.MustParse("a@example.com")); err == nil {
		t.Error("Expand: table error was swallowed")
	}
	if _, err := r.Route(context.Background(), envelope.MustParse("a@example.com")); err == nil {
		t.Error("Route: table error was swallowed")
	}
}
