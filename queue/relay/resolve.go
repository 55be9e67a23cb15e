package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/mxfront/mxfront/envelope"
)

// target is one address to connect to.
type target struct {
	network  string // "tcp" or "unix"
	name     string // host name for logs, replies and TLS
	dialAddr string // "ip:port" or the socket path
	namaddr  string // "name[ip]" or "name[path]" (Postfix session->namaddr)
	relay    string // "name[ip]:port" or "name[path]" (Postfix namaddrport)
}

func tcpTarget(name, ip string, port int) target {
	p := strconv.Itoa(port)
	return target{
		network:  "tcp",
		name:     name,
		dialAddr: net.JoinHostPort(ip, p),
		namaddr:  name + "[" + ip + "]",
		relay:    name + "[" + ip + "]:" + p,
	}
}

// failure is a problem that prevents a transaction with a host. final marks
// one that settles the recipients (a 5xx reply to EHLO); others leave them
// for the next host. connected says a session was established (Postfix
// logs relay=none otherwise).
type failure struct {
	reply     envelope.Reply
	err       error
	final     bool
	connected bool
}

// Replies for name service trouble, worded like Postfix smtp_addr.c.
func dnsFailure(name, qtype string, err error) *failure {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return &failure{reply: envelope.NewReply(554, envelope.Enhanced{5, 4, 4},
			fmt.Sprintf("Host or domain name not found. Name service error for name=%s type=%s: Host not found", name, qtype)), err: err}
	}
	return &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 4, 3},
		fmt.Sprintf("Host or domain name not found. Name service error for name=%s type=%s: Host not found, try again", name, qtype)), err: err}
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// resolve turns a next-hop host into addresses to try, in order, at most
// MXAddressLimit of them.
func (r *Relay) resolve(ctx context.Context, h envelope.Host, defPort int) ([]target, *failure) {
	if h.Network == "unix" {
		// Postfix lmtp(8) names a UNIX-domain peer myhostname[path].
		return []target{{
			network:  "unix",
			name:     r.cfg.Hostname,
			dialAddr: h.Name,
			namaddr:  r.cfg.Hostname + "[" + h.Name + "]",
			relay:    r.cfg.Hostname + "[" + h.Name + "]",
		}}, nil
	}
	if h.Network != "tcp" && h.Network != "" {
		return nil, &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 3, 5},
			fmt.Sprintf("mail transport unavailable: unsupported network %q for %s", h.Network, h.Name))}
	}
	port := h.Port
	if port == 0 {
		port = defPort
	}
	name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(h.Name, "["), "]"), ".")
	if name == "" {
		return nil, &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 3, 5}, "mail transport unavailable: empty next-hop host")}
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return []target{tcpTarget(ip.String(), ip.String(), port)}, nil
	}
	limit := r.cfg.MXAddressLimit
	if !h.MX {
		addrs, err := r.res.LookupHost(ctx, name)
		if err != nil && len(addrs) == 0 {
			// A configured unit ([host] in transport_maps) that does not
			// resolve is an outage of the internal DNS or a table typo,
			// not a verdict on the recipient: keep the mail and retry
			// (Postfix would bounce with 5.4.4).
			f := dnsFailure(name, "A", err)
			if f.reply.Permanent() {
				f.reply = envelope.NewReply(451, envelope.Enhanced{4, 4, 4}, f.reply.Text+" (configured next hop; will retry)")
			}
			return nil, f
		}
		return addrTargets(name, addrs, port, limit), nil
	}

	// RFC 5321 §5.1: MX records in preference order, ties in random order;
	// no MX records means the domain itself is the only exchanger.
	mxs, err := r.res.LookupMX(ctx, name)
	if err != nil && len(mxs) == 0 {
		if !notFound(err) {
			return nil, dnsFailure(name, "MX", err)
		}
		mxs = nil
	}
	if len(mxs) == 0 {
		addrs, err := r.res.LookupHost(ctx, name)
		if err != nil && len(addrs) == 0 {
			return nil, dnsFailure(name, "MX", err)
		}
		return addrTargets(name, addrs, port, limit), nil
	}
	mxs = sortMX(mxs)
	if len(mxs) == 0 {
		// RFC 7505 §3: a null MX says the domain accepts no mail.
		return nil, &failure{reply: envelope.NewReply(556, envelope.Enhanced{5, 1, 10},
			fmt.Sprintf("Domain %s does not accept mail (nullMX)", name))}
	}
	var (
		out      []target
		lastHost string
		lastErr  error
	)
	for _, mx := range mxs {
		if len(out) >= limit {
			break
		}
		host := strings.TrimSuffix(mx.Host, ".")
		if ip, err := netip.ParseAddr(host); err == nil { // not valid DNS, but seen
			out = append(out, tcpTarget(host, ip.String(), port))
			continue
		}
		addrs, err := r.res.LookupHost(ctx, host)
		if len(addrs) == 0 {
			if err == nil {
				err = &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
			}
			lastHost, lastErr = host, err
			continue
		}
		out = append(out, addrTargets(host, addrs, port, limit-len(out))...)
	}
	if len(out) == 0 {
		// MX hosts without addresses: a broken or changing zone. Keep
		// trying rather than bounce: 4.4.4 "unable to route".
		f := dnsFailure(lastHost, "A", lastErr)
		f.reply = envelope.NewReply(451, envelope.Enhanced{4, 4, 4}, f.reply.Text)
		f.err = fmt.Errorf("no MX host of %s has an address: %w", name, lastErr)
		return nil, f
	}
	return out, nil
}

func addrTargets(name string, addrs []string, port, limit int) []target {
	out := make([]target, 0, min(len(addrs), limit))
	for _, a := range addrs {
		if len(out) >= limit {
			break
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		out = append(out, tcpTarget(name, ip.Unmap().String(), port))
	}
	return out
}

// sortMX orders MX records by preference and shuffles equal preferences
// (RFC 5321 §5.1), dropping null MX records ("." , RFC 7505). It returns an
// empty slice when only null MX records were present.
func sortMX(mxs []*net.MX) []*net.MX {
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx == nil || mx.Host == "." || mx.Host == "" {
			continue
		}
		out = append(out, mx)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return out
}
