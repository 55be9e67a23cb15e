package table

import (
	"regexp"
	"regexp/syntax"
	"strings"
)

// prefilter is a cheap test that rules out a regexp match without running
// the regexp: the literal text a pattern anchored at the start of the key
// must begin with, and the literal strings any match must contain.
// header_checks tables are mostly "/^Subject:.*\bphrase\b/" rules; testing
// these literals first makes a lookup in a table of a thousand such rules
// some microseconds instead of a millisecond or more. It never changes a
// result: when it cannot decide, it answers "possible".
type prefilter struct {
	prefix string // lower case when fold
	fold   bool   // compare the prefix ASCII case-insensitively
	need   []literal
}

// literal is a string every match contains.
type literal struct {
	s    string // lower case when fold
	fold bool
}

// keyView is a lookup key with its lower-case form, computed once per
// lookup for all rules.
type keyView struct {
	key   string
	lower string
	state int8 // 0: not computed, 1: lower is valid, 2: key is not ASCII
}

func (k *keyView) lowered() (string, bool) {
	if k.state == 0 {
		k.state = 2
		if isASCIIString(k.key) {
			k.lower, k.state = strings.ToLower(k.key), 1
		}
	}
	return k.lower, k.state == 1
}

// prefilterOf derives the prefilter of a compiled regexp from its source.
func prefilterOf(re *regexp.Regexp) prefilter {
	t, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return prefilter{}
	}
	t = t.Simplify()
	var p prefilter
	subs := []*syntax.Regexp{t}
	if t.Op == syntax.OpConcat {
		subs = t.Sub
	}
	if len(subs) >= 2 && subs[0].Op == syntax.OpBeginText {
		var b []byte
		first := true
	literals:
		for _, s := range subs[1:] {
			if s.Op != syntax.OpLiteral {
				break
			}
			f := s.Flags&syntax.FoldCase != 0
			if !first && f != p.fold {
				break
			}
			p.fold, first = f, false
			for _, r := range s.Rune {
				if r >= 0x80 {
					break literals
				}
				c := byte(r)
				if p.fold && 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b = append(b, c)
			}
		}
		p.prefix = string(b)
	}
	collectLiterals(subs, &p.need)
	return p
}

// collectLiterals adds the ASCII literals of a concatenation (and of the
// groups in it), which every match contains.
func collectLiterals(subs []*syntax.Regexp, out *[]literal) {
	for _, s := range subs {
		switch s.Op {
		case syntax.OpLiteral:
			if len(s.Rune) < 2 {
				continue
			}
			fold := s.Flags&syntax.FoldCase != 0
			b := make([]byte, 0, len(s.Rune))
			ascii := true
			for _, r := range s.Rune {
				if r >= 0x80 {
					ascii = false
					break
				}
				c := byte(r)
				if fold && 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b = append(b, c)
			}
			if ascii {
				*out = append(*out, literal{s: string(b), fold: fold})
			}
		case syntax.OpCapture:
			collectLiterals(s.Sub, out)
		case syntax.OpConcat:
			collectLiterals(s.Sub, out)
		}
	}
}

// impossible reports that the regexp cannot match the key.
func (p *prefilter) impossible(k *keyView) bool {
	if n := len(p.prefix); n > 0 {
		key := k.key
		if !p.fold {
			if len(key) < n || key[:n] != p.prefix {
				return true
			}
		} else {
			// Case folding: only ASCII can be decided here (Unicode folds
			// "k" and "s" to non-ASCII runes, which the regexp judges).
			for i := 0; i < n; i++ {
				if i >= len(key) {
					return isASCIIString(key)
				}
				c := key[i]
				if c >= 0x80 {
					return false
				}
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				if c != p.prefix[i] {
					return true
				}
			}
		}
	}
	for _, l := range p.need {
		if !l.fold {
			if !strings.Contains(k.key, l.s) {
				return true
			}
			continue
		}
		low, ok := k.lowered()
		if !ok {
			continue
		}
		if !strings.Contains(low, l.s) {
			return true
		}
	}
	return false
}

func isASCIIString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
