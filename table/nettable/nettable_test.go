package nettable

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/table"
)

// server is a small in-test lookup server speaking tcp_table(5) or
// socketmap_table(5). answer maps a key to the raw reply payload ("200
// value", "OK value", ...); a missing key gets "500 not found" /
// "NOTFOUND ".
type server struct {
	t         *testing.T
	ln        net.Listener
	socketmap bool
	mapName   string

	mu        sync.Mutex
	answers   map[string]string
	raw       map[string]string // key -> bytes written verbatim instead
	delay     time.Duration
	closeEach bool // close the connection after each reply (Sendmail style)
	quit      chan struct{}
	requests  atomic.Int32
	conns     atomic.Int32
	keys      []string
}

func startServer(t *testing.T, network string, socketmap bool) *server {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "map.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, ln: ln, socketmap: socketmap, mapName: "users", answers: map[string]string{}, raw: map[string]string{}, quit: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); close(s.quit); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
			}()
		}
	}()
	return s
}

func (s *server) set(key, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[key] = reply
}

func (s *server) serve(c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(s.ctx(), func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	for {
		var key string
		if s.socketmap {
			req, err := readNetstring(r, 1<<20)
			if err != nil {
				return
			}
			name, k, _ := strings.Cut(req, " ")
			if name != s.mapName {
				fmt.Fprintf(c, "%d:%s,", len("PERM unknown map"), "PERM unknown map")
				continue
			}
			key = k
		} else {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			k, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "get ")
			if !ok {
				fmt.Fprint(c, "400 bad request\n")
				continue
			}
			dk, err := decodeTCP(k)
			if err != nil {
				fmt.Fprint(c, "400 bad encoding\n")
				continue
			}
			key = dk
		}
		s.requests.Add(1)
		s.mu.Lock()
		s.keys = append(s.keys, key)
		reply, ok := s.answers[key]
		raw, isRaw := s.raw[key]
		delay, closeEach := s.delay, s.closeEach
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-s.quit:
				return
			}
		}
		switch {
		case isRaw:
			io.WriteString(c, raw)
		case s.socketmap:
			if !ok {
				reply = "NOTFOUND "
			}
			fmt.Fprintf(c, "%d:%s,", len(reply), reply)
		default:
			if !ok {
				reply = "500 not found"
			}
			fmt.Fprintf(c, "%s\n", reply)
		}
		if closeEach {
			return
		}
	}
}

// ctx ends when the test ends.
func (s *server) ctx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.quit; cancel() }()
	return ctx
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

type want struct {
	key   string
	value string
	found bool
	err   string // substring; "" for no error
}

func check(t *testing.T, tb table.Table, cases ...want) {
	t.Helper()
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, ok, err := tb.Lookup(ctx, c.key)
		cancel()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || ok {
				t.Errorf("Lookup(%q) = %q, %v, %v; want error containing %q", c.key, v, ok, err, c.err)
			}
			continue
		}
		if err != nil || ok != c.found || v != c.value {
			t.Errorf("Lookup(%q) = %q, %v, %v; want %q, %v", c.key, v, ok, err, c.value, c.found)
		}
	}
}

func TestTCP(t *testing.T) {
	s := startServer(t, "tcp", false)
	s.set("alice@example.com", "200 alice@h7.mail.example.com")
	s.set("sp ace@example.com", "200 with%20space%2C%25")
	s.set("busy@example.com", "400 try again later")
	s.set("odd@example.com", "300 what")
	s.set("empty@example.com", "200 ")
	s.raw["garbage@example.com"] = "hello\n"
	s.raw["badhex@example.com"] = "200 x%zz\n"
	s.raw["long@example.com"] = "200 " + strings.Repeat("x", 5000) + "\n"
	s.raw["two@example.com"] = "200 a\n200 b\n"
	tb, err := OpenTCP(s.ln.Addr().String(), Config{}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	check(t, tb,
		want{key: "alice@example.com", value: "alice@h7.mail.example.com", found: true},
		want{key: "nobody@example.com"},
		want{key: "sp ace@example.com", value: "with space,%", found: true},
		want{key: "empty@example.com", value: "", found: true},
		want{key: "busy@example.com", err: "temporary error: 400 try again later"},
		want{key: "odd@example.com", err: "unexpected reply"},
		want{key: "garbage@example.com", err: "malformed reply"},
		want{key: "badhex@example.com", err: "bad %XX"},
		want{key: "long@example.com", err: "longer than 4096"},
		want{key: "two@example.com", err: "unexpected data after the reply"},
		// Still working after all those broken connections.
		want{key: "alice@example.com", value: "alice@h7.mail.example.com", found: true},
	)
	// The key went out %XX-encoded and came back intact.
	s.mu.Lock()
	defer s.mu.Unlock()
	if !strings.Contains(strings.Join(s.keys, "\n"), "sp ace@example.com") {
		t.Errorf("server saw keys %q", s.keys)
	}
}

func TestEncodeTCP(t *testing.T) {
	for in, want := range map[string]string{
		"a@b":         "a@b",
		"a b":         "a%20b",
		"100%":        "100%25",
		"x\ny\tz\x00": "x%0Ay%09z%00",
		"é":           "%C3%A9",
	} {
		if got := encodeTCP(in); got != want {
			t.Errorf("encodeTCP(%q) = %q, want %q", in, got, want)
		}
		if back, err := decodeTCP(encodeTCP(in)); err != nil || back != in {
			t.Errorf("decodeTCP(encodeTCP(%q)) = %q, %v", in, back, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz", "a%g0"} {
		if _, err := decodeTCP(bad); err == nil {
			t.Errorf("decodeTCP(%q): no error", bad)
		}
	}
	if v, err := decodeTCP("%4a%4A"); err != nil || v != "JJ" {
		t.Errorf("mixed case hex: %q %v", v, err)
	}
}

func TestSocketmap(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			s := startServer(t, network, true)
			s.set("alice@example.com", "OK alice@h7.mail.example.com")
			s.set("temp@example.com", "TEMP database down")
			s.set("timeout@example.com", "TIMEOUT slow")
			s.set("perm@example.com", "PERM misconfigured")
			s.set("weird@example.com", "MAYBE")
			s.raw["bad@example.com"] = "4:OK x;"
			s.raw["zero@example.com"] = "05:OK ab,"
			name := "inet:" + s.ln.Addr().String() + ":users"
			if network == "unix" {
				name = "unix:" + s.ln.Addr().String() + ":users"
			}
			tb, err := OpenSocketmap(name, Config{}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			check(t, tb,
				want{key: "alice@example.com", value: "alice@h7.mail.example.com", found: true},
				want{key: "nobody@example.com"},
				want{key: "temp@example.com", err: "TEMP: database down"},
				want{key: "timeout@example.com", err: "TIMEOUT: slow"},
				want{key: "perm@example.com", err: "PERM: misconfigured"},
				want{key: "weird@example.com", err: "unexpected reply"},
				want{key: "bad@example.com", err: "not terminated"},
				want{key: "zero@example.com", err: "malformed netstring"},
				want{key: "alice@example.com", value: "alice@h7.mail.example.com", found: true},
			)
			// A wrong map name is a PERM from the server: an error.
			other, _ := OpenSocketmap(strings.TrimSuffix(name, "users")+"other", Config{}, quietLog())
			defer other.Close()
			check(t, other, want{key: "alice@example.com", err: "PERM"})
		})
	}
}

func TestSpecs(t *testing.T) {
	for _, bad := range []string{"host", ":25", "host:"} {
		if _, err := OpenTCP(bad, Config{}, nil); err == nil {
			t.Errorf("tcp:%s: no error", bad)
		}
	}
	for _, bad := range []string{"inet:host:25", "inet:host:25:", "tcp:host:25:m", "unix::m", "inet::25:m"} {
		if _, err := OpenSocketmap(bad, Config{}, nil); err == nil {
			t.Errorf("socketmap:%s: no error", bad)
		}
	}
	tb, err := OpenSocketmap("inet:[::1]:100:map", Config{}, nil)
	if err != nil || tb.addr != "[::1]:100" || tb.Spec() != "socketmap:inet:[::1]:100:map" || !table.IsPattern(tb) {
		t.Errorf("IPv6 socketmap: %+v %v", tb, err)
	}
	// Through table.Open with the openers.
	opts := table.Options{Openers: Openers(DefaultConfig())}
	for _, spec := range []string{"tcp:127.0.0.1:1", "socketmap:unix:/run/x.sock:m", "proxy:tcp:localhost:99"} {
		if _, err := table.Open(spec, opts); err != nil {
			t.Errorf("%s: %v", spec, err)
		}
	}
	if _, err := table.Open("tcp:nope", opts); err == nil || !strings.Contains(err.Error(), "table tcp:nope") {
		t.Errorf("bad spec error: %v", err)
	}
}

// TestReuseAndCloseEach: connections are reused; a server that closes
// after every reply costs a retry, never a failure.
func TestReuseAndCloseEach(t *testing.T) {
	s := startServer(t, "tcp", false)
	s.set("a", "200 1")
	tb, _ := OpenTCP(s.ln.Addr().String(), Config{}, quietLog())
	defer tb.Close()
	for range 10 {
		check(t, tb, want{key: "a", value: "1", found: true})
	}
	if n := s.conns.Load(); n != 1 {
		t.Errorf("%d connections for 10 sequential uncached lookups, want 1", n)
	}
	s.mu.Lock()
	s.closeEach = true
	s.mu.Unlock()
	for range 5 {
		check(t, tb, want{key: "a", value: "1", found: true})
	}
}

func TestCache(t *testing.T) {
	s := startServer(t, "tcp", false)
	s.set("a", "200 1")
	tb, _ := OpenTCP(s.ln.Addr().String(), Config{CacheTTL: time.Hour, NegativeCacheTTL: 200 * time.Millisecond}, quietLog())
	defer tb.Close()
	check(t, tb, want{key: "a", value: "1", found: true}, want{key: "b"})
	s.set("a", "200 2")
	s.set("b", "200 new")
	s.set("c", "400 down")
	check(t, tb, want{key: "a", value: "1", found: true}, want{key: "b"}, want{key: "c", err: "400"})
	if n := s.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (a, b, then c)", n)
	}
	time.Sleep(250 * time.Millisecond)
	check(t, tb, want{key: "b", value: "new", found: true}, want{key: "a", value: "1", found: true})
	// Errors are not cached.
	s.set("c", "200 up")
	check(t, tb, want{key: "c", value: "up", found: true})
	tb.Reload()
	check(t, tb, want{key: "a", value: "2", found: true})
}

// TestMerged: identical concurrent lookups make one request.
func TestMerged(t *testing.T) {
	s := startServer(t, "tcp", false)
	s.set("a", "200 1")
	s.delay = 200 * time.Millisecond
	tb, _ := OpenTCP(s.ln.Addr().String(), Config{}, quietLog())
	defer tb.Close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check(t, tb, want{key: "a", value: "1", found: true})
		}()
	}
	wg.Wait()
	if n := s.requests.Load(); n != 1 {
		t.Errorf("%d requests for 20 concurrent identical lookups, want 1", n)
	}
}

// TestPoolBound: at most PoolSize connections, whatever the concurrency.
func TestPoolBound(t *testing.T) {
	s := startServer(t, "tcp", false)
	s.delay = 20 * time.Millisecond
	tb, _ := OpenTCP(s.ln.Addr().String(), Config{PoolSize: 3}, quietLog())
	defer tb.Close()
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check(t, tb, want{key: fmt.Sprint("k", i)})
		}()
	}
	wg.Wait()
	if n := s.conns.Load(); n > 3 {
		t.Errorf("%d connections, pool size 3", n)
	}
}

// TestDownAndBack: a refused connection is an error, later lookups fail
// fast during the backoff, and the table recovers.
func TestDownAndBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tb, _ := OpenTCP(addr, Config{}, quietLog())
	defer tb.Close()
	check(t, tb, want{key: "a", err: "refused"})
	start := time.Now()
	check(t, tb, want{key: "b", err: "server down, not retried yet"})
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("lookup during backoff took %v", d)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	s := &server{t: t, ln: ln2, answers: map[string]string{"a": "200 1"}, raw: map[string]string{}, quit: make(chan struct{})}
	defer close(s.quit)
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	defer ln2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok, err := tb.Lookup(context.Background(), "a")
		if err == nil {
			if !ok || v != "1" {
				t.Fatalf("after recovery: %q %v", v, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHung: a server that never answers costs the timeout once, then is
// skipped; the caller's deadline is honoured.
func TestHung(t *testing.T) {
	s := startServer(t, "tcp", true)
	s.delay = time.Hour
	tb, _ := OpenSocketmap("inet:"+s.ln.Addr().String()+":users", Config{Timeout: 200 * time.Millisecond}, quietLog())
	defer tb.Close()
	start := time.Now()
	check(t, tb, want{key: "a", err: "timed out after 200ms"})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	start = time.Now()
	check(t, tb, want{key: "b", err: "server down"})
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("second lookup took %v", d)
	}

	s2 := startServer(t, "tcp", false)
	s2.delay = time.Hour
	tb2, _ := OpenTCP(s2.ln.Addr().String(), Config{Timeout: time.Hour}, quietLog())
	defer tb2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, _, err := tb2.Lookup(ctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("err %v after %v", err, time.Since(start))
	}
}
