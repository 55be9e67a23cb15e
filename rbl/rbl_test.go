package rbl

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestReverseIP(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.99":       "99.2.0.192",
		"127.0.0.2":        "2.0.0.127",
		"::ffff:192.0.2.1": "1.2.0.192",
		// RFC 5782 §2.4 example.
		"2001:db8:1:2:3:4:567:89ab": "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2",
	} {
		if got := ReverseIP(netip.MustParseAddr(in)); got != want {
			t.Errorf("ReverseIP(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestValidDomain(t *testing.T) {
	for name, want := range map[string]bool{
		"example.com":                        true,
		"mail.example.com.":                  true,
		"a-b.example":                        true,
		"localhost":                          true,
		"":                                   false,
		"[192.0.2.1]":                        false,
		"192.0.2.1":                          false, // numeric last label: looks like an address
		"host.123":                           false,
		"-bad.example":                       false,
		"bad-.example":                       false,
		"a..example":                         false,
		"under_score.example":                false,
		"spa ce.example":                     false,
		"exämple.com":                        false,
		strings.Repeat("a", 64) + ".example": false,
		strings.Repeat("abcdefghi.", 26) + "example":    false, // > 253
		"xn--bcher-kva.example":                         true,
		"UPPER.Example.COM":                             true,
		"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w": true,
	} {
		if got := ValidDomain(name); got != want {
			t.Errorf("ValidDomain(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		match  []string
		miss   []string
	}{
		{"127.0.0.2", []string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.1.2"}},
		{"127.0.0.[2..11]", []string{"127.0.0.2", "127.0.0.11", "127.0.0.7"}, []string{"127.0.0.1", "127.0.0.12"}},
		{"127.0.0.[2;4;10]", []string{"127.0.0.2", "127.0.0.4", "127.0.0.10"}, []string{"127.0.0.3", "127.0.0.11"}},
		{"127.0.[0..255].[1..3]", []string{"127.0.15.1", "127.0.255.3"}, []string{"127.0.15.0", "127.1.0.1"}},
		{"127.0.0.[2..4;10;20..21]", []string{"127.0.0.3", "127.0.0.10", "127.0.0.21"}, []string{"127.0.0.5", "127.0.0.22"}},
	} {
		f, err := ParseFilter(tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.filter, err)
		}
		for _, a := range tc.match {
			if !f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s should match %s", tc.filter, a)
			}
		}
		for _, a := range tc.miss {
			if f.Match(netip.MustParseAddr(a)) {
				t.Errorf("%s should not match %s", tc.filter, a)
			}
		}
	}
	for _, bad := range []string{"", "127.0.0", "127.0.0.256", "127.0.0.[2..]", "127.0.0.[11..2]",
		"127.0.0.[2", "127.0.0.[]", "127.0.0.x", "127.0.0.0.1", "127.0.0.[2;;3]", "127.0.0.-1"} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("ParseFilter(%q) accepted", bad)
		}
	}
}

func TestParseSite(t *testing.T) {
	for _, tc := range []struct {
		in     string
		zone   string
		filter string
		weight int
	}{
		{"zen.example=127.0.0.[2..11]*3", "zen.example", "127.0.0.[2..11]", 3},
		{"bl.example*1", "bl.example", "", 1},
		{"BL.Example.", "bl.example", "", 1},
		{"wl.example=127.0.[0..255].[1..3]*-2", "wl.example", "127.0.[0..255].[1..3]", -2},
		{"key_123.zen.dq.example=127.0.0.2", "key_123.zen.dq.example", "127.0.0.2", 1},
	} {
		s, err := ParseSite(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if s.Zone != tc.zone || s.Filter.String() != tc.filter || s.Weight != tc.weight || s.String() != tc.in {
			t.Errorf("%s: got %q %q %d", tc.in, s.Zone, s.Filter, s.Weight)
		}
	}
	for _, bad := range []string{"", "*3", "zen.example*x", "zen.example=127.0.0.2*", "zen example", "zen.example=1.2.3", "a..b"} {
		if _, err := ParseSite(bad); err == nil {
			t.Errorf("ParseSite(%q) accepted", bad)
		}
	}
}

// TestAnswers pins the outcome of every kind of answer.
func TestAnswers(t *testing.T) {
	long := strings.Repeat("x", 600)
	d := startDNS(t, map[string]record{
		"2.0.0.127.bl.test":     {A: []string{"127.0.0.2", "127.0.0.4"}, TXT: []string{"listed: see https://bl.test/q?127.0.0.2", "second"}},
		"3.0.0.127.bl.test":     {A: []string{"127.0.0.3"}},
		"4.0.0.127.bl.test":     {A: []string{"127.0.0.4"}, TXT: []string{"evil\r\n250 ok\x00\xff"}},
		"5.0.0.127.bl.test":     {A: []string{"127.0.0.5"}, TXT: []string{long}},
		"6.0.0.127.bl.test":     {}, // NODATA
		"7.0.0.127.bl.test":     {A: []string{"192.0.2.1"}},
		"8.0.0.127.bl.test":     {A: []string{"127.255.255.254"}},
		"9.0.0.127.bl.test":     {Rcode: dns.RcodeServerFailure},
		"10.0.0.127.bl.test":    {Garbage: true},
		"11.0.0.127.bl.test":    {Rcode: dns.RcodeRefused},
		"12.0.0.127.bl.test":    {A: []string{"127.0.0.2", "10.0.0.1"}},
		"13.0.0.127.bl.test":    {Drop: true},
		"14.0.0.127.bl.test":    {A: []string{"127.255.255.252"}},
		"spam.example.dbl.test": {A: []string{"127.0.1.2"}, TXT: []string{"dbl"}},
		"b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test": {A: []string{"127.0.0.2"}},
	})
	c := newClient(t, d, Config{Timeout: 300 * time.Millisecond, BreakerFailures: 100})
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	for _, tc := range []struct {
		ip     string
		listed string // "" = not listed
		text   string
		err    error
	}{
		{"127.0.0.2", "127.0.0.2,127.0.0.4", "listed: see https://bl.test/q?127.0.0.2 / second", nil},
		{"::ffff:127.0.0.2", "127.0.0.2,127.0.0.4", "listed: see https://bl.test/q?127.0.0.2 / second", nil},
		{"127.0.0.3", "127.0.0.3", "", nil},
		{"127.0.0.4", "127.0.0.4", "evil__250 ok__", nil},
		{"127.0.0.5", "127.0.0.5", long[:txtLimit], nil},
		{"127.0.0.1", "", "", nil}, // NXDOMAIN
		{"127.0.0.6", "", "", nil}, // NODATA
		{"127.0.0.7", "", "", ErrBadAnswer},
		{"127.0.0.8", "", "", ErrBadAnswer},
		{"127.0.0.9", "", "", ErrServer},
		{"127.0.0.10", "", "", ErrBadAnswer},
		{"127.0.0.11", "", "", ErrServer},
		{"127.0.0.12", "", "", ErrBadAnswer},
		{"127.0.0.13", "", "", ErrTimeout},
		{"127.0.0.14", "", "", ErrBadAnswer},
		{"2001:db8:1:2:3:4:567:89ab", "127.0.0.2", "", nil},
	} {
		a := c.LookupIP(bg, "BL.test.", ip(tc.ip))
		if !errors.Is(a.Err, tc.err) || (tc.err == nil) != (a.Err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.ip, a.Err, tc.err)
		}
		got := ""
		if a.Listed() {
			got = a.String()
		}
		if got != tc.listed || a.Text != tc.text {
			t.Errorf("%s: got %q %q, want %q %q", tc.ip, got, a.Text, tc.listed, tc.text)
		}
		if a.Err != nil && a.Listed() {
			t.Errorf("%s: an error is never a listing", tc.ip)
		}
	}
	a := c.LookupDomain(bg, "dbl.test", "Spam.Example.")
	if a.String() != "127.0.1.2" || a.Text != "dbl" || a.Query != "spam.example.dbl.test" {
		t.Errorf("domain: %+v", a)
	}
	for _, bad := range []string{"[192.0.2.1]", "192.0.2.1", "bad_name.example", ""} {
		if a := c.LookupDomain(bg, "dbl.test", bad); !errors.Is(a.Err, ErrInvalidName) {
			t.Errorf("LookupDomain(%q) = %v, want ErrInvalidName", bad, a)
		}
	}
	if n := d.queries("192.0.2.1.dbl.test") + d.queries("bad_name.example.dbl.test"); n != 0 {
		t.Errorf("invalid names were queried %d times", n)
	}
}

// TestTruncated: a UDP answer with TC set is asked again over TCP.
func TestTruncated(t *testing.T) {
	text := strings.Repeat("reason ", 300)
	d := startDNS(t, map[string]record{"2.0.0.127.bl.test": {A: []string{"127.0.0.2"}, TXT: []string{text}}})
	d.truncateUDP(512)
	c := newClient(t, d, Config{})
	a := c.LookupIP(bg, "bl.test", netip.MustParseAddr("127.0.0.2"))
	if !a.Listed() || len(a.Text) != txtLimit {
		t.Fatalf("got %v %q", a, a.Text)
	}
}

// TestTruncatedNoTCP: a truncated answer whose TCP retry fails is an
// error (not listed), not the truncated content.
func TestTruncatedNoTCP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Truncated = true
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 2)}}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	r, err := NewResolvers([]string{pc.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, nil, Config{Exchanger: r, Timeout: time.Second})
	if a := c.LookupIP(bg, "bl.test", netip.MustParseAddr("127.0.0.2")); a.Listed() || !errors.Is(a.Err, ErrServer) {
		t.Errorf("got %v, want a DNS error", a)
	}
}

func TestCacheAndTTL(t *testing.T) {
	d := startDNS(t, map[string]record{
		"2.0.0.127.bl.test":  {A: []string{"127.0.0.2"}, TTL: 1},     // below min: 60 s
		"3.0.0.127.bl.test":  {A: []string{"127.0.0.3"}, TTL: 86400}, // above max: 1 h
		"4.0.0.127.bl.test":  {A: []string{"127.0.0.4"}, TTL: 600},
		"9.0.0.127.bl.test":  {Rcode: dns.RcodeServerFailure},
		"10.0.0.127.bl.test": {SOA: 120}, // NODATA with SOA minimum 120 s
	})
	clk := &clock{}
	c := newClient(t, d, Config{Now: clk.now, BreakerFailures: 100})
	look := func(last byte) Answer {
		return c.LookupIP(bg, "bl.test", netip.AddrFrom4([4]byte{127, 0, 0, last}))
	}
	for _, n := range []byte{2, 3, 4, 5, 9, 10} {
		look(n)
		look(n)
	}
	want := map[string]int{"2": 1, "3": 1, "4": 1, "5": 1, "9": 2, "10": 1} // errors are not cached
	for n, w := range want {
		if got := d.queries(n + ".0.0.127.bl.test"); got != w {
			t.Errorf("127.0.0.%s: %d queries, want %d", n, got, w)
		}
	}
	clk.advance(59 * time.Second)
	for _, n := range []byte{2, 3, 4, 5, 10} {
		look(n)
	}
	for _, n := range []string{"2", "3", "4", "5", "10"} {
		if got := d.queries(n + ".0.0.127.bl.test"); got != 1 {
			t.Errorf("after 59 s, 127.0.0.%s: %d queries, want 1 (cached)", n, got)
		}
	}
	clk.advance(2 * time.Second) // 61 s: min TTL over
	for _, n := range []byte{2, 3, 4, 5, 10} {
		look(n)
	}
	// 2 (TTL 1 → 60 s) and 5 (NXDOMAIN without SOA → 60 s) expired;
	// 10 (SOA 120 s), 4 (600 s) and 3 (1 h) did not.
	for n, w := range map[string]int{"2": 2, "5": 2, "10": 1, "4": 1, "3": 1} {
		if got := d.queries(n + ".0.0.127.bl.test"); got != w {
			t.Errorf("after 61 s, 127.0.0.%s: %d queries, want %d", n, got, w)
		}
	}
	clk.advance(time.Hour)
	look(3)
	if got := d.queries("3.0.0.127.bl.test"); got != 2 {
		t.Errorf("TTL 86400 is capped at 1 h: %d queries, want 2", got)
	}
}

// TestMergedQueries: concurrent lookups of one name send one query.
func TestMergedQueries(t *testing.T) {
	d := startDNS(t, map[string]record{"2.0.0.127.bl.test": {A: []string{"127.0.0.2"}, Delay: 200 * time.Millisecond}})
	c := newClient(t, d, Config{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a := c.LookupIP(bg, "bl.test", netip.MustParseAddr("127.0.0.2")); !a.Listed() {
				t.Errorf("not listed: %v", a)
			}
		}()
	}
	wg.Wait()
	if n := d.queries("2.0.0.127.bl.test"); n != 1 {
		t.Errorf("%d queries, want 1", n)
	}
}

// TestBreaker: a zone that stops answering is skipped after
// BreakerFailures timeouts, lookups waiting for it are released when the
// breaker opens, and a probe after the backoff closes it again.
func TestBreaker(t *testing.T) {
	d := startDNS(t, map[string]record{
		"1.0.0.10.dead.test": {Drop: true}, "2.0.0.10.dead.test": {Drop: true}, "3.0.0.10.dead.test": {Drop: true},
		"4.0.0.10.dead.test": {Drop: true}, "5.0.0.10.dead.test": {Drop: true}, "6.0.0.10.dead.test": {Drop: true},
	})
	clk := &clock{}
	const timeout = 400 * time.Millisecond
	c := newClient(t, d, Config{Timeout: timeout, Now: clk.now, BreakerBackoff: 30 * time.Second})
	look := func(n byte) (Answer, time.Duration) {
		start := time.Now()
		a := c.LookupIP(bg, "dead.test", netip.AddrFrom4([4]byte{10, 0, 0, n}))
		return a, time.Since(start)
	}
	var wg sync.WaitGroup
	for n := byte(1); n <= 3; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a, _ := look(n); !errors.Is(a.Err, ErrTimeout) {
				t.Errorf("10.0.0.%d: %v, want timeout", n, a.Err)
			}
		}()
	}
	// Started halfway through the others' timeout: released when they
	// open the breaker, not after its own full timeout.
	time.Sleep(timeout / 2)
	a, took := look(4)
	wg.Wait()
	if !errors.Is(a.Err, ErrSkipped) || took > timeout*9/10 {
		t.Errorf("lookup in flight when the breaker opened: %v after %v", a.Err, took)
	}
	a, took = look(5)
	if !errors.Is(a.Err, ErrSkipped) || took > 50*time.Millisecond {
		t.Errorf("open breaker: %v after %v, want ErrSkipped at once", a.Err, took)
	}
	if n := d.queries("5.0.0.10.dead.test"); n != 0 {
		t.Errorf("open breaker sent %d queries", n)
	}
	// The zone recovers; after the backoff one lookup probes it.
	d.set("5.0.0.10.dead.test", record{A: []string{"127.0.0.2"}})
	clk.advance(31 * time.Second)
	if a, _ := look(5); !a.Listed() {
		t.Fatalf("probe: %v", a)
	}
	if a, _ := look(6); !errors.Is(a.Err, ErrTimeout) {
		t.Errorf("closed breaker queries again: %v", a.Err)
	}
}

// TestBreakerBackoff: a failed probe doubles the backoff.
func TestBreakerBackoff(t *testing.T) {
	d := startDNS(t, map[string]record{"1.0.0.10.dead.test": {Rcode: dns.RcodeServerFailure}})
	clk := &clock{}
	c := newClient(t, d, Config{Now: clk.now, BreakerFailures: 2, BreakerBackoff: 10 * time.Second, BreakerMaxBackoff: 15 * time.Second})
	look := func() error {
		return c.LookupIP(bg, "dead.test", netip.MustParseAddr("10.0.0.1")).Err
	}
	for range 2 {
		if err := look(); !errors.Is(err, ErrServer) {
			t.Fatalf("%v, want SERVFAIL", err)
		}
	}
	if err := look(); !errors.Is(err, ErrSkipped) {
		t.Fatalf("%v, want skipped", err)
	}
	clk.advance(11 * time.Second)
	if err := look(); !errors.Is(err, ErrServer) {
		t.Fatalf("probe: %v", err)
	}
	clk.advance(11 * time.Second) // backoff is now 15 s (20 s capped)
	if err := look(); !errors.Is(err, ErrSkipped) {
		t.Fatalf("after failed probe: %v, want skipped", err)
	}
	clk.advance(5 * time.Second)
	if err := look(); !errors.Is(err, ErrServer) {
		t.Fatalf("second probe: %v", err)
	}
	if n := d.queries("1.0.0.10.dead.test"); n != 4 {
		t.Errorf("%d queries, want 4", n)
	}
}

// TestHealth: the RFC 5782 test disables a zone that lists everything or
// does not list 127.0.0.2, leaves a zone that does not answer alone, and
// enables a zone again when it passes.
func TestHealth(t *testing.T) {
	everything := record{A: []string{"127.0.0.2"}}
	d := startDNS(t, map[string]record{
		"2.0.0.127.good.test":   {A: []string{"127.0.0.2"}},
		"9.2.0.192.good.test":   {A: []string{"127.0.0.2"}},
		"1.0.0.127.broken.test": everything, "2.0.0.127.broken.test": everything, "9.2.0.192.broken.test": everything,
		"9.2.0.192.notest.test": {A: []string{"127.0.0.2"}},
		"2.0.0.127.dead.test":   {Drop: true}, "1.0.0.127.dead.test": {Drop: true},
		"test.dbl.test":         {A: []string{"127.0.1.2"}},
		"invalid.dbl.test":      {A: []string{"127.0.1.2"}},
		"spam.example.dbl.test": {A: []string{"127.0.1.2"}},
	})
	c := newClient(t, d, Config{Timeout: 300 * time.Millisecond, HealthInterval: 100 * time.Millisecond})
	client := netip.MustParseAddr("192.0.2.9")
	for _, z := range []string{"good.test", "broken.test", "notest.test", "dead.test"} {
		c.Register(z, KindIP)
	}
	c.Register("dbl.test", KindDomain)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c.LookupIP(bg, "broken.test", client).Err != nil && c.LookupIP(bg, "notest.test", client).Err != nil &&
			c.LookupDomain(bg, "dbl.test", "spam.example").Err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for z, want := range map[string]error{"good.test": nil, "broken.test": ErrDisabled, "notest.test": ErrDisabled} {
		a := c.LookupIP(bg, z, client)
		if !errors.Is(a.Err, want) || (want == nil) != a.Listed() {
			t.Errorf("%s: %v, want %v", z, a, want)
		}
	}
	if a := c.LookupDomain(bg, "dbl.test", "spam.example"); !errors.Is(a.Err, ErrDisabled) {
		t.Errorf("dbl.test: %v, want disabled", a)
	}
	if err := c.zone("dead.test", 0).disabledErr(); err != nil {
		t.Errorf("a zone that does not answer is not disabled by the health test: %v", err)
	}
	// broken.test is repaired: enabled at the next test.
	d.set("1.0.0.127.broken.test", record{})
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && c.LookupIP(bg, "broken.test", client).Err != nil {
		time.Sleep(20 * time.Millisecond)
	}
	if a := c.LookupIP(bg, "broken.test", client); !a.Listed() {
		t.Errorf("repaired zone: %v", a)
	}
}

func TestScore(t *testing.T) {
	d := startDNS(t, map[string]record{
		"9.2.0.192.zen.test": {A: []string{"127.0.0.4", "127.0.0.10"}, TXT: []string{"zen says"}},
		"9.2.0.192.bl.test":  {A: []string{"127.0.0.2"}},
		"9.2.0.192.wl.test":  {A: []string{"127.0.15.2"}},
		"8.2.0.192.zen.test": {A: []string{"127.0.0.2"}},
		"8.2.0.192.pbl.test": {Drop: true},
	})
	c := newClient(t, d, Config{Timeout: 300 * time.Millisecond})
	var sites []Site
	for _, s := range []string{"zen.test=127.0.0.[2..11]*3", "zen.test=127.0.0.[10;11]*2", "bl.test*1", "wl.test=127.0.[0..255].[1..3]*-2", "pbl.test"} {
		site, err := ParseSite(s)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, site)
	}
	sc := c.Score(bg, netip.MustParseAddr("192.0.2.9"), sites, nil)
	if sc.Total != 3+2+1-2 {
		t.Errorf("total %d, want 4: %+v", sc.Total, sc.Results)
	}
	if top, ok := sc.Top(); !ok || top.Site.String() != "zen.test=127.0.0.[2..11]*3" || top.Answer.Text != "zen says" {
		t.Errorf("top: %+v %v", top, ok)
	}
	// A dead zone costs one timeout, in parallel with the others, and
	// counts as not listed.
	start := time.Now()
	sc = c.Score(bg, netip.MustParseAddr("192.0.2.8"), sites, nil)
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("score took %v with one dead zone (timeout 300ms)", took)
	}
	if sc.Total != 3 || !errors.Is(sc.Results[4].Answer.Err, ErrTimeout) {
		t.Errorf("total %d, results %+v", sc.Total, sc.Results)
	}
	if n, txt := d.queries("9.2.0.192.zen.test"), d.txtQueries("9.2.0.192.zen.test"); n != 1 || txt != 1 {
		t.Errorf("zen.test: %d A and %d TXT queries, want 1 each (once for both sites)", n, txt)
	}
}

// TestPrefetch: lookups start before anyone asks, and a session keeps its
// answers.
func TestPrefetch(t *testing.T) {
	d := startDNS(t, map[string]record{
		"9.2.0.192.zen.test": {A: []string{"127.0.0.2"}, Delay: 100 * time.Millisecond},
		"9.2.0.192.bl.test":  {A: []string{"127.0.0.3"}, Delay: 100 * time.Millisecond},
	})
	c := newClient(t, d, Config{})
	ip := netip.MustParseAddr("192.0.2.9")
	start := time.Now()
	p := c.Prefetch(ip, []string{"zen.test", "BL.test", "zen.test"})
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("Prefetch blocked")
	}
	deadline := time.Now().Add(2 * time.Second)
	for d.queries("9.2.0.192.zen.test") == 0 || d.queries("9.2.0.192.bl.test") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("prefetch sent no queries")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a := p.Lookup(bg, "zen.test"); a.String() != "127.0.0.2" {
		t.Errorf("zen: %v", a)
	}
	if a := p.Lookup(bg, "bl.test"); a.String() != "127.0.0.3" {
		t.Errorf("bl: %v", a)
	}
	// A then TXT, 100 ms each: 200 ms in parallel, 400 ms one after the other.
	if took := time.Since(start); took > 350*time.Millisecond {
		t.Errorf("zones were not queried in parallel: %v", took)
	}
	// Not prefetched: looked up now.
	if a := p.Lookup(bg, "other.test"); a.Listed() || a.Err != nil {
		t.Errorf("other: %v", a)
	}
	// The session keeps its answer even when the list changes.
	d.set("9.2.0.192.zen.test", record{})
	if a := p.Lookup(bg, "zen.test"); a.String() != "127.0.0.2" {
		t.Errorf("zen later: %v", a)
	}
	if p.IP() != ip {
		t.Errorf("IP() = %v", p.IP())
	}
}

// TestResolverFailover: a resolver that does not answer, or answers
// SERVFAIL, is followed by the next one.
func TestResolverFailover(t *testing.T) {
	good := startDNS(t, map[string]record{"2.0.0.127.bl.test": {A: []string{"127.0.0.2"}}})
	servfail := startDNS(t, map[string]record{"2.0.0.127.bl.test": {Rcode: dns.RcodeServerFailure}})
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, servers := range [][]string{{silent.LocalAddr().String(), good.addr}, {servfail.addr, good.addr}} {
		r, err := NewResolvers(servers)
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, nil, Config{Exchanger: r, Timeout: time.Second})
		if a := c.LookupIP(bg, "bl.test", netip.MustParseAddr("127.0.0.2")); !a.Listed() {
			t.Errorf("%v: %v", servers, a)
		}
	}
	if _, err := NewResolvers([]string{"not-an-ip"}); err == nil {
		t.Error("NewResolvers accepted a host name")
	}
	r, err := NewResolvers([]string{"192.0.2.53", "[2001:db8::53]", "192.0.2.54:5353"})
	if err != nil || strings.Join(r.Servers(), " ") != "192.0.2.53:53 [2001:db8::53]:53 192.0.2.54:5353" {
		t.Errorf("servers: %v %v", r, err)
	}
}

func TestCallerGivesUp(t *testing.T) {
	d := startDNS(t, map[string]record{"2.0.0.127.bl.test": {A: []string{"127.0.0.2"}, Delay: 300 * time.Millisecond}})
	c := newClient(t, d, Config{})
	ctx, cancel := contextWithTimeout(50 * time.Millisecond)
	defer cancel()
	if a := c.LookupIP(ctx, "bl.test", netip.MustParseAddr("127.0.0.2")); !errors.Is(a.Err, ErrTimeout) {
		t.Errorf("%v", a)
	}
	// The query went on and its answer is cached for the next caller.
	time.Sleep(400 * time.Millisecond)
	if a := c.LookupIP(bg, "bl.test", netip.MustParseAddr("127.0.0.2")); !a.Listed() {
		t.Errorf("%v", a)
	}
	if n := d.queries("2.0.0.127.bl.test"); n != 1 {
		t.Errorf("%d queries", n)
	}
}

func TestCacheBound(t *testing.T) {
	c := newCache(10)
	now := time.Now()
	for i := range 100 {
		c.put(string(rune('a'+i)), Answer{}, now, now.Add(time.Minute))
		if c.len() > 10 {
			t.Fatalf("cache holds %d entries", c.len())
		}
	}
}
