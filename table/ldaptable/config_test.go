package ldaptable

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mxfront/mxfront/table"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse("x.cf", []byte("search_base = dc=example, dc=com\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File:             "x.cf",
		Servers:          []string{"ldap://localhost:389"},
		SearchBase:       "dc=example, dc=com",
		QueryFilter:      "(mailacceptinggeneralid=%s)",
		Scope:            ldap.ScopeWholeSubtree,
		ResultAttributes: []string{"maildrop"},
		ResultFormat:     "%s",
		Bind:             true,
		Timeout:          10 * time.Second,
		CacheTTL:         60 * time.Second,
		NegativeCacheTTL: 10 * time.Second,
		CacheMaxEntries:  100000,
		PoolSize:         2,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestParseFull(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\nignored\n"), 0o600)
	src := `# seed 000
server_host = ldap://ldap1.example.com:1389
    ldaps://ldap2.example.com, ldap3.example.com ldap4.example.com:1444
  [2001:db8::1]:389 ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi
server_port = 3389
search_base = ou=people, dc=example, dc=com
query_filter = mail=%s
result_attribute = maildrop mailbox,mail
result_format = smtp:[%s]:25
domain = example.com, example.net
scope = one
bind = yes
bind_dn = cn=mx, dc=example, dc=com
bind_pw_file = pw
timeout = 3
expansion_limit = 5
dereference = 3
version = 3
tls_require_cert = yes
cache = yes
cache_ttl = 5m
negative_cache_ttl = 500ms
pool_size = 4
`
	c, err := Parse(filepath.Join(dir, "x.cf"), []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Servers, " "); got != "ldap://ldap1.example.com:1389 ldaps://ldap2.example.com ldap://ldap3.example.com:3389 ldap://ldap4.example.com:1444 ldap://[2001:db8::1]:389 ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi" {
		t.Errorf("servers %s", got)
	}
	if c.QueryFilter != "mail=%s" || c.Scope != ldap.ScopeSingleLevel || c.BindPW != "s3cret" ||
		c.Timeout != 3*time.Second || c.SizeLimit != 5 || c.ExpansionLimit != 5 || c.Dereference != 3 ||
		c.CacheTTL != 5*time.Minute || c.NegativeCacheTTL != 500*time.Millisecond || c.PoolSize != 4 ||
		strings.Join(c.ResultAttributes, "|") != "maildrop|mailbox|mail" || strings.Join(c.Domain, "|") != "example.com|example.net" ||
		c.TLS == nil || c.TLS.InsecureSkipVerify {
		t.Errorf("parsed %+v", c)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "x.cf:20: cache: obsolete Postfix parameter, ignored") {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ src, want string }{
		{"serverhost = x\n", "x.cf:1: serverhost: unknown parameter"},
		{"scope = sub\nscope = one\n", "x.cf:2: scope: set twice (first on line 1)"},
		{"  server_host = x\n", "x.cf:1: continuation line without a parameter"},
		{"just text\n", `x.cf:1: want "name = value"`},
		{"scope = subtree\n", "x.cf:1: scope: want sub, one or base"},
		{"bind = sasl\n", "x.cf:1: bind: SASL bind is not supported"},
		{"bind = maybe\n", "x.cf:1: bind: want yes, no or sasl"},
		{"special_result_attribute = member\n", "x.cf:1: special_result_attribute: not supported"},
		{"terminal_result_attribute = x\n", "terminal_result_attribute: not supported"},
		{"chase_referrals = yes\n", "chase_referrals: not supported"},
		{"query_filter = (objectClass=*)\n", "x.cf:1: query_filter: \"(objectClass=*)\" does not use the key"},
		{"query_filter = (&(mail=%s)\n", "x.cf:1: query_filter: \"(&(mail=%s)\" is not a valid LDAP filter"},
		{"query_filter = (mail=%x)\n", "x.cf:1: query_filter: invalid expansion %x"},
		{"query_filter = (mail=%s)%\n", "lone '%'"},
		{"result_format = %q\n", "x.cf:1: result_format: invalid expansion %q"},
		{"search_base = not a dn %s\n", "x.cf:1: search_base: \"not a dn %s\" is not a valid DN"},
		{"result_attribute = ,\n", "x.cf:1: result_attribute: empty"},
		{"bind_dn = cn=x\n", "x.cf:1: bind_dn: set without bind_pw"},
		{"bind_pw = a\nbind_pw_file = /nonexistent\n", "bind_pw_file: set together with bind_pw"},
		{"bind_pw_file = /nonexistent/pw\n", "x.cf:1: bind_pw_file: open /nonexistent/pw"},
		{"server_host = ldaps://x\nstart_tls = yes\n", "x.cf:2: start_tls: only for ldap:// servers"},
		{"start_tls = perhaps\n", "start_tls: want yes or no"},
		{"server_host = http://x\n", "x.cf:1: server_host: unsupported URL scheme"},
		{"server_host = ldap://x/dc=example?mail\n", "server_host: LDAP URL \"ldap://x/dc=example?mail\": a DN"},
		{"server_host = ldapi:///var/run/ldapi\n", "put the socket path percent-encoded"},
		{"server_port = 0\n", "server_port: want a number from 1 to 65535"},
		{"timeout = soon\n", "x.cf:1: timeout: want seconds"},
		{"timeout = 0\n", "timeout: must be positive"},
		{"size_limit = -1\n", "size_limit: want a number from 0"},
		{"dereference = 4\n", "dereference: want a number from 0 to 3"},
		{"pool_size = 1000\n", "pool_size: want a number from 1 to 64"},
		{"version = 4\n", "version: want 2 or 3"},
		{"server_host = ldaps://x\ntls_cert = /a\n", "tls_cert: tls_cert and tls_key must be set together"},
		{"server_host = ldaps://x\ntls_ca_cert_file = /nonexistent\n", "tls_ca_cert_file: open /nonexistent"},
	} {
		_, err := Parse(filepath.Join(dir, "x.cf"), []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.src, err, c.want)
		}
	}
	if _, err := New("/nonexistent/ldap.cf", table.Options{}); err == nil {
		t.Error("missing file: no error")
	}
}

func TestExpansion(t *testing.T) {
	compile := func(base, filter, result string) *templates {
		t.Helper()
		tm, err := compileTemplates(&Config{SearchBase: base, QueryFilter: filter, ResultFormat: result})
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	// ldap_table(5): for user@mail.example.com %1 is com, %2 example, %3 mail.
	tm := compile("dc=%2, dc=%1", "(&(uid=%u)(host=%3)(d=%d)(k=%S)(%%=%U))", "%s")
	kp, ok := tm.splitKey("user@mail.example.com")
	if !ok {
		t.Fatal("suppressed")
	}
	if got := tm.expandQuery(tm.filter, kp, ldap.EscapeFilter); got != "(&(uid=user)(host=mail)(d=mail.example.com)(k=user@mail.example.com)(%=user))" {
		t.Errorf("filter %s", got)
	}
	if got := tm.expandQuery(tm.base, kp, ldap.EscapeDN); got != "dc=example, dc=com" {
		t.Errorf("base %s", got)
	}
	for _, key := range []string{"user", "user@", "user@example.com", "user@..com", "@mail.example.com"} {
		if _, ok := tm.splitKey(key); ok {
			t.Errorf("%q not suppressed", key)
		}
	}
	// %u alone: an unqualified key is used whole; an empty local part is
	// suppressed.
	tm = compile("", "(uid=%u)", "%s")
	if kp, ok := tm.splitKey("postmaster"); !ok || tm.expandQuery(tm.filter, kp, ldap.EscapeFilter) != "(uid=postmaster)" {
		t.Errorf("unqualified %%u: %v", ok)
	}
	if _, ok := tm.splitKey("@example.com"); ok {
		t.Error("@domain not suppressed for %u")
	}
	// %s alone: everything is asked, escaped.
	tm = compile("uid=%s,dc=x", "(mail=%s)", "%s")
	kp, _ = tm.splitKey("a*b(c)\\d\x00é")
	if got := tm.expandQuery(tm.filter, kp, ldap.EscapeFilter); got != `(mail=a\2ab\28c\29\5cd\00\c3\a9)` {
		t.Errorf("escaped filter %s", got)
	}
	kp, _ = tm.splitKey(`a,b+c"d\e;f<g>h=i# `)
	if got := tm.expandQuery(tm.base, kp, ldap.EscapeDN); got != `uid=a\,b\+c\"d\\e\;f\<g\>h=i#\ ,dc=x` {
		t.Errorf("escaped base %s", got)
	}

	// result_format.
	tm = compile("", "(mail=%s)", "%u+%d:%U@%D/%1/%S")
	kp, _ = tm.splitKey("k@x.test")
	for value, want := range map[string]string{
		"v@h1.example.com": "v+h1.example.com:k@x.test/test/k@x.test",
		"v@":               "", // %d: no domain, skipped
		"@h1":              "", // %u: empty local part, skipped
		"plain":            "", // %d: unqualified, skipped
		"a@b@c":            "a@b+c:k@x.test/test/k@x.test",
	} {
		got, ok := tm.expandResult(value, kp)
		if want == "" && ok || want != "" && got != want {
			t.Errorf("result %q -> %q %v, want %q", value, got, ok, want)
		}
	}
	tm = compile("", "(mail=%s)", "smtp:[%s]:25")
	if got, _ := tm.expandResult("unit7", kp); got != "smtp:[unit7]:25" {
		t.Errorf("smtp:[%%s]: %s", got)
	}
}

func TestAttrMatches(t *testing.T) {
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"maildrop", "maildrop", true},
		{"maildrop", "MailDrop", true},
		{"mail", "mail;lang-en", true},
		{"mail", "maildrop", false},
		{"maildrop", "mail", false},
	} {
		if attrMatches(c.want, c.got) != c.ok {
			t.Errorf("attrMatches(%q, %q) != %v", c.want, c.got, c.ok)
		}
	}
}

// TestExampleFiles parses the shipped examples in configs/ldap.
func TestExampleFiles(t *testing.T) {
	files, _ := filepath.Glob("../../configs/ldap/*.cf")
	if len(files) == 0 {
		t.Fatal("no configs/ldap/*.cf")
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The password file of the example does not exist here.
		src = []byte(strings.ReplaceAll(string(src), "/etc/mxfront/ldap.pw", pw))
		c, err := Parse(f, src)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if len(c.Warnings) > 0 {
			t.Errorf("%s: warnings %q", f, c.Warnings)
		}
	}
}

func TestOpenerAndSpec(t *testing.T) {
	cf := writeCF(t, "server_host = ldap://127.0.0.1:1\n"+seed000)
	opts := table.Options{Openers: map[string]func(string, table.Options) (table.Table, error){"ldap": Open}}
	tb, err := table.Open("ldap:"+cf, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.(*Table).Close()
	if table.SpecOf(tb) != "ldap:"+cf || table.IsPattern(tb) {
		t.Errorf("spec %s pattern %v", table.SpecOf(tb), table.IsPattern(tb))
	}
	if _, err := table.Open("ldap:/nonexistent.cf", opts); err == nil || !strings.Contains(err.Error(), "table ldap:/nonexistent.cf") {
		t.Errorf("error %v", err)
	}
}
