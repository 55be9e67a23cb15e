// Package policy decides, at each SMTP stage, whether to accept: Postfix
// restriction lists (postconf(5) smtpd_*_restrictions) and recipient
// verification against the directory (smtpd_reject_unlisted_recipient,
// relay_recipient_maps, virtual_alias_maps).
//
// Replies follow Postfix's codes and texts, e.g.
//
//	554 5.7.1 <b@remote.test>: Relay access denied
//	550 5.1.1 <x@example.com>: Recipient address rejected: User unknown in relay recipient table
//	451 4.3.0 <x@example.com>: Temporary lookup failure
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// Router is what policy needs from package routing: alias expansion and
// next-hop resolution (to refuse error: routes at RCPT time).
type Router interface {
	Expand(ctx context.Context, a envelope.Address) ([]envelope.Address, bool, error)
	Route(ctx context.Context, a envelope.Address) (envelope.Route, error)
}

// Config configures a Policy. Nil lists and tables mean "empty".
type Config struct {
	// MyNetworks is mynetworks: trusted clients that may relay.
	MyNetworks *table.NetList
	// MyDestination is mydestination: domains delivered "locally". An MX
	// has no local delivery, so these recipients must be aliased in
	// virtual_alias_maps (postmaster is always accepted, RFC 5321 §4.5.1).
	MyDestination *table.DomainList
	// RelayDomains is relay_domains.
	RelayDomains *table.DomainList
	// RelayRecipientMaps is relay_recipient_maps. Empty means every
	// recipient in relay_domains is accepted (Postfix semantics).
	RelayRecipientMaps []table.Table
	// RecipientDelimiter is recipient_delimiter.
	RecipientDelimiter string
	// RelayRestrictions is smtpd_relay_restrictions; nil means the default
	// "permit_mynetworks, reject_unauth_destination".
	RelayRestrictions []string
	// RecipientRestrictions is smtpd_recipient_restrictions (default empty).
	RecipientRestrictions []string
	// Tables opens the tables named in restrictions (check_*_access).
	Tables *table.Set
	// Router expands aliases and resolves routes; required.
	Router Router
}

// DefaultRelayRestrictions is our smtpd_relay_restrictions default. Postfix
// uses defer_unauth_destination; an internet-facing MX answers definite relay
// attempts with a permanent 554 instead.
var DefaultRelayRestrictions = []string{"permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination"}

// Policy evaluates restriction lists and verifies recipients. Safe for
// concurrent use.
type Policy struct {
	cfg       Config
	relay     []restriction
	recipient []restriction
	log       *slog.Logger
}

// New parses the restriction lists. A mistyped restriction name is an error
// naming the list and the name.
func New(cfg Config, logger *slog.Logger) (*Policy, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Router == nil {
		return nil, errors.New("policy: Router is required")
	}
	if cfg.RelayRestrictions == nil {
		cfg.RelayRestrictions = DefaultRelayRestrictions
	}
	p := &Policy{cfg: cfg, log: logger}
	var err error
	if p.relay, err = parseList("smtpd_relay_restrictions", cfg.RelayRestrictions, cfg.Tables); err != nil {
		return nil, err
	}
	if p.recipient, err = parseList("smtpd_recipient_restrictions", cfg.RecipientRestrictions, cfg.Tables); err != nil {
		return nil, err
	}
	return p, nil
}

// Request is what the restrictions see about one SMTP command.
type Request struct {
	Client envelope.Client
	From   envelope.Address
	Rcpt   envelope.Address
	// Trace, when set, receives one line per decision step (mxfront explain).
	Trace func(format string, args ...any)
}

func (r *Request) tracef(format string, args ...any) {
	if r.Trace != nil {
		r.Trace(format, args...)
	}
}

// RcptVerdict is the result of an accepted RCPT.
type RcptVerdict struct {
	// Expanded are the delivery addresses after virtual_alias_maps.
	Expanded []envelope.Address
}

// Errors carry their client reply (envelope.Error); the internal reason is
// only logged.

func rcptReject(rcpt envelope.Address, code int, enh envelope.Enhanced, text string) *envelope.Error {
	return envelope.Errorf(code, enh, "%s: %s", rcpt.Bracketed(), text)
}

func tempLookup(rcpt envelope.Address, err error) *envelope.Error {
	return envelope.Wrap(err, 451, envelope.Enhanced{4, 3, 0}, rcpt.Bracketed()+": Temporary lookup failure")
}

// CheckRcpt runs smtpd_relay_restrictions, then smtpd_recipient_restrictions,
// then the implicit reject_unlisted_recipient (smtpd_reject_unlisted_recipient
// = yes), then refuses recipients that resolve to an error: transport.
func (p *Policy) CheckRcpt(ctx context.Context, req *Request) (*RcptVerdict, error) {
	ev := &eval{p: p, req: req}
	for _, l := range []struct {
		name string
		rs   []restriction
	}{{"smtpd_relay_restrictions", p.relay}, {"smtpd_recipient_restrictions", p.recipient}} {
		v, err := ev.run(ctx, l.name, l.rs)
		if err != nil {
			return nil, err
		}
		if v.action == actReject || v.action == actDefer {
			return nil, &envelope.Error{Reply: v.reply}
		}
	}
	return p.verifyRecipient(ctx, req)
}

// addressClass is Postfix's address class of a recipient domain
// (ADDRESS_CLASS_README): local (mydestination), relay, or other.
type addressClass int

const (
	classOther addressClass = iota
	classLocal
	classRelay
)

func (c addressClass) String() string {
	return [...]string{"default", "local", "relay"}[c]
}

func (p *Policy) classify(ctx context.Context, domain string) (addressClass, error) {
	if p.cfg.MyDestination != nil {
		ok, err := p.cfg.MyDestination.Match(ctx, domain)
		if err != nil {
			return classOther, fmt.Errorf("mydestination: %w", err)
		}
		if ok {
			return classLocal, nil
		}
	}
	if p.cfg.RelayDomains != nil {
		ok, err := p.cfg.RelayDomains.Match(ctx, domain)
		if err != nil {
			return classOther, fmt.Errorf("relay_domains: %w", err)
		}
		if ok {
			return classRelay, nil
		}
	}
	return classOther, nil
}

// verifyRecipient implements reject_unlisted_recipient and the error:
// transport check.
func (p *Policy) verifyRecipient(ctx context.Context, req *Request) (*RcptVerdict, error) {
	rcpt := req.Rcpt
	class, err := p.classify(ctx, rcpt.Domain)
	if err != nil {
		return nil, tempLookup(rcpt, err)
	}
	req.tracef("address class of %s: %s", rcpt.Domain, class)
	expanded, aliased, err := p.cfg.Router.Expand(ctx, rcpt)
	if err != nil {
		var e *envelope.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, tempLookup(rcpt, fmt.Errorf("virtual_alias_maps: %w", err))
	}
	if aliased {
		req.tracef("virtual_alias_maps: %s -> %s", rcpt, joinAddrs(expanded))
	}
	switch class {
	case classLocal:
		if !aliased && !strings.EqualFold(rcpt.Local, "postmaster") {
			return nil, rcptReject(rcpt, 550, envelope.Enhanced{5, 1, 1}, "Recipient address rejected: User unknown in local recipient table")
		}
	case classRelay:
		if !aliased && len(p.cfg.RelayRecipientMaps) > 0 {
			ok, err := p.listedRelayRecipient(ctx, req, rcpt)
			if err != nil {
				return nil, tempLookup(rcpt, fmt.Errorf("relay_recipient_maps: %w", err))
			}
			if !ok {
				return nil, rcptReject(rcpt, 550, envelope.Enhanced{5, 1, 1}, "Recipient address rejected: User unknown in relay recipient table")
			}
		}
	}
	// Refuse now what could only bounce later: every target resolves to an
	// error: transport (transport(5), Postfix smtpd does the same).
	var firstErr *envelope.Reply
	deliverable := 0
	for _, a := range expanded {
		rt, err := p.cfg.Router.Route(ctx, a)
		if err != nil {
			return nil, tempLookup(rcpt, fmt.Errorf("transport_maps: %w", err))
		}
		req.tracef("transport for %s: %s", a, rt)
		if rt.Transport == envelope.TransportError {
			if firstErr == nil {
				r := rt.Reply
				firstErr = &r
			}
			continue
		}
		deliverable++
	}
	if deliverable == 0 && firstErr != nil {
		return nil, rcptReject(rcpt, firstErr.Code, firstErr.Enhanced, "Recipient address rejected: "+firstErr.Text)
	}
	return &RcptVerdict{Expanded: expanded}, nil
}

// listedRelayRecipient looks rcpt up in relay_recipient_maps in Postfix order:
// user+ext@domain, user@domain, @domain.
func (p *Policy) listedRelayRecipient(ctx context.Context, req *Request, rcpt envelope.Address) (bool, error) {
	keys := []string{rcpt.Key()}
	if base, ext := envelope.SplitExtension(rcpt.Local, p.cfg.RecipientDelimiter); ext != "" {
		keys = append(keys, strings.ToLower(base)+"@"+rcpt.Domain)
	}
	keys = append(keys, "@"+rcpt.Domain)
	for i, k := range keys {
		for _, t := range p.cfg.RelayRecipientMaps {
			if i > 0 && table.IsPattern(t) {
				continue
			}
			_, ok, err := t.Lookup(ctx, k)
			if err != nil {
				return false, err
			}
			if ok {
				req.tracef("relay_recipient_maps: %s found %q", table.SpecOf(t), k)
				return true, nil
			}
		}
	}
	req.tracef("relay_recipient_maps: %s not found", rcpt)
	return false, nil
}

func joinAddrs(as []envelope.Address) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
