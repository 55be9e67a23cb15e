package harness

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSZones maps names to what the server answers for them. Keys are
// case-insensitive; the trailing dot is optional ("example.test" and
// "Example.Test." are the same). A name not in the map gets NXDOMAIN; a
// name in the map without records of the asked type gets NOERROR with no
// answer (NODATA). For PTR, key the reverse name: dns.ReverseAddr("192.0.2.1").
type DNSZones map[string]DNSAnswer

// DNSAnswer is what one name answers.
type DNSAnswer struct {
	A, AAAA []string // IP addresses
	MX      []DNSMX
	// TXT records, one per string; strings longer than 255 bytes are split
	// into several character-strings of one record (as for DKIM keys).
	// A backslash starts an escape (\DDD or \X), as in zone files.
	TXT   []string
	PTR   []string // host names
	CNAME string   // answered for every type but CNAME's target is not chased
	// Rcode, when not 0, is returned instead of records, e.g.
	// dns.RcodeServerFailure or dns.RcodeRefused.
	Rcode int
	// Drop makes the server never answer queries for the name, as a dead
	// DNSBL: the client times out.
	Drop bool
}

// DNSMX is one MX record.
type DNSMX struct {
	Pref uint16
	Host string
}

// DNS is an in-process authoritative DNS server on 127.0.0.1, over UDP and
// TCP on the same port.
type DNS struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu      sync.Mutex
	zones   map[string]DNSAnswer
	queries map[string]int
}

// dnsTTL is the TTL of every answer.
const dnsTTL = 300

// StartDNS starts a DNS server answering from zones and shuts it down in
// t.Cleanup.
func StartDNS(t testing.TB, zones DNSZones) *DNS {
	t.Helper()
	d := &DNS{zones: make(map[string]DNSAnswer), queries: make(map[string]int)}
	for name, a := range zones {
		if err := a.check(); err != nil {
			t.Fatalf("StartDNS: %s: %v", name, err)
		}
		d.zones[canonicalName(name)] = a
	}
	// UDP on port 0, then TCP on the same port; retry if TCP's is taken.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range bindAttempts {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatalf("StartDNS: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("StartDNS: no port free for both UDP and TCP: %v", err)
	}
	d.addr = pc.LocalAddr().String()
	d.udp = &dns.Server{PacketConn: pc, Handler: d}
	d.tcp = &dns.Server{Listener: ln, Handler: d}
	for _, srv := range []*dns.Server{d.udp, d.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("StartDNS: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("StartDNS: server did not start within 5 s")
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.udp.ShutdownContext(ctx)
		_ = d.tcp.ShutdownContext(ctx)
	})
	return d
}

func canonicalName(name string) string { return dns.Fqdn(strings.ToLower(name)) }

// Addr returns "127.0.0.1:port" (UDP and TCP).
func (d *DNS) Addr() string { return d.addr }

// Port returns the port number.
func (d *DNS) Port() int {
	_, p, _ := net.SplitHostPort(d.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Set replaces what name answers. Addresses that do not parse make the
// name answer SERVFAIL.
func (d *DNS) Set(name string, a DNSAnswer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.zones[canonicalName(name)] = a
}

// Delete removes name: it answers NXDOMAIN.
func (d *DNS) Delete(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.zones, canonicalName(name))
}

// Queries returns how many queries (of any type) name received.
func (d *DNS) Queries(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[canonicalName(name)]
}

// Resolver returns a pure-Go *net.Resolver that sends every query to this
// server, for code that takes one.
func (d *DNS) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, d.addr)
		},
	}
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := canonicalName(q.Name)
	d.mu.Lock()
	a, ok := d.zones[name]
	d.queries[name]++
	d.mu.Unlock()
	if ok && a.Drop {
		return // never answer
	}
	m.SetReply(r)
	m.Authoritative = true
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case a.Rcode != 0:
		m.Rcode = a.Rcode
	default:
		rrs, err := a.records(q.Name, q.Qtype)
		if err != nil {
			m.Rcode = dns.RcodeServerFailure // only via Set: StartDNS checks its zones
		}
		m.Answer = rrs
	}
	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size) // sets TC: the client retries over TCP
	}
	_ = w.WriteMsg(m)
}

// check reports addresses that do not parse.
func (a DNSAnswer) check() error {
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if _, err := a.records(".", t); err != nil {
			return err
		}
	}
	return nil
}

// records returns a's records of type qtype, owned by qname as asked.
func (a DNSAnswer) records(qname string, qtype uint16) ([]dns.RR, error) {
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: qname, Rrtype: t, Class: dns.ClassINET, Ttl: dnsTTL}
	}
	if a.CNAME != "" {
		return []dns.RR{&dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(a.CNAME)}}, nil
	}
	var rrs []dns.RR
	switch qtype {
	case dns.TypeA:
		for _, s := range a.A {
			ip := net.ParseIP(s).To4()
			if ip == nil {
				return nil, fmt.Errorf("bad A address %q", s)
			}
			rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		}
	case dns.TypeAAAA:
		for _, s := range a.AAAA {
			ip := net.ParseIP(s)
			if ip == nil || ip.To4() != nil {
				return nil, fmt.Errorf("bad AAAA address %q", s)
			}
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
		}
	case dns.TypeMX:
		for _, mx := range a.MX {
			rrs = append(rrs, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: mx.Pref, Mx: dns.Fqdn(mx.Host)})
		}
	case dns.TypeTXT:
		for _, s := range a.TXT {
			rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: splitTXT(s)})
		}
	case dns.TypePTR:
		for _, s := range a.PTR {
			rrs = append(rrs, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: dns.Fqdn(s)})
		}
	}
	return rrs, nil
}

// splitTXT splits s into character-strings of at most 255 bytes
// (RFC 1035 section 3.3.14).
func splitTXT(s string) []string {
	parts := []string{}
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}
