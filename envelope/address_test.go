package envelope

import (
	"errors"
	"testing"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in     string
		utf8   bool
		local  string
		domain string
		str    string
		err    error
	}{
		{in: "User@Example.COM", local: "User", domain: "example.com", str: "User@example.com"},
		{in: "<a@b.example>", local: "a", domain: "b.example", str: "a@b.example"},
		{in: "a@example.com.", local: "a", domain: "example.com", str: "a@example.com"},
		{in: "", str: ""},
		{in: "<>", str: ""},
		// go-smtp hands over quoted local parts unquoted; we split at the
		// last @ and quote again.
		{in: "john doe@example.com", local: "john doe", domain: "example.com", str: `"john doe"@example.com`},
		{in: "user@remote@example.com", local: "user@remote", domain: "example.com", str: `"user@remote"@example.com`},
		{in: `a"b\c@example.com`, local: `a"b\c`, domain: "example.com", str: `"a\"b\\c"@example.com`},
		{in: "user%remote@example.com", local: "user%remote", domain: "example.com", str: "user%remote@example.com"},
		{in: "a@[192.0.2.1]", local: "a", domain: "[192.0.2.1]", str: "a@[192.0.2.1]"},
		{in: "a@[IPv6:2001:DB8::1]", local: "a", domain: "[IPv6:2001:db8::1]", str: "a@[IPv6:2001:db8::1]"},
		{in: "ü@bücher.example", utf8: true, local: "ü", domain: "bücher.example", str: "ü@bücher.example"},
		{in: "ü@example.com", err: ErrNonASCII},
		{in: "postmaster", err: ErrNoDomain},
		{in: "@example.com", err: ErrSourceRoute},
		{in: "a@", err: ErrNoDomain},
		{in: "a@example..com", err: ErrBadDomain},
		{in: "a@-example.com", err: ErrBadDomain},
		{in: "a@exa mple.com", err: ErrBadDomain},
		{in: "a@[300.1.1.1]", err: ErrBadDomain},
		{in: "a@[IPv6:192.0.2.1]", err: ErrBadDomain},
		{in: "a\x00b@example.com", err: ErrControlChars},
		{in: "a\r\nb@example.com", err: ErrControlChars},
		{in: string(make([]byte, 65)) + "@x.com", err: ErrControlChars},
	} {
		a, err := ParseAddress(tc.in, tc.utf8)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseAddress(%q) err = %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", tc.in, err)
			continue
		}
		if a.Local != tc.local || a.Domain != tc.domain || a.String() != tc.str {
			t.Errorf("ParseAddress(%q) = %q/%q %q, want %q/%q %q", tc.in, a.Local, a.Domain, a.String(), tc.local, tc.domain, tc.str)
		}
	}
}

func TestLocalPartTooLong(t *testing.T) {
	l := make([]byte, 65)
	for i := range l {
		l[i] = 'a'
	}
	if _, err := ParseAddress(string(l)+"@example.com", false); !errors.Is(err, ErrTooLong) {
		t.Fatalf("err = %v", err)
	}
}

func TestSplitExtension(t *testing.T) {
	for _, tc := range []struct{ l, d, base, ext string }{
		{"user+tag", "+", "user", "+tag"},
		{"user+a+b", "+", "user", "+a+b"},
		{"user-tag", "+-", "user", "-tag"},
		{"+tag", "+", "+tag", ""},
		{"user", "+", "user", ""},
		{"user+tag", "", "user+tag", ""},
	} {
		b, e := SplitExtension(tc.l, tc.d)
		if b != tc.base || e != tc.ext {
			t.Errorf("SplitExtension(%q,%q) = %q,%q", tc.l, tc.d, b, e)
		}
	}
}

func TestReply(t *testing.T) {
	// The enhanced class always follows the code.
	if r := NewReply(451, Enhanced{5, 7, 1}, "x"); r.Enhanced != (Enhanced{4, 7, 1}) {
		t.Errorf("class not derived: %v", r.Enhanced)
	}
	for _, tc := range []struct {
		in   string
		def  int
		want string
		ok   bool
	}{
		{"550 5.1.1 User unknown", 0, "550 5.1.1 User unknown", true},
		{"5.7.1 go away", 554, "554 5.7.1 go away", true},
		{"4.2.2 mailbox full", 554, "450 4.2.2 mailbox full", true},
		{"450 text", 0, "450 4.0.0 text", true},
		{"450 5.1.1 mismatch", 0, "", false},
		{"hello", 550, "", false},
		{"999 x", 0, "", false},
	} {
		r, ok := ParseReply(tc.in, tc.def)
		if ok != tc.ok || (ok && r.String() != tc.want) {
			t.Errorf("ParseReply(%q) = %q %v, want %q %v", tc.in, r.String(), ok, tc.want, tc.ok)
		}
	}
	if r := ReplyOf(errors.New("internal /path detail")); r != ReplyInternal {
		t.Errorf("ReplyOf(plain) = %v", r)
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", "john doe@x.y", "a@[1.2.3.4]", "ü@ü.de", "@a:b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s, true)
		if err != nil || a.IsNull() {
			return
		}
		// What we print parses back to the same address.
		b, err := ParseAddress(a.String(), true)
		if err != nil {
			return // quoted forms are not re-parsed by this parser
		}
		if b.Domain != a.Domain {
			t.Fatalf("%q -> %q -> domain %q", s, a.String(), b.Domain)
		}
	})
}
