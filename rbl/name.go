package rbl

import (
	"net/netip"
	"strings"
)

// ReverseIP returns the query label for ip (RFC 5782 §2.1, §2.4): the four
// octets of an IPv4 address in reverse order ("2.0.0.127"), or the 32
// nibbles of an IPv6 address in reverse order. IPv4-mapped IPv6 addresses
// are queried as IPv4, as a DNSBL lists the IPv4 address.
func ReverseIP(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		var sb strings.Builder
		for i := 3; i >= 0; i-- {
			writeUint(&sb, int(b[i]))
			if i > 0 {
				sb.WriteByte('.')
			}
		}
		return sb.String()
	}
	const hex = "0123456789abcdef"
	b := ip.As16()
	out := make([]byte, 0, 63)
	for i := 15; i >= 0; i-- {
		out = append(out, hex[b[i]&0xf], '.', hex[b[i]>>4])
		if i > 0 {
			out = append(out, '.')
		}
	}
	return string(out)
}

func writeUint(sb *strings.Builder, n int) {
	if n >= 10 {
		writeUint(sb, n/10)
	}
	sb.WriteByte(byte('0' + n%10))
}

// maxName is the longest domain name in text form (RFC 1035 §2.3.4: 255
// octets on the wire, 253 characters without the root dot).
const maxName = 253

// ValidDomain reports whether name can be looked up in a domain list
// (RHSBL, RFC 5782 §3): a syntactically valid host name (letters, digits,
// hyphens, labels of 1 to 63 characters, RFC 1123 §2.1) whose last label is
// not all digits (Postfix does not query names that look like addresses:
// some lists refuse them). A trailing dot is allowed. Address literals
// ("[192.0.2.1]") and anything else are not valid.
func ValidDomain(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > maxName {
		return false
	}
	allDigits := false
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		allDigits = true
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				allDigits = false
			default:
				return false
			}
		}
	}
	return !allDigits
}

// validZone reports whether zone is usable as a DNS list zone name: a valid
// domain name, where labels may also hold underscores (keyed zones).
func validZone(zone string) bool {
	zone = strings.TrimSuffix(zone, ".")
	if zone == "" || len(zone) > maxName-10 {
		return false
	}
	for label := range strings.SplitSeq(zone, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// canonZone lower-cases a zone name and removes a trailing dot.
func canonZone(zone string) string {
	return strings.ToLower(strings.TrimSuffix(zone, "."))
}

// ipQuery is the query name of ip in zone.
func ipQuery(ip netip.Addr, zone string) string {
	return ReverseIP(ip) + "." + zone
}

// domainQuery is the query name of domain in zone; ok is false when the
// domain cannot be queried (not ValidDomain, or too long together with the
// zone).
func domainQuery(domain, zone string) (string, bool) {
	if !ValidDomain(domain) {
		return "", false
	}
	q := strings.ToLower(strings.TrimSuffix(domain, ".")) + "." + zone
	if len(q) > maxName {
		return "", false
	}
	return q, true
}
