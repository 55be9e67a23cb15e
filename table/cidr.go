package table

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// cidrRule is one cidr_table(5) rule.
type cidrRule struct {
	block
	prefix netip.Prefix
	neg    bool
	value  string
}

// matches implements cidr_match_execute(): a rule applies only to keys of
// its own address family, and then "!" inverts the containment test.
func (r *cidrRule) matches(a netip.Addr) bool {
	return r.prefix.Addr().BitLen() == a.BitLen() && r.prefix.Contains(a) != r.neg
}

// cidrTable implements cidr: tables.
type cidrTable struct {
	name   string
	inline bool
	rules  atomic.Pointer[[]cidrRule]
}

func openCIDR(name string) (*cidrTable, error) {
	t := &cidrTable{name: name, inline: strings.HasPrefix(name, "{")}
	if t.inline {
		rules, err := loadRules(t.Spec(), "cidr", name, true, parseCIDRRule, cidrBlock)
		if err != nil {
			return nil, err
		}
		t.rules.Store(&rules)
		return t, nil
	}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *cidrTable) Spec() string    { return "cidr:" + t.name }
func (t *cidrTable) IsPattern() bool { return true }

// Reload re-reads a file table; it is a no-op for the inline form.
func (t *cidrTable) Reload() error {
	if t.inline {
		return nil
	}
	rules, err := loadRules(t.Spec(), "cidr", t.name, false, parseCIDRRule, cidrBlock)
	if err != nil {
		return err
	}
	t.rules.Store(&rules)
	return nil
}

func cidrBlock(r *cidrRule) *block { return &r.block }

// Lookup matches the key, an IP address in text form, against the rules in
// order. A key that is not an IP address is not found, as in Postfix. An
// IPv4-mapped IPv6 key stays IPv6 (callers pass the unmapped form).
func (t *cidrTable) Lookup(_ context.Context, key string) (string, bool, error) {
	a, err := netip.ParseAddr(key)
	if err != nil {
		return "", false, nil
	}
	a = a.WithZone("")
	rules := *t.rules.Load()
	for i := 0; i < len(rules); i++ {
		r := &rules[i]
		switch r.op {
		case opMatch:
			if r.matches(a) {
				return r.value, true, nil
			}
		case opIf:
			if !r.matches(a) {
				i = r.endif
			}
		}
	}
	return "", false, nil
}

// parseCIDRRule parses "pattern result", "!pattern result", "if pattern",
// "if !pattern" or "endif" (cidr_table(5), if/endif and ! since Postfix 3.2).
func parseCIDRRule(rules *[]cidrRule, file string, line int, p string) error {
	errf := func(format string, args ...any) error { return parseErrorf(file, line, format, args...) }
	switch {
	case keyword(p, "if"):
		pat := trimSpace(p[2:])
		if i := strings.IndexFunc(pat, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }); i >= 0 {
			return errf("extra text after \"if\" pattern: %q; do not indent lines between if and endif (a line that starts with whitespace continues the previous line)", trimSpace(pat[i:]))
		}
		prefix, neg, err := parseNetPattern(pat)
		if err != nil {
			return errf("%v", err)
		}
		*rules = append(*rules, cidrRule{block: block{op: opIf, line: line}, prefix: prefix, neg: neg})
	case keyword(p, "endif"):
		if rest := trimSpace(p[5:]); rest != "" {
			return errf("extra text after \"endif\": %q", rest)
		}
		*rules = append(*rules, cidrRule{block: block{op: opEndif, line: line}})
	default:
		i := 0
		for i < len(p) && !isSpace(p[i]) {
			i++
		}
		pat, value := p[:i], trimSpace(p[i:])
		if value == "" {
			return errf("no lookup result for %q", pat)
		}
		prefix, neg, err := parseNetPattern(pat)
		if err != nil {
			return errf("%v", err)
		}
		*rules = append(*rules, cidrRule{block: block{op: opMatch, line: line}, prefix: prefix, neg: neg, value: value})
	}
	return nil
}

// parseNetPattern parses a Postfix address pattern as cidr_match_parse()
// does: leading "!"s toggle negation; "addr", "addr/len", "[addr]",
// "[addr]/len" or "[addr/len]"; host bits beyond the prefix must be zero.
func parseNetPattern(s string) (prefix netip.Prefix, neg bool, err error) {
	for strings.HasPrefix(s, "!") {
		neg = !neg
		s = s[1:]
	}
	if s == "" {
		return prefix, neg, fmt.Errorf("no address pattern")
	}
	orig := s
	if s[0] == '[' {
		inner, after, ok := strings.Cut(s[1:], "]")
		if !ok {
			return prefix, neg, fmt.Errorf("missing ']' character after %q", s)
		}
		if after != "" && after[0] != '/' {
			return prefix, neg, fmt.Errorf("garbage after \"[%s]\"", inner)
		}
		s = inner + after
	}
	addrText, bitsText, hasMask := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Zone() != "" {
		if hasMask {
			return prefix, neg, fmt.Errorf("bad net/mask pattern: %q", orig)
		}
		return prefix, neg, fmt.Errorf("bad address pattern: %q", orig)
	}
	if !hasMask {
		return netip.PrefixFrom(addr, addr.BitLen()), neg, nil
	}
	bits, err := strconv.Atoi(bitsText)
	if err != nil || bitsText == "" || strings.TrimLeft(bitsText, "0123456789") != "" || bits > addr.BitLen() {
		return prefix, neg, fmt.Errorf("bad net/mask pattern: %q", orig)
	}
	prefix = netip.PrefixFrom(addr, bits)
	if m := prefix.Masked(); m.Addr() != addr {
		return prefix, neg, fmt.Errorf("non-null host address bits in %q, perhaps you should use %q instead", orig, m.String())
	}
	return prefix, neg, nil
}
