package table

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// Table is a Postfix lookup table (type:name). Lookups have three outcomes:
// found (value, true, nil), not found ("", false, nil), and error
// ("", false, err). An error must become a temporary failure upstream
// (451 4.3.0), never "not found".
type Table interface {
	Lookup(ctx context.Context, key string) (value string, ok bool, err error)
}

// Specer is implemented by every table in this package and should be
// implemented by tables from Options.Openers: Spec returns "type:name" for
// logs and explanations.
type Specer interface {
	Spec() string
}

// SpecOf returns t's "type:name", or its Go type when t has no Spec method.
func SpecOf(t Table) string {
	if s, ok := t.(Specer); ok {
		return s.Spec()
	}
	return fmt.Sprintf("%T", t)
}

// Patterner is implemented by tables that match patterns against the whole
// lookup key (regexp:, pcre:, cidr:) and therefore must not be queried with
// partial keys (parent domains, user@, @domain). Postfix flags such tables
// DICT_FLAG_PATTERN.
type Patterner interface {
	IsPattern() bool
}

// IsPattern reports whether t is a pattern table that Postfix queries with
// the full key only. A Multi is a pattern table when all its members are.
func IsPattern(t Table) bool {
	p, ok := t.(Patterner)
	return ok && p.IsPattern()
}

// Reloader is implemented by tables whose contents come from a file. Reload
// re-reads the file; on error the table keeps its previous contents and the
// error names FILE:LINE.
type Reloader interface {
	Reload() error
}

// Options configures Open and NewSet. The zero value is usable: only the
// built-in types, logging to slog.Default().
type Options struct {
	// Openers adds table types (ldap:, tcp:, socketmap: from other
	// packages), keyed by type name without the colon. A built-in type
	// name is not allowed here.
	Openers map[string]func(name string, opts Options) (Table, error)
	// Logger receives load warnings (duplicate keys and the like). Nil
	// means slog.Default().
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// ErrFail is returned (wrapped) by every lookup on a fail: table.
var ErrFail = errors.New("table is configured to fail")

// ParseError is a table or list file syntax error. File is the path, or a
// description such as "inline cidr:{...}" for an inline table, in which
// case Line counts rules instead of lines.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

func parseErrorf(file string, line int, format string, args ...any) *ParseError {
	return &ParseError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// fileTypes are the Postfix indexed-file types whose postmap(1) source we
// read with texthash semantics.
var fileTypes = []string{"texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm"}

// builtinTypes lists every type Open knows without Options.Openers.
var builtinTypes = []string{
	"btree", "cdb", "cidr", "dbm", "fail", "hash", "inline", "lmdb", "pcre",
	"proxy", "regexp", "sdbm", "static", "texthash",
}

// SupportedTypes returns the table types Open accepts with opts, sorted.
func SupportedTypes(opts Options) []string {
	out := slices.Clone(builtinTypes)
	for name := range opts.Openers {
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// SplitSpec splits "type:name" at the first colon, like Postfix
// dict_open(3).
func SplitSpec(spec string) (typ, name string, err error) {
	typ, name, ok := strings.Cut(spec, ":")
	if !ok || typ == "" {
		return "", "", fmt.Errorf("table %q: expecting \"type:name\" form", spec)
	}
	if name == "" {
		return "", "", fmt.Errorf("table %q: missing name after %q", spec, typ+":")
	}
	return typ, name, nil
}

// Open opens the table named by spec ("type:name"). File tables are read
// completely before Open returns. To share tables between users and reload
// them, use a Set.
func Open(spec string, opts Options) (Table, error) {
	return open(strings.TrimSpace(spec), opts, func(inner string) (Table, error) {
		return Open(inner, opts)
	})
}

// open implements Open; sub opens nested specs (proxy:type:name) so that a
// Set can share them.
func open(spec string, opts Options, sub func(string) (Table, error)) (Table, error) {
	typ, name, err := SplitSpec(spec)
	if err != nil {
		return nil, err
	}
	for t := range opts.Openers {
		if slices.Contains(builtinTypes, t) {
			return nil, fmt.Errorf("table %q: Options.Openers must not replace built-in type %q", spec, t)
		}
	}
	log := opts.logger()
	switch {
	case slices.Contains(fileTypes, typ):
		return asTable(openHash(typ, name, log))
	case typ == "regexp" || typ == "pcre":
		return asTable(openRegexp(typ, name))
	case typ == "cidr":
		return asTable(openCIDR(name))
	case typ == "inline":
		return asTable(openInline(name))
	case typ == "static":
		return openStatic(name)
	case typ == "fail":
		return failTable{name: name}, nil
	case typ == "proxy":
		// Postfix proxymap(8) opens the table in a separate process; there
		// is no such process here, the table is opened directly.
		return sub(name)
	}
	if o, ok := opts.Openers[typ]; ok {
		t, err := o(name, opts)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", spec, err)
		}
		return t, nil
	}
	return nil, fmt.Errorf("unsupported table type %q in %q (supported: %s)",
		typ, spec, strings.Join(SupportedTypes(opts), ", "))
}

// asTable converts a constructor result, avoiding a non-nil Table holding
// a nil pointer on error.
func asTable[T Table](t T, err error) (Table, error) {
	if err != nil {
		return nil, err
	}
	return t, nil
}

// failTable implements fail:name: every lookup is an error (Postfix
// dict_fail, DICT_ERR_RETRY).
type failTable struct{ name string }

func (f failTable) Lookup(context.Context, string) (string, bool, error) {
	return "", false, fmt.Errorf("%s: %w", f.Spec(), ErrFail)
}

func (f failTable) Spec() string { return "fail:" + f.name }

// staticTable implements static:value (dict_static): every key finds value.
type staticTable struct{ name, value string }

func openStatic(name string) (Table, error) {
	value := name
	if strings.HasPrefix(name, "{") {
		v, err := extpar(name)
		if err != nil {
			return nil, fmt.Errorf("table static:%s: bad static:name syntax: %v", name, err)
		}
		value = v
	}
	if value == "" {
		return nil, fmt.Errorf("table static:%s: empty value", name)
	}
	return staticTable{name: name, value: value}, nil
}

func (s staticTable) Lookup(context.Context, string) (string, bool, error) {
	return s.value, true, nil
}

func (s staticTable) Spec() string { return "static:" + s.name }
