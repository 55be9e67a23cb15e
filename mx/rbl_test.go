package mx

import (
	"bufio"
	"context"
	"crypto/tls"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/policy"
)

// dnsListStarter records the addresses it is asked to look up.
type dnsListStarter struct {
	mu  sync.Mutex
	ips []netip.Addr
	dl  *policy.DNSLists
}

func (s *dnsListStarter) StartDNSLists(ip netip.Addr) *policy.DNSLists {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ips = append(s.ips, ip)
	return s.dl
}

func (s *dnsListStarter) calls() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.Addr(nil), s.ips...)
}

// dnsListChecker records the DNSLists of each RCPT's Request.
type dnsListChecker struct {
	fakeChecker
	mu   sync.Mutex
	seen []*policy.DNSLists
}

func (c *dnsListChecker) CheckRcpt(ctx context.Context, req *policy.Request) (*policy.RcptVerdict, error) {
	c.mu.Lock()
	c.seen = append(c.seen, req.DNSLists)
	c.mu.Unlock()
	return c.fakeChecker.CheckRcpt(ctx, req)
}

// TestDNSListsStartAtAccept: the client's DNS list lookups start when the
// connection is accepted, before the banner, and every RCPT of the
// session, also after STARTTLS, gets the same lookups.
func TestDNSListsStartAtAccept(t *testing.T) {
	starter := &dnsListStarter{dl: &policy.DNSLists{}}
	checker := &dnsListChecker{}
	ts := serve(t, Config{Hostname: "mx.example.com", Timeout: 5 * time.Second, TLSConfig: testTLSConfig(t), DNSLists: starter}, checker)
	c := dial(t, ts.addr) // reads the banner
	if got := starter.calls(); len(got) != 1 || got[0] != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("lookups started for %v by the time of the banner, want [127.0.0.1]", got)
	}
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	c.must("RSET", "250 2.0.0 Ok")
	c.send("STARTTLS\r\n")
	c.expect("220 2.0.0 Ready to start TLS")
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	c.mustPrefix("EHLO client.test", "250 ")
	c.must("MAIL FROM:<a@remote.test>", "250 2.1.0 Ok")
	c.must("RCPT TO:<alice@example.com>", "250 2.1.5 Ok")
	checker.mu.Lock()
	defer checker.mu.Unlock()
	if len(checker.seen) != 2 || checker.seen[0] != starter.dl || checker.seen[1] != starter.dl {
		t.Errorf("requests carried %v, want the accept-time lookups twice", checker.seen)
	}
	if n := len(starter.calls()); n != 1 {
		t.Errorf("lookups started %d times for one connection", n)
	}
}
