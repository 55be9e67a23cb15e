package ldaptable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/table/internal/remote"
	"github.com/mxfront/mxfront/test/harness"
)

// Tests against a real slapd (harness.StartSlapd): skipped when slapd is not
// installed, failures under CI.

const seedLDIF = `dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=foo.bar,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: foo.bar
cn: Foo Bar
sn: Bar
mail: foo.bar@example.com
maildrop: foo.bar@h42.mail.example.com

dn: uid=alice,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: Example
mail: alice@example.com
maildrop: alice@h7.mail.example.com
mailHost: 192.0.2.7
mailLocalAddress: alice@example.com
mailLocalAddress: a.example@example.com
mailRoutingAddress: alice@unit7.example.com

dn: uid=forward,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: forward
cn: Forward
sn: Example
mail: forward@example.com
maildrop: |/usr/bin/procmail
maildrop: someone@elsewhere.test

dn: uid=twin1,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: twin1
cn: Twin
sn: One
mail: twin@example.com
maildrop: twin1@h1.mail.example.com

dn: uid=twin2,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: twin2
cn: Twin
sn: Two
mail: twin@example.com
maildrop: twin2@h2.mail.example.com

dn: uid=star,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: mailDropRecipient
uid: star
cn: Star
sn: Example
mail: *@example.com
maildrop: star@h9.mail.example.com
`

// seed000 is the seed 000 virtual_alias_maps query: mail -> maildrop,
// skipping entries whose maildrop is a pipe, a file or a transport.
const seed000 = `query_filter = (&(mail=%%s)(!(|(maildrop=*|*)(maildrop=*:*)(maildrop=*/*))))
result_attribute = maildrop
`

func writeCF(t *testing.T, body string, args ...any) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ldap.cf")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(body, args...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuf collects log output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openT(t *testing.T, cf string) (*Table, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(lb), &slog.HandlerOptions{Level: slog.LevelDebug}))
	tb, err := New(cf, table.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb, lb
}

type want struct {
	key   string
	value string
	found bool
	err   bool
}

func check(t *testing.T, tb table.Table, cases ...want) {
	t.Helper()
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		v, ok, err := tb.Lookup(ctx, c.key)
		cancel()
		if (err != nil) != c.err || ok != c.found || v != c.value {
			t.Errorf("Lookup(%q) = %q, %v, %v; want %q, %v, error %v", c.key, v, ok, err, c.value, c.found, c.err)
		}
	}
}

func TestSlapdSeed000(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\nsize_limit = 1\n"+seed000, s.URL())
	tb, logs := openT(t, cf)
	check(t, tb,
		want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true},
		want{key: "Foo.Bar@Example.COM", value: "foo.bar@h42.mail.example.com", found: true},
		want{key: "nobody@example.com"},
		want{key: "@example.com"},
		want{key: "example.com"},
		// The pipe and the transport maildrops exclude the entry.
		want{key: "forward@example.com"},
		// Two entries with the same mail: a temporary error, not a guess.
		want{key: "twin@example.com", err: true},
	)
	if !strings.Contains(logs.String(), "more entries than size_limit") || !strings.Contains(logs.String(), "uid=twin1") {
		t.Errorf("no clear log line for the duplicate entries:\n%s", logs)
	}
}

func TestSlapdInjection(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\n"+seed000, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb,
		// A literal "*" local part matches the entry whose mail is
		// literally "*@example.com", never everyone.
		want{key: "*@example.com", value: "star@h9.mail.example.com", found: true},
		want{key: "f*@example.com"},
		want{key: "*"},
		want{key: "foo.bar@example.com)(mail=*"},
		want{key: "x)(|(mail=*)@example.com"},
		want{key: "*)(mail=foo.bar@example.com"},
		want{key: "foo.bar@example.com\x00"},
		want{key: "foo.bar\\2a@example.com"},
		want{key: `\`},
		want{key: "foo.bar@example.com)"},
	)
}

func TestSlapdSeed001Transport(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, `server_host = %s
search_base = dc=example,dc=test
domain = example.com
query_filter = (mail=%%s)
result_attribute = mailHost
result_format = smtp:[%%s]:2525
size_limit = 1
`, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb,
		want{key: "alice@example.com", value: "smtp:[192.0.2.7]:2525", found: true},
		want{key: "foo.bar@example.com"}, // no mailHost
		want{key: "alice@example.org"},   // domain not listed: no query
		want{key: "example.com"},
	)
}

func TestSlapdSeed003(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, `server_host = %s
search_base = ou=people,dc=example,dc=test
scope = one
query_filter = (mailLocalAddress=%%s)
result_attribute = mailRoutingAddress
`, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb,
		want{key: "a.example@example.com", value: "alice@unit7.example.com", found: true},
		want{key: "alice@example.com", value: "alice@unit7.example.com", found: true},
		want{key: "foo.bar@example.com"},
	)
}

func TestSlapdExpansions(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, `server_host = %s
search_base = ou=people,dc=%%2,dc=test
query_filter = (&(uid=%%u)(mail=*@%%d))
result_attribute = maildrop, mail
result_format = %%u at %%d for %%U
`, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb,
		want{key: "alice@example.com", value: "alice at h7.mail.example.com for alice,alice at example.com for alice", found: true},
		want{key: "alice"},          // %d: no domain, suppressed
		want{key: "alice@example"},  // %2 needs two labels
		want{key: "alice@.example"}, // empty label
	)
	// A base that depends on the key and does not exist is "not found".
	check(t, tb, want{key: "alice@nowhere.test"})
}

func TestSlapdBadBase(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = ou=nonesuch,dc=example,dc=test\n"+seed000, s.URL())
	tb, logs := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", err: true})
	if !strings.Contains(logs.String(), "search base not found") {
		t.Errorf("no log line:\n%s", logs)
	}
}

func TestSlapdBind(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(harness.SlapdRootPW+"\n"), 0o600)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\nbind_dn = %s\nbind_pw_file = %s\n"+seed000,
		s.URL(), harness.SlapdRootDN, pw)
	tb, _ := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true})

	bad := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\nbind_dn = %s\nbind_pw = wrong\n"+seed000,
		s.URL(), harness.SlapdRootDN)
	tb2, logs := openT(t, bad)
	check(t, tb2, want{key: "foo.bar@example.com", err: true})
	if !strings.Contains(logs.String(), "Invalid Credentials") {
		t.Errorf("bind failure not logged:\n%s", logs)
	}
}

// TestSlapdKilled: lookups fail (never "not found") while slapd is down,
// fail fast once the server is known down, and recover when it is back.
func TestSlapdKilled(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\ncache_ttl = 0\nnegative_cache_ttl = 0\n"+seed000, s.URL())
	tb, logs := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true})
	s.Kill()
	for i := range 5 {
		start := time.Now()
		check(t, tb, want{key: "foo.bar@example.com", err: true}, want{key: "nobody@example.com", err: true})
		if d := time.Since(start); i > 0 && d > time.Second {
			t.Errorf("lookups with the server down took %v", d)
		}
	}
	if !strings.Contains(logs.String(), "ldap server is down") {
		t.Errorf("no down log line:\n%s", logs)
	}
	s.Start(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, ok, err := tb.Lookup(context.Background(), "foo.bar@example.com")
		if err == nil {
			if !ok || v != "foo.bar@h42.mail.example.com" {
				t.Fatalf("after recovery: %q %v", v, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery within 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "ldap server is back") {
		t.Errorf("no recovery log line:\n%s", logs)
	}
}

// TestSlapdFailover: a dead first server is skipped for the second one.
func TestSlapdFailover(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	dead := deadAddr(t)
	cf := writeCF(t, "server_host = ldap://%s, %s\nsearch_base = dc=example,dc=test\n"+seed000, dead, s.URL())
	tb, logs := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true})
	if !strings.Contains(logs.String(), "ldap server is down") {
		t.Errorf("no down log line for %s:\n%s", dead, logs)
	}
	_, down := tb.Stats()
	if len(down) != 1 || !strings.Contains(down[0], dead) {
		t.Errorf("down = %v", down)
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// TestHungServer: a server that accepts and never answers costs one
// timeout; after that it is skipped quickly.
func TestHungServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cf := writeCF(t, "server_host = ldap://%s\nsearch_base = dc=example,dc=test\ntimeout = 300ms\n"+seed000, l.Addr())
	tb, logs := openT(t, cf)
	defer func() {
		if t.Failed() {
			t.Log(logs)
		}
	}()
	start := time.Now()
	check(t, tb, want{key: "foo.bar@example.com", err: true})
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("first lookup took %v, want about the 300ms timeout", d)
	}
	start = time.Now()
	check(t, tb, want{key: "other@example.com", err: true})
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("second lookup took %v; the hung server should be skipped", d)
	}
}

// TestCallerDeadline: the caller's context bounds the wait, whatever the
// table's timeout.
func TestCallerDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cf := writeCF(t, "server_host = ldap://%s\nsearch_base = dc=example,dc=test\ntimeout = 30\n"+seed000, l.Addr())
	tb, _ := openT(t, cf)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = tb.Lookup(ctx, "foo.bar@example.com")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("lookup took %v despite a 200ms deadline", d)
	}
}

// TestSlapdCache: positive and negative results are reused for their TTL,
// errors never; Reload empties the cache.
func TestSlapdCache(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\ncache_ttl = 1s\nnegative_cache_ttl = 1s\n"+seed000, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true}, want{key: "new@example.com"})
	s.Modify(t, "dn: uid=foo.bar,ou=people,dc=example,dc=test\nchangetype: delete\n")
	s.Add(t, "dn: uid=new,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nobjectClass: mailDropRecipient\nuid: new\ncn: New\nsn: New\nmail: new@example.com\nmaildrop: new@h1.mail.example.com\n")
	// Within the TTLs: the cached answers.
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true}, want{key: "new@example.com"})
	if n, _ := tb.Stats(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	// Reload (SIGHUP) empties the cache.
	if err := tb.Reload(); err != nil {
		t.Fatal(err)
	}
	check(t, tb, want{key: "foo.bar@example.com"}, want{key: "new@example.com", value: "new@h1.mail.example.com", found: true})
	// Expiry.
	s.Modify(t, "dn: uid=new,ou=people,dc=example,dc=test\nchangetype: modify\nreplace: maildrop\nmaildrop: new@h2.mail.example.com\n")
	time.Sleep(1100 * time.Millisecond)
	check(t, tb, want{key: "new@example.com", value: "new@h2.mail.example.com", found: true})
	// Errors are not cached.
	s.Kill()
	check(t, tb, want{key: "other@example.com", err: true})
	s.Start(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := tb.Lookup(context.Background(), "other@example.com")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("error stuck: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSlapdMerged: identical concurrent lookups make one search.
func TestSlapdMerged(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	// A proxy counting the requests slapd sees would be heavier; count the
	// flights instead through a hung server that releases after a moment.
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\n"+seed000, s.URL())
	tb, _ := openT(t, cf)
	var searches atomic.Int32
	st := tb.st.Load()
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kp, _ := st.tm.splitKey("foo.bar@example.com")
			st.cache.Do(context.Background(), "foo.bar@example.com", func(ctx context.Context) (remote.Result, error) {
				searches.Add(1)
				<-release
				return tb.search(ctx, st, kp)
			})
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := searches.Load(); n != 1 {
		t.Errorf("%d searches for 50 concurrent identical lookups, want 1", n)
	}
}

func TestSlapdConcurrent(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\ncache_ttl = 0\nnegative_cache_ttl = 0\npool_size = 3\n"+seed000, s.URL())
	tb, _ := openT(t, cf)
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, want := "foo.bar@example.com", "foo.bar@h42.mail.example.com"
			if i%2 == 1 {
				key, want = fmt.Sprintf("u%d@example.com", i), ""
			}
			v, _, err := tb.Lookup(context.Background(), key)
			if err != nil || v != want {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Errorf("%d of 200 concurrent lookups wrong", bad.Load())
	}
}

// TestSlapdReloadChanged: Reload applies a changed file (new connections);
// a broken file keeps the previous configuration.
func TestSlapdReloadChanged(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	cf := writeCF(t, "server_host = %s\nsearch_base = dc=example,dc=test\n"+seed000, s.URL())
	tb, _ := openT(t, cf)
	check(t, tb, want{key: "alice@example.com", value: "alice@h7.mail.example.com", found: true})
	os.WriteFile(cf, []byte(fmt.Sprintf("server_host = %s\nsearch_base = dc=example,dc=test\nquery_filter = (mail=%%s)\nresult_attribute = mailRoutingAddress\n", s.URL())), 0o600)
	if err := tb.Reload(); err != nil {
		t.Fatal(err)
	}
	check(t, tb, want{key: "alice@example.com", value: "alice@unit7.example.com", found: true})
	os.WriteFile(cf, []byte("scope = everything\n"), 0o600)
	if err := tb.Reload(); err == nil || !strings.Contains(err.Error(), cf+":1: scope") {
		t.Errorf("broken file: %v", err)
	}
	check(t, tb, want{key: "alice@example.com", value: "alice@unit7.example.com", found: true})
}

// TestLDAPS: ldaps:// through a TLS front to slapd, with the server
// certificate verified (tls_require_cert = yes) against tls_ca_cert_file;
// a certificate the CA did not sign is a temporary error, never "not
// found".
func TestLDAPS(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	dir := t.TempDir()
	caPEM, tlsCfg := testCert(t, "ldap.example.test")
	os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o644)
	front := tlsFront(t, tlsCfg, s.Addr())
	_, port, _ := net.SplitHostPort(front)
	body := "server_host = ldaps://%s:%s\nsearch_base = dc=example,dc=test\ntls_require_cert = yes\ntls_ca_cert_file = %s\n" + seed000
	// The test certificate carries 127.0.0.1 as an IP address SAN.
	cf := writeCF(t, body, "127.0.0.1", port, filepath.Join(dir, "ca.pem"))
	tb, _ := openT(t, cf)
	check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true}, want{key: "nobody@example.com"})

	otherCA, _ := testCert(t, "other")
	os.WriteFile(filepath.Join(dir, "other.pem"), otherCA, 0o644)
	cf2 := writeCF(t, body, "127.0.0.1", port, filepath.Join(dir, "other.pem"))
	tb2, logs := openT(t, cf2)
	check(t, tb2, want{key: "foo.bar@example.com", err: true}, want{key: "nobody@example.com", err: true})
	if !strings.Contains(logs.String(), "certificate") {
		t.Errorf("no certificate error logged:\n%s", logs)
	}
}

// proxy is a TCP relay to a backend that can be taken down and brought
// back on the same address.
type proxy struct {
	t       *testing.T
	backend string
	addr    string
	mu      sync.Mutex
	ln      net.Listener
	conns   []net.Conn
}

func startProxy(t *testing.T, backend string) *proxy {
	p := &proxy{t: t, backend: backend}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	p.addr = ln.Addr().String()
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { io.Copy(b, c); b.Close() }()
			go func() { io.Copy(c, b); c.Close() }()
		}
	}()
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestSlapdFailback: with the first server down, lookups go to the
// second; when the first is back, the pool moves back to it.
func TestSlapdFailback(t *testing.T) {
	s := harness.StartSlapd(t, seedLDIF)
	first := startProxy(t, s.Addr())
	cf := writeCF(t, "server_host = ldap://%s %s\nsearch_base = dc=example,dc=test\ncache_ttl = 0\nnegative_cache_ttl = 0\n"+seed000, first.addr, s.URL())
	tb, logs := openT(t, cf)
	st := tb.st.Load()
	st.pool.failbackAfter = 200 * time.Millisecond
	servers := func() (out []int) {
		st.pool.mu.Lock()
		defer st.pool.mu.Unlock()
		for _, sl := range st.pool.slots {
			if sl.conn != nil {
				out = append(out, sl.conn.server)
			}
		}
		return out
	}
	for range 5 {
		check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true})
	}
	first.down()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := tb.Lookup(context.Background(), "foo.bar@example.com")
		if err == nil && fmt.Sprint(servers()) == "[1 1]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failover: connections to %v, err %v\n%s", servers(), err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.up()
	deadline = time.Now().Add(20 * time.Second)
	for {
		check(t, tb, want{key: "foo.bar@example.com", value: "foo.bar@h42.mail.example.com", found: true})
		if fmt.Sprint(servers()) == "[0 0]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failback: connections to %v\n%s", servers(), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
