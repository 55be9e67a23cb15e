package table

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Set opens each distinct table spec once and shares it between users, and
// reloads all file tables on request (SIGHUP). Its methods are safe for
// concurrent use; lookups never wait for a reload.
type Set struct {
	opts Options

	mu        sync.Mutex
	bySpec    map[string]Table
	tables    []Table      // distinct tables, in opening order
	reloaders []listReload // match lists with /file/name items
	closed    bool

	reloadMu sync.Mutex // serializes Reload
}

// listReload is implemented by match lists that read /file/name items.
type listReload interface {
	reload() error
}

// NewSet returns an empty Set that opens tables with opts.
func NewSet(opts Options) *Set {
	return &Set{opts: opts, bySpec: map[string]Table{}}
}

// Open returns the table for spec ("type:name"), opening it on first use.
func (s *Set) Open(spec string) (Table, error) {
	spec = strings.TrimSpace(spec)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openLocked(spec)
}

func (s *Set) openLocked(spec string) (Table, error) {
	if s.closed {
		return nil, fmt.Errorf("table %s: table set is closed", spec)
	}
	if t, ok := s.bySpec[spec]; ok {
		return t, nil
	}
	isNew := true
	t, err := open(spec, s.opts, func(inner string) (Table, error) {
		// proxy:type:name shares type:name.
		isNew = false
		return s.openLocked(strings.TrimSpace(inner))
	})
	if err != nil {
		return nil, err
	}
	s.bySpec[spec] = t
	if isNew {
		s.tables = append(s.tables, t)
	}
	return t, nil
}

// OpenMaps opens a Postfix table list value such as "hash:/a, regexp:/b"
// (split with SplitList). It returns the table itself for a single spec and
// a Multi otherwise; an empty value gives an empty Multi, which finds
// nothing.
func (s *Set) OpenMaps(value string) (Table, error) {
	specs := SplitList(value)
	if len(specs) == 1 {
		return s.Open(specs[0])
	}
	m := make(Multi, 0, len(specs))
	for _, spec := range specs {
		t, err := s.Open(spec)
		if err != nil {
			return nil, err
		}
		m = append(m, t)
	}
	return m, nil
}

func (s *Set) addReloader(r listReload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloaders = append(s.reloaders, r)
}

// Reload re-reads every file table, then every match list with /file/name
// items. Each is replaced atomically; one that fails to load keeps its
// previous contents, and its error (naming FILE:LINE) is part of the
// returned error, while the others still reload.
func (s *Set) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	tables := append([]Table(nil), s.tables...)
	lists := append([]listReload(nil), s.reloaders...)
	s.mu.Unlock()

	log := s.opts.logger()
	var errs []error
	for _, t := range tables {
		r, ok := t.(Reloader)
		if !ok {
			continue
		}
		if err := r.Reload(); err != nil {
			log.Error("table reload failed, keeping previous contents", "table", SpecOf(t), "err", err)
			errs = append(errs, err)
		}
	}
	for _, l := range lists {
		if err := l.reload(); err != nil {
			log.Error("match list reload failed, keeping previous contents", "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every table that implements io.Closer (network tables) and
// makes further Open calls fail.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, t := range s.tables {
		if c, ok := t.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("table %s: %w", SpecOf(t), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Multi is a Postfix table list ("maps = a, b"): the first table that finds
// the key wins. An error from a table ends the search with that error; a
// later table is not asked, because its answer could differ from what the
// failed table would have said.
type Multi []Table

// Lookup queries each table in order with the full key.
func (m Multi) Lookup(ctx context.Context, key string) (string, bool, error) {
	return m.find(ctx, key, false)
}

func (m Multi) find(ctx context.Context, key string, partial bool) (string, bool, error) {
	for _, t := range m {
		var (
			v   string
			ok  bool
			err error
		)
		if partial {
			v, ok, err = LookupPartial(ctx, t, key)
		} else {
			v, ok, err = t.Lookup(ctx, key)
		}
		if err != nil {
			return "", false, err
		}
		if ok {
			return v, true, nil
		}
	}
	return "", false, nil
}

// Spec returns the member specs separated by ", ".
func (m Multi) Spec() string {
	specs := make([]string, len(m))
	for i, t := range m {
		specs[i] = SpecOf(t)
	}
	return strings.Join(specs, ", ")
}

// IsPattern reports whether every member is a pattern table.
func (m Multi) IsPattern() bool {
	for _, t := range m {
		if !IsPattern(t) {
			return false
		}
	}
	return len(m) > 0
}

// LookupPartial queries t with a partial key (a parent domain, "user@",
// "@domain"): pattern tables are skipped, also inside a Multi, as Postfix
// maps_find() does with DICT_FLAG_FIXED. Use Lookup for the full key.
func LookupPartial(ctx context.Context, t Table, key string) (string, bool, error) {
	if m, ok := t.(Multi); ok {
		return m.find(ctx, key, true)
	}
	if IsPattern(t) {
		return "", false, nil
	}
	return t.Lookup(ctx, key)
}
