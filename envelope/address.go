package envelope

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Address is an RFC 5321 mailbox: Local "@" Domain. The zero Address is the
// null reverse-path "<>" (RFC 5321 §4.5.5), used only as a sender.
//
// Local is kept as received, without quoting (the go-smtp parser removes the
// quotes of a Quoted-string); String re-quotes it when needed. Domain is
// lower-cased and has no trailing dot; an address literal keeps its brackets
// ("[192.0.2.1]", "[IPv6:2001:db8::1]").
type Address struct {
	Local  string
	Domain string
}

// Limits from RFC 5321 §4.5.3.1.
const (
	MaxLocalPart = 64
	MaxDomain    = 255
	MaxPath      = 256
)

// Errors returned by ParseAddress; each maps to 501 5.1.3 (or 553 5.1.3).
var (
	ErrNoDomain     = errors.New("address has no domain part")
	ErrEmptyLocal   = errors.New("address has an empty local part")
	ErrBadDomain    = errors.New("malformed domain")
	ErrBadLocal     = errors.New("malformed local part")
	ErrTooLong      = errors.New("address too long")
	ErrNonASCII     = errors.New("non-ASCII address without SMTPUTF8")
	ErrSourceRoute  = errors.New("source routes are not allowed")
	ErrControlChars = errors.New("control characters in address")
)

// IsNull reports whether a is the null reverse-path <>.
func (a Address) IsNull() bool { return a.Local == "" && a.Domain == "" }

// String returns the address in RFC 5321 form, without angle brackets. The
// local part is quoted when it is not a valid Dot-string (RFC 5321 §4.1.2).
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	return QuoteLocal(a.Local) + "@" + a.Domain
}

// Bracketed returns "<" + a.String() + ">", the form used in replies and logs.
func (a Address) Bracketed() string { return "<" + a.String() + ">" }

// Key is the form used for table lookups: local part and domain in lower case,
// local part unquoted, as Postfix looks up "user@domain" keys.
func (a Address) Key() string {
	if a.IsNull() {
		return ""
	}
	return strings.ToLower(a.Local) + "@" + a.Domain
}

// IsASCII reports whether the address needs no SMTPUTF8 (RFC 6531).
func (a Address) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

// IsLiteral reports whether the domain is an address literal like [192.0.2.1].
func (a Address) IsLiteral() bool { return strings.HasPrefix(a.Domain, "[") }

// ParseAddress parses a mailbox as handed over by the SMTP parser (quotes
// already removed from the local part) or as written in a table ("user@domain",
// optionally inside angle brackets). The domain is split at the last "@", so a
// quoted local part containing "@" stays in the local part. The empty string
// and "<>" give the null address.
//
// utf8 allows non-ASCII local parts and domains (RFC 6531 SMTPUTF8).
func ParseAddress(s string, utf8ok bool) (Address, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return Address{}, nil
	}
	if strings.HasPrefix(s, "@") {
		// A-d-l source route, RFC 5321 §4.1.2 and Appendix C: go-smtp strips
		// it; a table or the raw form may still carry it.
		return Address{}, ErrSourceRoute
	}
	if len(s) > MaxPath {
		return Address{}, ErrTooLong
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Address{}, ErrControlChars
		}
	}
	if !utf8.ValidString(s) {
		return Address{}, ErrBadLocal
	}
	if !utf8ok && !isASCII(s) {
		return Address{}, ErrNonASCII
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, ErrNoDomain
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return Address{}, ErrEmptyLocal
	}
	if len(local) > MaxLocalPart {
		return Address{}, ErrTooLong
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Address{}, err
	}
	return Address{Local: local, Domain: d}, nil
}

// MustParse is ParseAddress for constants in tests and built-in configs.
func MustParse(s string) Address {
	a, err := ParseAddress(s, true)
	if err != nil {
		panic(fmt.Sprintf("envelope.MustParse(%q): %v", s, err))
	}
	return a
}

// NormalizeDomain lower-cases a domain and checks its syntax (RFC 5321
// §4.1.2 Domain / address-literal). One trailing dot is removed, as Postfix
// does ("example.com." is example.com).
func NormalizeDomain(d string) (string, error) {
	if strings.HasPrefix(d, "[") {
		return normalizeLiteral(d)
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", ErrNoDomain
	}
	if len(d) > MaxDomain {
		return "", ErrTooLong
	}
	d = strings.ToLower(d)
	for _, label := range strings.Split(d, ".") {
		if !validLabel(label) {
			return "", ErrBadDomain
		}
	}
	return d, nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
		case r == '_': // seen in the wild in host names; Postfix accepts it
		case r >= 0x80: // U-label (RFC 6531)
		default:
			return false
		}
	}
	return true
}

// normalizeLiteral checks an address literal, RFC 5321 §4.1.3.
func normalizeLiteral(d string) (string, error) {
	if !strings.HasSuffix(d, "]") {
		return "", ErrBadDomain
	}
	in := d[1 : len(d)-1]
	if v6, ok := cutPrefixFold(in, "IPv6:"); ok {
		ip, err := netip.ParseAddr(v6)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", ErrBadDomain
		}
		return "[IPv6:" + ip.String() + "]", nil
	}
	ip, err := netip.ParseAddr(in)
	if err != nil || !ip.Is4() {
		return "", ErrBadDomain
	}
	return "[" + ip.String() + "]", nil
}

// LiteralAddr returns the IP address of an address-literal domain.
func LiteralAddr(domain string) (netip.Addr, bool) {
	if !strings.HasPrefix(domain, "[") || !strings.HasSuffix(domain, "]") {
		return netip.Addr{}, false
	}
	in := domain[1 : len(domain)-1]
	if v6, ok := cutPrefixFold(in, "IPv6:"); ok {
		in = v6
	}
	ip, err := netip.ParseAddr(in)
	return ip, err == nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// atext is RFC 5322 §3.2.3 atext (plus UTF-8, RFC 6531).
func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case r >= 0x80:
		return true
	}
	return strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r)
}

// QuoteLocal returns the local part as a Dot-string when it is one, and as a
// Quoted-string otherwise (RFC 5321 §4.1.2: "a Dot-string SHOULD be used").
func QuoteLocal(l string) string {
	if isDotString(l) {
		return l
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range l {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func isDotString(l string) bool {
	if l == "" || l[0] == '.' || l[len(l)-1] == '.' || strings.Contains(l, "..") {
		return false
	}
	for _, r := range l {
		if r != '.' && !isAtext(r) {
			return false
		}
	}
	return true
}

// SplitExtension splits a local part at the first recipient delimiter
// (Postfix recipient_delimiter): "user+tag" -> "user", "+tag". delims lists
// the delimiter characters; an empty delims or no delimiter found returns l.
// A local part that starts with the delimiter is not split (Postfix does the
// same, so "+foo" stays whole).
func SplitExtension(l, delims string) (base, ext string) {
	if delims == "" {
		return l, ""
	}
	i := strings.IndexAny(l, delims)
	if i <= 0 {
		return l, ""
	}
	return l[:i], l[i:]
}
