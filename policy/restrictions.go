package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// action is the outcome of one restriction (postconf(5) "restriction
// lists"): DUNNO goes on to the next restriction, the others end the list.
type action int

const (
	actDunno action = iota
	actPermit
	actReject
	actDefer
)

func (a action) String() string {
	return [...]string{"DUNNO", "OK", "REJECT", "DEFER"}[a]
}

type verdict struct {
	action action
	reply  envelope.Reply
}

// restriction is one parsed element of a restriction list.
type restriction struct {
	name string
	arg  string
	tbl  table.Table
	fn   func(ctx context.Context, ev *eval, r *restriction) (verdict, error)
}

type eval struct {
	p   *Policy
	req *Request
}

// run evaluates a list until a restriction decides. Lookup errors become
// 451 4.3.0 (Postfix: "Temporary lookup failure"), never a rejection.
func (ev *eval) run(ctx context.Context, list string, rs []restriction) (verdict, error) {
	for i := range rs {
		r := &rs[i]
		v, err := r.fn(ctx, ev, r)
		if err != nil {
			ev.req.tracef("%s: %s: error: %v", list, r.display(), err)
			return verdict{}, tempLookup(ev.req.Rcpt, fmt.Errorf("%s %s: %w", list, r.display(), err))
		}
		if v.action != actDunno {
			ev.req.tracef("%s: %s: %s %s", list, r.display(), v.action, v.reply)
			return v, nil
		}
		ev.req.tracef("%s: %s: no match", list, r.display())
	}
	return verdict{}, nil
}

func (r *restriction) display() string {
	if r.arg != "" {
		return r.name + " " + r.arg
	}
	return r.name
}

type restrictionDef struct {
	hasArg bool
	fn     func(ctx context.Context, ev *eval, r *restriction) (verdict, error)
}

var restrictionDefs = map[string]restrictionDef{
	"permit": {fn: func(context.Context, *eval, *restriction) (verdict, error) {
		return verdict{action: actPermit}, nil
	}},
	"reject": {fn: func(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
		// reject_code default 554.
		return verdict{actReject, envelope.NewReply(554, envelope.Enhanced{5, 7, 1}, ev.req.Rcpt.Bracketed()+": Recipient address rejected: Access denied")}, nil
	}},
	"defer": {fn: func(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
		// defer_code default 450.
		return verdict{actDefer, envelope.NewReply(450, envelope.Enhanced{4, 7, 1}, ev.req.Rcpt.Bracketed()+": Recipient address rejected: Try again later")}, nil
	}},
	"permit_mynetworks": {fn: func(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
		ok, err := ev.inMyNetworks(ctx)
		if err != nil || !ok {
			return verdict{}, err
		}
		return verdict{action: actPermit}, nil
	}},
	// No SASL on an MX: accepted for Postfix compatibility, never matches.
	"permit_sasl_authenticated": {fn: func(context.Context, *eval, *restriction) (verdict, error) {
		return verdict{}, nil
	}},
	"reject_unauth_destination": {fn: func(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
		return ev.unauthDestination(ctx, 554, envelope.Enhanced{5, 7, 1}) // relay_domains_reject_code
	}},
	"defer_unauth_destination": {fn: func(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
		return ev.unauthDestination(ctx, 450, envelope.Enhanced{4, 7, 1})
	}},
	"permit_auth_destination": {fn: func(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
		ok, err := ev.authDestination(ctx)
		if err != nil || !ok {
			return verdict{}, err
		}
		return verdict{action: actPermit}, nil
	}},
}

// parseList parses a Postfix restriction list. Tokens come from
// table.SplitList or a TOML array.
func parseList(list string, tokens []string, set *table.Set) ([]restriction, error) {
	var out []restriction
	for i := 0; i < len(tokens); i++ {
		name := strings.ToLower(tokens[i])
		def, ok := restrictionDefs[name]
		if !ok {
			return nil, fmt.Errorf("%s: unknown restriction %q", list, tokens[i])
		}
		r := restriction{name: name, fn: def.fn}
		if def.hasArg {
			if i+1 >= len(tokens) {
				return nil, fmt.Errorf("%s: %s needs an argument", list, name)
			}
			i++
			r.arg = tokens[i]
			if set != nil && strings.Contains(r.arg, ":") {
				t, err := set.Open(r.arg)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", list, name, err)
				}
				r.tbl = t
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func (ev *eval) inMyNetworks(ctx context.Context) (bool, error) {
	if ev.p.cfg.MyNetworks == nil || !ev.req.Client.Addr.IsValid() {
		return false, nil
	}
	return ev.p.cfg.MyNetworks.Match(ctx, ev.req.Client.Addr.Unmap())
}

// authDestination is Postfix's "authorized destination" test
// (permit_auth_destination / reject_unauth_destination): the recipient
// domain is in mydestination or relay_domains, and the address carries no
// sender-specified routing (user@remote@local, user%remote@local,
// remote!user@local; allow_untrusted_routing = no). Address literals are
// never our destination.
func (ev *eval) authDestination(ctx context.Context) (bool, error) {
	rcpt := ev.req.Rcpt
	if rcpt.IsLiteral() {
		return false, nil
	}
	if strings.ContainsAny(rcpt.Local, "@%!") {
		return false, nil
	}
	class, err := ev.p.classify(ctx, rcpt.Domain)
	if err != nil {
		return false, err
	}
	return class != classOther, nil
}

func (ev *eval) unauthDestination(ctx context.Context, code int, enh envelope.Enhanced) (verdict, error) {
	ok, err := ev.authDestination(ctx)
	if err != nil || ok {
		return verdict{}, err
	}
	act := actReject
	if code/100 == 4 {
		act = actDefer
	}
	return verdict{act, envelope.NewReply(code, enh, ev.req.Rcpt.Bracketed()+": Relay access denied")}, nil
}
