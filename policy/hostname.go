package policy

import (
	"net/netip"
	"strings"
)

// validHostname is Postfix valid_hostname() (valid_utf8_hostname() when
// utf8 is set): at most 255 bytes, labels of 1 to 63 letters, digits,
// hyphens and underscores, no label starting or ending with a hyphen, and
// not all-numeric.
func validHostname(name string, utf8 bool) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	nonNumeric := false
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
				nonNumeric = true
			case c >= 0x80 && utf8:
				nonNumeric = true
			default:
				return false
			}
		}
	}
	return nonNumeric
}

// validHostaddr is Postfix valid_hostaddr(): an IPv4 dotted quad or an
// IPv6 address, without brackets.
func validHostaddr(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == "" && (a.Is6() || strings.Count(s, ".") == 3)
}

// validMailhostAddr is Postfix valid_mailhost_addr(): the inside of an
// address literal, "1.2.3.4" or "IPv6:2001:db8::1".
func validMailhostAddr(s string) bool {
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		a, err := netip.ParseAddr(s[5:])
		return err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// punycode encodes a U-label (RFC 3492 §6.3), for DNS queries of
// internationalized domains (RFC 5891). Mapping (UTS #46) is limited to the
// lower-casing the caller does.
func punycode(label string) (string, bool) {
	const (
		base, tmin, tmax   = 36, 1, 26
		skew, damp         = 38, 700
		initialBias, initN = 72, 128
		maxInt             = 1<<31 - 1
	)
	runes := []rune(label)
	out := make([]byte, 0, len(label)+8)
	for _, r := range runes {
		if r < 0x80 {
			out = append(out, byte(r))
		}
	}
	b := len(out)
	h := b
	if b > 0 {
		out = append(out, '-')
	}
	digit := func(d int) byte {
		if d < 26 {
			return byte('a' + d)
		}
		return byte('0' + d - 26)
	}
	adapt := func(delta, numPoints int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / numPoints
		k := 0
		for delta > ((base-tmin)*tmax)/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	n, delta, bias := initN, 0, initialBias
	for h < len(runes) {
		m := maxInt
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m - n) > (maxInt-delta)/(h+1) {
			return "", false
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) != n {
				continue
			}
			q := delta
			for k := base; ; k += base {
				t := k - bias
				if t < tmin {
					t = tmin
				} else if t > tmax {
					t = tmax
				}
				if q < t {
					break
				}
				out = append(out, digit(t+(q-t)%(base-t)))
				q = (q - t) / (base - t)
			}
			out = append(out, digit(q))
			bias = adapt(delta, h+1, h == b)
			delta = 0
			h++
		}
		delta++
		n++
	}
	return string(out), true
}
