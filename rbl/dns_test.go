package rbl

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// record is what the test server answers for one name.
type record struct {
	A     []string // A records
	TXT   []string
	TTL   uint32 // 0 = 300
	Rcode int
	Drop  bool          // never answer
	Delay time.Duration // answer late
	// Garbage answers with bytes that do not parse (but carry the query ID).
	Garbage bool
	// SOA adds a SOA with this MINIMUM to negative answers.
	SOA uint32
}

// testDNS is an in-process authoritative server on 127.0.0.1 (UDP and TCP
// on the same port), answering from a map.
type testDNS struct {
	addr string
	mu   sync.Mutex
	rrs  map[string]record
	hits map[string]int
	// udpLimit, when > 0, truncates UDP answers larger than it (TC set).
	udpLimit int
}

func startDNS(t *testing.T, rrs map[string]record) *testDNS {
	t.Helper()
	d := &testDNS{rrs: map[string]record{}, hits: map[string]int{}}
	for k, v := range rrs {
		d.rrs[dns.Fqdn(strings.ToLower(k))] = v
	}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: d}, {Listener: ln, Handler: d}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("DNS server did not start")
		}
		t.Cleanup(func() { srv.Shutdown() })
	}
	return d
}

func (d *testDNS) set(name string, r record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rrs[dns.Fqdn(strings.ToLower(name))] = r
}

// queries returns how many A queries name got.
func (d *testDNS) queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits[dns.Fqdn(strings.ToLower(name))]
}

// txtQueries returns how many TXT queries name got.
func (d *testDNS) txtQueries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits[dns.Fqdn(strings.ToLower(name))+"/TXT"]
}

func (d *testDNS) truncateUDP(limit int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.udpLimit = limit
}

func (d *testDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	rec, ok := d.rrs[name]
	if q.Qtype == dns.TypeTXT {
		d.hits[name+"/TXT"]++
	} else {
		d.hits[name]++
	}
	limit := d.udpLimit
	d.mu.Unlock()
	if rec.Drop {
		return
	}
	if rec.Delay > 0 {
		time.Sleep(rec.Delay)
	}
	if rec.Garbage {
		b := []byte{byte(r.Id >> 8), byte(r.Id), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xff, 0xff}
		w.Write(b)
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	ttl := rec.TTL
	if ttl == 0 {
		ttl = 300
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case rec.Rcode != 0:
		m.Rcode = rec.Rcode
	case q.Qtype == dns.TypeA:
		for _, a := range rec.A {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP(a)})
		}
	case q.Qtype == dns.TypeTXT:
		for _, s := range rec.TXT {
			var parts []string
			for len(s) > 255 {
				parts, s = append(parts, s[:255]), s[255:]
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: append(parts, s)})
		}
	}
	if len(m.Answer) == 0 && rec.SOA != 0 {
		m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
			Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: rec.SOA})
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && limit > 0 {
		if m.Len() > limit {
			m.Answer = nil
			m.Truncated = true
		}
	}
	w.WriteMsg(m)
}

// clock is a settable time source for TTL and backoff tests.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// newClient returns a Client using d, with health tests off unless cfg
// sets HealthInterval.
func newClient(t *testing.T, d *testDNS, cfg Config) *Client {
	t.Helper()
	if cfg.Exchanger == nil {
		r, err := NewResolvers([]string{d.addr})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Exchanger = r
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = -1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

var bg = context.Background()

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
