package rbl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Exchanger sends one DNS query and returns the response. It must honour
// ctx (deadline and cancellation).
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// Resolvers is the default Exchanger: recursive resolvers tried in order
// over UDP, with TCP when an answer is truncated (RFC 7766 §5), and the
// next resolver when one does not answer or answers SERVFAIL/REFUSED.
type Resolvers struct {
	servers []string
	udp     *dns.Client
	tcp     *dns.Client
}

// DefaultResolvConf is where NewResolvers finds nameservers when none are
// given.
const DefaultResolvConf = "/etc/resolv.conf"

// NewResolvers returns Resolvers for servers ("ip:port"; a bare IP means
// port 53). Empty servers: the nameservers of /etc/resolv.conf.
func NewResolvers(servers []string) (*Resolvers, error) {
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(DefaultResolvConf)
		if err != nil {
			return nil, fmt.Errorf("no dns_servers configured and %s: %w", DefaultResolvConf, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("no dns_servers configured and no nameserver in %s", DefaultResolvConf)
		}
	}
	r := &Resolvers{udp: &dns.Client{Net: "udp"}, tcp: &dns.Client{Net: "tcp"}}
	for _, s := range servers {
		hp, err := hostPort(s)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, hp)
	}
	return r, nil
}

func hostPort(s string) (string, error) {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	h := strings.Trim(s, "[]")
	if net.ParseIP(h) == nil {
		return "", fmt.Errorf("bad DNS server %q: want ip or ip:port", s)
	}
	return net.JoinHostPort(h, "53"), nil
}

// Servers returns the resolvers in the order they are tried.
func (r *Resolvers) Servers() []string { return append([]string(nil), r.servers...) }

// Exchange implements Exchanger. The time left in ctx is shared between
// the tries: at least two (one retransmission over UDP, RFC 1035 §4.2.1),
// or one per resolver.
func (r *Resolvers) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	tries := max(2, len(r.servers))
	var lastErr error
	var lastResp *dns.Msg
	for i := 0; i < tries; i++ {
		if err := ctx.Err(); err != nil {
			break
		}
		per := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			per = time.Until(dl) / time.Duration(tries-i)
		}
		tctx, cancel := context.WithTimeout(ctx, per)
		resp, err := r.exchange(tctx, m, r.servers[i%len(r.servers)])
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) && i+1 < len(r.servers) {
			lastResp = resp
			continue
		}
		return resp, nil
	}
	if lastResp != nil {
		return lastResp, nil
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return nil, lastErr
}

func (r *Resolvers) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := exchangeOn(ctx, r.udp, m, server)
	if err == nil && resp.Truncated {
		resp, err = exchangeOn(ctx, r.tcp, m, server)
	}
	return resp, err
}

// exchangeOn is dns.Client.ExchangeContext, but a cancelled ctx also
// interrupts the read (miekg/dns v1 only applies the ctx deadline).
func exchangeOn(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	co, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// classify maps an exchange error to one of the package's errors.
func classify(err error) error {
	var dnsErr *dns.Error
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ErrTimeout
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &dnsErr):
		return fmt.Errorf("%w: malformed message: %v", ErrBadAnswer, err)
	}
	return fmt.Errorf("%w: %v", ErrServer, err)
}
