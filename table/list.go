package table

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
)

// maxListDepth bounds /file/name items that name further files.
const maxListDepth = 8

// listItem is one expanded match list pattern.
type listItem struct {
	match bool         // false for a "!pattern"
	name  string       // DomainList literal, lower case
	net   netip.Prefix // NetList network
	table Table        // "type:table" pattern
}

// isTableItem reports whether a list item is "type:table", like Postfix
// MATCH_DICTIONARY(): it contains ':' and does not start with '['.
func isTableItem(s string) bool {
	return s != "" && s[0] != '[' && strings.Contains(s, ":")
}

// expandList walks list items as Postfix match_list_parse() does: leading
// "!"s toggle the match result; "/file/name" is replaced by the patterns in
// the file (lines starting with '#' are comments; "!/file/name" inverts
// every pattern in it); everything else goes to add. It reports whether a
// file was read.
func expandList(items []string, match bool, file string, line, depth int,
	add func(match bool, pat string) error) (usedFile bool, err error) {
	for i, item := range items {
		wrap := func(err error) error {
			if file != "" {
				return fmt.Errorf("%s:%d: %w", file, line, err)
			}
			return fmt.Errorf("match list item %q: %w", item, err)
		}
		if item[0] == '#' {
			if file != "" && i == 0 {
				return usedFile, nil // an indented comment line
			}
			return usedFile, wrap(errors.New("comment at end of line is not supported"))
		}
		m, pat := match, item
		for strings.HasPrefix(pat, "!") {
			m, pat = !m, pat[1:]
		}
		if pat == "" {
			return usedFile, wrap(errors.New("no pattern after '!'"))
		}
		if pat[0] != '/' {
			if err := add(m, pat); err != nil {
				return usedFile, wrap(err)
			}
			continue
		}
		if depth >= maxListDepth {
			return usedFile, wrap(fmt.Errorf("/file/name items nested more than %d deep", maxListDepth))
		}
		data, err := readFile(pat)
		if err != nil {
			return usedFile, wrap(err)
		}
		usedFile = true
		for n, text := range strings.Split(data, "\n") {
			if strings.HasPrefix(text, "#") {
				continue
			}
			if _, err := expandList(SplitList(text), m, pat, n+1, depth+1, add); err != nil {
				return usedFile, err
			}
		}
	}
	return usedFile, nil
}

// listBase holds what DomainList and NetList share: the items as
// configured, the compiled patterns, and the table Set.
type listBase struct {
	items []string
	set   *Set
	cur   atomic.Pointer[[]listItem]
	parse func(match bool, pat string) (listItem, error)
}

func (l *listBase) build() (usedFile bool, err error) {
	var out []listItem
	usedFile, err = expandList(l.items, true, "", 0, 0, func(match bool, pat string) error {
		it, err := l.parse(match, pat)
		if err != nil {
			return err
		}
		out = append(out, it)
		return nil
	})
	if err != nil {
		return usedFile, err
	}
	l.cur.Store(&out)
	return usedFile, nil
}

// reload re-reads the /file/name items; on error the old patterns stay.
func (l *listBase) reload() error {
	_, err := l.build()
	return err
}

func (l *listBase) init(items []string, set *Set) error {
	if set == nil {
		set = NewSet(Options{})
	}
	l.set = set
	for _, it := range items {
		l.items = append(l.items, SplitList(it)...)
	}
	usedFile, err := l.build()
	if err != nil {
		return err
	}
	if usedFile {
		set.addReloader(l)
	}
	return nil
}

func (l *listBase) openTable(pat string) (Table, error) {
	return l.set.Open(pat)
}

// DomainList is a Postfix domain match list (postconf(5) relay_domains):
// "example.com" matches that domain (and its subdomains when
// parentMatchesSub, Postfix parent_domain_matches_subdomains);
// ".example.com" matches subdomains; "type:table" matches when the domain,
// or a parent domain, is a key ("example.com" or ".example.com" style keys,
// per parentMatchesSub; pattern tables see the full domain only);
// "/file/name" holds more patterns; "!pattern" excludes. The first pattern
// that matches decides.
type DomainList struct {
	listBase
	parent bool
}

// NewDomainList compiles items (each may hold several patterns separated
// by commas or whitespace). Tables are opened through set (nil means a
// private Set); when items name files, set.Reload re-reads them.
func NewDomainList(items []string, set *Set, parentMatchesSub bool) (*DomainList, error) {
	l := &DomainList{parent: parentMatchesSub}
	l.parse = func(match bool, pat string) (listItem, error) {
		if isTableItem(pat) {
			t, err := l.openTable(pat)
			return listItem{match: match, table: t}, err
		}
		return listItem{match: match, name: strings.ToLower(pat)}, nil
	}
	if err := l.init(items, set); err != nil {
		return nil, err
	}
	return l, nil
}

// Match reports whether domain is in the list. A table error is returned
// as an error (a temporary failure), never as "no match".
func (l *DomainList) Match(ctx context.Context, domain string) (bool, error) {
	d := strings.ToLower(domain)
	for _, it := range *l.cur.Load() {
		if it.table == nil {
			if hostMatch(d, it.name, l.parent) {
				return it.match, nil
			}
			continue
		}
		hit, err := l.tableMatch(ctx, it.table, d)
		if err != nil {
			return false, fmt.Errorf("match list table %s: %w", SpecOf(it.table), err)
		}
		if hit {
			return it.match, nil
		}
	}
	return false, nil
}

// hostMatch implements the string part of Postfix match_hostname().
func hostMatch(name, pattern string, parent bool) bool {
	if name == pattern {
		return true
	}
	if strings.HasPrefix(pattern, ".") {
		return len(name) > len(pattern) && strings.HasSuffix(name, pattern)
	}
	return parent && strings.HasSuffix(name, "."+pattern)
}

// tableMatch implements the table part of Postfix match_hostname(): the
// name, then its parent domains "b.example.com", "example.com", "com"
// (parent) or ".b.example.com", ".example.com", ".com" (not parent).
func (l *DomainList) tableMatch(ctx context.Context, t Table, name string) (bool, error) {
	_, ok, err := t.Lookup(ctx, name)
	for entry := name; !ok && err == nil; {
		dot := strings.IndexByte(entry[min(1, len(entry)):], '.')
		if dot < 0 {
			break
		}
		entry = entry[dot+1:]
		if l.parent {
			entry = entry[1:]
		}
		if entry == "" {
			break
		}
		_, ok, err = LookupPartial(ctx, t, entry)
	}
	return ok, err
}

// NetList is a Postfix address match list (postconf(5) mynetworks):
// "192.0.2.1", "192.0.2.0/24", "[2001:db8::1]", "[2001:db8::]/32" (or
// without brackets), "type:table" (queried with the address, e.g. a cidr:
// table), "/file/name" and "!pattern". The first pattern that matches
// decides. Host names are not supported.
type NetList struct {
	listBase
}

// NewNetList compiles items like NewDomainList does.
func NewNetList(items []string, set *Set) (*NetList, error) {
	l := &NetList{}
	l.parse = func(match bool, pat string) (listItem, error) {
		p, _, err := parseNetPattern(pat)
		if err == nil {
			return listItem{match: match, net: p}, nil
		}
		if isTableItem(pat) && !looksLikeIPv6(pat) {
			t, err := l.openTable(pat)
			return listItem{match: match, table: t}, err
		}
		return listItem{}, err
	}
	if err := l.init(items, set); err != nil {
		return nil, err
	}
	return l, nil
}

// looksLikeIPv6 reports whether the part before the first ':' is empty or
// hexadecimal, so that a malformed IPv6 pattern is reported as such rather
// than as an unknown table type.
func looksLikeIPv6(s string) bool {
	typ, _, _ := strings.Cut(s, ":")
	return strings.Trim(strings.ToLower(typ), "0123456789abcdef") == ""
}

// Match reports whether ip is in the list. IPv4-mapped IPv6 addresses are
// matched as IPv4, as Postfix does. A table error is returned as an error.
func (l *NetList) Match(ctx context.Context, ip netip.Addr) (bool, error) {
	if !ip.IsValid() {
		return false, errors.New("match list: invalid IP address")
	}
	ip = ip.Unmap().WithZone("")
	var key string
	for _, it := range *l.cur.Load() {
		if it.table == nil {
			if it.net.Contains(ip) {
				return it.match, nil
			}
			continue
		}
		if key == "" {
			key = ip.String()
		}
		_, ok, err := it.table.Lookup(ctx, key)
		if err != nil {
			return false, fmt.Errorf("match list table %s: %w", SpecOf(it.table), err)
		}
		if ok {
			return it.match, nil
		}
	}
	return false, nil
}
