package policy

// DNS list restrictions (postconf(5)): reject_rbl_client,
// reject_rhsbl_client, reject_rhsbl_reverse_client, reject_rhsbl_helo,
// reject_rhsbl_sender, reject_rhsbl_recipient, permit_dnswl_client,
// permit_rhswl_client, and reject_dnsbl_score (postscreen's DNSBL score as
// a restriction). Lookups go through package rbl: cached, merged, in
// parallel, and failing open.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/rbl"
	"github.com/mxfront/mxfront/table"
)

// DNSBL configures the DNS list restrictions. The zero value has no
// Client: a configuration that names a DNS list restriction is then an
// error.
type DNSBL struct {
	// Client does the lookups; required when a DNS list restriction is
	// used.
	Client *rbl.Client
	// Sites is dnsbl_sites (postscreen_dnsbl_sites), the scored lists of
	// reject_dnsbl_score.
	Sites []rbl.Site
	// Threshold is dnsbl_threshold: a score at or above it is rejected by
	// reject_dnsbl_score. 0 = 1.
	Threshold int
	// AllowlistThreshold is dnsbl_allowlist_threshold: a score at or below
	// it (when negative) is permitted by reject_dnsbl_score. 0 = off.
	AllowlistThreshold int
	// ReplyMaps is rbl_reply_maps: reply templates by list ("zone=filter"
	// as written in the restriction, then "zone").
	ReplyMaps []table.Table
	// ReplyMap is dnsbl_reply_map (postscreen_dnsbl_reply_map): the name
	// a reply shows for a list whose real name is secret (keyed zones).
	ReplyMap table.Table
	// DefaultReply is default_rbl_reply; "" = DefaultRBLReply.
	DefaultReply string
	// RejectCode is maps_rbl_reject_code ($rbl_code). 0 = 554.
	RejectCode int
}

// DefaultRBLReply is Postfix's default_rbl_reply.
const DefaultRBLReply = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}"

// Reply classes ($rbl_class), as in Postfix's smtpd_check.c.
const (
	classClient    = "Client host"
	classRevClient = "Unverified Client host"
	classHelo      = "Helo command"
	classSender    = "Sender address"
	classRecipient = "Recipient address"
)

// dnsbl is the DNS list state of a Policy.
type dnsbl struct {
	cfg DNSBL
	// clientZones are the IP zones StartDNSLists prefetches.
	clientZones []string
}

type zoneArg struct {
	zone   string
	filter rbl.Filter
}

var _ = registerRestrictions(map[string]restrictionDef{
	"reject_rbl_client":           {hasArg: true, parse: parseZoneArg, fn: rejectRBLClient},
	"reject_rhsbl_client":         {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsClient, false)},
	"reject_rhsbl_reverse_client": {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsReverseClient, false)},
	"reject_rhsbl_helo":           {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsHelo, false)},
	"reject_rhsbl_sender":         {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsSender, false)},
	"reject_rhsbl_recipient":      {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsRecipient, false)},
	"permit_dnswl_client":         {hasArg: true, parse: parseZoneArg, fn: permitDNSWLClient},
	"permit_rhswl_client":         {hasArg: true, parse: parseZoneArg, fn: rhsbl(rhsClient, true)},
	"reject_dnsbl_score":          {fn: rejectDNSBLScore},
})

// parseZoneArg parses "zone[=filter]" at startup.
func parseZoneArg(arg string) (any, error) {
	zone, f, err := rbl.ParseZone(arg)
	return zoneArg{zone, f}, err
}

// rblKinds are the restrictions of this file that take a zone, and what
// their zone lists.
var rblKinds = map[string]rbl.Kind{
	"reject_rbl_client":           rbl.KindIP,
	"permit_dnswl_client":         rbl.KindIP,
	"reject_rhsbl_client":         rbl.KindDomain,
	"reject_rhsbl_reverse_client": rbl.KindDomain,
	"reject_rhsbl_helo":           rbl.KindDomain,
	"reject_rhsbl_sender":         rbl.KindDomain,
	"reject_rhsbl_recipient":      rbl.KindDomain,
	"permit_rhswl_client":         rbl.KindDomain,
}

// initDNSBL checks the DNS list restrictions of the parsed lists and
// classes, registers their zones with the client (their health tests run
// now, not at the first lookup), and collects the client address zones
// that StartDNSLists prefetches. Called by New.
func (p *Policy) initDNSBL(cfg DNSBL) error {
	d := &dnsbl{cfg: cfg}
	if d.cfg.Threshold == 0 {
		d.cfg.Threshold = 1
	}
	if d.cfg.RejectCode == 0 {
		d.cfg.RejectCode = 554
	}
	if d.cfg.DefaultReply == "" {
		d.cfg.DefaultReply = DefaultRBLReply
	}
	if err := ValidateRBLReply(d.cfg.DefaultReply, d.cfg.RejectCode); err != nil {
		return fmt.Errorf("default_rbl_reply: %w", err)
	}
	lists := map[string][]restriction{"smtpd_relay_restrictions": p.relay}
	names := map[stage]string{stClient: "smtpd_client_restrictions", stHelo: "smtpd_helo_restrictions",
		stSender: "smtpd_sender_restrictions", stRecipient: "smtpd_recipient_restrictions",
		stData: "smtpd_data_restrictions", stEOD: "smtpd_end_of_data_restrictions"}
	for st, rs := range p.lists {
		lists[names[st]] = rs
	}
	for name, rs := range p.classes {
		lists["smtpd_restriction_classes: "+name] = rs
	}
	seen := map[string]bool{}
	addClientZone := func(z string) {
		if !seen[z] {
			seen[z] = true
			d.clientZones = append(d.clientZones, z)
		}
	}
	for list, rs := range lists {
		for _, r := range rs {
			kind, ok := rblKinds[r.name]
			if !ok && r.name != "reject_dnsbl_score" {
				continue
			}
			if cfg.Client == nil {
				return fmt.Errorf("%s: %s: no DNS resolver (dns_servers, /etc/resolv.conf)", list, r.name)
			}
			if r.name == "reject_dnsbl_score" {
				if len(cfg.Sites) == 0 {
					return fmt.Errorf("%s: reject_dnsbl_score: dnsbl_sites is empty", list)
				}
				for _, s := range cfg.Sites {
					cfg.Client.Register(s.Zone, rbl.KindIP)
					addClientZone(s.Zone)
				}
				continue
			}
			za := r.data.(zoneArg)
			cfg.Client.Register(za.zone, kind)
			if kind == rbl.KindIP {
				addClientZone(za.zone)
			}
		}
	}
	p.dnsbl = d
	return nil
}

// ValidateRBLReply checks a default_rbl_reply or rbl_reply_maps template:
// it must expand (known $names, balanced braces) to a reply that starts
// with a 4xx or 5xx code.
func ValidateRBLReply(template string, rejectCode int) error {
	d := &dnsbl{cfg: DNSBL{RejectCode: rejectCode}}
	if d.cfg.RejectCode == 0 {
		d.cfg.RejectCode = 554
	}
	probe := (&eval{req: &Request{}}).rblVars(d, "zone.example", "reason", "192.0.2.1", classClient)
	_, err := rblReply(template, probe)
	return err
}

// DNSLists are the DNS list lookups of one client, started when its
// connection is accepted (Policy.StartDNSLists). A session passes them in
// every Request, so its restrictions find the answers ready.
type DNSLists struct {
	ready   chan struct{}
	pending *rbl.Pending // nil: nothing prefetched
}

// StartDNSLists starts the lookups of ip in every client address list the
// restrictions use (reject_rbl_client, permit_dnswl_client, dnsbl_sites),
// all in parallel, and returns at once. Clients in mynetworks are not
// looked up: permit_mynetworks comes first in any sane list, and their
// addresses are nobody else's business. Nil when there is nothing to look
// up.
func (p *Policy) StartDNSLists(ip netip.Addr) *DNSLists {
	if p.dnsbl == nil || len(p.dnsbl.clientZones) == 0 || !ip.IsValid() || ip.IsUnspecified() {
		return nil
	}
	dl := &DNSLists{ready: make(chan struct{})}
	go func() {
		defer close(dl.ready)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if p.MyNetworks(ctx, ip) {
			return
		}
		dl.pending = p.dnsbl.cfg.Client.Prefetch(ip, p.dnsbl.clientZones)
	}()
	return dl
}

// pendingFor returns the prefetched lookups of ip, or nil.
func (dl *DNSLists) pendingFor(ctx context.Context, ip netip.Addr) *rbl.Pending {
	if dl == nil {
		return nil
	}
	select {
	case <-dl.ready:
	case <-ctx.Done():
		return nil
	}
	if dl.pending == nil || dl.pending.IP() != ip.Unmap() {
		return nil
	}
	return dl.pending
}

func (ev *eval) dnsbl() (*dnsbl, error) {
	if ev.p.dnsbl == nil || ev.p.dnsbl.cfg.Client == nil {
		return nil, errors.New("no DNS resolver for DNS list restrictions")
	}
	return ev.p.dnsbl, nil
}

// lookupClientIP looks the client address up in zone, from the lookups
// started at connect time when there are some.
func (ev *eval) lookupClientIP(ctx context.Context, d *dnsbl, zone string) rbl.Answer {
	ip := ev.req.Client.Addr.Unmap()
	if p := ev.req.DNSLists.pendingFor(ctx, ip); p != nil {
		return p.Lookup(ctx, zone)
	}
	return d.cfg.Client.LookupIP(ctx, zone, ip)
}

// traceAnswer reports one list's answer for explain: the query, the
// listing codes (and TXT), or why there is no answer.
func (ev *eval) traceAnswer(r *restriction, a rbl.Answer, f rbl.Filter, extra string) {
	te := TraceEvent{Kind: "lookup", Restriction: r.display(), Table: a.Zone, Key: a.Query, Found: a.Match(f)}
	switch {
	case a.Err != nil:
		te.Text = a.Err.Error()
	case a.Listed():
		te.Value = a.String()
		if a.Text != "" {
			te.Value += " " + strconv.Quote(a.Text)
		}
		if !a.Match(f) {
			te.Text = "filter " + f.String() + " does not match"
		}
	default:
		te.Text = "not listed"
	}
	if extra != "" {
		te.Text = strings.TrimPrefix(te.Text+"; "+extra, "; ")
	}
	ev.trace(te)
}

// rejectRBLClient is reject_rbl_client zone[=filter].
func rejectRBLClient(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	d, err := ev.dnsbl()
	if err != nil {
		return verdict{}, err
	}
	za := r.data.(zoneArg)
	ip := ev.req.Client.Addr
	if !ip.IsValid() {
		return verdict{}, nil
	}
	a := ev.lookupClientIP(ctx, d, za.zone)
	ev.traceAnswer(r, a, za.filter, "")
	if !a.Match(za.filter) {
		return verdict{}, nil
	}
	return ev.rblReject(ctx, d, r.arg, za.zone, a.Text, ip.Unmap().String(), classClient), nil
}

// permitDNSWLClient is permit_dnswl_client zone[=filter].
func permitDNSWLClient(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	d, err := ev.dnsbl()
	if err != nil {
		return verdict{}, err
	}
	za := r.data.(zoneArg)
	ip := ev.req.Client.Addr
	if !ip.IsValid() {
		return verdict{}, nil
	}
	if ok, err := ev.allowlistSafe(ctx, r); err != nil || !ok {
		return verdict{}, err
	}
	a := ev.lookupClientIP(ctx, d, za.zone)
	ev.traceAnswer(r, a, za.filter, "")
	return ev.allowlistResult(a, za.filter, ip.Unmap().String(), classClient), nil
}

// allowlistResult is Postfix's permit_dnswl_addr/permit_dnswl_domain: a
// match permits; a list that gave no answer makes a later rejection in
// this stage a deferral (DEFER_IF_REJECT), so that an allowlisted client
// is not refused for good while its allowlist is down.
func (ev *eval) allowlistResult(a rbl.Answer, f rbl.Filter, what, class string) verdict {
	if a.Match(f) {
		return verdict{action: actPermit}
	}
	if a.Err != nil && !errors.Is(a.Err, rbl.ErrDisabled) && !errors.Is(a.Err, rbl.ErrInvalidName) {
		return ev.deferIfRejectReply(envelope.NewReply(450, envelope.Enhanced{4, 7, 1},
			fmt.Sprintf("<%s>: %s rejected: Service unavailable", what, class)))
	}
	return verdict{}
}

// allowlistSafe is Postfix's safety for permit_dnswl_client and
// permit_rhswl_client: at RCPT time, never permit a recipient that is not
// an authorized destination (an allowlisted client is no relay client).
func (ev *eval) allowlistSafe(ctx context.Context, r *restriction) (bool, error) {
	if ev.where != "RCPT" || ev.req.Rcpt.IsNull() {
		return true, nil
	}
	v, err := permitAuthDestination(ctx, ev, r)
	if err != nil {
		return false, err
	}
	if v.action != actPermit {
		ev.trace(TraceEvent{Kind: "note", Restriction: r.display(),
			Text: ev.req.Rcpt.String() + " is not an authorized destination: no allowlisting"})
		return false, nil
	}
	return true, nil
}

// rhsTarget says which name a domain list restriction looks up.
type rhsTarget int

const (
	rhsClient rhsTarget = iota
	rhsReverseClient
	rhsHelo
	rhsSender
	rhsRecipient
)

// rhsTarget returns the name to look up, the value shown in replies
// ($rbl_what) and the reply class; ok is false when there is nothing to
// look up (unknown client name, no HELO, no or null sender, no
// recipient).
func (ev *eval) rhsTarget(t rhsTarget) (domain, what, class string, ok bool) {
	req := ev.req
	switch t {
	case rhsClient:
		n := req.Peer.Name
		return n, n, classClient, n != "" && !strings.EqualFold(n, "unknown")
	case rhsReverseClient:
		n := req.Peer.ReverseName
		return n, n, classRevClient, n != "" && !strings.EqualFold(n, "unknown")
	case rhsHelo:
		return req.Client.Helo, req.Client.Helo, classHelo, req.Client.Helo != ""
	case rhsSender:
		if req.From == nil || req.From.IsNull() {
			return "", "", "", false
		}
		return req.From.Domain, req.From.String(), classSender, true
	case rhsRecipient:
		return req.Rcpt.Domain, req.Rcpt.String(), classRecipient, !req.Rcpt.IsNull()
	}
	return "", "", "", false
}

// rhsbl returns reject_rhsbl_* (or permit_rhswl_client when permit).
func rhsbl(t rhsTarget, permit bool) func(context.Context, *eval, *restriction) (verdict, error) {
	return func(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
		d, err := ev.dnsbl()
		if err != nil {
			return verdict{}, err
		}
		za := r.data.(zoneArg)
		domain, what, class, ok := ev.rhsTarget(t)
		if !ok {
			return verdict{}, nil
		}
		if !rbl.ValidDomain(domain) {
			// Postfix find_dnsxl_domain: names that are not valid host
			// names, address literals, and names ending in a numeric
			// label are not queried.
			ev.trace(TraceEvent{Kind: "note", Restriction: r.display(), Text: fmt.Sprintf("%q: %v", domain, rbl.ErrInvalidName)})
			return verdict{}, nil
		}
		if permit {
			if ok, err := ev.allowlistSafe(ctx, r); err != nil || !ok {
				return verdict{}, err
			}
		}
		a := d.cfg.Client.LookupDomain(ctx, za.zone, domain)
		ev.traceAnswer(r, a, za.filter, "")
		if permit {
			return ev.allowlistResult(a, za.filter, what, class), nil
		}
		if !a.Match(za.filter) {
			return verdict{}, nil
		}
		return ev.rblReject(ctx, d, r.arg, za.zone, a.Text, what, class), nil
	}
}

// rejectDNSBLScore is reject_dnsbl_score: the client's combined score over
// dnsbl_sites (postscreen_dnsbl_sites; every zone looked up once, all in
// parallel) is rejected at or above dnsbl_threshold, permitted at or below
// a negative dnsbl_allowlist_threshold (with permit_dnswl_client's
// safety), and otherwise left to the next restriction.
func rejectDNSBLScore(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	d, err := ev.dnsbl()
	if err != nil {
		return verdict{}, err
	}
	ip := ev.req.Client.Addr.Unmap()
	if !ip.IsValid() || len(d.cfg.Sites) == 0 {
		return verdict{}, nil
	}
	sc := d.cfg.Client.Score(ctx, ip, d.cfg.Sites, ev.req.DNSLists.pendingFor(ctx, ip))
	total := 0
	for _, x := range sc.Results {
		add := 0
		if x.Matched {
			add = x.Site.Weight
		}
		total += add
		te := TraceEvent{Kind: "lookup", Restriction: r.display(), Table: "dnsbl_sites " + x.Site.String(),
			Key: x.Answer.Query, Found: x.Matched, Text: fmt.Sprintf("%+d, total %d", add, total)}
		switch {
		case x.Answer.Err != nil:
			te.Text = x.Answer.Err.Error() + "; " + te.Text
		case x.Matched:
			// explain shows Value for a match, Text otherwise.
			te.Value = x.Answer.String() + "; " + te.Text
		case x.Answer.Listed():
			te.Value = x.Answer.String()
			te.Text = x.Answer.String() + ": filter does not match; " + te.Text
		default:
			te.Text = "not listed; " + te.Text
		}
		ev.trace(te)
	}
	ev.trace(TraceEvent{Kind: "note", Restriction: r.display(), Text: fmt.Sprintf("DNSBL score %d (dnsbl_threshold %d, dnsbl_allowlist_threshold %d)",
		sc.Total, d.cfg.Threshold, d.cfg.AllowlistThreshold)})
	if sc.Total >= d.cfg.Threshold {
		top, ok := sc.Top()
		if !ok {
			// Only possible with a threshold below the positive weights
			// that matched: name the first matching site.
			for _, x := range sc.Results {
				if x.Matched {
					top = x
					break
				}
			}
		}
		key := top.Site.Zone
		if !top.Site.Filter.IsZero() {
			key += "=" + top.Site.Filter.String()
		}
		return ev.rblReject(ctx, d, key, top.Site.Zone, top.Answer.Text, ip.String(), classClient), nil
	}
	if d.cfg.AllowlistThreshold < 0 && sc.Total <= d.cfg.AllowlistThreshold {
		if ok, err := ev.allowlistSafe(ctx, r); err != nil || !ok {
			return verdict{}, err
		}
		return verdict{action: actPermit}, nil
	}
	return verdict{}, nil
}

// rblReject builds the reply for a listing (Postfix rbl_reject_reply):
// the rbl_reply_maps template for the list ("zone=filter" as written, then
// "zone"), else default_rbl_reply, expanded; the reply starts with its
// code, then an optional enhanced code (default X.7.1). A secret zone
// name is replaced by its dnsbl_reply_map name in $rbl_domain.
func (ev *eval) rblReject(ctx context.Context, d *dnsbl, arg, zone, txt, what, class string) verdict {
	template := ""
	keys := []string{strings.ToLower(arg)}
	if keys[0] != zone {
		keys = append(keys, zone)
	}
lookup:
	for _, key := range keys {
		for _, t := range d.cfg.ReplyMaps {
			v, ok, err := t.Lookup(ctx, key)
			if err != nil {
				return ev.serverError(fmt.Errorf("rbl_reply_maps %s: %w", table.SpecOf(t), err))
			}
			if ok {
				template = v
				break lookup
			}
		}
	}
	public := zone
	if d.cfg.ReplyMap != nil {
		v, ok, err := d.cfg.ReplyMap.Lookup(ctx, zone)
		if err != nil {
			return ev.serverError(fmt.Errorf("dnsbl_reply_map: %w", err))
		}
		if ok && strings.TrimSpace(v) != "" {
			public = strings.TrimSpace(v)
		}
	}
	vars := ev.rblVars(d, public, txt, what, class)
	if template != "" {
		reply, err := rblReply(template, vars)
		if err == nil {
			return ev.rejectReply(reply, classPolicy)
		}
		ev.logger().Warn("bad rbl_reply_maps template: using default_rbl_reply", "list", arg, "template", template, "err", err)
	}
	reply, err := rblReply(d.cfg.DefaultReply, vars)
	if err != nil {
		// Checked at startup; only a $name that expands to bad text gets
		// here.
		ev.logger().Warn("rbl response code configuration error", "err", err)
		reply = envelope.NewReply(450, envelope.Enhanced{4, 7, 1}, "Service unavailable")
	}
	return ev.rejectReply(reply, classPolicy)
}

// rblVars returns the $name lookup of reply templates: Postfix's rbl_*
// names and the smtpd client and envelope names.
func (ev *eval) rblVars(d *dnsbl, domain, txt, what, class string) func(string) (string, bool) {
	req := ev.req
	return func(name string) (string, bool) {
		switch name {
		case "rbl_code":
			return strconv.Itoa(d.cfg.RejectCode), true
		case "rbl_domain":
			return domain, true
		case "rbl_reason", "rbl_txt":
			return txt, true
		case "rbl_what":
			return what, true
		case "rbl_class":
			return class, true
		case "client_address":
			if req.Client.Addr.IsValid() {
				return req.Client.Addr.Unmap().String(), true
			}
			return "", true
		case "client_name":
			return req.Peer.Name, true
		case "reverse_client_name":
			return req.Peer.ReverseName, true
		case "helo_name":
			return req.Client.Helo, true
		case "sender", "sender_name", "sender_domain":
			if req.From == nil {
				return "", true
			}
			return map[string]string{"sender": req.From.String(), "sender_name": req.From.Local, "sender_domain": req.From.Domain}[name], true
		case "recipient":
			return req.Rcpt.String(), true
		case "recipient_name":
			return req.Rcpt.Local, true
		case "recipient_domain":
			return req.Rcpt.Domain, true
		}
		return "", false
	}
}

// rblReply expands a template and parses it as "code [x.y.z] text"
// (Postfix: the code must be 4xx or 5xx; the enhanced code defaults to
// X.7.1).
func rblReply(template string, vars func(string) (string, bool)) (envelope.Reply, error) {
	s, err := expandReply(template, vars)
	if err != nil {
		return envelope.Reply{}, err
	}
	s = printableText(s)
	if len(s) < 4 || (s[0] != '4' && s[0] != '5') || !isDigit(s[1]) || !isDigit(s[2]) || s[3] != ' ' {
		return envelope.Reply{}, fmt.Errorf("reply %q does not start with a 4xx or 5xx code", s)
	}
	code, _ := strconv.Atoi(s[:3])
	text := strings.TrimSpace(s[4:])
	enh := envelope.Enhanced{code / 100, 7, 1}
	if first, rest, _ := strings.Cut(text, " "); first != "" {
		if e, ok := envelope.ParseEnhanced(first); ok {
			enh, text = e, strings.TrimSpace(rest)
		}
	}
	if text == "" {
		text = "Service unavailable"
	}
	return envelope.NewReply(code, enh, text), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// printableText makes expanded text safe for a one-line reply: control
// and non-ASCII characters become "_" (Postfix smtpd_expand_filter).
func printableText(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '_'
		}
	}
	return string(b)
}

// expandReply expands $name, ${name}, $(name), ${name?text} (text when
// name is not empty), ${name:text} (text when name is empty) and $$, like
// Postfix's mac_expand. An unknown name is an error.
func expandReply(s string, vars func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			return "", errors.New("template ends in $")
		}
		switch s[i] {
		case '$':
			b.WriteByte('$')
			continue
		case '{', '(':
			closer := byte('}')
			if s[i] == '(' {
				closer = ')'
			}
			end := matching(s, i, s[i], closer)
			if end < 0 {
				return "", fmt.Errorf("unbalanced %c in template", s[i])
			}
			inner := s[i+1 : end]
			i = end
			name, rest := inner, ""
			op := byte(0)
			if k := strings.IndexAny(inner, "?:"); k >= 0 {
				name, op, rest = inner[:k], inner[k], inner[k+1:]
			}
			v, ok := vars(name)
			if !ok {
				return "", fmt.Errorf("unknown template variable %q", name)
			}
			switch {
			case op == '?' && v != "", op == ':' && v == "":
				x, err := expandReply(rest, vars)
				if err != nil {
					return "", err
				}
				b.WriteString(x)
			case op == 0:
				b.WriteString(v)
			}
		default:
			j := i
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			if j == i {
				return "", fmt.Errorf("bad $ at %q", s[i-1:])
			}
			v, ok := vars(s[i:j])
			if !ok {
				return "", fmt.Errorf("unknown template variable %q", s[i:j])
			}
			b.WriteString(v)
			i = j - 1
		}
	}
	return b.String(), nil
}

// matching returns the index of the closer that balances s[open], or -1.
func matching(s string, open int, opener, closer byte) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case opener:
			depth++
		case closer:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}
