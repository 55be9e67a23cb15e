package rbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Filter selects the answers that count as a listing, in Postfix's
// ip_match syntax (postconf(5) reject_rbl_client "domain=d.d.d.d"): four
// dot-separated octet patterns, each a number, or a bracketed list of
// numbers and ranges separated by ";":
//
//	127.0.0.2
//	127.0.0.[2..11]
//	127.0.0.[2;4;10]
//	127.0.[0..255].[1..3;10]
//
// The zero Filter matches every address.
type Filter struct {
	octets [4][]octetRange
	spec   string
}

type octetRange struct{ lo, hi uint8 }

// ParseFilter parses a Filter.
func ParseFilter(s string) (Filter, error) {
	f := Filter{spec: s}
	parts := splitOctets(s)
	if len(parts) != 4 {
		return Filter{}, fmt.Errorf("bad filter %q: want four octet patterns like 127.0.0.[2..11]", s)
	}
	for i, p := range parts {
		if strings.HasPrefix(p, "[") {
			if !strings.HasSuffix(p, "]") || len(p) < 3 {
				return Filter{}, fmt.Errorf("bad filter %q: unbalanced [ in %q", s, p)
			}
			for item := range strings.SplitSeq(p[1:len(p)-1], ";") {
				lo, hi, isRange := strings.Cut(item, "..")
				a, err := parseOctet(lo)
				if err != nil {
					return Filter{}, fmt.Errorf("bad filter %q: %v", s, err)
				}
				b := a
				if isRange {
					if b, err = parseOctet(hi); err != nil {
						return Filter{}, fmt.Errorf("bad filter %q: %v", s, err)
					}
					if b < a {
						return Filter{}, fmt.Errorf("bad filter %q: empty range %s", s, item)
					}
				}
				f.octets[i] = append(f.octets[i], octetRange{a, b})
			}
			continue
		}
		a, err := parseOctet(p)
		if err != nil {
			return Filter{}, fmt.Errorf("bad filter %q: %v", s, err)
		}
		f.octets[i] = []octetRange{{a, a}}
	}
	return f, nil
}

// splitOctets splits at the dots outside brackets.
func splitOctets(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseOctet(s string) (uint8, error) {
	if s == "" || len(s) > 3 {
		return 0, fmt.Errorf("bad octet value %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("bad octet value %q", s)
	}
	return uint8(n), nil
}

// IsZero reports whether f matches everything.
func (f Filter) IsZero() bool { return f.octets[0] == nil }

// String returns the filter as written, "" for the zero Filter.
func (f Filter) String() string { return f.spec }

// Match reports whether a (an A record of an answer) matches the filter.
func (f Filter) Match(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	if f.IsZero() {
		return true
	}
	b := a.As4()
	for i, rs := range f.octets {
		ok := false
		for _, r := range rs {
			if b[i] >= r.lo && b[i] <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ParseZone splits a restriction argument "zone[=filter]" (postconf(5)
// reject_rbl_client) into the zone name and its filter.
func ParseZone(s string) (zone string, f Filter, err error) {
	zone, fs, hasFilter := strings.Cut(s, "=")
	zone = canonZone(zone)
	if !validZone(zone) {
		return "", Filter{}, fmt.Errorf("bad DNS list zone name %q", zone)
	}
	if hasFilter {
		if f, err = ParseFilter(fs); err != nil {
			return "", Filter{}, err
		}
	}
	return zone, f, nil
}

// Site is one postscreen-style scored list (postconf(5)
// postscreen_dnsbl_sites): "zone[=filter][*weight]". A matching answer adds
// Weight (default 1; negative for allowlists) to the client's score.
type Site struct {
	Zone   string
	Filter Filter
	Weight int
	spec   string
}

// String returns the site as written.
func (s Site) String() string { return s.spec }

// ParseSite parses "zen.example=127.0.0.[2..11]*3", "bl.example*1",
// "wl.example=127.0.[0..255].[1..3]*-2" or "bl.example".
func ParseSite(s string) (Site, error) {
	site := Site{Weight: 1, spec: s}
	rest := s
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		w, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("bad weight in %q: want *N or *-N", s)
		}
		site.Weight = w
		rest = s[:i]
	}
	if rest == "" {
		return Site{}, errors.New("empty DNS list site")
	}
	var err error
	if site.Zone, site.Filter, err = ParseZone(rest); err != nil {
		return Site{}, err
	}
	return site, nil
}
