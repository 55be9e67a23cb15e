package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// authDestination is Postfix's "authorized destination" test
// (permit_auth_destination / reject_unauth_destination): the recipient
// domain is in mydestination or relay_domains, and the address carries no
// sender-specified routing (user@remote@local, user%remote@local,
// remote!user@local; allow_untrusted_routing = no). Address literals are
// never our destination.
func (ev *eval) authDestination(ctx context.Context) (bool, error) {
	rcpt := ev.req.Rcpt
	if rcpt.IsLiteral() || routed(rcpt) {
		return false, nil
	}
	class, err := ev.p.classify(ctx, rcpt.Domain)
	if err != nil {
		return false, err
	}
	return class != classOther, nil
}

func (ev *eval) unauthDestination(ctx context.Context, code int, enh envelope.Enhanced) (verdict, error) {
	if ev.req.Rcpt.IsNull() {
		return verdict{}, nil
	}
	ok, err := ev.authDestination(ctx)
	if err != nil || ok {
		return verdict{}, err
	}
	return ev.reject(code, enh, "%s: Relay access denied", ev.req.Rcpt.Bracketed()), nil
}

func rejectUnauthDestination(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.unauthDestination(ctx, ev.p.cfg.Codes.RelayDomains, envelope.Enhanced{5, 7, 1})
}

// deferUnauthDestination uses relay_domains_reject_code - 100 (454).
func deferUnauthDestination(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.unauthDestination(ctx, ev.p.cfg.Codes.RelayDomains-100, envelope.Enhanced{4, 7, 1})
}

func permitAuthDestination(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.Rcpt.IsNull() {
		return verdict{}, nil
	}
	ok, err := ev.authDestination(ctx)
	if err != nil || !ok {
		return verdict{}, err
	}
	return verdict{action: actPermit}, nil
}

// nonFQDNAddress is Postfix reject_non_fqdn_address.
func (ev *eval) nonFQDNAddress(a envelope.Address, replyClass string) verdict {
	if a.IsLiteral() {
		return verdict{}
	}
	if a.Domain != "" && validHostname(a.Domain, ev.req.SMTPUTF8) && strings.Contains(a.Domain, ".") {
		return verdict{}
	}
	return ev.reject(ev.p.cfg.Codes.NonFQDN, envelope.Enhanced{4, 5, 2}, "%s: %s rejected: need fully-qualified address", a.Bracketed(), replyClass)
}

func rejectNonFQDNSender(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.From == nil || ev.req.From.IsNull() {
		return verdict{}, nil
	}
	return ev.nonFQDNAddress(*ev.req.From, "Sender address"), nil
}

func rejectNonFQDNRecipient(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.Rcpt.IsNull() {
		return verdict{}, nil
	}
	return ev.nonFQDNAddress(ev.req.Rcpt, "Recipient address"), nil
}

// unknownAddress is Postfix reject_unknown_address: the domain has no MX,
// A or AAAA record (or a null MX, RFC 7505). Local domains and address
// literals are not looked up; a DNS failure never rejects.
func (ev *eval) unknownAddress(ctx context.Context, a envelope.Address, replyClass string) (verdict, error) {
	if a.IsNull() || a.IsLiteral() {
		return verdict{}, nil
	}
	class, err := ev.p.classify(ctx, a.Domain)
	if err != nil {
		return verdict{}, err
	}
	if class == classLocal {
		return verdict{}, nil
	}
	sender := replyClass == "Sender address"
	dsn := envelope.Enhanced{4, 1, 2}
	if sender {
		dsn = envelope.Enhanced{4, 1, 8}
	}
	switch ev.mailhostExists(ctx, a.Domain) {
	case dnsOK:
		return verdict{}, nil
	case dnsNullMX:
		code, null := 556, envelope.Enhanced{4, 1, 10}
		if sender {
			code, null = 550, envelope.Enhanced{4, 7, 27}
		}
		return ev.reject(code, null, "%s: %s rejected: Domain %s does not accept mail (nullMX)", a.Bracketed(), replyClass, a.Domain), nil
	case dnsNotFound:
		return ev.reject(ev.p.cfg.Codes.UnknownAddress, dsn, "%s: %s rejected: Domain not found", a.Bracketed(), replyClass), nil
	}
	r := envelope.NewReply(450, dsn, fmt.Sprintf("%s: %s rejected: Domain not found", a.Bracketed(), replyClass))
	return ev.deferIfPermitReply(r, ev.p.cfg.Codes.UnknownAddressTempfail), nil
}

func rejectUnknownSenderDomain(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.From == nil {
		return verdict{}, nil
	}
	return ev.unknownAddress(ctx, *ev.req.From, "Sender address")
}

func rejectUnknownRecipientDomain(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.unknownAddress(ctx, ev.req.Rcpt, "Recipient address")
}

func rejectUnlistedSender(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.From == nil || ev.req.From.IsNull() {
		return verdict{}, nil
	}
	return ev.checkRcptMaps(ctx, *ev.req.From, true)
}

func rejectUnlistedRecipient(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.Rcpt.IsNull() {
		return verdict{}, nil
	}
	return ev.checkRcptMaps(ctx, ev.req.Rcpt, false)
}

func rejectMultiRecipientBounce(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.From == nil || !ev.req.From.IsNull() {
		return verdict{}, nil
	}
	limit := 0 // at RCPT: one recipient was already accepted
	if ev.where != "RCPT" {
		limit = 1
	}
	if ev.req.RcptCount <= limit {
		return verdict{}, nil
	}
	return ev.reject(ev.p.cfg.Codes.MultiRecipientBounc, envelope.Enhanced{5, 5, 3}, "<%s>: %s rejected: Multi-recipient bounce", ev.replyName, ev.replyClass), nil
}

// resolvedAddr is an address after virtual_alias_maps and transport_maps.
type resolvedAddr struct {
	expanded []envelope.Address
	aliased  bool
	// errorOnly is set when every target resolves to an error: transport:
	// the first such route's reply.
	errorOnly *envelope.Reply
}

// resolve expands a through virtual_alias_maps and routes every target,
// once per evaluation.
func (ev *eval) resolve(ctx context.Context, a envelope.Address) (*resolvedAddr, error) {
	k := a.Key()
	if r, ok := ev.resolved[k]; ok {
		return r, nil
	}
	replyName := a.String()
	expanded, aliased, err := ev.p.cfg.Router.Expand(ctx, a)
	if err != nil {
		var e *envelope.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, tempLookup(replyName, fmt.Errorf("virtual_alias_maps: %w", err))
	}
	if aliased {
		ev.trace(TraceEvent{Kind: "note", Text: fmt.Sprintf("virtual_alias_maps: %s -> %s", a, joinAddrs(expanded))})
	}
	res := &resolvedAddr{expanded: expanded, aliased: aliased}
	deliverable := 0
	for _, t := range expanded {
		rt, err := ev.p.cfg.Router.Route(ctx, t)
		if err != nil {
			return nil, tempLookup(replyName, fmt.Errorf("transport_maps: %w", err))
		}
		if rt.Transport == envelope.TransportError {
			if res.errorOnly == nil {
				r := rt.Reply
				res.errorOnly = &r
			}
			continue
		}
		deliverable++
	}
	if deliverable > 0 {
		res.errorOnly = nil
	}
	if ev.resolved == nil {
		ev.resolved = map[string]*resolvedAddr{}
	}
	ev.resolved[k] = res
	return res, nil
}

// checkRcptMaps is Postfix check_rcpt_maps (reject_unlisted_recipient,
// reject_unlisted_sender): an address that virtual_alias_maps knows is
// valid; in mydestination it must have been aliased (postmaster is always
// accepted, RFC 5321 §4.5.1); in relay_domains it must be in
// relay_recipient_maps when that is set; and one that resolves to an
// error: transport is refused with its text.
func (ev *eval) checkRcptMaps(ctx context.Context, a envelope.Address, sender bool) (verdict, error) {
	replyClass, unknown := "Recipient address", envelope.Enhanced{5, 1, 1}
	if sender {
		replyClass, unknown = "Sender address", envelope.Enhanced{5, 1, 0}
		if ev.warn == 0 {
			ev.senderMapChecked = true
		}
	} else if ev.warn == 0 {
		ev.rcptMapChecked = true
	}
	class, err := ev.p.classify(ctx, a.Domain)
	if err != nil {
		return verdict{}, err
	}
	ev.trace(TraceEvent{Kind: "note", Text: fmt.Sprintf("address class of %s: %s", a.Domain, class)})
	res, err := ev.resolve(ctx, a)
	if err != nil {
		var e *envelope.Error
		if errors.As(err, &e) {
			return verdict{action: actReject, reply: e.Reply, cause: e.Err, checked: true}, nil
		}
		return verdict{}, err
	}
	if res.aliased {
		return verdict{}, nil
	}
	switch class {
	case classLocal:
		if strings.EqualFold(a.Local, "postmaster") || strings.EqualFold(a.Local, "mailer-daemon") {
			return verdict{}, nil
		}
		return ev.reject(ev.p.cfg.Codes.UnknownLocalRcpt, unknown, "%s: %s rejected: User unknown in local recipient table", a.Bracketed(), replyClass), nil
	case classRelay:
		if len(ev.p.cfg.RelayRecipientMaps) == 0 {
			return verdict{}, nil
		}
		ok, err := ev.listedRelayRecipient(ctx, a)
		if err != nil {
			return verdict{}, fmt.Errorf("relay_recipient_maps: %w", err)
		}
		if !ok {
			return ev.reject(ev.p.cfg.Codes.UnknownRelayRcpt, unknown, "%s: %s rejected: User unknown in relay recipient table", a.Bracketed(), replyClass), nil
		}
	}
	if r := res.errorOnly; r != nil {
		return ev.rejectReply(envelope.NewReply(r.Code, dsnFix(r.Enhanced, replyClass),
			fmt.Sprintf("%s: %s rejected: %s", a.Bracketed(), replyClass, r.Text)), classPolicy), nil
	}
	return verdict{}, nil
}

// listedRelayRecipient looks a up in relay_recipient_maps in Postfix order:
// user+ext@domain, user@domain, @domain.
func (ev *eval) listedRelayRecipient(ctx context.Context, a envelope.Address) (bool, error) {
	keys := []string{a.Key()}
	if base, ext := envelope.SplitExtension(a.Local, ev.p.cfg.RecipientDelimiter); ext != "" {
		keys = append(keys, strings.ToLower(base)+"@"+a.Domain)
	}
	keys = append(keys, "@"+a.Domain)
	for i, k := range keys {
		for _, t := range ev.p.cfg.RelayRecipientMaps {
			_, ok, err := ev.lookup(ctx, t, k, i > 0)
			if err != nil {
				return false, fmt.Errorf("%s: %w", table.SpecOf(t), err)
			}
			if ok {
				return true, nil
			}
		}
	}
	return false, nil
}
