package policy

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// action is the outcome of one restriction (postconf(5) "restriction
// lists"): DUNNO goes on to the next restriction, the others end the list.
// actDefer is accepted from restriction functions and treated as actReject
// with a 4xx reply (Postfix has one REJECT status for both).
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

// verdict is what a restriction decided. Restriction functions build
// rejections with eval.reject (or eval.rejectReply), which apply
// warn_if_reject and defer_if_reject as Postfix's smtpd_check_reject does;
// a verdict built by hand is passed through the same logic by the engine.
type verdict struct {
	action  action
	reply   envelope.Reply
	cause   error // internal cause of a temporary failure, logged only
	checked bool  // warn_if_reject/defer_if_reject already applied
}

// errClass is Postfix's error class of a rejection: configuration,
// software and resource errors are never turned into warnings by
// warn_if_reject.
type errClass int

const (
	classPolicy errClass = iota
	classProtocol
	classResource
	classSoftware
)

// restriction is one parsed element of a restriction list.
type restriction struct {
	name string // lower case; "" for a bare type:table
	arg  string
	tbl  table.Table
	data any // restrictionDef.parse result
	fn   func(ctx context.Context, ev *eval, r *restriction) (verdict, error)
}

func (r *restriction) display() string {
	switch {
	case r.name == "":
		return r.arg
	case r.arg != "":
		return r.name + " " + r.arg
	}
	return r.name
}

// restrictionDef defines a restriction name. hasArg restrictions take the
// next list item as argument; table restrictions (check_*_access) open it
// as a lookup table; parse, when set, validates the argument at startup and
// its result is kept in restriction.data.
type restrictionDef struct {
	hasArg bool
	table  bool
	parse  func(arg string) (any, error)
	fn     func(ctx context.Context, ev *eval, r *restriction) (verdict, error)
}

// extraRestrictionDefs holds restriction tables declared in other files of
// this package (rbl.go: reject_rbl_client, reject_rhsbl_*,
// permit_dnswl_client, ...), so that adding restrictions needs no edit of
// this file. Such a file declares, at package level:
//
//	var _ = registerRestrictions(map[string]restrictionDef{
//		"reject_rbl_client": {hasArg: true, fn: rejectRBLClient},
//	})
//
// registerRestrictions runs during package initialisation only; New merges
// restrictionDefs and every registered table into the Policy's own table,
// refusing a name defined twice.
var extraRestrictionDefs []map[string]restrictionDef

// registerRestrictions adds a restriction table (see extraRestrictionDefs).
// Its result is meaningless; it exists so the call can initialise a
// package-level blank variable.
func registerRestrictions(defs map[string]restrictionDef) struct{} {
	extraRestrictionDefs = append(extraRestrictionDefs, defs)
	return struct{}{}
}

// mergeRestrictionDefs builds a Policy's restriction table.
func mergeRestrictionDefs() (map[string]restrictionDef, error) {
	out := maps.Clone(restrictionDefs)
	for _, defs := range extraRestrictionDefs {
		for name, d := range defs {
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("policy: restriction %q is defined twice", name)
			}
			out[name] = d
		}
	}
	return out, nil
}

// restrictionDefs are the built-in restrictions (postconf(5)). The DNSBL
// restrictions live in rbl.go.
var restrictionDefs = map[string]restrictionDef{
	// Generic (postconf(5) "Generic restrictions").
	"permit":                     {fn: permitAll},
	"reject":                     {fn: rejectAll},
	"defer":                      {fn: deferAll},
	"defer_if_permit":            {fn: deferIfPermit},
	"defer_if_reject":            {fn: deferIfReject},
	"warn_if_reject":             {}, // handled by eval.run
	"reject_unauth_pipelining":   {fn: rejectUnauthPipelining},
	"reject_plaintext_session":   {fn: rejectPlaintextSession},
	"sleep":                      {hasArg: true, parse: parseSleep, fn: sleepRestriction},
	"permit_sasl_authenticated":  {fn: dunno}, // no SASL on an MX
	"permit_tls_clientcerts":     {fn: dunno}, // no client certificates are asked for
	"permit_tls_all_clientcerts": {fn: dunno},

	// Client (smtpd_client_restrictions).
	"permit_mynetworks":                      {fn: permitMynetworks},
	"reject_unknown_client_hostname":         {fn: rejectUnknownClient},
	"reject_unknown_client":                  {fn: rejectUnknownClient},
	"reject_unknown_reverse_client_hostname": {fn: rejectUnknownReverseClient},
	"check_client_access":                    {hasArg: true, table: true, fn: checkClientAccess},
	"check_reverse_client_hostname_access":   {hasArg: true, table: true, fn: checkReverseClientAccess},

	// HELO (smtpd_helo_restrictions).
	"reject_invalid_helo_hostname":  {fn: rejectInvalidHelo},
	"reject_invalid_hostname":       {fn: rejectInvalidHelo},
	"reject_non_fqdn_helo_hostname": {fn: rejectNonFQDNHelo},
	"reject_non_fqdn_hostname":      {fn: rejectNonFQDNHelo},
	"reject_unknown_helo_hostname":  {fn: rejectUnknownHelo},
	"reject_unknown_hostname":       {fn: rejectUnknownHelo},
	"permit_naked_ip_address":       {fn: permitNakedIP},
	"check_helo_access":             {hasArg: true, table: true, fn: checkHeloAccess},

	// Sender (smtpd_sender_restrictions).
	"reject_non_fqdn_sender":       {fn: rejectNonFQDNSender},
	"reject_unknown_sender_domain": {fn: rejectUnknownSenderDomain},
	"reject_unknown_address":       {fn: rejectUnknownSenderDomain},
	"reject_unlisted_sender":       {fn: rejectUnlistedSender},
	"check_sender_access":          {hasArg: true, table: true, fn: checkSenderAccess},

	// Recipient (smtpd_relay_restrictions, smtpd_recipient_restrictions).
	"reject_unauth_destination":       {fn: rejectUnauthDestination},
	"defer_unauth_destination":        {fn: deferUnauthDestination},
	"permit_auth_destination":         {fn: permitAuthDestination},
	"reject_unlisted_recipient":       {fn: rejectUnlistedRecipient},
	"check_recipient_maps":            {fn: rejectUnlistedRecipient},
	"reject_non_fqdn_recipient":       {fn: rejectNonFQDNRecipient},
	"reject_unknown_recipient_domain": {fn: rejectUnknownRecipientDomain},
	"check_recipient_access":          {hasArg: true, table: true, fn: checkRecipientAccess},
	"reject_multi_recipient_bounce":   {fn: rejectMultiRecipientBounce},
}

// relayRequired lists the restrictions of which smtpd_relay_restrictions or
// smtpd_recipient_restrictions must contain one (smtpd_check.c
// rcpt_required), so that the server can never be an open relay.
var relayRequired = []string{"reject_unauth_destination", "defer_unauth_destination", "reject", "defer", "defer_if_permit"}

// defaultACL maps a stage to the access restriction a bare type:table in its
// list stands for (Postfix "def_acl").
var defaultACL = map[stage]string{
	stClient:    "check_client_access",
	stHelo:      "check_helo_access",
	stSender:    "check_sender_access",
	stRecipient: "check_recipient_access",
}

// parseList parses a restriction list (tokens from table.SplitList or a
// TOML array). Tables named in it are opened now, so that a broken table is
// a startup error; topLevel false parses an access table result, which must
// not name tables.
func (p *Policy) parseList(list string, tokens []string, topLevel bool) ([]restriction, error) {
	var out []restriction
	for i := 0; i < len(tokens); i++ {
		tok := strings.TrimSpace(tokens[i])
		if tok == "" {
			continue
		}
		if isTableSpec(tok) {
			// Short-hand for the stage's check_xxx_access.
			if !topLevel {
				return nil, fmt.Errorf("%s: lookup table %q inside an access table result (define a restriction class instead)", list, tok)
			}
			t, err := p.openTable(tok)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", list, err)
			}
			out = append(out, restriction{arg: tok, tbl: t, fn: bareTable})
			continue
		}
		name := strings.ToLower(tok)
		def, ok := p.defs[name]
		if !ok {
			if _, isClass := p.classes[name]; isClass {
				out = append(out, restriction{name: name, fn: restrictionClass})
				continue
			}
			return nil, fmt.Errorf("%s: unknown restriction %q", list, tok)
		}
		r := restriction{name: name, fn: def.fn}
		if def.hasArg {
			if i+1 >= len(tokens) {
				return nil, fmt.Errorf("%s: %s needs an argument", list, name)
			}
			i++
			r.arg = strings.TrimSpace(tokens[i])
			if def.table {
				if !isTableSpec(r.arg) {
					return nil, fmt.Errorf("%s: restriction %s: bad argument %q: need maptype:mapname", list, name, r.arg)
				}
				if !topLevel {
					return nil, fmt.Errorf("%s: lookup table %q inside an access table result (define a restriction class instead)", list, r.arg)
				}
				t, err := p.openTable(r.arg)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", list, name, err)
				}
				r.tbl = t
			}
			if def.parse != nil {
				d, err := def.parse(r.arg)
				if err != nil {
					return nil, fmt.Errorf("%s: %s %s: %w", list, name, r.arg, err)
				}
				r.data = d
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func isTableSpec(s string) bool {
	return strings.HasPrefix(s, "{") || (strings.Contains(s, ":") && !strings.HasPrefix(s, "["))
}

func (p *Policy) openTable(spec string) (table.Table, error) {
	if p.cfg.Tables == nil {
		return table.Open(spec, table.Options{})
	}
	return p.cfg.Tables.Open(spec)
}

// hasRequired implements Postfix has_required(): does the list, or a class
// it names, contain a restriction that can refuse a relay attempt before an
// unconditional permit?
func (p *Policy) hasRequired(rs []restriction, depth int) bool {
	for i := 0; i < len(rs); i++ {
		name := rs[i].name
		if name == "warn_if_reject" && i+1 < len(rs) {
			i++ // the next restriction only warns
			continue
		}
		if name == "permit" {
			return false
		}
		for _, req := range relayRequired {
			if name == req {
				return true
			}
		}
		if class, ok := p.classes[name]; ok && depth < 100 && p.hasRequired(class, depth+1) {
			return true
		}
	}
	return false
}

// stage identifies a restriction list family and its Postfix reply names.
type stage int

const (
	stClient stage = iota
	stHelo
	stSender
	stRecipient
	stData
	stEOD
)

// eval is the state of one evaluation (one SMTP command): Postfix's
// SMTPD_STATE fields recursion, warn_if_reject, defer_if_permit and
// defer_if_reject.
type eval struct {
	p     *Policy
	req   *Request
	where string // the SMTP command: CONNECT, HELO, MAIL, RCPT, VRFY, DATA, END-OF-MESSAGE

	stage      stage
	replyName  string // Postfix reply_name of the current list
	replyClass string // "Client host", "Helo command", ...
	list       string

	recursion     int
	warn          int
	deferIfPermit *envelope.Reply
	deferIfReject *envelope.Reply

	rcptMapChecked   bool
	senderMapChecked bool
	resolved         map[string]*resolvedAddr
}

func (p *Policy) newEval(req *Request, where string) *eval {
	return &eval{p: p, req: req, where: where}
}

// begin starts a stage: Postfix SMTPD_CHECK_RESET.
func (ev *eval) begin(st stage, replyName, replyClass string) {
	ev.stage, ev.replyName, ev.replyClass = st, replyName, replyClass
	ev.recursion, ev.warn, ev.deferIfReject = 0, 0, nil
}

// run evaluates a list until a restriction decides (Postfix
// generic_checks).
func (ev *eval) run(ctx context.Context, list string, rs []restriction) verdict {
	if len(rs) == 0 {
		return verdict{}
	}
	savedList := ev.list
	ev.list = list
	saved := ev.recursion
	ev.recursion++
	defer func() {
		ev.recursion = saved
		ev.list = savedList
		if ev.warn >= ev.recursion {
			ev.warn = 0 // the list ended with warn_if_reject
		}
	}()
	for i := range rs {
		if ev.req.state().discarding() {
			break
		}
		r := &rs[i]
		if r.name == "warn_if_reject" {
			if ev.warn == 0 {
				ev.warn = ev.recursion
			}
			ev.trace(TraceEvent{Kind: "restriction", Restriction: r.name, Result: "DUNNO", Text: "a rejection by the next restriction only warns"})
			continue
		}
		if err := ctx.Err(); err != nil {
			return ev.tempFailure(err)
		}
		ev.trace(TraceEvent{Kind: "try", Restriction: r.display()})
		v, err := r.fn(ctx, ev, r)
		if err != nil {
			// A lookup error (Postfix reject_dict_retry): never a
			// rejection, never only a warning.
			v = ev.tempFailure(fmt.Errorf("%s %s: %w", list, r.display(), err))
		}
		if !v.checked && (v.action == actReject || v.action == actDefer) {
			v = ev.rejectReply(v.reply, classPolicy)
		}
		if v.action == actDefer {
			v.action = actReject
		}
		te := TraceEvent{Kind: "restriction", Restriction: r.display(), Result: v.action.String()}
		if v.action == actReject {
			te.Reply = v.reply.String()
			if v.reply.Temporary() {
				te.Result = "DEFER"
			}
		}
		if v.cause != nil {
			te.Text = v.cause.Error()
		}
		ev.trace(te)
		if ev.warn >= ev.recursion {
			ev.warn = 0
		}
		if v.action != actDunno {
			return v
		}
		if ev.deferIfPermit != nil && ev.deferIfReject != nil {
			break
		}
	}
	return verdict{}
}

// tempFailure is Postfix's reject_dict_retry: 451 4.3.0 <name>: Temporary
// lookup failure.
func (ev *eval) tempFailure(cause error) verdict {
	e := tempLookup(ev.replyName, cause)
	return verdict{action: actReject, reply: e.Reply, cause: cause, checked: true}
}

// serverError is Postfix's reject_server_error: a configuration problem
// found while evaluating (a table inside an access table result, runaway
// recursion); temporary, so that nothing is lost while it is fixed.
func (ev *eval) serverError(cause error) verdict {
	ev.logger().Warn("restriction configuration error", "err", cause)
	r := envelope.NewReply(451, envelope.Enhanced{4, 3, 5}, "Server configuration error")
	v := ev.rejectReply(r, classSoftware)
	v.cause = cause
	return v
}

// reject formats a rejection like Postfix's smtpd_check_reject.
func (ev *eval) reject(code int, enh envelope.Enhanced, format string, args ...any) verdict {
	return ev.rejectReply(envelope.NewReply(code, enh, fmt.Sprintf(format, args...)), classPolicy)
}

// rejectReply applies warn_if_reject (log "reject_warning" and go on) and
// defer_if_reject (turn a 5xx into the remembered deferral), and validates
// the reply (smtpd_check_reject).
func (ev *eval) rejectReply(r envelope.Reply, class errClass) verdict {
	warn := ev.warn != 0 && class != classSoftware && class != classResource
	if r.Code < 400 || r.Code > 599 {
		ev.logger().Warn("SMTP reply code configuration error", "reply", r.String())
		r = envelope.NewReply(450, envelope.Enhanced{4, 7, 1}, "Service unavailable")
	}
	r = envelope.NewReply(r.Code, r.Enhanced, printable(r.Text, 500))
	if !warn && ev.deferIfReject != nil && r.Code/100 == 5 {
		d := *ev.deferIfReject
		ev.deferIfReject, ev.warn = nil, 0
		return ev.rejectReply(d, classPolicy)
	}
	if warn {
		ev.logAction("reject_warning", r.String(), "code", r.Code, "dsn", r.Enhanced.String())
		ev.trace(TraceEvent{Kind: "result", Result: "WARN", Reply: r.String(), Text: "warn_if_reject: not enforced"})
		return verdict{checked: true}
	}
	return verdict{action: actReject, reply: r, checked: true}
}

// deferIfPermit implements Postfix DEFER_IF_PERMIT: remember a deferral
// that applies unless a later restriction rejects; with
// act = TempfailDefer, or under warn_if_reject, it is a plain rejection.
func (ev *eval) deferIfPermitReply(r envelope.Reply, act string) verdict {
	if ev.warn == 0 && act != TempfailDefer {
		if ev.deferIfPermit == nil {
			r := envelope.NewReply(r.Code, r.Enhanced, r.Text)
			ev.deferIfPermit = &r
		}
		ev.trace(TraceEvent{Kind: "result", Result: "DEFER_IF_PERMIT", Reply: r.String()})
		return verdict{checked: true}
	}
	return ev.rejectReply(r, classPolicy)
}

// deferIfRejectReply implements Postfix DEFER_IF_REJECT: a later rejection
// becomes this deferral.
func (ev *eval) deferIfRejectReply(r envelope.Reply) verdict {
	if ev.deferIfReject == nil {
		r := envelope.NewReply(r.Code, r.Enhanced, r.Text)
		ev.deferIfReject = &r
	}
	ev.trace(TraceEvent{Kind: "result", Result: "DEFER_IF_REJECT", Reply: r.String()})
	return verdict{checked: true}
}

func (ev *eval) trace(e TraceEvent) {
	if ev.req.Trace == nil {
		return
	}
	e.Stage = ev.where
	if e.List == "" {
		e.List = ev.list
	}
	if e.Depth == 0 && ev.recursion > 1 {
		e.Depth = ev.recursion - 1
	}
	ev.req.Trace(e)
}

func (ev *eval) logger() interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
} {
	if ev.req.Log != nil {
		return ev.req.Log
	}
	return ev.p.log
}

// logAction writes a Postfix-style line for a non-final action (warn,
// info, hold, discard, redirect, reject_warning).
func (ev *eval) logAction(what, text string, extra ...any) {
	from := ""
	if ev.req.From != nil {
		from = ev.req.From.String()
	}
	attrs := []any{"stage", ev.where, "client", ev.namaddr(), "helo", ev.req.Client.Helo, "from", from,
		"to", ev.req.Rcpt.String(), "reason", text}
	ev.logger().Info(what, append(attrs, extra...)...)
}

func (ev *eval) namaddr() string {
	name := ev.req.Peer.Name
	if name == "" {
		name = "unknown"
	}
	return name + "[" + ev.req.Client.Addr.Unmap().String() + "]"
}

// printable bounds a reply text and replaces control characters, as
// Postfix's printable() and the 510-byte reply limit do.
func printable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// --- stages ---------------------------------------------------------------

func (ev *eval) clientStage(ctx context.Context) (verdict, error) {
	ev.deferIfPermit = nil
	ev.begin(stClient, ev.namaddr(), "Client host")
	return ev.runStage(ctx, "smtpd_client_restrictions", ev.p.lists[stClient]), nil
}

func (ev *eval) heloStage(ctx context.Context) (verdict, error) {
	if ev.req.Client.Helo == "" {
		return verdict{}, nil
	}
	ev.begin(stHelo, ev.req.Client.Helo, "Helo command")
	return ev.runStage(ctx, "smtpd_helo_restrictions", ev.p.lists[stHelo]), nil
}

func (ev *eval) senderStage(ctx context.Context) (verdict, error) {
	if ev.req.From == nil {
		return verdict{}, nil
	}
	ev.begin(stSender, ev.req.From.String(), "Sender address")
	v := ev.runStage(ctx, "smtpd_sender_restrictions", ev.p.lists[stSender])
	if v.action != actReject && ev.p.cfg.RejectUnlistedSender && !ev.senderMapChecked &&
		!ev.req.state().discarding() && !ev.req.From.IsNull() {
		v, err := ev.checkRcptMaps(ctx, *ev.req.From, true)
		if err != nil {
			v = ev.tempFailure(err)
		}
		return v, nil
	}
	return v, nil
}

func (ev *eval) recipientStage(ctx context.Context) (verdict, error) {
	ev.begin(stRecipient, ev.req.Rcpt.String(), "Recipient address")
	if v := ev.runStage(ctx, "smtpd_relay_restrictions", ev.p.relay); v.action == actReject {
		return v, nil
	}
	return ev.runStage(ctx, "smtpd_recipient_restrictions", ev.p.lists[stRecipient]), nil
}

func (ev *eval) dataStage(ctx context.Context, st stage) (verdict, error) {
	ev.deferIfPermit = nil
	if st == stData {
		ev.begin(stData, "DATA", "Data command")
		return ev.runStage(ctx, "smtpd_data_restrictions", ev.p.lists[stData]), nil
	}
	ev.begin(stEOD, "END-OF-MESSAGE", "End-of-data")
	return ev.runStage(ctx, "smtpd_end_of_data_restrictions", ev.p.lists[st]), nil
}

// runStage runs one top-level list and reports it for explain.
func (ev *eval) runStage(ctx context.Context, list string, rs []restriction) verdict {
	ev.trace(TraceEvent{Kind: "stage", List: list, Text: fmt.Sprintf("%d restriction(s)", len(rs))})
	v := ev.run(ctx, list, rs)
	return v
}

// --- generic restrictions ---------------------------------------------------

func dunno(context.Context, *eval, *restriction) (verdict, error) { return verdict{}, nil }

func permitAll(context.Context, *eval, *restriction) (verdict, error) {
	return verdict{action: actPermit}, nil
}

func rejectAll(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.reject(ev.p.cfg.Codes.Reject, envelope.Enhanced{5, 7, 1}, "<%s>: %s rejected: Access denied", ev.replyName, ev.replyClass), nil
}

func deferAll(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.reject(ev.p.cfg.Codes.Defer, envelope.Enhanced{4, 3, 2}, "<%s>: %s rejected: Try again later", ev.replyName, ev.replyClass), nil
}

func deferIfPermit(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	r := envelope.NewReply(450, envelope.Enhanced{4, 7, 0}, fmt.Sprintf("<%s>: %s rejected: defer_if_permit requested", ev.replyName, ev.replyClass))
	return ev.deferIfPermitReply(r, TempfailDeferIfPermit), nil
}

func deferIfReject(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	r := envelope.NewReply(450, envelope.Enhanced{4, 7, 0}, fmt.Sprintf("<%s>: %s rejected: defer_if_reject requested", ev.replyName, ev.replyClass))
	return ev.deferIfRejectReply(r), nil
}

func rejectUnauthPipelining(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	if !ev.req.Pipelined {
		return verdict{}, nil
	}
	return ev.rejectReply(envelope.NewReply(503, envelope.Enhanced{5, 5, 0},
		fmt.Sprintf("<%s>: %s rejected: Improper use of SMTP command pipelining", ev.replyName, ev.replyClass)), classProtocol), nil
}

func rejectPlaintextSession(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	if ev.req.Client.TLS != "" {
		return verdict{}, nil
	}
	return ev.reject(ev.p.cfg.Codes.Plaintext, envelope.Enhanced{4, 7, 1}, "Session encryption is required"), nil
}

func parseSleep(arg string) (any, error) {
	var n int
	if _, err := fmt.Sscanf(arg, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != arg {
		return nil, fmt.Errorf("sleep must be followed by a number of seconds")
	}
	return time.Duration(n) * time.Second, nil
}

func sleepRestriction(ctx context.Context, _ *eval, r *restriction) (verdict, error) {
	t := time.NewTimer(r.data.(time.Duration))
	defer t.Stop()
	select {
	case <-t.C:
		return verdict{}, nil
	case <-ctx.Done():
		return verdict{}, ctx.Err()
	}
}

// restrictionClass evaluates a smtpd_restriction_classes member.
func restrictionClass(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	if ev.recursion > 100 {
		return ev.serverError(fmt.Errorf("restriction class %s causes unreasonable recursion", r.name)), nil
	}
	return ev.run(ctx, r.name, ev.p.classes[r.name]), nil
}

// bareTable is a type:table item without check_xxx_access: the stage's
// default access restriction (Postfix def_acl).
func bareTable(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	acl, ok := defaultACL[ev.stage]
	if !ok {
		return ev.serverError(fmt.Errorf("specify one of (check_client_access, check_helo_access, check_sender_access, check_recipient_access) before %s restriction %q", strings.ToLower(ev.replyClass), r.arg)), nil
	}
	return ev.p.defs[acl].fn(ctx, ev, r)
}
