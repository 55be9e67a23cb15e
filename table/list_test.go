package table

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

type matchCase struct {
	in   string
	want bool
}

func checkDomains(t *testing.T, l *DomainList, cases []matchCase) {
	t.Helper()
	for _, c := range cases {
		got, err := l.Match(context.Background(), c.in)
		if err != nil {
			t.Errorf("Match(%q): %v", c.in, err)
		} else if got != c.want {
			t.Errorf("Match(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestDomainListLiterals(t *testing.T) {
	items := []string{"Example.COM, .example.net", "!secret.example.org .example.org"}
	strict, err := NewDomainList(items, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	checkDomains(t, strict, []matchCase{
		{"example.com", true},
		{"EXAMPLE.com", true},
		{"a.example.com", false}, // parent_domain_matches_subdomains off
		{"xexample.com", false},
		{"example.net", false}, // ".example.net" matches subdomains only
		{"a.example.net", true},
		{"a.b.example.net", true},
		{"secret.example.org", false}, // excluded; first match decides
		{"a.secret.example.org", true},
		{"other.test", false},
		{"", false},
	})
	parent, err := NewDomainList(items, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	checkDomains(t, parent, []matchCase{
		{"example.com", true},
		{"a.example.com", true},
		{"a.b.example.com", true},
		{"xexample.com", false},
		{"example.net", false},
		{"a.example.net", true},             // ".example.net" still works
		{"a.secret.example.org", false},     // "!secret.example.org" covers subdomains
		{"secret.example.org.evil", false},  // suffix must be at a label boundary
		{"notsecret.example.org", true},     // only .example.org matches
		{"example.com.example.net", true},   // via .example.net
		{"example.comm", false},             // not a label boundary
		{"sub.example.comm.example", false}, // nothing
	})
}

// keyTable records the keys it is asked and finds those in m.
type keyTable struct {
	fakeTable
	pattern bool
}

func (k *keyTable) IsPattern() bool { return k.pattern }

func TestDomainListTableKeys(t *testing.T) {
	tables := map[string]*keyTable{}
	opts := Options{Openers: map[string]func(string, Options) (Table, error){
		"fake": func(name string, _ Options) (Table, error) {
			k := &keyTable{fakeTable: fakeTable{spec: "fake:" + name, m: map[string]string{
				"example.com": "x", ".example.net": "x",
			}}, pattern: strings.HasPrefix(name, "pattern")}
			tables[name] = k
			return k, nil
		},
	}}
	tests := []struct {
		table  string
		parent bool
		domain string
		want   bool
		keys   string
	}{
		{"fixed", false, "a.b.example.com", false, "a.b.example.com .b.example.com .example.com .com"},
		{"fixed", false, "a.example.net", true, "a.example.net .example.net"},
		{"fixed", false, "example.com", true, "example.com"},
		{"fixed", true, "a.b.example.com", true, "a.b.example.com b.example.com example.com"},
		{"fixed", true, "a.example.net", false, "a.example.net example.net net"},
		{"fixed", true, "A.Example.COM", true, "a.example.com example.com"},
		{"fixed", false, "localhost", false, "localhost"},
		{"pattern", false, "a.b.example.com", false, "a.b.example.com"}, // full key only
		{"pattern", true, "example.com", true, "example.com"},
	}
	for _, tc := range tests {
		s := NewSet(opts)
		l, err := NewDomainList([]string{"fake:" + tc.table}, s, tc.parent)
		if err != nil {
			t.Fatal(err)
		}
		got, err := l.Match(context.Background(), tc.domain)
		if err != nil || got != tc.want {
			t.Errorf("%s parent=%v Match(%q) = %v, %v; want %v", tc.table, tc.parent, tc.domain, got, err, tc.want)
		}
		if keys := strings.Join(tables[tc.table].keys, " "); keys != tc.keys {
			t.Errorf("%s parent=%v Match(%q) asked keys %q, want %q", tc.table, tc.parent, tc.domain, keys, tc.keys)
		}
	}
}

func TestDomainListTablesAndErrors(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "domains", "hosted.example OK\n.wild.example OK\n")
	s := NewSet(Options{})
	l, err := NewDomainList([]string{"hash:" + p, "inline:{ {inline.example = yes} }", "regexp:{ {/^re-.*\\.test$/ yes} }", "fail:down", "last.example"}, s, false)
	if err != nil {
		t.Fatal(err)
	}
	checkDomains(t, l, []matchCase{
		{"hosted.example", true},
		{"HOSTED.example", true},
		{"x.wild.example", true},
		{"inline.example", true},
		{"re-1.test", true},
	})
	// Not found in the earlier tables: the failing table is an error, not
	// "no match", and last.example is never reached.
	for _, d := range []string{"last.example", "nowhere.example"} {
		got, err := l.Match(context.Background(), d)
		if got || !errors.Is(err, ErrFail) || !strings.Contains(err.Error(), "match list table fail:down") {
			t.Errorf("Match(%q) = %v, %v; want fail:down error", d, got, err)
		}
	}
	if tbl, _ := s.Open("hash:" + p); tbl == nil {
		t.Error("the list did not open its table through the Set")
	}

	for _, tc := range []struct {
		items []string
		want  string
	}{
		{[]string{"example.com", "!"}, `match list item "!": no pattern after '!'`},
		{[]string{"nosuch:table"}, `match list item "nosuch:table": unsupported table type "nosuch"`},
		{[]string{"example.com #comment"}, `match list item "#comment": comment at end of line is not supported`},
		{[]string{dir + "/missing"}, `match list item "` + dir + `/missing": open ` + dir + `/missing: no such file or directory`},
	} {
		_, err := NewDomainList(tc.items, s, false)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("NewDomainList(%q) error\n got %v\nwant prefix %s", tc.items, err, tc.want)
		}
	}
}

func TestDomainListFiles(t *testing.T) {
	dir := t.TempDir()
	log, _ := testLogger()
	nested := writeFile(t, dir, "nested", "nested.example\n")
	excluded := writeFile(t, dir, "excluded", "# excluded domains\nbad.example, worse.example\n")
	main := writeFile(t, dir, "relay_domains", strings.Join([]string{
		"# relay domains",
		"example.com, .example.net",
		"   # indented comment",
		"",
		"!" + excluded + " " + nested,
		".example",
	}, "\n"))
	s := NewSet(Options{Logger: log})
	l, err := NewDomainList([]string{"first.example", main}, s, false)
	if err != nil {
		t.Fatal(err)
	}
	checkDomains(t, l, []matchCase{
		{"first.example", true},
		{"example.com", true},
		{"a.example.net", true},
		{"bad.example", false}, // "!/file" excludes each pattern in the file
		{"worse.example", false},
		{"nested.example", true},
		{"other.example", true},
		{"example.org", false},
	})

	// !!/file is a double negation; a leading '!' inside an excluded file
	// toggles back.
	twice := writeFile(t, dir, "twice", "!back.example\nexcl.example\n")
	l2, err := NewDomainList([]string{"!" + twice}, s, false)
	if err != nil {
		t.Fatal(err)
	}
	checkDomains(t, l2, []matchCase{{"back.example", true}, {"excl.example", false}})

	// Reload re-reads the list file; a broken file keeps the old patterns.
	replaceFile(t, main, "example.org\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	checkDomains(t, l, []matchCase{{"example.org", true}, {"example.com", false}, {"first.example", true}})
	replaceFile(t, main, "example.net\nexample.com  # trailing comment\n")
	err = s.Reload()
	if want := main + ":2: comment at end of line is not supported"; err == nil || err.Error() != want {
		t.Errorf("Reload error\n got %v\nwant %s", err, want)
	}
	checkDomains(t, l, []matchCase{{"example.org", true}, {"example.net", false}})

	loop := writeFile(t, dir, "loop", "")
	replaceFile(t, loop, loop+"\n")
	if _, err := NewDomainList([]string{loop}, s, false); err == nil || !strings.Contains(err.Error(), "nested more than 8 deep") {
		t.Errorf("self-including file: err = %v", err)
	}
	bad := writeFile(t, dir, "bad", "ok.example\n\n  nosuch:x\n")
	_, err = NewDomainList([]string{bad}, s, false)
	if want := bad + `:3: unsupported table type "nosuch"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error in list file:\n got %v\nwant prefix %s", err, want)
	}
}

func TestNetList(t *testing.T) {
	var keys []string
	opts := Options{Openers: map[string]func(string, Options) (Table, error){
		"rec": func(string, Options) (Table, error) {
			return recordKeys{keys: &keys}, nil
		},
	}}
	s := NewSet(opts)
	l, err := NewNetList([]string{
		"127.0.0.0/8 [::1]/128, 192.0.2.1",
		"[2001:db8::]/32 2001:db8:1::/48 [2001:db9::1] [198.51.100.0/24]",
		"!10.1.0.0/16 10.0.0.0/8",
		"cidr:{ {172.16.0.0/12 x} }",
		"rec:x",
	}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		ip   string
		want bool
		key  string // key the rec: table saw, if reached
	}{
		{"127.0.0.1", true, ""},
		{"::1", true, ""},
		{"192.0.2.1", true, ""},
		{"2001:db8::5", true, ""},
		{"2001:db9::1", true, ""},
		{"198.51.100.99", true, ""},
		{"10.2.3.4", true, ""},
		{"::ffff:10.2.3.4", true, ""}, // IPv4-mapped matches IPv4 patterns
		{"10.1.2.3", false, ""},       // excluded
		{"172.20.0.1", true, ""},      // cidr: table
		{"fe80::1%eth0", false, "fe80::1"},
		{"192.0.2.2", false, "192.0.2.2"},
		{"::ffff:192.0.2.2", false, "192.0.2.2"}, // table key is the unmapped form
		{"2001:0dba:0002::1", false, "2001:dba:2::1"},
		{"8.8.8.8", true, "8.8.8.8"}, // found by rec:
	} {
		keys = nil
		got, err := l.Match(ctx, netip.MustParseAddr(tc.ip))
		if err != nil || got != tc.want {
			t.Errorf("Match(%s) = %v, %v; want %v", tc.ip, got, err, tc.want)
		}
		if k := strings.Join(keys, " "); k != tc.key {
			t.Errorf("Match(%s) asked the table %q, want %q", tc.ip, k, tc.key)
		}
	}
	if _, err := l.Match(ctx, netip.Addr{}); err == nil {
		t.Error("Match(invalid address) returned no error")
	}

	failing, err := NewNetList([]string{"127.0.0.1", "fail:x", "0.0.0.0/0"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := failing.Match(ctx, netip.MustParseAddr("127.0.0.1")); !got || err != nil {
		t.Errorf("match before the failing table = %v, %v", got, err)
	}
	if got, err := failing.Match(ctx, netip.MustParseAddr("192.0.2.1")); got || !errors.Is(err, ErrFail) {
		t.Errorf("failing table: Match = %v, %v; want ErrFail", got, err)
	}

	for _, tc := range []struct{ item, want string }{
		{"192.0.2.1/24", `match list item "192.0.2.1/24": non-null host address bits in "192.0.2.1/24", perhaps you should use "192.0.2.0/24" instead`},
		{"localhost", `match list item "localhost": bad address pattern: "localhost"`},
		{"fe80::/129", `match list item "fe80::/129": bad net/mask pattern: "fe80::/129"`},
		{"::1/200", `match list item "::1/200": bad net/mask pattern: "::1/200"`},
		{"[::1", `match list item "[::1": missing ']' character after "[::1"`},
		{"xyz:/etc/x", `match list item "xyz:/etc/x": unsupported table type "xyz" in "xyz:/etc/x"`},
		{"!!", `match list item "!!": no pattern after '!'`},
	} {
		_, err := NewNetList([]string{tc.item}, s)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("NewNetList(%q) error\n got %v\nwant %s", tc.item, err, tc.want)
		}
	}
}

type recordKeys struct{ keys *[]string }

func (r recordKeys) Lookup(_ context.Context, key string) (string, bool, error) {
	*r.keys = append(*r.keys, key)
	return "x", key == "8.8.8.8", nil
}

func TestNetListFile(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "mynetworks", "# trusted\n127.0.0.0/8 [::1]/128\n!192.0.2.128/25\n192.0.2.0/24\n")
	log, _ := testLogger()
	s := NewSet(Options{Logger: log})
	l, err := NewNetList([]string{p}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(ip string, want bool) {
		t.Helper()
		if got, err := l.Match(ctx, netip.MustParseAddr(ip)); got != want || err != nil {
			t.Errorf("Match(%s) = %v, %v; want %v", ip, got, err, want)
		}
	}
	check("192.0.2.1", true)
	check("192.0.2.200", false)
	check("::1", true)
	replaceFile(t, p, "192.0.2.128/25\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	check("192.0.2.200", true)
	check("127.0.0.1", false)
	replaceFile(t, p, "192.0.2.128/24\n")
	if err := s.Reload(); err == nil || !strings.HasPrefix(err.Error(), p+":1: non-null host address bits") {
		t.Errorf("Reload error = %v", err)
	}
	check("192.0.2.200", true) // old patterns kept
}
