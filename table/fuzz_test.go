package table

import (
	"context"
	"log/slog"
	"testing"
)

// FuzzParsers feeds arbitrary file contents to every file table parser and
// arbitrary names to the inline parsers; none may panic, and a table that
// loads must answer lookups.
func FuzzParsers(f *testing.F) {
	for _, s := range []string{
		"key value\n continued\n# c\n\"q k\" v\n",
		"/a(b)/i $1\nif !/x/\n/y/ ${1}\nendif\n",
		"~x~m $$\n/a/!/b/ c\n",
		"10.0.0.0/8 A\nif !2001:db8::/32\n[::1] B\nendif\n",
		"{ {/a/ b}, {10.0.0.0/8 c} }",
		"{ a=b, { c = d e } }",
	} {
		f.Add(s, "k")
	}
	f.Fuzz(func(t *testing.T, data, key string) { runOne(data, key) })
}

func runOne(data, key string) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	{
		if m, err := parseHash("f", data, log); err == nil {
			_ = m[foldKey(key)]
		}
		for _, typ := range []string{"regexp", "pcre"} {
			var rules []rxRule
			err := logicalLines("f", data, func(line int, text string) error {
				return parseRegexpRules(typ)(&rules, "f", line, text)
			})
			if err == nil && closeIfs("f", len(rules), func(i int) *block { return &rules[i].block }) == nil {
				tbl := &regexpTable{typ: typ}
				tbl.rules.Store(&rules)
				_, _, _ = tbl.Lookup(ctx, key)
			}
		}
		var crules []cidrRule
		err := logicalLines("f", data, func(line int, text string) error {
			return parseCIDRRule(&crules, "f", line, text)
		})
		if err == nil && closeIfs("f", len(crules), func(i int) *block { return &crules[i].block }) == nil {
			tbl := &cidrTable{}
			tbl.rules.Store(&crules)
			_, _, _ = tbl.Lookup(ctx, key)
		}
		// Only the inline forms: a name not starting with '{' is a path.
		if len(data) > 0 && data[0] == '{' {
			for _, typ := range []string{"inline", "static", "regexp", "pcre", "cidr"} {
				if tbl, err := Open(typ+":"+data, Options{Logger: log}); err == nil {
					_, _, _ = tbl.Lookup(ctx, key)
				}
			}
		}
		_ = SplitList(data)
	}
}
