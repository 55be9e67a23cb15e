package table

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
)

// foldKey folds a fixed-string table key to lower case, as Postfix does
// with DICT_FLAG_FOLD_FIX (postmap(1): "By default the lookup key is mapped
// to lowercase").
func foldKey(s string) string { return strings.ToLower(s) }

// hashTable is a texthash: table, and also serves hash:, btree:, lmdb:,
// cdb:, dbm: and sdbm: by reading their postmap(1) source file.
type hashTable struct {
	typ, path string
	log       *slog.Logger
	m         atomic.Pointer[map[string]string]
}

func openHash(typ, path string, log *slog.Logger) (*hashTable, error) {
	t := &hashTable{typ: typ, path: path, log: log}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *hashTable) Spec() string { return t.typ + ":" + t.path }

func (t *hashTable) Lookup(_ context.Context, key string) (string, bool, error) {
	v, ok := (*t.m.Load())[foldKey(key)]
	return v, ok, nil
}

// Reload re-reads the file and swaps the new contents in atomically. On
// error the previous contents stay.
func (t *hashTable) Reload() error {
	data, err := readFile(t.path)
	if err != nil {
		return fmt.Errorf("table %s: %w", t.Spec(), err)
	}
	m, err := parseHash(t.path, data, t.log)
	if err != nil {
		return err
	}
	t.m.Store(&m)
	return nil
}

// maxDupWarnings bounds the duplicate-key warnings logged per load; the
// rest are counted in one summary line.
const maxDupWarnings = 10

// parseHash parses postmap(1) source text. Each logical line is "key
// whitespace value"; the key ends at the first whitespace outside double
// quotes, a backslash quotes the next character, and the key keeps its
// quotes and backslashes (Postfix 3.2 postmap: "Leave the key in quoted
// form"). Duplicates: the first entry wins and a warning is logged, as
// postmap(1) does without -r or -w.
func parseHash(file, data string, log *slog.Logger) (map[string]string, error) {
	m := make(map[string]string, strings.Count(data, "\n")+1)
	dups := 0
	err := logicalLines(file, data, func(line int, text string) error {
		inQuotes := false
		i := 0
	scan:
		for ; i < len(text); i++ {
			switch c := text[i]; {
			case c == '\\':
				i++
			case isSpace(c):
				if !inQuotes {
					break scan
				}
			case c == '"':
				inQuotes = !inQuotes
			}
		}
		if inQuotes {
			return parseErrorf(file, line, "unbalanced '\"' in key")
		}
		i = min(i, len(text))
		key, value := text[:i], trimSpace(text[i:])
		if value == "" {
			return parseErrorf(file, line, "missing value for key %q (expected format: key whitespace value)", key)
		}
		if strings.HasSuffix(key, ":") {
			log.Warn("table record is in \"key: value\" format; is this an alias file?",
				"file", file, "line", line, "key", key)
		}
		key = foldKey(key)
		if _, dup := m[key]; dup {
			dups++
			if dups <= maxDupWarnings {
				log.Warn("duplicate table entry ignored, the first one wins",
					"where", fmt.Sprintf("%s:%d", file, line), "key", key)
			}
			return nil
		}
		m[key] = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	if dups > maxDupWarnings {
		log.Warn("more duplicate table entries ignored", "file", file, "count", dups-maxDupWarnings)
	}
	return m, nil
}

// inlineTable implements inline:{ key=value, { key = text } } (Postfix
// dict_inline, 3.0 and later).
type inlineTable struct {
	name string
	m    map[string]string
}

func openInline(name string) (*inlineTable, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("table inline:%s: %s; need \"inline:{name=value...}\"", name, fmt.Sprintf(format, args...))
	}
	n := balpar(name)
	if n == 0 || n != len(name) {
		return nil, bad("bad syntax")
	}
	m := map[string]string{}
	for _, nv := range SplitList(name[1 : n-1]) {
		if nv[0] == '{' {
			s, err := extpar(nv)
			if err != nil {
				return nil, bad("%v", err)
			}
			nv = s
		}
		k, v, err := splitQNameVal(nv)
		if err != nil {
			return nil, bad("%v in %q", err, nv)
		}
		if v == "" {
			return nil, bad("missing value for key %q", k)
		}
		k = foldKey(k)
		if _, dup := m[k]; dup {
			return nil, bad("duplicate key %q", k)
		}
		m[k] = v
	}
	if len(m) == 0 {
		return nil, bad("empty table")
	}
	return &inlineTable{name: name, m: m}, nil
}

// splitQNameVal splits "key = value" where the key may contain double
// quotes and backslash escapes (Postfix split_qnameval(3)).
func splitQNameVal(s string) (key, value string, err error) {
	s = trimSpace(s)
	if s == "" {
		return "", "", fmt.Errorf("no key found; expected format: key = value")
	}
	inQuotes := false
	i := 0
scan:
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case isSpace(c) || c == '=':
			if !inQuotes {
				break scan
			}
		case c == '"':
			inQuotes = !inQuotes
		}
	}
	if inQuotes {
		return "", "", fmt.Errorf("unbalanced '\"'")
	}
	i = min(i, len(s))
	key, rest := s[:i], trimSpace(s[i:])
	if key == "" {
		return "", "", fmt.Errorf("missing attribute name")
	}
	if rest == "" || rest[0] != '=' {
		return "", "", fmt.Errorf("missing '=' after attribute name")
	}
	return key, trimSpace(rest[1:]), nil
}

func (t *inlineTable) Spec() string { return "inline:" + t.name }

func (t *inlineTable) Lookup(_ context.Context, key string) (string, bool, error) {
	v, ok := t.m[foldKey(key)]
	return v, ok, nil
}
