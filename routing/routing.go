// Package routing decides where a recipient's mail goes: virtual alias
// expansion (Postfix virtual(5)) and next-hop resolution (Postfix
// transport(5)). Both read Postfix lookup tables from package table.
package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// Config configures a Resolver. The zero value resolves every address to
// "smtp:" with an MX lookup of the recipient domain and expands nothing.
type Config struct {
	// TransportMaps is transport_maps, searched in order.
	TransportMaps []table.Table
	// VirtualAliasMaps is virtual_alias_maps, searched in order.
	VirtualAliasMaps []table.Table
	// RecipientDelimiter is recipient_delimiter ("+"); empty disables
	// address extensions.
	RecipientDelimiter string
	// PropagateExtensions mirrors "virtual" in
	// propagate_unmatched_extensions (Postfix default: on). Use
	// NoPropagateExtensions to switch it off.
	NoPropagateExtensions bool
	// RelayDomains selects RelayTransport instead of DefaultTransport when
	// transport_maps has no answer. Nil means no relay domains.
	RelayDomains *table.DomainList
	// LocalDomains (mydestination) select LocalTransport when transport_maps
	// has no answer. Nil means none.
	LocalDomains *table.DomainList
	// LocalTransport is local_transport. An MX has no local delivery; empty
	// means DefaultLocalTransport, which refuses.
	LocalTransport string
	// RelayTransport is relay_transport: "transport" or "transport:nexthop".
	// Empty means "smtp".
	RelayTransport string
	// DefaultTransport is default_transport. Empty means "smtp".
	DefaultTransport string
	// RelayHost is relayhost: the nexthop for DefaultTransport when it names
	// none, e.g. "[smarthost.example.com]:25". Empty: MX lookup.
	RelayHost string
	// MyOrigin qualifies bare local parts in alias results (myorigin).
	MyOrigin string
	// RecursionLimit is virtual_alias_recursion_limit, zero = 1000.
	RecursionLimit int
	// ExpansionLimit is virtual_alias_expansion_limit, zero = 1000.
	ExpansionLimit int
}

// Resolver implements alias expansion and transport lookups. It is safe for
// concurrent use; the tables it reads may be reloaded underneath it.
type Resolver struct {
	cfg Config
	log *slog.Logger
}

// New returns a Resolver. It validates the default transports.
func New(cfg Config, logger *slog.Logger) (*Resolver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RecursionLimit == 0 {
		cfg.RecursionLimit = 1000
	}
	if cfg.ExpansionLimit == 0 {
		cfg.ExpansionLimit = 1000
	}
	for _, t := range []struct{ key, v string }{
		{"relay_transport", cfg.RelayTransport}, {"default_transport", cfg.DefaultTransport}, {"local_transport", cfg.LocalTransport},
	} {
		if t.v == "" {
			continue
		}
		v := t.v
		if !strings.Contains(v, ":") {
			v += ":"
		}
		if _, err := ParseRoute(v, envelope.MustParse("x@example.com")); err != nil {
			return nil, fmt.Errorf("%s: %w", t.key, err)
		}
	}
	return &Resolver{cfg: cfg, log: logger}, nil
}

// Errors of the resolver. A lookup failure (table error) is temporary.
var (
	// ErrAliasLoop: the expansion went deeper than virtual_alias_recursion_limit.
	ErrAliasLoop = errors.New("virtual alias table recursion limit exceeded")
	// ErrAliasExpansion: more than virtual_alias_expansion_limit addresses.
	ErrAliasExpansion = errors.New("virtual alias expansion limit exceeded")
)

// Trace receives one line per lookup step when set on the context with
// WithTrace; mxfront explain prints them.
type Trace func(format string, args ...any)

type traceKey struct{}

// WithTrace returns a context whose lookups report their steps to t.
func WithTrace(ctx context.Context, t Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

func tracef(ctx context.Context, format string, args ...any) {
	if t, ok := ctx.Value(traceKey{}).(Trace); ok && t != nil {
		t(format, args...)
	}
}

// lookup searches tables in order; the first table that has the key wins.
// An error from a table is returned at once: Postfix does not skip a failing
// table, because that could change the answer.
func lookup(ctx context.Context, tables []table.Table, key string, patternOK bool) (string, bool, error) {
	for _, t := range tables {
		if !patternOK && table.IsPattern(t) {
			continue
		}
		v, ok, err := t.Lookup(ctx, key)
		if err != nil {
			tracef(ctx, "%s: lookup %q: error: %v", table.SpecOf(t), key, err)
			return "", false, err
		}
		if ok {
			tracef(ctx, "%s: %q -> %q", table.SpecOf(t), key, v)
			return v, true, nil
		}
	}
	return "", false, nil
}

// lookupAddress applies the Postfix address lookup order shared by
// virtual(5) and transport(5): user+ext@domain, then user@domain (when a
// recipient_delimiter is set). Pattern tables (regexp, cidr) only see the
// full address. It reports the extension that was stripped, if the match
// came from the stripped form.
func (r *Resolver) lookupAddress(ctx context.Context, tables []table.Table, a envelope.Address) (val, ext string, ok bool, err error) {
	key := a.Key()
	if val, ok, err = lookup(ctx, tables, key, true); err != nil || ok {
		return val, "", ok, err
	}
	base, ext := envelope.SplitExtension(a.Local, r.cfg.RecipientDelimiter)
	if ext != "" {
		k := strings.ToLower(base) + "@" + a.Domain
		if val, ok, err = lookup(ctx, tables, k, false); err != nil || ok {
			return val, ext, ok, err
		}
	}
	return "", "", false, nil
}

// Expand applies virtual_alias_maps to a recursively (virtual(5)).
// found reports whether a itself had an entry: Postfix treats such an
// address as a valid recipient. The result is a itself when there is no
// entry. An address that maps to itself is kept and not expanded again.
func (r *Resolver) Expand(ctx context.Context, a envelope.Address) (out []envelope.Address, found bool, err error) {
	if len(r.cfg.VirtualAliasMaps) == 0 || a.IsNull() {
		return []envelope.Address{a}, false, nil
	}
	seen := map[string]bool{}
	found, err = r.expand(ctx, a, 0, seen, &out)
	if err != nil {
		return nil, false, err
	}
	return out, found, nil
}

func (r *Resolver) expand(ctx context.Context, a envelope.Address, depth int, seen map[string]bool, out *[]envelope.Address) (bool, error) {
	if depth > r.cfg.RecursionLimit {
		return false, ErrAliasLoop
	}
	val, ext, ok, err := r.lookupAddress(ctx, r.cfg.VirtualAliasMaps, a)
	if err == nil && !ok {
		// "@domain address" catch-all, lowest precedence (virtual(5)).
		val, ok, err = lookup(ctx, r.cfg.VirtualAliasMaps, "@"+a.Domain, false)
	}
	if err != nil {
		return false, err
	}
	if !ok {
		r.add(a, seen, out)
		if len(*out) > r.cfg.ExpansionLimit {
			return false, ErrAliasExpansion
		}
		return false, nil
	}
	for _, item := range splitAliases(val) {
		t, err := r.parseAliasResult(item, a)
		if err != nil {
			return true, fmt.Errorf("virtual_alias_maps: bad result %q for %s: %w", item, a, err)
		}
		if ext != "" && !r.cfg.NoPropagateExtensions {
			// propagate_unmatched_extensions: user+foo@x -> alias+foo@y.
			if b, e := envelope.SplitExtension(t.Local, r.cfg.RecipientDelimiter); e == "" {
				t.Local = b + ext
			}
		}
		if t.Key() == a.Key() {
			// Self reference: deliver to the address itself.
			r.add(t, seen, out)
		} else if _, err := r.expand(ctx, t, depth+1, seen, out); err != nil {
			return true, err
		}
		if len(*out) > r.cfg.ExpansionLimit {
			return true, ErrAliasExpansion
		}
	}
	return true, nil
}

func (r *Resolver) add(a envelope.Address, seen map[string]bool, out *[]envelope.Address) {
	if k := a.Key(); !seen[k] {
		seen[k] = true
		*out = append(*out, a)
	}
}

// parseAliasResult parses one address of an alias value. A bare local part
// is qualified with myorigin, as Postfix does.
func (r *Resolver) parseAliasResult(s string, orig envelope.Address) (envelope.Address, error) {
	if !strings.Contains(s, "@") {
		if r.cfg.MyOrigin == "" {
			return envelope.Address{}, errors.New("unqualified address and no myorigin")
		}
		s += "@" + r.cfg.MyOrigin
	}
	return envelope.ParseAddress(s, true)
}

// splitAliases splits "a@x, b@y c@z" (virtual(5): comma or whitespace).
func splitAliases(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// Route resolves the next hop for a recipient (transport(5)):
//
//  1. the full address user+ext@domain, then user@domain;
//  2. the domain, then each parent as ".parent" ("a.b.example.com" tries
//     ".b.example.com", ".example.com", ".com");
//  3. "*".
//
// Pattern tables are queried with the full address only. An entry with an
// empty transport or nexthop takes it from relay_transport (relay domains)
// or default_transport, and the recipient domain.
func (r *Resolver) Route(ctx context.Context, a envelope.Address) (envelope.Route, error) {
	val, found, err := r.findTransport(ctx, a)
	if err != nil {
		return envelope.Route{}, err
	}
	def, err := r.defaultTransport(ctx, a)
	if err != nil {
		return envelope.Route{}, err
	}
	if !found {
		val = def
	}
	tr, nh, _ := strings.Cut(val, ":")
	dtr, dnh, _ := strings.Cut(def, ":")
	if tr == "" {
		tr = dtr
		if nh == "" {
			nh = dnh
		}
	}
	if nh == "" && tr != envelope.TransportError && tr != envelope.TransportRetry {
		nh = a.Domain
	}
	rt, err := ParseRoute(tr+":"+nh, a)
	if err != nil {
		return envelope.Route{}, fmt.Errorf("transport_maps: %q for %s: %w", val, a, err)
	}
	tracef(ctx, "route %s -> %s", a, rt)
	return rt, nil
}

func (r *Resolver) findTransport(ctx context.Context, a envelope.Address) (string, bool, error) {
	tm := r.cfg.TransportMaps
	if len(tm) == 0 {
		return "", false, nil
	}
	if v, _, ok, err := r.lookupAddress(ctx, tm, a); err != nil || ok {
		return v, ok, err
	}
	if v, ok, err := lookup(ctx, tm, a.Domain, false); err != nil || ok {
		return v, ok, err
	}
	d := a.Domain
	for {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		if v, ok, err := lookup(ctx, tm, "."+d, false); err != nil || ok {
			return v, ok, err
		}
	}
	return lookup(ctx, tm, "*", false)
}

// DefaultLocalTransport is our local_transport default: mail for
// mydestination domains that virtual_alias_maps does not send elsewhere is
// refused (Postfix would deliver it with local(8), which an MX lacks).
const DefaultLocalTransport = "error:5.1.1 local delivery is disabled on this MX; alias the address in virtual_alias_maps"

func (r *Resolver) defaultTransport(ctx context.Context, a envelope.Address) (string, error) {
	if r.cfg.LocalDomains != nil {
		local, err := r.cfg.LocalDomains.Match(ctx, a.Domain)
		if err != nil {
			return "", err
		}
		if local {
			if r.cfg.LocalTransport != "" {
				return r.cfg.LocalTransport, nil
			}
			return DefaultLocalTransport, nil
		}
	}
	relay := false
	if r.cfg.RelayDomains != nil {
		m, err := r.cfg.RelayDomains.Match(ctx, a.Domain)
		if err != nil {
			return "", err
		}
		relay = m
	}
	t := r.cfg.DefaultTransport
	if relay {
		t = r.cfg.RelayTransport
	}
	if t == "" {
		t = envelope.TransportSMTP
	}
	if !strings.Contains(t, ":") {
		t += ":"
		if !relay && r.cfg.RelayHost != "" {
			t += r.cfg.RelayHost
		}
	}
	return t, nil
}

// ParseRoute parses a transport(5) result "transport:nexthop" for rcpt.
//
//	smtp:[host]:port   smtp:[host]   smtp:host (MX lookup)   smtp:host:port
//	smtp:[h1]:25, [h2]:25   (a list: tried in order)
//	lmtp:inet:host:port   lmtp:unix:/path   lmtp:[host]:port   lmtp:host
//	error:5.1.1 text   retry:4.3.0 text
func ParseRoute(v string, rcpt envelope.Address) (envelope.Route, error) {
	tr, nh, ok := strings.Cut(strings.TrimSpace(v), ":")
	if !ok {
		return envelope.Route{}, fmt.Errorf("missing ':' in %q", v)
	}
	tr = strings.ToLower(strings.TrimSpace(tr))
	nh = strings.TrimSpace(nh)
	rt := envelope.Route{Transport: tr, Nexthop: nh}
	switch tr {
	case envelope.TransportError, envelope.TransportRetry:
		rt.Reply = errorReply(tr, nh)
		return rt, nil
	case envelope.TransportSMTP, envelope.TransportLMTP:
	default:
		return envelope.Route{}, fmt.Errorf("unknown transport %q (want smtp, lmtp, error or retry)", tr)
	}
	if nh == "" {
		nh = rcpt.Domain
		rt.Nexthop = nh
	}
	for _, item := range strings.FieldsFunc(nh, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		h, err := parseHost(tr, item)
		if err != nil {
			return envelope.Route{}, err
		}
		rt.Hosts = append(rt.Hosts, h)
	}
	if len(rt.Hosts) == 0 {
		return envelope.Route{}, fmt.Errorf("empty nexthop in %q", v)
	}
	return rt, nil
}

func parseHost(tr, s string) (envelope.Host, error) {
	h := envelope.Host{Network: "tcp"}
	if tr == envelope.TransportLMTP {
		if p, ok := strings.CutPrefix(s, "unix:"); ok {
			if !strings.HasPrefix(p, "/") {
				return h, fmt.Errorf("lmtp unix socket %q: want an absolute path", p)
			}
			return envelope.Host{Network: "unix", Name: p}, nil
		}
		s = strings.TrimPrefix(s, "inet:")
	}
	if strings.HasPrefix(s, "/") {
		return h, fmt.Errorf("nexthop %q: a socket path needs the lmtp:unix: form", s)
	}
	bracket := strings.HasPrefix(s, "[")
	host, port := s, ""
	if bracket {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return h, fmt.Errorf("nexthop %q: missing ']'", s)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return h, fmt.Errorf("nexthop %q: junk after ']'", s)
			}
			port = port[1:]
		}
		host = strings.TrimPrefix(host, "ipv6:")
		host = strings.TrimPrefix(host, "IPv6:")
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	if host == "" {
		return h, fmt.Errorf("nexthop %q: empty host", s)
	}
	h.Name = strings.ToLower(host)
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			return h, fmt.Errorf("nexthop %q: bad port %q", s, port)
		}
		h.Port = n
	}
	// transport(5): brackets suppress the MX lookup. LMTP never does MX
	// lookups (lmtp(8)).
	h.MX = !bracket && tr == envelope.TransportSMTP
	return h, nil
}

// errorReply builds the reply of an error: or retry: route. The text may
// start with an enhanced status code (Postfix error(8)); the default is
// 5.0.0 for error and 4.0.0 for retry.
func errorReply(tr, text string) envelope.Reply {
	code, enh := 550, envelope.Enhanced{5, 0, 0}
	if tr == envelope.TransportRetry {
		code, enh = 450, envelope.Enhanced{4, 0, 0}
	}
	first, rest, _ := strings.Cut(text, " ")
	if e, ok := envelope.ParseEnhanced(first); ok {
		enh = e
		text = strings.TrimSpace(rest)
		if e[0] == 4 {
			code = 450
		} else {
			code = 550
		}
	}
	if tr == envelope.TransportRetry && code != 450 {
		code, enh[0] = 450, 4
	}
	if text == "" {
		text = "mail for this address is not deliverable"
		if tr == envelope.TransportRetry {
			text = "delivery temporarily suspended"
		}
	}
	return envelope.NewReply(code, enh, text)
}
