package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Resolver is what the reject_unknown_* restrictions and client name
// lookups need from DNS. *net.Resolver satisfies it; package cmd builds one
// from dns_servers. Errors must be *net.DNSError: IsNotFound for NXDOMAIN
// and NODATA, anything else is a temporary failure that defers, never
// rejects.
type Resolver interface {
	PeerResolver
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// PeerResolver is what LookupPeer needs.
type PeerResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// dnsTimeout bounds one restriction's DNS questions.
const dnsTimeout = 10 * time.Second

type dnsResult int

const (
	dnsOK dnsResult = iota
	dnsNotFound
	dnsTemp
	dnsNullMX
)

func (r dnsResult) String() string {
	return [...]string{"found", "not found", "temporary failure", "null MX"}[r]
}

// classify maps a resolver error: only a definite "no such name / no such
// record" answer is dnsNotFound.
func classifyDNS(err error) dnsResult {
	if err == nil {
		return dnsOK
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return dnsNotFound
	}
	return dnsTemp
}

// asciiDomain returns the A-label form of a domain with a trailing dot, so
// that no search list applies (Postfix queries absolute names).
func asciiDomain(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", false
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if isASCII(l) {
			continue
		}
		p, ok := punycode(strings.ToLower(l))
		if !ok {
			return "", false
		}
		labels[i] = "xn--" + p
	}
	return strings.Join(labels, ".") + ".", true
}

// hostExists is Postfix reject_unknown_hostname's question: does name have
// an A, AAAA or MX record? A null MX counts as existing.
func (ev *eval) hostExists(ctx context.Context, name string) dnsResult {
	return ev.dnsQuery(ctx, name, false)
}

// mailhostExists is reject_unknown_mailhost's question: MX first (a null
// MX, RFC 7505, means the domain accepts no mail), then A/AAAA.
func (ev *eval) mailhostExists(ctx context.Context, name string) dnsResult {
	return ev.dnsQuery(ctx, name, true)
}

func (ev *eval) dnsQuery(ctx context.Context, name string, mxFirst bool) dnsResult {
	r := ev.p.cfg.Resolver
	if r == nil {
		ev.trace(TraceEvent{Kind: "note", Text: "DNS " + name + ": " + errNoResolver.Error()})
		return dnsTemp
	}
	fqdn, ok := asciiDomain(name)
	if !ok {
		ev.trace(TraceEvent{Kind: "note", Text: "DNS " + name + ": not a domain name"})
		return dnsNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	temp := false
	mx := func() (dnsResult, bool) {
		recs, err := r.LookupMX(ctx, fqdn)
		res := classifyDNS(err)
		if res == dnsOK && len(recs) == 1 && (recs[0].Host == "." || recs[0].Host == "") {
			res = dnsNullMX
		} else if res == dnsOK && len(recs) == 0 {
			res = dnsNotFound
		}
		ev.trace(TraceEvent{Kind: "lookup", Table: "dns:MX", Key: fqdn, Found: res == dnsOK || res == dnsNullMX, Text: res.String()})
		if res == dnsTemp {
			temp = true
		}
		return res, res == dnsOK || res == dnsNullMX
	}
	addr := func() (dnsResult, bool) {
		ips, err := r.LookupNetIP(ctx, "ip", fqdn)
		res := classifyDNS(err)
		if res == dnsOK && len(ips) == 0 {
			res = dnsNotFound
		}
		ev.trace(TraceEvent{Kind: "lookup", Table: "dns:A/AAAA", Key: fqdn, Found: res == dnsOK, Text: res.String()})
		if res == dnsTemp {
			temp = true
		}
		return res, res == dnsOK
	}
	order := []func() (dnsResult, bool){addr, mx}
	if mxFirst {
		order = []func() (dnsResult, bool){mx, addr}
	}
	for _, q := range order {
		if res, done := q(); done {
			if res == dnsNullMX && !mxFirst {
				return dnsOK // an MTA name may have a null MX
			}
			return res
		}
	}
	if temp {
		return dnsTemp
	}
	return dnsNotFound
}

// LookupPeer establishes the client's names as Postfix's smtpd_peer.c
// does: the PTR name (ReverseName), and that name again if it resolves
// back to ip (Name, "forward-confirmed reverse DNS"). A temporary DNS
// failure is reported as such, so that reject_unknown_client_hostname
// defers instead of rejecting.
func LookupPeer(ctx context.Context, r PeerResolver, ip netip.Addr) Peer {
	p := Peer{Name: "unknown", ReverseName: "unknown", NameStatus: PeerPerm, ReverseStatus: PeerPerm}
	ip = ip.Unmap()
	if r == nil || !ip.IsValid() {
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	names, err := r.LookupAddr(ctx, ip.String())
	if classifyDNS(err) == dnsTemp {
		p.NameStatus, p.ReverseStatus = PeerTemp, PeerTemp
		return p
	}
	if err != nil || len(names) == 0 {
		return p
	}
	name := strings.ToLower(strings.TrimSuffix(names[0], "."))
	if !validHostname(name, false) {
		return p // Postfix: a malformed PTR name is "unknown"
	}
	p.ReverseName, p.ReverseStatus = name, PeerOK
	addrs, err := r.LookupNetIP(ctx, "ip", name+".")
	switch classifyDNS(err) {
	case dnsTemp:
		p.NameStatus = PeerTemp
		return p
	case dnsNotFound:
		return p
	}
	for _, a := range addrs {
		if a.Unmap() == ip {
			p.Name, p.NameStatus = name, PeerOK
			return p
		}
	}
	return p // forged: the name does not resolve back
}
