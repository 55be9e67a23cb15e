package table

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// replaceFile writes content to a temporary file and renames it over path,
// the way table files should be updated.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestSetShares(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "access", "example.com OK\n")
	s := NewSet(Options{})
	a, err := s.Open("hash:" + p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Open(" hash:" + p + " ")
	c, _ := s.Open("proxy:hash:" + p)
	if a != b || a != c {
		t.Errorf("same spec opened twice: %p %p %p", a, b, c)
	}
	if d, _ := s.Open("texthash:" + p); d == a {
		t.Error("a different spec shares the table")
	}
	if len(s.tables) != 2 {
		t.Errorf("%d distinct tables, want 2", len(s.tables))
	}

	one, err := s.OpenMaps("  hash:" + p + " ,")
	if err != nil || one != a {
		t.Errorf("OpenMaps(single) = %v, %v; want the table itself", one, err)
	}
	m, err := s.OpenMaps("hash:" + p + ", inline:{ x=1, y=2 }")
	if err != nil {
		t.Fatal(err)
	}
	if mm, ok := m.(Multi); !ok || len(mm) != 2 || mm[0] != a {
		t.Errorf("OpenMaps = %#v", m)
	}
	checkLookups(t, m, []lookupCase{{"example.com", "OK", true}, {"y", "2", true}, {"z", "", false}})
	if _, err := s.OpenMaps("hash:" + p + ", nosuch:x"); err == nil {
		t.Error("OpenMaps with a bad spec succeeded")
	}
	if e, err := s.OpenMaps(""); err != nil {
		t.Errorf("OpenMaps(\"\") error %v", err)
	} else if mm, ok := e.(Multi); !ok || len(mm) != 0 {
		t.Errorf("OpenMaps(\"\") = %v, %v", e, err)
	}
}

func TestSetReload(t *testing.T) {
	dir := t.TempDir()
	hashP := writeFile(t, dir, "access", "example.com OLD\n")
	reP := writeFile(t, dir, "checks.regexp", "/^x/ OLD\n")
	cidrP := writeFile(t, dir, "clients.cidr", "10.0.0.0/8 OLD\n")
	log, logBuf := testLogger()
	s := NewSet(Options{Logger: log})
	var tables []Table
	for _, spec := range []string{"hash:" + hashP, "regexp:" + reP, "cidr:" + cidrP, "static:S", "inline:{k=v}"} {
		tbl, err := s.Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, tbl)
	}
	hash, re, cidr := tables[0], tables[1], tables[2]

	// hash and cidr change validly; the regexp file breaks on line 3.
	replaceFile(t, hashP, "example.com NEW\nexample.net ADDED\n")
	replaceFile(t, reP, "/^x/ NEW\n# comment\n/^y/\n")
	replaceFile(t, cidrP, "10.0.0.0/8 NEW\n")
	err := s.Reload()
	if err == nil {
		t.Fatal("Reload with a broken file returned nil")
	}
	want := reP + ":3: missing result after pattern (Postfix would use an empty string)"
	if err.Error() != want {
		t.Errorf("Reload error\n got %q\nwant %q", err, want)
	}
	var pe *ParseError
	if !errors.As(err, &pe) || pe.File != reP || pe.Line != 3 {
		t.Errorf("Reload error is not a ParseError for %s:3: %#v", reP, pe)
	}
	if !strings.Contains(logBuf.String(), "keeping previous contents") {
		t.Errorf("reload failure not logged:\n%s", logBuf)
	}
	checkLookups(t, hash, []lookupCase{{"example.com", "NEW", true}, {"example.net", "ADDED", true}})
	checkLookups(t, re, []lookupCase{{"xx", "OLD", true}}) // kept
	checkLookups(t, cidr, []lookupCase{{"10.1.1.1", "NEW", true}})

	// Two broken files: both errors are reported; a removed file keeps its
	// contents too.
	if err := os.Remove(hashP); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, cidrP, "10.0.0.1/8 NEW\n")
	err = s.Reload()
	for _, w := range []string{"table hash:" + hashP + ": open " + hashP + ": no such file or directory", reP + ":3:", cidrP + ":1: non-null host address bits"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Reload error %v does not contain %q", err, w)
		}
	}
	checkLookups(t, hash, []lookupCase{{"example.net", "ADDED", true}})
	checkLookups(t, cidr, []lookupCase{{"10.1.1.1", "NEW", true}})

	// Fixed: everything reloads.
	replaceFile(t, hashP, "example.com FIXED\n")
	replaceFile(t, reP, "/^x/ FIXED\n")
	replaceFile(t, cidrP, "10.0.0.0/8 FIXED\n")
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	checkLookups(t, hash, []lookupCase{{"example.com", "FIXED", true}, {"example.net", "", false}})
	checkLookups(t, re, []lookupCase{{"xx", "FIXED", true}})
	checkLookups(t, cidr, []lookupCase{{"10.1.1.1", "FIXED", true}})
}

type closerTable struct {
	fakeTable
	closed int
	err    error
}

func (c *closerTable) Close() error { c.closed++; return c.err }

func TestSetClose(t *testing.T) {
	var opened []*closerTable
	s := NewSet(Options{Openers: map[string]func(string, Options) (Table, error){
		"net": func(name string, _ Options) (Table, error) {
			c := &closerTable{fakeTable: fakeTable{spec: "net:" + name}}
			if name == "bad" {
				c.err = errors.New("close failed")
			}
			opened = append(opened, c)
			return c, nil
		},
	}})
	for _, spec := range []string{"net:a", "net:bad", "net:a", "static:x"} {
		if _, err := s.Open(spec); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Close()
	if err == nil || err.Error() != "table net:bad: close failed" {
		t.Errorf("Close error = %v", err)
	}
	if len(opened) != 2 || opened[0].closed != 1 || opened[1].closed != 1 {
		t.Errorf("each table must be closed once: %d tables", len(opened))
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := s.Open("static:y"); err == nil {
		t.Error("Open after Close succeeded")
	}
}

// TestReloadConcurrent runs lookups while the tables are reloaded; run it
// with -race. Every lookup must see one complete version of the file.
func TestReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	content := func(v int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "version v%d\n", v)
		for i := range 200 {
			fmt.Fprintf(&b, "key%d v%d\n", i, v)
		}
		return b.String()
	}
	hashP := writeFile(t, dir, "access", content(0))
	cidrP := writeFile(t, dir, "c.cidr", "10.0.0.0/8 v0\n")
	log, _ := testLogger()
	s := NewSet(Options{Logger: log})
	hash, err := s.Open("hash:" + hashP)
	if err != nil {
		t.Fatal(err)
	}
	cidr, err := s.Open("cidr:" + cidrP)
	if err != nil {
		t.Fatal(err)
	}

	const versions = 30
	done := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			last := 0
			deadline := time.Now().Add(30 * time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				select {
				case <-done:
					return
				default:
				}
				v, ok, err := hash.Lookup(ctx, "version")
				if err != nil || !ok {
					errc <- fmt.Errorf("reader %d: version lookup: %q %v %v", r, v, ok, err)
					return
				}
				n, _ := strconv.Atoi(strings.TrimPrefix(v, "v"))
				if n < last {
					errc <- fmt.Errorf("reader %d: version went back from v%d to %s", r, last, v)
					return
				}
				last = n
				if k, ok, _ := hash.Lookup(ctx, fmt.Sprintf("KEY%d", i%200)); !ok || !strings.HasPrefix(k, "v") {
					errc <- fmt.Errorf("reader %d: key%d missing during reload", r, i%200)
					return
				}
				if _, ok, _ := cidr.Lookup(ctx, "10.1.2.3"); !ok {
					errc <- fmt.Errorf("reader %d: cidr lookup missed during reload", r)
					return
				}
			}
		}()
	}
	for v := 1; v <= versions; v++ {
		replaceFile(t, hashP, content(v))
		replaceFile(t, cidrP, fmt.Sprintf("10.0.0.0/8 v%d\n", v))
		if v%5 == 0 {
			replaceFile(t, cidrP, "10.0.0.1/8 broken\n") // keeps the old rules
		}
		if err := s.Reload(); err != nil && v%5 != 0 {
			t.Fatalf("Reload v%d: %v", v, err)
		}
	}
	close(done)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	checkLookups(t, hash, []lookupCase{{"version", fmt.Sprintf("v%d", versions), true}})
}
