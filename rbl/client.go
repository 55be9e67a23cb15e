package rbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Config configures a Client. Zero values are documented per field; package
// cmd fills in the Postfix defaults.
type Config struct {
	// Exchanger sends the queries. Required; NewResolvers gives one.
	Exchanger Exchanger
	// Timeout bounds one lookup in one zone, retries and the TXT query
	// included (postscreen_dnsbl_timeout); after it the name counts as
	// not listed. 0 = 10 s.
	Timeout time.Duration
	// MinTTL and MaxTTL clamp how long answers, negative ones included,
	// are cached (postscreen_dnsbl_min_ttl, postscreen_dnsbl_max_ttl).
	// 0 = 60 s and 1 h.
	MinTTL, MaxTTL time.Duration
	// HealthInterval is how often the RFC 5782 §5 test runs for every
	// registered zone (the first test runs when the zone is registered).
	// 0 = 5 min; negative = never.
	HealthInterval time.Duration
	// BreakerFailures is how many failed lookups in a row (timeouts, DNS
	// errors, bad answers) make a zone skipped. 0 = 3.
	BreakerFailures int
	// BreakerBackoff is how long a failing zone is skipped before one
	// lookup probes it again; it doubles after each failed probe, up to
	// BreakerMaxBackoff. 0 = 30 s and 10 min.
	BreakerBackoff, BreakerMaxBackoff time.Duration
	// CacheSize bounds the number of cached answers. 0 = 100000.
	CacheSize int
	// Now returns the current time; nil = time.Now.
	Now func() time.Time
}

// Kind is what a zone lists, for its health test.
type Kind uint8

const (
	// KindIP: IP addresses (DNSBL, DNSWL; RFC 5782 §2).
	KindIP Kind = 1 << iota
	// KindDomain: domain names (RHSBL, RHSWL; RFC 5782 §3).
	KindDomain
)

// Answer is what a zone says about one name.
type Answer struct {
	// Zone and Query are the zone and the name asked ("2.0.0.127.zone").
	Zone, Query string
	// Addrs are the A records: the listing codes. Empty: not listed.
	Addrs []netip.Addr
	// Text is the TXT record of a listed name (records joined with " / ",
	// at most 500 bytes, made printable ASCII), or "".
	Text string
	// Err says why the zone gave no usable answer (see the package
	// errors); the name then counts as not listed.
	Err error
}

// Listed reports whether the zone lists the name.
func (a Answer) Listed() bool { return a.Err == nil && len(a.Addrs) > 0 }

// Match reports whether the zone lists the name with an answer that f
// accepts (Postfix: any A record matching the filter).
func (a Answer) Match(f Filter) bool {
	if !a.Listed() {
		return false
	}
	for _, x := range a.Addrs {
		if f.Match(x) {
			return true
		}
	}
	return false
}

// String renders the answer for traces and logs: "127.0.0.2,127.0.0.4",
// "not listed", or the error.
func (a Answer) String() string {
	if a.Err != nil {
		return "error: " + a.Err.Error()
	}
	if len(a.Addrs) == 0 {
		return "not listed"
	}
	s := make([]string, len(a.Addrs))
	for i, x := range a.Addrs {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// Client looks names up in DNS lists. Safe for concurrent use. Close it to
// stop the health tests.
type Client struct {
	cfg   Config
	log   *slog.Logger
	cache *cache
	sf    singleflight.Group

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex // guards zones, zone.kinds, and wg.Add against Close
	zones map[string]*zone
}

// New returns a Client.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if cfg.Exchanger == nil {
		return nil, errors.New("rbl: Exchanger is required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&cfg.Timeout, 10*time.Second)
	def(&cfg.MinTTL, 60*time.Second)
	def(&cfg.MaxTTL, time.Hour)
	def(&cfg.HealthInterval, 5*time.Minute)
	def(&cfg.BreakerBackoff, 30*time.Second)
	def(&cfg.BreakerMaxBackoff, 10*time.Minute)
	if cfg.MaxTTL < cfg.MinTTL {
		return nil, fmt.Errorf("rbl: MaxTTL %v is below MinTTL %v", cfg.MaxTTL, cfg.MinTTL)
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 3
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 100000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Client{
		cfg:   cfg,
		log:   logger,
		cache: newCache(cfg.CacheSize),
		zones: map[string]*zone{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.HealthInterval > 0 {
		c.wg.Add(1)
		go c.healthLoop()
	}
	return c, nil
}

// Close stops the health tests and ends the lookups in flight.
func (c *Client) Close() {
	c.mu.Lock()
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
}

// Register declares a zone and what it lists, so that its health test
// runs before the first lookup needs it. Lookups register their zone too.
func (c *Client) Register(zoneName string, k Kind) {
	c.zone(canonZone(zoneName), k)
}

// zone returns the state of a zone, creating it, and starts a health test
// when the zone lists a kind of names it was not known to list.
func (c *Client) zone(name string, k Kind) *zone {
	c.mu.Lock()
	defer c.mu.Unlock()
	z := c.zones[name]
	if z == nil {
		z = newZone(name)
		c.zones[name] = z
	}
	newKinds := k &^ z.kinds
	z.kinds |= k
	if newKinds != 0 && c.cfg.HealthInterval > 0 && c.ctx.Err() == nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.healthTest(z, newKinds)
		}()
	}
	return z
}

// LookupIP looks ip up in an address list (RFC 5782 §2).
func (c *Client) LookupIP(ctx context.Context, zoneName string, ip netip.Addr) Answer {
	zn := canonZone(zoneName)
	return c.lookup(ctx, c.zone(zn, KindIP), ipQuery(ip, zn))
}

// LookupDomain looks domain up in a domain list (RFC 5782 §3). A domain
// that is not ValidDomain is not queried: the answer has ErrInvalidName.
func (c *Client) LookupDomain(ctx context.Context, zoneName, domain string) Answer {
	zn := canonZone(zoneName)
	q, ok := domainQuery(domain, zn)
	if !ok {
		return Answer{Zone: zn, Query: domain, Err: ErrInvalidName}
	}
	return c.lookup(ctx, c.zone(zn, KindDomain), q)
}

// lookup answers from the cache, or joins the query in flight for the same
// name, or starts one. The query runs on its own deadline (Timeout), so a
// caller that gives up does not cancel it for the others.
func (c *Client) lookup(ctx context.Context, z *zone, q string) Answer {
	if err := c.ctx.Err(); err != nil {
		return Answer{Zone: z.name, Query: q, Err: ErrClosed}
	}
	if err := z.disabledErr(); err != nil {
		return Answer{Zone: z.name, Query: q, Err: err}
	}
	if a, ok := c.cache.get(q, c.cfg.Now()); ok {
		return a
	}
	ch := c.sf.DoChan(q, func() (any, error) { return c.resolve(z, q), nil })
	select {
	case r := <-ch:
		return r.Val.(Answer)
	case <-ctx.Done():
		return Answer{Zone: z.name, Query: q, Err: classify(ctx.Err())}
	}
}

// resolve runs one lookup through the zone's circuit breaker.
func (c *Client) resolve(z *zone, q string) Answer {
	gen, probe, err := z.admit(c.cfg.Now())
	if err != nil {
		return Answer{Zone: z.name, Query: q, Err: err}
	}
	ctx, cancel := context.WithTimeout(gen, c.cfg.Timeout)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	a, ttl := c.query(ctx, z.name, q)
	if a.Err != nil && (gen.Err() != nil || c.ctx.Err() != nil) {
		// Released because the breaker opened or the client closed: not a
		// failure of its own.
		a.Err = ErrSkipped
		if c.ctx.Err() != nil {
			a.Err = ErrClosed
		}
		z.release(probe)
		return a
	}
	if a.Err != nil {
		c.log.Warn("dnsbl lookup failed", "zone", z.name, "query", q, "err", a.Err)
	}
	if tr := z.record(c.cfg, probe, a.Err); tr != "" {
		c.logTransition(z, tr)
	}
	if a.Err == nil {
		now := c.cfg.Now()
		c.cache.put(q, a, now, now.Add(ttl))
	}
	return a
}

func (c *Client) logTransition(z *zone, tr transition) {
	switch tr {
	case trOpened, trReopened:
		z.mu.Lock()
		backoff := z.backoff
		z.mu.Unlock()
		msg := "dnsbl zone not responding: skipped, counts as not listed"
		if tr == trReopened {
			msg = "dnsbl zone still not responding: skipped, counts as not listed"
		}
		c.log.Warn(msg, "zone", z.name, "retry_in", backoff.String())
	case trClosed:
		c.log.Info("dnsbl zone answers again: no longer skipped", "zone", z.name)
	}
}

// txtLimit bounds the TXT text kept (Postfix RBL_TXT_LIMIT).
const txtLimit = 500

// query asks for the A records of q, and for its TXT records when listed.
// It returns the answer and how long it may be cached.
func (c *Client) query(ctx context.Context, zoneName, q string) (Answer, time.Duration) {
	a := Answer{Zone: zoneName, Query: q}
	resp, err := c.exchange(ctx, q, dns.TypeA)
	if err != nil {
		a.Err = err
		return a, 0
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return a, c.clampTTL(negativeTTL(resp, c.cfg.MinTTL))
	default:
		a.Err = fmt.Errorf("%w: %s", ErrServer, dns.RcodeToString[resp.Rcode])
		return a, 0
	}
	ttl := time.Duration(-1)
	for _, rr := range resp.Answer {
		rec, ok := rr.(*dns.A)
		if !ok {
			continue // CNAME chains from a recursive resolver
		}
		ip, ok := netip.AddrFromSlice(rec.A.To4())
		if !ok {
			a.Err = fmt.Errorf("%w: unparsable A record", ErrBadAnswer)
			return a, 0
		}
		if err := checkCode(ip); err != nil {
			a.Err = err
			return a, 0
		}
		a.Addrs = append(a.Addrs, ip)
		if d := time.Duration(rec.Hdr.Ttl) * time.Second; ttl < 0 || d < ttl {
			ttl = d
		}
	}
	if len(a.Addrs) == 0 { // NODATA (RFC 2308 §2.2)
		return a, c.clampTTL(negativeTTL(resp, c.cfg.MinTTL))
	}
	// The reason is fetched with the listing, so that a reply needs no
	// second round trip. A TXT failure only loses the text (Postfix).
	if tresp, err := c.exchange(ctx, q, dns.TypeTXT); err == nil && tresp.Rcode == dns.RcodeSuccess {
		var parts []string
		for _, rr := range tresp.Answer {
			if t, ok := rr.(*dns.TXT); ok {
				parts = append(parts, unescapeTXT(strings.Join(t.Txt, "")))
				if d := time.Duration(t.Hdr.Ttl) * time.Second; d < ttl {
					ttl = d
				}
			}
		}
		a.Text = printable(strings.Join(parts, " / "), txtLimit)
	}
	return a, c.clampTTL(ttl)
}

// exchange sends one query and checks that the response answers it.
func (c *Client) exchange(ctx context.Context, q string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(q), qtype)
	m.SetEdns0(1232, false) // DNS flag day 2020: no fragmentation
	resp, err := c.cfg.Exchanger.Exchange(ctx, m)
	if err != nil {
		return nil, classify(err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != qtype {
		return nil, fmt.Errorf("%w: response does not match the question", ErrBadAnswer)
	}
	if resp.Truncated {
		return nil, fmt.Errorf("%w: truncated", ErrBadAnswer)
	}
	return resp, nil
}

// checkCode accepts listing codes: addresses in 127.0.0.0/8 (RFC 5782
// §2.3), except 127.255.255.0/24, which Spamhaus uses for errors
// (252: typo in the zone name, 254: query through a public resolver, 255:
// excessive number of queries).
func checkCode(ip netip.Addr) error {
	b := ip.As4()
	switch {
	case b[0] != 127:
		return fmt.Errorf("%w: %s is outside 127.0.0.0/8", ErrBadAnswer, ip)
	case b[1] == 255 && b[2] == 255:
		return fmt.Errorf("%w: error code %s", ErrBadAnswer, ip)
	}
	return nil
}

// negativeTTL is how long a negative answer may be cached (RFC 2308 §5:
// the smaller of the SOA's TTL and its MINIMUM field), def without a SOA.
func negativeTTL(resp *dns.Msg, def time.Duration) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return def
}

func (c *Client) clampTTL(d time.Duration) time.Duration {
	return min(max(d, c.cfg.MinTTL), c.cfg.MaxTTL)
}

// printable keeps at most n bytes of s and replaces control and non-ASCII
// characters, so that list text can never inject lines or bytes into an
// SMTP reply (Postfix smtpd_expand_filter).
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	b := []byte(s)
	for i, ch := range b {
		if ch < 0x20 || ch > 0x7e {
			b[i] = '_'
		}
	}
	return strings.TrimSpace(string(b))
}

// unescapeTXT undoes miekg/dns's presentation escapes in TXT strings
// (RFC 1035 §5.1: \DDD and \X), so that printable sees the bytes sent.
func unescapeTXT(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
