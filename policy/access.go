package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// lookup queries t and reports the lookup for explain. partial lookups
// (parent domains, user@, @domain, parent networks) skip pattern tables,
// as Postfix's DICT_FLAG_FIXED does.
func (ev *eval) lookup(ctx context.Context, t table.Table, key string, partial bool) (string, bool, error) {
	var (
		v   string
		ok  bool
		err error
	)
	if partial {
		if table.IsPattern(t) {
			return "", false, nil
		}
		v, ok, err = table.LookupPartial(ctx, t, key)
	} else {
		v, ok, err = t.Lookup(ctx, key)
	}
	if ev.req.Trace != nil {
		te := TraceEvent{Kind: "lookup", Table: table.SpecOf(t), Key: key, Found: ok, Value: v}
		if err != nil {
			te.Text = "error: " + err.Error()
		}
		ev.trace(te)
	}
	return v, ok, err
}

// accessError is what an access table failure gives: Postfix's check_access
// substitutes "451 4.3.5 Server configuration error" for the result.
func (ev *eval) accessError(r *restriction, key, replyName, replyClass string, err error) verdict {
	v := ev.rejectReply(envelope.NewReply(451, envelope.Enhanced{4, 3, 5},
		fmt.Sprintf("<%s>: %s rejected: Server configuration error", replyName, replyClass)), classResource)
	v.cause = fmt.Errorf("%s: lookup %q: %w", table.SpecOf(r.tbl), key, err)
	return v
}

// checkNamAddrAccess is Postfix check_namadr_access: the host name and its
// parent domains, then the address and its parent networks.
func (ev *eval) checkNamAddrAccess(ctx context.Context, r *restriction, name, addr, replyName, replyClass string) (verdict, error) {
	v, found, err := ev.checkDomainAccess(ctx, r, strings.ToLower(name), replyName, replyClass)
	if err != nil || found || v.action != actDunno {
		return v, err
	}
	v, _, err = ev.checkAddrAccess(ctx, r, addr, replyName, replyClass)
	return v, err
}

// checkDomainAccess looks up a domain and then its parent domains
// ("sub.example.com", "example.com", "com"; or ".example.com", ".com" when
// smtpd_access_maps is not in parent_domain_matches_subdomains). A numeric
// name gets no parent lookups.
func (ev *eval) checkDomainAccess(ctx context.Context, r *restriction, domain, replyName, replyClass string) (verdict, bool, error) {
	numeric := validHostaddr(domain)
	partial := false
	for name := domain; name != ""; {
		v, ok, err := ev.lookup(ctx, r.tbl, name, partial)
		if err != nil {
			return ev.accessError(r, name, replyName, replyClass, err), true, nil
		}
		if ok {
			return ev.tableResult(ctx, r, v, domain, replyName, replyClass), true, nil
		}
		if numeric {
			break
		}
		dot := strings.IndexByte(name[min(1, len(name)):], '.')
		if dot < 0 {
			break
		}
		name = name[dot+1:] // keeps the dot: ".example.com"
		if ev.p.cfg.ParentDomainMatchesSubdomains {
			name = name[1:]
		}
		partial = true
	}
	return verdict{}, false, nil
}

// checkAddrAccess looks up an address and its parent networks: 1.2.3.4,
// 1.2.3, 1.2, 1 (IPv6: cut at the last ':' each time).
func (ev *eval) checkAddrAccess(ctx context.Context, r *restriction, addr, replyName, replyClass string) (verdict, bool, error) {
	delim := "."
	if strings.Contains(addr, ":") {
		delim = ":"
	}
	partial := false
	for key := addr; key != ""; {
		v, ok, err := ev.lookup(ctx, r.tbl, key, partial)
		if err != nil {
			return ev.accessError(r, key, replyName, replyClass, err), true, nil
		}
		if ok {
			return ev.tableResult(ctx, r, v, addr, replyName, replyClass), true, nil
		}
		i := strings.LastIndex(key, delim)
		if i < 0 {
			break
		}
		key = key[:i]
		partial = true
	}
	return verdict{}, false, nil
}

// checkMailAccess is Postfix check_mail_access with the access(5) address
// search order: user+ext@domain, user@domain, domain (and its parents),
// user+ext@, user@. Pattern tables see the full address only.
func (ev *eval) checkMailAccess(ctx context.Context, r *restriction, a envelope.Address, replyClass string) (verdict, error) {
	key := strings.ToLower(a.String())
	replyName := a.String()
	try := func(k string, partial bool) (verdict, bool) {
		v, ok, err := ev.lookup(ctx, r.tbl, k, partial)
		if err != nil {
			return ev.accessError(r, k, replyName, replyClass, err), true
		}
		if !ok {
			return verdict{}, false
		}
		return ev.tableResult(ctx, r, v, key, replyName, replyClass), true
	}
	if v, done := try(key, false); done {
		return v, nil
	}
	if internal := a.Key(); internal != key {
		// The unquoted (internal) form, for tables keyed that way.
		if v, done := try(internal, true); done {
			return v, nil
		}
	}
	local := strings.ToLower(a.Local)
	base, ext := envelope.SplitExtension(local, ev.p.cfg.RecipientDelimiter)
	if ext != "" {
		if v, done := try(base+"@"+a.Domain, true); done {
			return v, nil
		}
	}
	if !a.IsLiteral() {
		for d := a.Domain; d != ""; {
			if v, done := try(d, true); done {
				return v, nil
			}
			dot := strings.IndexByte(d[min(1, len(d)):], '.')
			if dot < 0 {
				break
			}
			d = d[dot+1:]
			if ev.p.cfg.ParentDomainMatchesSubdomains {
				d = d[1:]
			}
		}
	} else if v, done := try(a.Domain, true); done {
		return v, nil
	}
	if v, done := try(local+"@", true); done {
		return v, nil
	}
	if ext != "" {
		if v, done := try(base+"@", true); done {
			return v, nil
		}
	}
	return verdict{}, nil
}

func checkSenderAccess(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	from := ev.req.From
	if from == nil {
		return verdict{}, nil
	}
	if from.IsNull() {
		// smtpd_null_access_lookup_key: "<>" by default.
		key := ev.p.cfg.NullAccessLookupKey
		v, ok, err := ev.lookup(ctx, r.tbl, key, false)
		if err != nil {
			return ev.accessError(r, key, "", "Sender address", err), nil
		}
		if !ok {
			return verdict{}, nil
		}
		return ev.tableResult(ctx, r, v, key, "", "Sender address"), nil
	}
	return ev.checkMailAccess(ctx, r, *from, "Sender address")
}

func checkRecipientAccess(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	rcpt := ev.req.Rcpt
	if rcpt.IsNull() {
		return verdict{}, nil
	}
	v, err := ev.checkMailAccess(ctx, r, rcpt, "Recipient address")
	if err == nil && v.action == actPermit && routed(rcpt) {
		// Postfix SUSPICIOUS(): a source-routed recipient
		// (user%remote@local, user@remote@local, remote!user@local) never
		// gets OK from an access table (allow_untrusted_routing = no).
		ev.trace(TraceEvent{Kind: "note", Text: "OK ignored for a sender-routed recipient address"})
		return verdict{}, nil
	}
	return v, err
}

// routed reports sender-specified routing in a local part.
func routed(a envelope.Address) bool {
	return strings.ContainsAny(a.Local, "@%!")
}

// tableResult is Postfix check_table_result: turn an access(5) value into a
// decision.
func (ev *eval) tableResult(ctx context.Context, r *restriction, value, datum, replyName, replyClass string) verdict {
	cmd, text, _ := strings.Cut(strings.TrimSpace(value), " ")
	if i := strings.IndexByte(cmd, '\t'); i >= 0 {
		cmd, text = cmd[:i], cmd[i+1:]+" "+text
	}
	text = strings.TrimSpace(text)
	codes := &ev.p.cfg.Codes
	tr := func(result string) {
		ev.trace(TraceEvent{Kind: "result", Table: table.SpecOf(r.tbl), Key: datum, Value: value, Result: result})
	}
	switch strings.ToUpper(cmd) {
	case "DUNNO":
		return verdict{}
	case "OK", "RELAY":
		return verdict{action: actPermit}
	case "REJECT":
		dsn, t := dsnSplit(envelope.Enhanced{5, 7, 1}, text, "Access denied")
		return ev.reject(codes.AccessMapReject, dsnFix(dsn, replyClass), "<%s>: %s rejected: %s", replyName, replyClass, t)
	case "DEFER":
		dsn, t := dsnSplit(envelope.Enhanced{4, 7, 1}, text, "Access denied")
		return ev.reject(codes.AccessMapDefer, dsnFix(dsn, replyClass), "<%s>: %s rejected: %s", replyName, replyClass, t)
	case "DEFER_IF_PERMIT":
		dsn, t := dsnSplit(envelope.Enhanced{4, 7, 1}, text, "Service unavailable")
		rep := envelope.NewReply(codes.AccessMapDefer, dsnFix(dsn, replyClass), fmt.Sprintf("<%s>: %s rejected: %s", replyName, replyClass, t))
		return ev.deferIfPermitReply(rep, TempfailDeferIfPermit)
	case "DEFER_IF_REJECT":
		dsn, t := dsnSplit(envelope.Enhanced{4, 7, 1}, text, "Service unavailable")
		rep := envelope.NewReply(codes.AccessMapDefer, dsnFix(dsn, replyClass), fmt.Sprintf("<%s>: %s rejected: %s", replyName, replyClass, t))
		return ev.deferIfRejectReply(rep)
	case "WARN":
		ev.logAction("warn", fmt.Sprintf("%s %s: %s", replyClass, replyName, text))
		tr("WARN")
		return verdict{}
	case "INFO":
		ev.logAction("info", fmt.Sprintf("%s %s: %s", replyClass, replyName, text))
		tr("INFO")
		return verdict{}
	case "HOLD":
		if !ev.canDelegate("HOLD") {
			return verdict{}
		}
		if text == "" {
			text = "triggers HOLD action"
		}
		why := fmt.Sprintf("<%s>: %s %s", replyName, replyClass, text)
		ev.logAction("hold", why)
		ev.req.state().setHold(why)
		tr("HOLD")
		return verdict{}
	case "DISCARD":
		if !ev.canDelegate("DISCARD") {
			return verdict{}
		}
		if text == "" {
			text = "triggers DISCARD action"
		}
		why := fmt.Sprintf("<%s>: %s %s", replyName, replyClass, text)
		ev.logAction("discard", why)
		ev.req.state().setDiscard(why)
		tr("DISCARD")
		return verdict{action: actPermit}
	case "REDIRECT":
		if !ev.canDelegate("REDIRECT") {
			return verdict{}
		}
		if !strings.Contains(text, "@") {
			ev.logger().Warn("access table entry requires a user@domain target", "table", table.SpecOf(r.tbl), "entry", datum, "value", value)
			return verdict{}
		}
		ev.logAction("redirect", fmt.Sprintf("<%s>: %s triggers REDIRECT %s", replyName, replyClass, text))
		ev.req.state().setRedirect(text)
		tr("REDIRECT")
		return verdict{}
	case "PREPEND":
		if !ev.canDelegate("PREPEND") {
			return verdict{}
		}
		if ev.stage == stEOD {
			ev.logger().Warn("access table action PREPEND must be used before smtpd_end_of_data_restrictions", "table", table.SpecOf(r.tbl))
			return verdict{}
		}
		if !isHeader(text) {
			ev.logger().Warn("access table entry requires header: text", "table", table.SpecOf(r.tbl), "entry", datum, "value", value)
			return verdict{}
		}
		ev.req.state().addPrepend(text)
		tr("PREPEND")
		return verdict{}
	case "FILTER", "BCC", "HANGUP", "DELAY":
		ev.logger().Warn("access table action is not supported by mxfront, ignored", "table", table.SpecOf(r.tbl), "entry", datum, "action", cmd)
		return verdict{}
	}
	if isDigits(value) {
		// An all-numeric result means OK (a time stamp from some
		// out-of-band authentication).
		return verdict{action: actPermit}
	}
	if len(cmd) == 3 && text != "" && (cmd[0] == '4' || cmd[0] == '5') && isDigits(cmd) {
		code := int(cmd[0]-'0')*100 + int(cmd[1]-'0')*10 + int(cmd[2]-'0')
		dsn, t := dsnSplit(envelope.Enhanced{int(cmd[0] - '0'), 7, 1}, text, "Access denied")
		return ev.reject(code, dsnFix(dsn, replyClass), "<%s>: %s rejected: %s", replyName, replyClass, t)
	}
	if strings.Contains(value, ":") {
		return ev.serverError(fmt.Errorf("access table %s has entry with lookup table: %s; define a restriction class and specify its name instead", table.SpecOf(r.tbl), value))
	}
	if ev.recursion > 100 {
		return ev.serverError(fmt.Errorf("access table %s entry %s causes unreasonable recursion", table.SpecOf(r.tbl), value))
	}
	// A restriction class name or a list of restrictions.
	rs, err := ev.p.valueList(value)
	if err != nil {
		return ev.serverError(fmt.Errorf("access table %s entry %q: %w", table.SpecOf(r.tbl), value, err))
	}
	if len(rs) == 0 {
		ev.logger().Warn("access table entry has empty value", "table", table.SpecOf(r.tbl), "entry", datum)
		return verdict{action: actPermit}
	}
	savedName, savedClass := ev.replyName, ev.replyClass
	ev.replyName, ev.replyClass = replyName, replyClass
	v := ev.run(ctx, table.SpecOf(r.tbl)+" "+value, rs)
	ev.replyName, ev.replyClass = savedName, savedClass
	return v
}

// canDelegate is Postfix's not_in_client_helo(): transaction actions
// (HOLD, DISCARD, REDIRECT, PREPEND) need a transaction, which the connect
// and HELO stages do not have when smtpd_delay_reject = no.
func (ev *eval) canDelegate(action string) bool {
	if ev.req.From != nil {
		return true
	}
	if ev.where != "VRFY" {
		ev.logger().Warn("access table action is always skipped in client or helo restrictions with smtpd_delay_reject = no", "action", action)
	}
	return false
}

// valueList parses an access table result as a restriction list, caching
// the result (access values repeat).
func (p *Policy) valueList(value string) ([]restriction, error) {
	if v, ok := p.valueCache.Load(value); ok {
		return v.([]restriction), nil
	}
	rs, err := p.parseList("access result", table.SplitList(value), false)
	if err != nil {
		return nil, err
	}
	p.valueCache.Store(value, rs)
	return rs, nil
}

// dsnSplit is Postfix dsn_split: an optional "X.Y.Z " prefix of text, else
// def; and the text, else deftext.
func dsnSplit(def envelope.Enhanced, text, deftext string) (envelope.Enhanced, string) {
	if first, rest, _ := strings.Cut(text, " "); first != "" {
		if e, ok := envelope.ParseEnhanced(first); ok {
			def, text = e, strings.TrimSpace(rest)
		}
	}
	if text == "" {
		text = deftext
	}
	return def, text
}

// dsnFix is Postfix smtpd_dsn_fix: an address-specific status X.1.Y is
// mapped to the sender or recipient form, or to X.0.0 for other classes.
func dsnFix(e envelope.Enhanced, replyClass string) envelope.Enhanced {
	if e[1] != 1 {
		return e
	}
	//                   1  2  3  4  5  6  7  8
	sender := [...]int{0, 0, 8, 7, 0, 0, 0, 7, 8}
	rcpt := [...]int{0, 1, 2, 3, 4, 5, 6, 3, 2}
	switch replyClass {
	case "Sender address":
		if e[2] >= 1 && e[2] <= 8 {
			return envelope.Enhanced{e[0], 1, sender[e[2]]}
		}
		return envelope.Enhanced{e[0], 1, 0}
	case "Recipient address":
		if e[2] >= 1 && e[2] <= 8 {
			return envelope.Enhanced{e[0], 1, rcpt[e[2]]}
		}
		return envelope.Enhanced{e[0], 1, 0}
	}
	return envelope.Enhanced{e[0], 0, 0}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isHeader reports whether s starts with a header name and a colon
// (Postfix is_header()).
func isHeader(s string) bool {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return false
	}
	for _, c := range []byte(s[:i]) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

var errNoResolver = errors.New("no DNS resolver configured")
