package mx

import (
	"net/netip"
	"sync"
	"time"
)

// anvil counts, per client, concurrent connections and the connections,
// MAIL and RCPT commands within the current anvil_rate_time_unit, like
// Postfix's anvil(8) for smtpd_client_connection_count_limit,
// smtpd_client_connection_rate_limit, smtpd_client_message_rate_limit and
// smtpd_client_recipient_rate_limit. A client is its address, aggregated
// to smtpd_client_ipv4_prefix_length / smtpd_client_ipv6_prefix_length
// bits (an IPv6 client owns at least a /64; Postfix counts /84s).
//
// A rate is counted in a window that starts with the client's first event
// and lasts one time unit, as anvil does. Idle entries are removed when
// their window has passed, so memory stays proportional to the clients of
// the last time unit.
type anvil struct {
	unit      time.Duration
	v4bits    int
	v6bits    int
	now       func() time.Time
	mu        sync.Mutex
	clients   map[netip.Prefix]*anvilEntry
	nextSweep time.Time
}

type anvilEntry struct {
	conns int       // concurrent connections
	start time.Time // start of the rate window
	connR int       // connections in the window
	mailR int       // MAIL commands in the window
	rcptR int       // RCPT commands in the window
}

// newAnvil returns nil when no limit is configured.
func newAnvil(h Hygiene) *anvil {
	if h.ConnectionCountLimit <= 0 && h.ConnectionRateLimit <= 0 && h.MessageRateLimit <= 0 && h.RecipientRateLimit <= 0 {
		return nil
	}
	a := &anvil{unit: h.RateTimeUnit, v4bits: h.IPv4PrefixLength, v6bits: h.IPv6PrefixLength, now: time.Now,
		clients: map[netip.Prefix]*anvilEntry{}}
	if a.unit <= 0 {
		a.unit = 60 * time.Second
	}
	if a.v4bits <= 0 || a.v4bits > 32 {
		a.v4bits = 32
	}
	if a.v6bits <= 0 || a.v6bits > 128 {
		a.v6bits = 84
	}
	return a
}

// key aggregates an address to the client prefix.
func (a *anvil) key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	bits := a.v6bits
	if ip.Is4() {
		bits = a.v4bits
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}

// entry returns the client's entry with its rate window current; a.mu is
// held.
func (a *anvil) entry(k netip.Prefix) *anvilEntry {
	now := a.now()
	a.sweep(now)
	e := a.clients[k]
	if e == nil {
		e = &anvilEntry{start: now}
		a.clients[k] = e
	}
	if now.Sub(e.start) >= a.unit {
		e.start, e.connR, e.mailR, e.rcptR = now, 0, 0, 0
	}
	return e
}

// sweep drops entries without connections whose window has passed; a.mu
// is held. It runs at most once per time unit.
func (a *anvil) sweep(now time.Time) {
	if now.Before(a.nextSweep) {
		return
	}
	a.nextSweep = now.Add(a.unit)
	for k, e := range a.clients {
		if e.conns == 0 && now.Sub(e.start) >= a.unit {
			delete(a.clients, k)
		}
	}
}

// connect counts a new connection; it returns the client key and the
// client's concurrent connections and connection rate, this one included.
func (a *anvil) connect(ip netip.Addr) (netip.Prefix, int, int) {
	k := a.key(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(k)
	e.conns++
	e.connR++
	return k, e.conns, e.connR
}

// disconnect ends a connection counted by connect.
func (a *anvil) disconnect(k netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.clients[k]; e != nil && e.conns > 0 {
		e.conns--
	}
}

// mail counts a MAIL command and returns the rate.
func (a *anvil) mail(k netip.Prefix) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(k)
	e.mailR++
	return e.mailR
}

// rcpt counts a RCPT command and returns the rate.
func (a *anvil) rcpt(k netip.Prefix) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(k)
	e.rcptR++
	return e.rcptR
}

// size returns the number of clients tracked (for tests).
func (a *anvil) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.clients)
}
