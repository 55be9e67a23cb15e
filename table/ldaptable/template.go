package ldaptable

import (
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Template expansion as in Postfix db_common.c (ldap_table(5) search_base,
// query_filter and result_format): %% %s %u %d %S %U %D %1..%9.

// Flags collected from all three templates, as db_common_parse() does.
const (
	needKeyDomain   = 1 << iota // %d or %D or %1..%9 on the key
	needKeyUser                 // %u on the key, or %U
	needValueDomain             // %d in result_format
	needValueUser               // %u in result_format
)

type templateError struct{ key, msg string }

func (e *templateError) Error() string { return e.key + ": " + e.msg }

// tpart is a literal or an expansion verb.
type tpart struct {
	lit  string
	verb byte // 0 for a literal
}

type tmpl []tpart

// templates are a table's compiled search_base, query_filter and
// result_format.
type templates struct {
	base, filter, result tmpl
	flags                int
	nparts               int  // highest %1..%9
	dynamicBase          bool // search_base uses the key
}

// parseTemplate parses one template. query is true for search_base and
// query_filter (lower-case verbs refer to the key) and false for
// result_format (lower-case verbs refer to the result value).
func (t *templates) parse(key, s string, query bool) (tmpl, bool, error) {
	var out tmpl
	var lit strings.Builder
	dynamic := false
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return nil, false, &templateError{key, fmt.Sprintf("%q ends with a lone '%%' (write %%%% for a literal '%%')", s)}
		}
		c := s[i]
		switch {
		case c == '%':
			lit.WriteByte('%')
			continue
		case c == 's' || c == 'S':
		case c == 'u':
			if query {
				t.flags |= needKeyUser
			} else {
				t.flags |= needValueUser
			}
		case c == 'd':
			if query {
				t.flags |= needKeyDomain
			} else {
				t.flags |= needValueDomain
			}
		case c == 'U':
			t.flags |= needKeyUser
		case c == 'D':
			t.flags |= needKeyDomain
		case c >= '1' && c <= '9':
			t.flags |= needKeyDomain
			t.nparts = max(t.nparts, int(c-'0'))
		default:
			return nil, false, &templateError{key, fmt.Sprintf("invalid expansion %%%c in %q (want %%s %%u %%d %%S %%U %%D %%1..%%9 or %%%%)", c, s)}
		}
		dynamic = true
		if lit.Len() > 0 {
			out = append(out, tpart{lit: lit.String()})
			lit.Reset()
		}
		out = append(out, tpart{verb: c})
	}
	if lit.Len() > 0 {
		out = append(out, tpart{lit: lit.String()})
	}
	return out, dynamic, nil
}

// compileTemplates compiles c's templates and checks that they expand to a
// valid DN and filter.
func compileTemplates(c *Config) (*templates, error) {
	t := &templates{}
	var err error
	if t.base, t.dynamicBase, err = t.parse("search_base", c.SearchBase, true); err != nil {
		return nil, err
	}
	filter := strings.TrimSpace(c.QueryFilter)
	if filter == "" {
		return nil, &templateError{"query_filter", "empty"}
	}
	if !strings.HasPrefix(filter, "(") {
		// OpenLDAP accepts "mail=%s" without parentheses, and Postfix
		// passes the filter to it unchanged (RFC 4515 wants them).
		filter = "(" + filter + ")"
	}
	var dyn bool
	if t.filter, dyn, err = t.parse("query_filter", filter, true); err != nil {
		return nil, err
	}
	if !dyn {
		// Postfix warns "Fixed query_filter %s is probably useless": every
		// key would get the same answer, e.g. every recipient accepted.
		return nil, &templateError{"query_filter", fmt.Sprintf("%q does not use the key (%%s, %%u, %%d, %%1..%%9): every lookup would get the same answer", c.QueryFilter)}
	}
	if t.result, _, err = t.parse("result_format", c.ResultFormat, false); err != nil {
		return nil, err
	}
	// Expand with a key that satisfies every template, to catch syntax
	// errors at load time rather than at every lookup.
	sample := "user@" + strings.Repeat("x.", 9) + "test"
	kp, ok := t.splitKey(sample)
	if !ok {
		return nil, fmt.Errorf("internal error: sample key suppressed")
	}
	f := t.expandQuery(t.filter, kp, ldap.EscapeFilter)
	if _, err := ldap.CompileFilter(f); err != nil {
		return nil, &templateError{"query_filter", fmt.Sprintf("%q is not a valid LDAP filter (RFC 4515): %v", c.QueryFilter, err)}
	}
	if b := t.expandQuery(t.base, kp, ldap.EscapeDN); b != "" {
		if _, err := ldap.ParseDN(b); err != nil {
			return nil, &templateError{"search_base", fmt.Sprintf("%q is not a valid DN (RFC 4514): %v", c.SearchBase, err)}
		}
	}
	return t, nil
}

// keyParts is a lookup key split for expansion.
type keyParts struct {
	key, user, domain string
	hasDomain         bool
	labels            []string
}

// splitKey prepares key for expansion. It reports false when the key
// cannot fill the templates (db_common_expand() "suppressed"): %d, %D or
// %1..%9 without a domain or with too few labels, %u or %U with an empty
// local part. Such a lookup finds nothing, without asking the server.
func (t *templates) splitKey(key string) (keyParts, bool) {
	kp := keyParts{key: key, user: key}
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		kp.user, kp.domain, kp.hasDomain = key[:i], key[i+1:], true
	}
	if t.flags&needKeyDomain != 0 && kp.domain == "" {
		return kp, false
	}
	if t.flags&needKeyUser != 0 && kp.hasDomain && kp.user == "" {
		return kp, false
	}
	if t.nparts > 0 {
		kp.labels = strings.Split(kp.domain, ".")
		if len(kp.labels) < t.nparts {
			return kp, false
		}
		for i := range t.nparts {
			if kp.labels[len(kp.labels)-1-i] == "" {
				return kp, false
			}
		}
	}
	return kp, true
}

// expandQuery expands search_base or query_filter, quoting every piece of
// the key with quote (RFC 4515 for filters, RFC 4514 for DNs), so that no
// key can add filter or DN syntax.
func (t *templates) expandQuery(tm tmpl, kp keyParts, quote func(string) string) string {
	var b strings.Builder
	for _, p := range tm {
		switch p.verb {
		case 0:
			b.WriteString(p.lit)
		case 's', 'S':
			b.WriteString(quote(kp.key))
		case 'u', 'U':
			b.WriteString(quote(kp.user))
		case 'd', 'D':
			b.WriteString(quote(kp.domain))
		default:
			b.WriteString(quote(kp.labels[len(kp.labels)-int(p.verb-'0')]))
		}
	}
	return b.String()
}

// expandResult applies result_format to one attribute value. It reports
// false when the value is skipped: %d on a value without a domain, %u on a
// value with an empty local part.
func (t *templates) expandResult(value string, kp keyParts) (string, bool) {
	user, domain, hasDomain := value, "", false
	if i := strings.LastIndexByte(value, '@'); i >= 0 {
		user, domain, hasDomain = value[:i], value[i+1:], true
	}
	if t.flags&needValueDomain != 0 && domain == "" {
		return "", false
	}
	if t.flags&needValueUser != 0 && hasDomain && user == "" {
		return "", false
	}
	var b strings.Builder
	for _, p := range t.result {
		switch p.verb {
		case 0:
			b.WriteString(p.lit)
		case 's':
			b.WriteString(value)
		case 'u':
			b.WriteString(user)
		case 'd':
			b.WriteString(domain)
		case 'S':
			b.WriteString(kp.key)
		case 'U':
			b.WriteString(kp.user)
		case 'D':
			b.WriteString(kp.domain)
		default:
			b.WriteString(kp.labels[len(kp.labels)-int(p.verb-'0')])
		}
	}
	return b.String(), true
}
