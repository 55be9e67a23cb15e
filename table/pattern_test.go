package table

import (
	"errors"
	"strings"
	"testing"
)

func TestRegexp(t *testing.T) {
	tbl, err := Open("regexp:testdata/checks.regexp", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, tbl, []lookupCase{
		{"postmaster@example.com", "OK", true},
		{"POSTMASTER@example.com", "OK", true}, // case-insensitive by default
		{"list-outgoing@example.com", "550 Use list@example.com instead", true},
		// /p1/!/p2/: matches p1 but also p2, so the rule is skipped.
		{"owner-list-outgoing@example.com", "NOT_EXAMPLE", true},
		// if /^user-/ ... endif with a nested if !/.../
		{"user-vip-gold@host.example", "VIP gold vip costs $5", true},
		{"user-joe@ext.example", "EXTERNAL", true},
		{"user-joe@internal.example", "INTERNAL", true},
		{"CaseSensitive.example", "CASE", true},
		{"casesensitive.example", "", false}, // flag i made it case-sensitive
		{"x-tilde/path.example", "TILDE $", true},
		{"#comment#.example", "", false}, // "#comment# ..." is a comment line
		{"a/b.example", "SLASH", true},
		{"first\nmulti\nlast.example", "MULTILINE", true},
		{"multi.example", "", false},
		{"xyz", "GROUP [y]", true},
		{"xz", "GROUP []", true}, // unmatched group substitutes as empty
		{"longer.example", "DUO continued result", true},
		{"other.org", "NOT_EXAMPLE", true},
		{"other.example", "", false},
	})
}

func TestRegexpLeftmostLongest(t *testing.T) {
	// POSIX regexp: prefers the longest match of the alternation.
	re, err := Open(`regexp:{ {/^(a|ab)(c|bcd)?/ [$1][$2]} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pcre, err := Open(`pcre:{ {/^(a|ab)(c|bcd)?/ [$1][$2]} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, re, []lookupCase{{"abcd", "[a][bcd]", true}, {"abc", "[ab][c]", true}})
	// PCRE: leftmost-first; the first alternative wins.
	checkLookups(t, pcre, []lookupCase{{"abcd", "[a][bcd]", true}, {"abc", "[a][]", true}})
}

func TestPCRE(t *testing.T) {
	tbl, err := Open("pcre:testdata/checks.pcre", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !IsPattern(tbl) || SpecOf(tbl) != "pcre:testdata/checks.pcre" {
		t.Errorf("IsPattern %v Spec %q", IsPattern(tbl), SpecOf(tbl))
	}
	checkLookups(t, tbl, []lookupCase{
		{"Alice@Wonder.example", "USER Wonder", true},
		{"dot\nall.example", "", false}, // $ is end of text; the key continues
		{"dot\nall", "DOTALL", true},    // s is on by default in pcre:
		{"nodot\nall", "NOT_EXAMPLE", true},
		{"nodotXall", "NODOTALL", true},
		{"spaced word", "EXTENDED", true}, // x: whitespace and # comment ignored
		{"begin-here", "ANCHORED", true},
		{"here-begin", "NOT_EXAMPLE", true},
		{"Header: one\n\ttwo Fold", "FOLDED", true},
		{"aaa", "UNGREEDY aaa|", true},
		{"blk-12", "BLOCK 12", true},
		{"blk-x", "BLOCK-FALLTHROUGH", true},
		{"z.example", "", false},
	})
}

func TestPatternTableErrors(t *testing.T) {
	tests := []struct {
		name, typ, content, want string // want follows "PATH:"
	}{
		{"no result", "regexp", "/a/ A\n/b/\n", `2: missing result after pattern (Postfix would use an empty string)`},
		{"no result pcre", "pcre", "/b/   \n", `1: missing result after pattern (Postfix would use an empty string)`},
		{"no closing delimiter", "regexp", "/a/ A\n\n/abc X\n", `3: no closing regexp delimiter '/'`},
		{"escaped delimiter only", "regexp", `/abc\/ X` + "\n", `1: no closing regexp delimiter '/'`},
		{"no regexp", "regexp", "! \n", `1: no regexp`},
		{"alnum delimiter", "regexp", "!abca X\n", `1: bad regexp delimiter 'a': use a character such as '/' that is not alphanumeric, whitespace or backslash`},
		{"unknown flag", "regexp", "/a/q X\n", `1: unknown regexp option 'q'`},
		{"pcre flag in regexp", "regexp", "/a/s X\n", `1: unknown regexp option 's'`},
		{"basic syntax", "regexp", "/a/x X\n", `1: flag "x" (POSIX basic regular expression syntax) is not supported`},
		{"second pattern in pcre", "pcre", "/a/!/b/ X\n", `1: unknown regexp option '!'`},
		{"bad syntax", "regexp", "/a(b/ X\n", "1: bad regexp \"a(b\": missing closing ): `a(b`"},
		{"backreference", "pcre", `/(a)\1/ X` + "\n", "1: bad regexp \"(a)\\\\1\": invalid escape sequence: `\\1` (RE2 syntax: backreferences, lookahead and lookbehind are not supported)"},
		{"lookahead", "pcre", "/^(?!owner-)x/ X\n", "1: bad regexp \"^(?!owner-)x\": invalid or unsupported Perl syntax: `(?!` (RE2 syntax: backreferences, lookahead and lookbehind are not supported)"},
		{"lookbehind", "pcre", "/(?<=a)b/ X\n", "1: bad regexp \"(?<=a)b\": invalid named capture: `(?<=a)b` (RE2 syntax: backreferences, lookahead and lookbehind are not supported)"},
		{"bad second pattern", "regexp", "/a/!/b(/ X\n", "1: bad regexp \"b(\": missing closing ): `b(`"},
		{"substitution in negated", "regexp", "!/(a)/ X$1\n", `1: $number found in negative match result "X$1"`},
		{"out of range", "regexp", "/(a)/ $2\n", `1: out of range replacement index "2": the pattern has 1 group(s)`},
		{"zero index", "pcre", "/(a)/ $0\n", `1: out of range replacement index "0"`},
		{"non-numeric", "regexp", "/(a)/ $1x\n", `1: non-numeric replacement index "1x" (write ${1} when a digit is followed by text)`},
		{"empty macro", "regexp", "/(a)/ costs $ 5\n", `1: empty macro name in "costs $ 5" (write $$ for a literal $)`},
		{"truncated macro", "regexp", "/(a)/ ${1\n", `1: truncated macro reference in "${1"`},
		{"endif without if", "regexp", "/a/ A\nendif\n", `2: "endif" without matching "if"`},
		{"if without endif", "pcre", "if /a/\nif /b/\n/c/ C\nendif\n", `1: "if" without matching "endif"`},
		{"if with result", "regexp", "if /a/ A\nendif\n", `1: extra text after "if" pattern: "A"; do not indent lines between if and endif (a line that starts with whitespace continues the previous line)`},
		{"indented rule inside if", "regexp", "if /a/\n  /b/ B\nendif\n", `1: extra text after "if" pattern: "/b/ B"; do not indent lines between if and endif (a line that starts with whitespace continues the previous line)`},
		{"endif with text", "regexp", "if /a/\nendif now\n", `2: extra text after "endif": "now"`},
		{"unrecognized", "regexp", "/a/ A\nREJECT this\n", `2: unrecognized line: expected "/pattern/ result", "if /pattern/" or "endif"`},
		{"ifx is not if", "pcre", "ifx /a/\n", `1: unrecognized line: expected "/pattern/ result", "if /pattern/" or "endif"`},
		{"leading whitespace", "regexp", " /a/ A\n", `1: line starts with whitespace but there is no preceding line to continue (a line that starts with whitespace continues the previous line)`},

		{"cidr no result", "cidr", "10.0.0.0/8 A\n192.0.2.0/24\n", `2: no lookup result for "192.0.2.0/24"`},
		{"cidr host bits", "cidr", "192.0.2.1/24 REJECT\n", `1: non-null host address bits in "192.0.2.1/24", perhaps you should use "192.0.2.0/24" instead`},
		{"cidr host bits v6", "cidr", "[2001:db8::1]/32 REJECT\n", `1: non-null host address bits in "[2001:db8::1]/32", perhaps you should use "2001:db8::/32" instead`},
		{"cidr bad mask", "cidr", "10.0.0.0/33 X\n", `1: bad net/mask pattern: "10.0.0.0/33"`},
		{"cidr mask sign", "cidr", "10.0.0.0/+8 X\n", `1: bad net/mask pattern: "10.0.0.0/+8"`},
		{"cidr empty mask", "cidr", "10.0.0.0/ X\n", `1: bad net/mask pattern: "10.0.0.0/"`},
		{"cidr leading zero", "cidr", "010.0.0.1 X\n", `1: bad address pattern: "010.0.0.1"`},
		{"cidr hostname", "cidr", "example.com X\n", `1: bad address pattern: "example.com"`},
		{"cidr zone", "cidr", "fe80::1%eth0 X\n", `1: bad address pattern: "fe80::1%eth0"`},
		{"cidr missing bracket", "cidr", "[2001:db8::/32 X\n", `1: missing ']' character after "[2001:db8::/32"`},
		{"cidr garbage after bracket", "cidr", "[2001:db8::]x X\n", `1: garbage after "[2001:db8::]"`},
		{"cidr negation only", "cidr", "! X\n", `1: no address pattern`},
		{"cidr if without endif", "cidr", "if 10.0.0.0/8\n10.1.0.0/16 A\n", `1: "if" without matching "endif"`},
		{"cidr endif without if", "cidr", "10.0.0.0/8 A\nendif\n", `2: "endif" without matching "if"`},
		{"cidr if with result", "cidr", "if 10.0.0.0/8 OK\nendif\n", `1: extra text after "if" pattern: "OK"; do not indent lines between if and endif (a line that starts with whitespace continues the previous line)`},
		{"cidr if bad", "cidr", "if 10.0.0.1/8\nendif\n", `1: non-null host address bits in "10.0.0.1/8", perhaps you should use "10.0.0.0/8" instead`},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, "t"+strings.Repeat("x", i), tc.content)
			_, err := Open(tc.typ+":"+p, Options{})
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if got, want := err.Error(), p+":"+tc.want; got != want {
				t.Errorf("error\n got %s\nwant %s", got, want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("error %v is not a *ParseError", err)
			}
		})
	}
}

func TestCIDR(t *testing.T) {
	tbl, err := Open("cidr:testdata/clients.cidr", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, tbl, []lookupCase{
		{"192.0.2.1", "OK host", true},
		{"192.0.2.200", "REJECT net", true},
		{"198.51.100.7", "BRACKET1", true},
		{"203.0.113.1", "BRACKET2", true},
		{"203.0.113.200", "NOT-TEN-V4", true},
		{"2001:db8::1", "V6HOST", true},
		{"2001:DB8:0:0:0:0:0:1", "V6HOST", true}, // compared in binary
		{"2001:db8:ffff::1", "V6NET", true},
		{"2001:db9::1", "ANY-V6", true}, // "!10.0.0.0/8" does not apply to IPv6
		{"fe80::1%eth0", "ANY-V6", true},
		{"10.1.5.5", "TEN-ONE-OTHER", true},
		{"10.1.2.3", "TEN-ONE-TWO-THREE", true},
		{"10.1.2.4", "ANY-V4", true},
		{"10.2.0.1", "ANY-V4", true},
		{"::ffff:192.0.2.1", "ANY-V6", true}, // IPv4-mapped stays IPv6, as in Postfix
		{"[192.0.2.1]", "", false},
		{"not-an-address", "", false},
		{"", "", false},
	})
}

func TestInlinePatternTables(t *testing.T) {
	re, err := Open(`regexp:{ {/^a(.)/ A$1}, {if /^q/}, {/^qq/ QQ}, {endif}, { !/^z/ NOTZ } }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, re, []lookupCase{{"abc", "Ab", true}, {"qq", "QQ", true}, {"q", "NOTZ", true}, {"zz", "", false}})
	if err := re.(Reloader).Reload(); err != nil {
		t.Errorf("Reload of an inline table: %v", err)
	}
	c, err := Open(`cidr:{ {10.0.0.0/8 TEN}, {[::1] LOCAL} }`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkLookups(t, c, []lookupCase{{"10.9.9.9", "TEN", true}, {"::1", "LOCAL", true}, {"11.0.0.1", "", false}})
	if err := c.(Reloader).Reload(); err != nil {
		t.Errorf("Reload of an inline table: %v", err)
	}

	for spec, want := range map[string]string{
		`pcre:{ {/a/ A}, {/b(/ B} }`:             "inline pcre:{...}:2: bad regexp \"b(\": missing closing ): `b(`",
		`cidr:{ {10.0.0.0/8 A}, 10.1.0.0/16 B }`: `inline cidr:{...}:2: no '{' at start of text in "10.1.0.0/16"; each rule must be enclosed in {}`,
		`cidr:{ {if 10.0.0.0/8} }`:               `inline cidr:{...}:1: "if" without matching "endif"`,
		`regexp:{ {} }`:                          `inline regexp:{...}:1: empty rule`,
		`regexp:{ }`:                             `table regexp:{ }: empty table`,
		`cidr:{ {10.0.0.0/8 A}`:                  `table cidr:{ {10.0.0.0/8 A}: bad syntax; need "cidr:{ {rule}, {rule}... }"`,
	} {
		if _, err := Open(spec, Options{}); err == nil || err.Error() != want {
			t.Errorf("Open(%s):\n got %v\nwant %s", spec, err, want)
		}
	}
}

func TestStripExtended(t *testing.T) {
	for in, want := range map[string]string{
		` a b `:               `ab`,
		`a\ b`:                `a\ b`,
		`a # comment`:         `a`,
		"a # c\n b":           `ab`,
		`[ #]x`:               `[ #]x`,
		`[] ]y`:               `[] ]y`,
		`[^] ]z`:              `[^] ]z`,
		`\# not a comment`:    `\#notacomment`,
		`( ?: x | y ) \[ a ]`: `(?:x|y)\[a]`,
	} {
		if got := stripExtended(in); got != want {
			t.Errorf("stripExtended(%q) = %q, want %q", in, got, want)
		}
	}
}
