package table

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testLogger returns a logger whose text output is collected in buf.
func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

type lookupCase struct {
	key   string
	want  string
	found bool
}

func checkLookups(t *testing.T, tbl Table, cases []lookupCase) {
	t.Helper()
	for _, c := range cases {
		got, ok, err := tbl.Lookup(context.Background(), c.key)
		if err != nil {
			t.Errorf("%s: Lookup(%q): unexpected error %v", SpecOf(tbl), c.key, err)
			continue
		}
		if ok != c.found || got != c.want {
			t.Errorf("%s: Lookup(%q) = %q, %v; want %q, %v", SpecOf(tbl), c.key, got, ok, c.want, c.found)
		}
	}
}

func TestTexthash(t *testing.T) {
	cases := []lookupCase{
		{"example.com", "OK", true},
		{"EXAMPLE.Com", "OK", true}, // keys fold to lower case at lookup
		{"user@example.net", "REJECT   no such user", true},
		{"multi.example", "550 5.7.1 this text\tcontinues on a continuation line    and one more", true},
		{`"john doe"@example.org`, "OK quoted key with a space", true},
		{`"JOHN DOE"@example.org`, "OK quoted key with a space", true},
		{`back\"slash@example.org`, "escaped", true},
		{"tab.example", "TAB\tseparated", true},
		{"dup.example", "first", true}, // first entry wins
		{"crlf.example", "crlf value", true},
		{"crlf2.example", "value-with-cr", true},
		{"continues", "", false},
		{"#", "", false},
		{"and", "", false},
		{"missing.example", "", false},
		{"", "", false},
	}
	for _, typ := range []string{"texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm"} {
		t.Run(typ, func(t *testing.T) {
			log, buf := testLogger()
			tbl, err := Open(typ+":testdata/access", Options{Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			checkLookups(t, tbl, cases)
			if got, want := SpecOf(tbl), typ+":testdata/access"; got != want {
				t.Errorf("Spec = %q, want %q", got, want)
			}
			if IsPattern(tbl) {
				t.Error("IsPattern = true for a fixed-string table")
			}
			if !strings.Contains(buf.String(), "duplicate table entry") ||
				!strings.Contains(buf.String(), "where=testdata/access:15") {
				t.Errorf("no duplicate warning naming testdata/access:15 in log:\n%s", buf.String())
			}
		})
	}
}

func TestTexthashAliasWarning(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "aliases", "postmaster: root\n")
	log, buf := testLogger()
	if _, err := Open("texthash:"+p, Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "is this an alias file?") {
		t.Errorf("missing alias-format warning in log:\n%s", buf.String())
	}
}

func TestTexthashDuplicateWarningsBounded(t *testing.T) {
	var b strings.Builder
	for range 50 {
		b.WriteString("same value\n")
	}
	p := writeFile(t, t.TempDir(), "dups", b.String())
	log, buf := testLogger()
	if _, err := Open("hash:"+p, Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "duplicate table entry ignored"); n != maxDupWarnings {
		t.Errorf("%d duplicate warnings, want %d", n, maxDupWarnings)
	}
	if !strings.Contains(buf.String(), "count=39") {
		t.Errorf("missing summary of the remaining 39 duplicates:\n%s", buf.String())
	}
}

func TestTexthashErrors(t *testing.T) {
	tests := []struct {
		name, content, want string // want is after "PATH:"
	}{
		{"missing value", "a 1\nfoo\n", `2: missing value for key "foo" (expected format: key whitespace value)`},
		{"missing value after blank and comment", "a 1\n\n# c\n   \nfoo   \t\n", `5: missing value for key "foo" (expected format: key whitespace value)`},
		{"leading whitespace", "  key value\n", `1: line starts with whitespace but there is no preceding line to continue (a line that starts with whitespace continues the previous line)`},
		{"leading whitespace after comments", "# c\n\n\tkey value\n", `3: line starts with whitespace but there is no preceding line to continue (a line that starts with whitespace continues the previous line)`},
		{"unbalanced quote", "ok 1\n\"john doe@example.com OK\n", `2: unbalanced '"' in key`},
		{"invalid utf-8", "ok 1\nkey val\xffue\n", `2: invalid UTF-8`},
		{"NUL", "ok 1\nkey va\x00lue\n", `2: NUL character`},
		{"error names first line of logical line", "a 1\nfoo\n # comment\n\n", `2: missing value for key "foo" (expected format: key whitespace value)`},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, "t"+string(rune('a'+i)), tc.content)
			_, err := Open("texthash:"+p, Options{})
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if got, want := err.Error(), p+":"+tc.want; got != want {
				t.Errorf("error\n got %q\nwant %q", got, want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != p {
				t.Errorf("error %v is not a *ParseError for %s", err, p)
			}
		})
	}
}

func TestTexthashCRLFAndFIFO(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "crlf", "a first\r\n\tsecond\r\n# c\r\nb x\r\n")
	tbl, err := Open("hash:"+p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, tbl, []lookupCase{{"a", "first\tsecond", true}, {"b", "x", true}})

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	tbl, err = Open("hash:"+fifo, Options{}) // must not block
	if err == nil || tbl != nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: Open = %v, %v", tbl, err)
	}
}

func TestTexthashMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Open("hash:"+filepath.Join(dir, "nope"), Options{})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
	// Only the postmap output exists: say what we read instead.
	writeFile(t, dir, "virtual.db", "binary")
	_, err = Open("hash:"+filepath.Join(dir, "virtual"), Options{})
	if err == nil || !strings.Contains(err.Error(), "reads the postmap source text") {
		t.Fatalf("err = %v, want hint about the source file", err)
	}
	_, err = Open("hash:"+dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: err = %v, want not a regular file", err)
	}
}

func TestInline(t *testing.T) {
	tbl, err := Open(`inline:{ a=1, B=two ,{ c = text with spaces, commas }, {"x y"=quoted} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := SpecOf(tbl); got != `inline:{ a=1, B=two ,{ c = text with spaces, commas }, {"x y"=quoted} }` {
		t.Errorf("Spec = %q", got)
	}
	checkLookups(t, tbl, []lookupCase{
		{"a", "1", true},
		{"A", "1", true},
		{"b", "two", true},
		{"c", "text with spaces, commas", true},
		{`"x y"`, "quoted", true},
		{"d", "", false},
	})
	for _, spec := range []string{
		"inline:{}",
		"inline:{ }",
		"inline:{a}",
		"inline:{a=1",
		"inline:a=1",
		"inline:{a=1}x",
		"inline:{ {a=1 }",
		"inline:{ {a=1} x}",
		"inline:{a=1, A=2}",
		"inline:{ a = 1 }", // spaces around = need { a = 1 }
		"inline:{=1}",
		"inline:{ a=1, e=}", // Postfix allows an empty value, then warns at lookup
		`inline:{"a=1}`,
	} {
		if _, err := Open(spec, Options{}); err == nil {
			t.Errorf("Open(%q) succeeded, want error", spec)
		} else if !strings.HasPrefix(err.Error(), "table "+spec+": ") {
			t.Errorf("Open(%q) error %q does not name the table", spec, err)
		}
	}
}

func TestStaticAndFail(t *testing.T) {
	ctx := context.Background()
	for spec, want := range map[string]string{
		"static:OK":                     "OK",
		"static:{ text with spaces }":   "text with spaces",
		"static:{relay:[10.0.0.1]:25}":  "relay:[10.0.0.1]:25",
		"static:lmtp:unix:/run/lmtp:24": "lmtp:unix:/run/lmtp:24",
	} {
		tbl, err := Open(spec, Options{})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if v, ok, err := tbl.Lookup(ctx, "anything"); v != want || !ok || err != nil {
			t.Errorf("%s: Lookup = %q, %v, %v; want %q", spec, v, ok, err, want)
		}
		if SpecOf(tbl) != spec {
			t.Errorf("Spec = %q, want %q", SpecOf(tbl), spec)
		}
		if v, _, _ := LookupPartial(ctx, tbl, "example.com"); v != want {
			t.Errorf("%s: static is a fixed table, LookupPartial = %q", spec, v)
		}
	}
	for _, spec := range []string{"static:{x", "static:{x}y", "static:{ }"} {
		if _, err := Open(spec, Options{}); err == nil {
			t.Errorf("Open(%q) succeeded, want error", spec)
		}
	}
	tbl, err := Open("fail:ldap-down", Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok, err := tbl.Lookup(ctx, "x")
	if !errors.Is(err, ErrFail) || ok || v != "" {
		t.Errorf("fail: Lookup = %q, %v, %v; want ErrFail", v, ok, err)
	}
	if !strings.Contains(err.Error(), "fail:ldap-down") {
		t.Errorf("fail: error %q does not name the table", err)
	}
}

type fakeTable struct {
	spec string
	m    map[string]string
	err  error
	keys []string
}

func (f *fakeTable) Lookup(_ context.Context, key string) (string, bool, error) {
	f.keys = append(f.keys, key)
	if f.err != nil {
		return "", false, f.err
	}
	v, ok := f.m[key]
	return v, ok, nil
}

func (f *fakeTable) Spec() string { return f.spec }

func TestOpen(t *testing.T) {
	_, err := Open("xyz:/path", Options{})
	want := `unsupported table type "xyz" in "xyz:/path" (supported: btree, cdb, cidr, dbm, fail, hash, inline, lmdb, pcre, proxy, regexp, sdbm, static, texthash)`
	if err == nil || err.Error() != want {
		t.Errorf("unknown type:\n got %v\nwant %s", err, want)
	}
	for spec, want := range map[string]string{
		"/etc/postfix/access": `table "/etc/postfix/access": expecting "type:name" form`,
		":x":                  `table ":x": expecting "type:name" form`,
		"hash:":               `table "hash:": missing name after "hash:"`,
	} {
		if _, err := Open(spec, Options{}); err == nil || err.Error() != want {
			t.Errorf("Open(%q) error %v, want %s", spec, err, want)
		}
	}

	opened := ""
	opts := Options{Openers: map[string]func(string, Options) (Table, error){
		"ldap": func(name string, _ Options) (Table, error) {
			opened = name
			return &fakeTable{spec: "ldap:" + name, m: map[string]string{"k": "v"}}, nil
		},
		"broken": func(string, Options) (Table, error) { return nil, errors.New("cannot connect") },
	}}
	tbl, err := Open(" proxy:ldap:/etc/postfix/ldap.cf ", opts)
	if err != nil {
		t.Fatal(err)
	}
	if opened != "/etc/postfix/ldap.cf" || SpecOf(tbl) != "ldap:/etc/postfix/ldap.cf" {
		t.Errorf("custom opener: opened %q, spec %q", opened, SpecOf(tbl))
	}
	if _, err := Open("broken:x", opts); err == nil || err.Error() != "table broken:x: cannot connect" {
		t.Errorf("opener error = %v", err)
	}
	_, err = Open("xyz:/p", opts)
	if err == nil || !strings.Contains(err.Error(), "broken, btree") || !strings.Contains(err.Error(), "ldap, lmdb") {
		t.Errorf("supported list should include custom types: %v", err)
	}
	bad := Options{Openers: map[string]func(string, Options) (Table, error){
		"hash": func(string, Options) (Table, error) { return nil, nil },
	}}
	if _, err := Open("static:x", bad); err == nil || !strings.Contains(err.Error(), `must not replace built-in type "hash"`) {
		t.Errorf("built-in override: err = %v", err)
	}
	if got := SpecOf(struct{ Table }{}); got != "struct { table.Table }" {
		t.Errorf("SpecOf without Spec method = %q", got)
	}
}

func TestMulti(t *testing.T) {
	ctx := context.Background()
	a := &fakeTable{spec: "a:1", m: map[string]string{"k1": "a1"}}
	broken := &fakeTable{spec: "b:2", err: errors.New("timeout")}
	c := &fakeTable{spec: "c:3", m: map[string]string{"k1": "c1", "k2": "c2"}}

	m := Multi{a, c}
	checkLookups(t, m, []lookupCase{{"k1", "a1", true}, {"k2", "c2", true}, {"k3", "", false}})

	// An error from an earlier table is returned; later tables are not asked.
	c.keys = nil
	m = Multi{a, broken, c}
	if v, ok, err := m.Lookup(ctx, "k2"); err == nil || ok || v != "" {
		t.Errorf("Lookup with failing member = %q, %v, %v; want error", v, ok, err)
	}
	if len(c.keys) != 0 {
		t.Errorf("table after the failing one was asked: %v", c.keys)
	}
	// ... but a match before the failing table wins.
	if v, ok, err := m.Lookup(ctx, "k1"); v != "a1" || !ok || err != nil {
		t.Errorf("Lookup(k1) = %q, %v, %v", v, ok, err)
	}
	if got := m.Spec(); got != "a:1, b:2, c:3" {
		t.Errorf("Spec = %q", got)
	}
	if v, ok, err := (Multi{}).Lookup(ctx, "k1"); ok || err != nil || v != "" {
		t.Error("empty Multi found something")
	}
}

func TestPatternAndPartial(t *testing.T) {
	ctx := context.Background()
	re, err := Open(`regexp:{ {/example/ RE} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cidr, err := Open(`cidr:{ {10.0.0.0/8 NET} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fixed := &fakeTable{spec: "f:x", m: map[string]string{"example.com": "FIXED"}}
	if !IsPattern(re) || !IsPattern(cidr) || IsPattern(fixed) {
		t.Fatalf("IsPattern: regexp %v cidr %v fixed %v", IsPattern(re), IsPattern(cidr), IsPattern(fixed))
	}
	if !IsPattern(Multi{re, cidr}) || IsPattern(Multi{re, fixed}) || IsPattern(Multi{}) {
		t.Error("Multi.IsPattern wrong")
	}
	// A partial key never reaches a pattern table, alone or in a Multi.
	if _, ok, _ := LookupPartial(ctx, re, "example.com"); ok {
		t.Error("LookupPartial queried a regexp table")
	}
	if v, ok, _ := LookupPartial(ctx, Multi{re, fixed}, "example.com"); v != "FIXED" || !ok {
		t.Errorf("LookupPartial(Multi) = %q, %v; want FIXED from the fixed table", v, ok)
	}
	if v, _, _ := (Multi{re, fixed}).Lookup(ctx, "example.com"); v != "RE" {
		t.Errorf("full-key Multi lookup = %q, want RE", v)
	}
	if v, _, _ := LookupPartial(ctx, Multi{Multi{re}, fixed}, "example.com"); v != "FIXED" {
		t.Errorf("nested Multi partial = %q", v)
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,\n\t", nil},
		{"a, b c,d", []string{"a", "b", "c", "d"}},
		{"hash:/a,regexp:/b\n  cidr:/c", []string{"hash:/a", "regexp:/b", "cidr:/c"}},
		{"inline:{ a=b, c=d }, hash:/x", []string{"inline:{ a=b, c=d }", "hash:/x"}},
		{"inline:{ a=1, { b = x, y } }  static:{ t s }", []string{"inline:{ a=1, { b = x, y } }", "static:{ t s }"}},
		{"inline:{ a=1, b=2", []string{"inline:{ a=1, b=2"}}, // unbalanced: rest of input
		{"a}b c", []string{"a}b", "c"}},
		{"!example.com,.example.net", []string{"!example.com", ".example.net"}},
	}
	for _, tc := range tests {
		got := SplitList(tc.in)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("SplitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
