package table

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"sync/atomic"
)

const (
	opMatch = iota
	opIf
	opEndif
)

// block is the part of a rule that if/endif nesting needs.
type block struct {
	op    int // opMatch, opIf, opEndif
	line  int
	endif int // opIf: index of the matching endif rule
}

// rxRule is one regexp_table(5) / pcre_table(5) rule.
type rxRule struct {
	block
	re     *regexp.Regexp
	neg    bool
	re2    *regexp.Regexp // regexp: "/pattern1/!/pattern2/ result" form
	neg2   bool
	result []resultPart // parsed result; one literal part when no $number
	maxSub int          // largest $number in the result
	pf     prefilter    // rules out re without running it
	pf2    prefilter    // the same for re2
	// first is the first byte of a positive opMatch rule's prefix (lower
	// case when fold), for a test inlined in Lookup's loop; firstKind is 0
	// (none), 1 (exact) or 2 (ASCII case-insensitive).
	first     byte
	firstKind uint8
}

// setFirst fills first and firstKind from pf.
func (r *rxRule) setFirst() {
	if r.op != opMatch || r.neg || r.pf.prefix == "" {
		return
	}
	r.first, r.firstKind = r.pf.prefix[0], 1
	if r.pf.fold {
		r.firstKind = 2
	}
}

// match and match2 run re and re2, after their prefilters.
func (r *rxRule) match(k *keyView) bool  { return !r.pf.impossible(k) && r.re.MatchString(k.key) }
func (r *rxRule) match2(k *keyView) bool { return !r.pf2.impossible(k) && r.re2.MatchString(k.key) }

// resultPart is literal text (group == 0) or a $number substitution.
type resultPart struct {
	lit   string
	group int
}

// regexpTable implements regexp: and pcre: tables.
type regexpTable struct {
	typ    string // "regexp" or "pcre"
	name   string // path, or "{...}" for the inline form
	inline bool
	rules  atomic.Pointer[[]rxRule]
}

func openRegexp(typ, name string) (*regexpTable, error) {
	t := &regexpTable{typ: typ, name: name, inline: strings.HasPrefix(name, "{")}
	if t.inline {
		rules, err := loadRules(t.Spec(), typ, name, true, parseRegexpRules(typ), rxBlock)
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

func (t *regexpTable) Spec() string    { return t.typ + ":" + t.name }
func (t *regexpTable) IsPattern() bool { return true }

// Reload re-reads a file table; it is a no-op for the inline form.
func (t *regexpTable) Reload() error {
	if t.inline {
		return nil
	}
	rules, err := loadRules(t.Spec(), t.typ, t.name, false, parseRegexpRules(t.typ), rxBlock)
	if err != nil {
		return err
	}
	t.rules.Store(&rules)
	return nil
}

func rxBlock(r *rxRule) *block { return &r.block }

// loadRules parses a rule table shared by regexp:, pcre: and cidr: — the
// file name, or the inline "{ rule, ... }" form — and pairs its if/endif
// blocks. spec names the table in I/O errors.
func loadRules[R any](spec, typ, name string, inline bool, parse func(rules *[]R, file string, line int, text string) error, blk func(*R) *block) ([]R, error) {
	var rules []R
	where := name
	if inline {
		var err error
		if where, rules, err = parseInlineRules(typ, name, parse); err != nil {
			return nil, err
		}
	} else {
		data, err := readFile(name)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", spec, err)
		}
		if err := logicalLines(name, data, func(line int, text string) error {
			return parse(&rules, name, line, text)
		}); err != nil {
			return nil, err
		}
	}
	if err := closeIfs(where, len(rules), func(i int) *block { return blk(&rules[i]) }); err != nil {
		return nil, err
	}
	return rules, nil
}

// Lookup applies the rules in order to the whole key, honouring if/endif,
// and returns the first match's result with $number substituted.
func (t *regexpTable) Lookup(_ context.Context, key string) (string, bool, error) {
	rules := *t.rules.Load()
	kv := &keyView{key: key}
	// The first byte of the key, as is and in lower case, rules out most
	// rules of a header_checks table before anything else is looked at.
	var k0, l0 byte
	ascii0 := len(key) > 0 && key[0] < 0x80
	if len(key) > 0 {
		k0, l0 = key[0], key[0]
		if 'A' <= l0 && l0 <= 'Z' {
			l0 += 'a' - 'A'
		}
	}
	for i := 0; i < len(rules); i++ {
		r := &rules[i]
		switch r.firstKind {
		case 1:
			if len(key) == 0 || k0 != r.first {
				continue
			}
		case 2:
			if ascii0 && l0 != r.first || len(key) == 0 {
				continue
			}
		}
		switch r.op {
		case opMatch:
			var loc []int
			if r.maxSub > 0 {
				// maxSub > 0 implies a positive pattern (checked at load).
				if r.pf.impossible(kv) {
					continue
				}
				if loc = r.re.FindStringSubmatchIndex(key); loc == nil {
					continue
				}
			} else if r.match(kv) == r.neg {
				continue
			}
			if r.re2 != nil && r.match2(kv) == r.neg2 {
				continue
			}
			return expandResult(r.result, key, loc), true, nil
		case opIf:
			if r.match(kv) == r.neg {
				i = r.endif // skip the block; the loop steps past endif
			}
		}
	}
	return "", false, nil
}

func expandResult(parts []resultPart, key string, loc []int) string {
	if len(parts) == 1 && parts[0].group == 0 {
		return parts[0].lit
	}
	var b strings.Builder
	for _, p := range parts {
		if p.group == 0 {
			b.WriteString(p.lit)
			continue
		}
		// An unmatched group substitutes as empty (Postfix MAC_PARSE_UNDEF).
		if s, e := loc[2*p.group], loc[2*p.group+1]; s >= 0 {
			b.WriteString(key[s:e])
		}
	}
	return b.String()
}

type ruleParser func(rules *[]rxRule, file string, line int, text string) error

// parseRegexpRules returns the line parser for typ, following Postfix
// dict_regexp.c / dict_pcre.c.
func parseRegexpRules(typ string) ruleParser {
	pcre := typ == "pcre"
	return func(rules *[]rxRule, file string, line int, p string) error {
		errf := func(format string, args ...any) error { return parseErrorf(file, line, format, args...) }
		switch {
		case !isAlnum(p[0]):
			// "/pattern/flags result" or "!/pattern/flags result"; regexp:
			// also "/pattern1/flags!/pattern2/flags result".
			r := rxRule{block: block{op: opMatch, line: line}}
			pat, rest, err := getPattern(p, pcre)
			if err != nil {
				return errf("%v", err)
			}
			if !pcre && strings.HasPrefix(rest, "!") {
				pat2, rest2, err := getPattern(rest, pcre)
				if err != nil {
					return errf("%v", err)
				}
				if r.re2, err = pat2.compile(pcre); err != nil {
					return errf("%v", err)
				}
				r.pf2 = prefilterOf(r.re2)
				r.neg2, rest = !pat2.match, rest2
			}
			result := trimSpace(rest)
			if result == "" {
				return errf("missing result after pattern (Postfix would use an empty string)")
			}
			if r.result, r.maxSub, err = parseResult(result); err != nil {
				return errf("%v", err)
			}
			if r.maxSub > 0 && !pat.match {
				return errf("$number found in negative match result %q", result)
			}
			if r.re, err = pat.compile(pcre); err != nil {
				return errf("%v", err)
			}
			r.pf = prefilterOf(r.re)
			r.neg = !pat.match
			r.setFirst()
			if n := r.re.NumSubexp(); r.maxSub > n {
				return errf("out of range replacement index \"%d\": the pattern has %d group(s)", r.maxSub, n)
			}
			*rules = append(*rules, r)
		case keyword(p, "if"):
			pat, rest, err := getPattern(trimSpace(p[2:]), pcre)
			if err != nil {
				return errf("%v", err)
			}
			if rest = trimSpace(rest); rest != "" {
				return errf("extra text after \"if\" pattern: %q; do not indent lines between if and endif (a line that starts with whitespace continues the previous line)", rest)
			}
			r := rxRule{block: block{op: opIf, line: line}, neg: !pat.match}
			if r.re, err = pat.compile(pcre); err != nil {
				return errf("%v", err)
			}
			r.pf = prefilterOf(r.re)
			*rules = append(*rules, r)
		case keyword(p, "endif"):
			if rest := trimSpace(p[5:]); rest != "" {
				return errf("extra text after \"endif\": %q", rest)
			}
			*rules = append(*rules, rxRule{block: block{op: opEndif, line: line}})
		default:
			return errf("unrecognized line: expected \"/pattern/ result\", \"if /pattern/\" or \"endif\"")
		}
		return nil
	}
}

// closeIfs pairs each if with its endif (storing the endif index in the if
// rule) and reports unbalanced ones; at(i) returns rule i's block.
func closeIfs(file string, n int, at func(i int) *block) error {
	var stack []int
	for i := range n {
		switch b := at(i); b.op {
		case opIf:
			stack = append(stack, i)
		case opEndif:
			if len(stack) == 0 {
				return parseErrorf(file, b.line, "\"endif\" without matching \"if\"")
			}
			at(stack[len(stack)-1]).endif = i
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return parseErrorf(file, at(stack[len(stack)-1]).line, "\"if\" without matching \"endif\"")
	}
	return nil
}

// keyword reports whether p starts with the case-insensitive word kw not
// followed by an alphanumeric character, as Postfix checks IF and ENDIF.
func keyword(p, kw string) bool {
	return len(p) >= len(kw) && strings.EqualFold(p[:len(kw)], kw) &&
		(len(p) == len(kw) || !isAlnum(p[len(kw)]))
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// rxPattern is a pattern as written, before compiling.
type rxPattern struct {
	re    string
	match bool // false for a negated pattern
	flags string
}

// getPattern parses "[!...]<delim>regexp<delim>[flags]" at the start of p
// and returns the rest (Postfix dict_regexp_get_pat / dict_pcre_get_pattern).
func getPattern(p string, pcre bool) (rxPattern, string, error) {
	pat := rxPattern{match: true}
	i := 0
	for i < len(p) && (p[i] == '!' || isSpace(p[i])) {
		if p[i] == '!' {
			pat.match = !pat.match
		}
		i++
	}
	if i >= len(p) {
		return pat, "", errors.New("no regexp")
	}
	delim := p[i]
	if isAlnum(delim) || delim == '\\' {
		return pat, "", fmt.Errorf("bad regexp delimiter %q: use a character such as '/' that is not alphanumeric, whitespace or backslash", delim)
	}
	i++
	start := i
	for ; i < len(p) && p[i] != delim; i++ {
		if p[i] == '\\' {
			i++
		}
	}
	if i >= len(p) {
		return pat, "", fmt.Errorf("no closing regexp delimiter %q", delim)
	}
	pat.re = p[start:i]
	i++
	fstart := i
	for i < len(p) && !isSpace(p[i]) && (pcre || p[i] != '!') {
		i++
	}
	pat.flags = p[fstart:i]
	return pat, p[i:], nil
}

// compile translates the Postfix flags into RE2 flags and compiles.
//
// regexp_table(5): i (case-insensitive, default on), m (multi-line: ^ and $
// match at newlines and '.' does not match newline, default off), x
// (extended syntax, default on; basic syntax is not supported).
//
// pcre_table(5): i (default on), m (default off), s (dotall, default on), x
// (extended: ignore whitespace and #comments, default off), A (anchored), E
// (dollar end-only: RE2's behaviour already), U (ungreedy), X (strict
// escapes: RE2's behaviour already).
func (p rxPattern) compile(pcre bool) (*regexp.Regexp, error) {
	// Defaults: both case-insensitive and '.' matching newline; regexp:
	// extended syntax on, pcre: PCRE_EXTENDED off.
	icase, multi, dotall, ext, anchored, ungreedy := true, false, true, !pcre, false, false
	for i := 0; i < len(p.flags); i++ {
		switch c := p.flags[i]; {
		case c == 'i':
			icase = !icase
		case c == 'm':
			multi = !multi
			if !pcre {
				dotall = !multi // POSIX REG_NEWLINE also stops '.' matching newline
			}
		case c == 'x':
			ext = !ext
		case pcre && c == 's':
			dotall = !dotall
		case pcre && c == 'A':
			anchored = !anchored
		case pcre && (c == 'E' || c == 'X'):
		case pcre && c == 'U':
			ungreedy = !ungreedy
		default:
			return nil, fmt.Errorf("unknown regexp option %q", c)
		}
	}
	re := p.re
	if !pcre && !ext {
		return nil, errors.New("flag \"x\" (POSIX basic regular expression syntax) is not supported")
	}
	if pcre && ext {
		re = stripExtended(re)
	}
	// Parse the expression as written first, so that errors quote it
	// without the flag prefix added below.
	if _, err := syntax.Parse(re, syntax.Perl); err != nil {
		msg := strings.TrimPrefix(err.Error(), "error parsing regexp: ")
		var se *syntax.Error
		if errors.As(err, &se) && (se.Code == syntax.ErrInvalidPerlOp || se.Code == syntax.ErrInvalidEscape ||
			se.Code == syntax.ErrInvalidNamedCapture) {
			msg += " (RE2 syntax: backreferences, lookahead and lookbehind are not supported)"
		}
		return nil, fmt.Errorf("bad regexp %q: %s", p.re, msg)
	}
	var fl strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{icase, 'i'}, {multi, 'm'}, {dotall, 's'}, {ungreedy, 'U'}} {
		if f.on {
			fl.WriteByte(f.c)
		}
	}
	full := re
	if anchored {
		full = `\A(?:` + full + `)`
	}
	if fl.Len() > 0 {
		full = "(?" + fl.String() + ")" + full
	}
	c, err := regexp.Compile(full)
	if err != nil {
		return nil, fmt.Errorf("bad regexp %q: %s", p.re, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	if !pcre {
		c.Longest() // POSIX leftmost-longest
	}
	return c, nil
}

// stripExtended removes whitespace and #comments outside character classes
// (PCRE_EXTENDED), keeping backslash-escaped characters.
func stripExtended(p string) string {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			b.WriteByte(c)
			b.WriteByte(p[i+1])
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
			if i+1 < len(p) && p[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' { // leading ']' is literal
				b.WriteByte(']')
				i++
			}
		case isSpace(c):
		case c == '#':
			for i+1 < len(p) && p[i+1] != '\n' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseResult parses the result text with Postfix mac_parse(3) syntax:
// "$$" is a literal "$"; "$n", "${n}" and "$(n)" substitute group n >= 1.
func parseResult(s string) (parts []resultPart, maxSub int, err error) {
	var lit strings.Builder
	flushLit := func() {
		if lit.Len() > 0 {
			parts = append(parts, resultPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		i++
		var name string
		if i < len(s) && (s[i] == '{' || s[i] == '(') {
			closer := byte('}')
			if s[i] == '(' {
				closer = ')'
			}
			end := strings.IndexByte(s[i+1:], closer)
			if end < 0 {
				return nil, 0, fmt.Errorf("truncated macro reference in %q", s)
			}
			name, i = s[i+1:i+1+end], i+1+end+1
		} else {
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
				j++
			}
			name, i = s[i:j], j
		}
		if name == "" {
			return nil, 0, fmt.Errorf("empty macro name in %q (write $$ for a literal $)", s)
		}
		n, convErr := strconv.Atoi(name)
		if convErr != nil || strings.TrimLeft(name, "0123456789") != "" {
			return nil, 0, fmt.Errorf("non-numeric replacement index %q (write ${1} when a digit is followed by text)", name)
		}
		if n < 1 {
			return nil, 0, fmt.Errorf("out of range replacement index %q", name)
		}
		flushLit()
		parts = append(parts, resultPart{group: n})
		maxSub = max(maxSub, n)
	}
	flushLit()
	if len(parts) == 0 {
		parts = []resultPart{{}}
	}
	return parts, maxSub, nil
}

// parseInlineRules parses the Postfix 3.7 inline pattern table form
// "type:{ {rule1}, {rule2}, ... }". It returns the name to use in errors,
// which count rules instead of lines.
func parseInlineRules[R any](typ, name string, parse func(rules *[]R, file string, line int, text string) error) (string, []R, error) {
	where := "inline " + typ + ":{...}"
	n := balpar(name)
	if n == 0 || n != len(name) {
		return where, nil, fmt.Errorf("table %s:%s: bad syntax; need \"%s:{ {rule}, {rule}... }\"", typ, name, typ)
	}
	var rules []R
	for i, tok := range SplitList(name[1 : n-1]) {
		text, err := extpar(tok)
		if err != nil {
			return where, nil, parseErrorf(where, i+1, "%v; each rule must be enclosed in {}", err)
		}
		if text == "" {
			return where, nil, parseErrorf(where, i+1, "empty rule")
		}
		if err := parse(&rules, where, i+1, text); err != nil {
			return where, nil, err
		}
	}
	if len(rules) == 0 {
		return where, nil, fmt.Errorf("table %s:%s: empty table", typ, name)
	}
	return where, rules, nil
}
