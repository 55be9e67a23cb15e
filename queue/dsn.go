package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mxfront/mxfront/envelope"
)

// Non-delivery notifications follow RFC 3464 (message/delivery-status),
// RFC 6522 (multipart/report), RFC 3461 (NOTIFY, RET, ENVID, ORCPT) and
// RFC 3834 (Auto-Submitted), in the form of Postfix's bounce(8) with its
// default failure template, so that people and bounce parsers recognise
// them.

// failureTemplate is Postfix's default failure_template text
// (bounce(5)); $myhostname is filled in.
const failureTemplate = `This is the mail system at host %s.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
`

// delayTemplate is Postfix's default delay_template text.
const delayTemplate = `This is the mail system at host %s.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than %s.
It will be retried until it is %s old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
`

// successTemplate is Postfix's default success_template text.
const successTemplate = `This is the mail system at host %s.

Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system
`

// dsnKind is the kind of notification.
type dsnKind int

const (
	dsnFailure    dsnKind = iota // to the sender: recipients failed (bounce)
	dsnDelay                     // to the sender: still trying (delay_warning_time)
	dsnSuccess                   // to the sender: delivered (NOTIFY=SUCCESS)
	dsnPostmaster                // to 2bounce_notice_recipient: a bounce bounced
)

func (k dsnKind) subject() string {
	switch k {
	case dsnDelay:
		return "Delayed Mail (still being retried)"
	case dsnSuccess:
		return "Successful Mail Delivery Report"
	case dsnPostmaster:
		return "Postmaster Copy: Undelivered Mail"
	}
	return "Undelivered Mail Returned to Sender"
}

func (k dsnKind) String() string {
	switch k {
	case dsnDelay:
		return "delay"
	case dsnSuccess:
		return "success"
	case dsnPostmaster:
		return "postmaster"
	}
	return "failure"
}

// bounce queues one DSN for the recipients that bounced in pass p, from the
// null sender to the envelope sender; recipients whose NOTIFY excludes
// FAILURE are left out (RFC 3461 §4.1). A message from the null sender (a
// bounce) that cannot be delivered is reported to 2bounce_notice_recipient
// instead, from double_bounce_sender; mail from double_bounce_sender is
// discarded, so notifications never loop (Postfix bounce(8)). It returns
// an error only when the DSN could not be queued; the recipients then stay
// deferred so that the bounce is tried again.
func (q *Queue) bounce(p *pass, now time.Time) error {
	env := p.env
	if !env.From.IsNull() && env.From.Key() == q.cfg.DoubleBounceSender.Key() {
		q.log.Warn("undeliverable postmaster notification discarded", "id", p.m.id, "nrcpt", len(p.bounced))
		return nil
	}
	if env.From.IsNull() {
		return q.notify(p, dsnPostmaster, p.bounced, now)
	}
	var report []outcome
	for _, o := range p.bounced {
		if env.Rcpts[o.rcpt].Notify.Has(envelope.NotifyFailure) {
			report = append(report, o)
		}
	}
	if len(report) == 0 {
		q.log.Info("non-delivery notification suppressed by NOTIFY", "id", p.m.id, "nrcpt", len(p.bounced))
		return nil
	}
	return q.notify(p, dsnFailure, report, now)
}

// notifyDelay queues the delay warning for the deferred recipients of p
// whose NOTIFY allows it (RFC 3461 §4.1: DELAY, or no NOTIFY).
func (q *Queue) notifyDelay(p *pass, now time.Time) error {
	if p.env.From.IsNull() {
		return nil
	}
	var report []outcome
	for _, o := range p.deferred {
		if p.env.Rcpts[o.rcpt].Notify.Has(envelope.NotifyDelay) {
			report = append(report, o)
		}
	}
	if len(report) == 0 {
		return nil
	}
	return q.notify(p, dsnDelay, report, now)
}

// notifySuccess queues the success notice for p.succeeded.
func (q *Queue) notifySuccess(p *pass, now time.Time) error {
	if p.env.From.IsNull() {
		return nil
	}
	return q.notify(p, dsnSuccess, p.succeeded, now)
}

// notify queues one notification of kind about report.
func (q *Queue) notify(p *pass, kind dsnKind, report []outcome, now time.Time) error {
	env := p.env
	from, to := envelope.Address{}, env.From
	if kind == dsnPostmaster {
		from, to = q.cfg.DoubleBounceSender, q.cfg.TwoBounceRecipient
	}
	// The notification must be queued even while Run is shutting down.
	ctx := context.WithoutCancel(p.ctx)
	rcpts, err := q.notifyRcpts(ctx, to)
	if err != nil {
		return err
	}
	in, err := q.create(ctx, false)
	if err != nil {
		return err
	}
	msg, eightBit := q.buildDSN(kind, in.ID(), p, to, report, now)
	if _, err := in.Write(msg); err != nil {
		in.Abort()
		return err
	}
	smtputf8 := !to.IsASCII()
	for _, r := range rcpts {
		smtputf8 = smtputf8 || !r.Addr.IsASCII()
	}
	denv := &envelope.Envelope{
		From:     from,
		Rcpts:    rcpts,
		Client:   envelope.Client{Name: "localhost", Proto: "bounce"},
		Received: now,
		SMTPUTF8: env.SMTPUTF8 || smtputf8,
	}
	if eightBit {
		denv.Body = "8BITMIME"
	}
	if err := in.Commit(ctx, denv); err != nil {
		return err
	}
	msgName := map[dsnKind]string{
		dsnFailure:    "sender non-delivery notification",
		dsnDelay:      "sender delay notification",
		dsnSuccess:    "sender delivery status notification",
		dsnPostmaster: "postmaster non-delivery notification",
	}[kind]
	q.log.Info(msgName, "id", p.m.id, "dsn_id", in.ID(), "to", to.Bracketed(), "nrcpt", len(report))
	return nil
}

// notifyRcpts is where a notification to a goes: a itself, or what
// virtual_alias_maps makes of it when the router can expand (a sender in
// one of our own domains, postmaster). A lookup failure is returned, so
// that the notification is tried again rather than misrouted.
func (q *Queue) notifyRcpts(ctx context.Context, a envelope.Address) ([]envelope.Recipient, error) {
	addrs := []envelope.Address{a}
	if q.expander != nil {
		exp, _, err := q.expander.Expand(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("queue: expand notification recipient %s: %w", a, err)
		}
		if len(exp) > 0 {
			addrs = exp
		}
	}
	rcpts := make([]envelope.Recipient, len(addrs))
	for i, x := range addrs {
		// NOTIFY=NEVER would be pointless on a notification itself, but a
		// notification must not cause another: it goes from the null
		// sender, or from double_bounce_sender.
		rcpts[i] = envelope.Recipient{Addr: x, Orig: a}
	}
	return rcpts, nil
}

// buildDSN renders a notification of kind to to. It reports whether the
// result has 8-bit content.
func (q *Queue) buildDSN(kind dsnKind, dsnID string, p *pass, to envelope.Address, report []outcome, now time.Time) ([]byte, bool) {
	env := p.env
	host := q.cfg.Hostname
	date := now.Format(time.RFC1123Z)
	boundary := fmt.Sprintf("%s.%d/%s", p.m.id, now.Unix(), host)
	life := q.cfg.MaxLifetime
	if env.From.IsNull() {
		life = q.cfg.BounceLifetime
	}

	// Human-readable part first: its charset decides the encoding.
	var text strings.Builder
	switch kind {
	case dsnDelay:
		fmt.Fprintf(&text, delayTemplate, host, humanDuration(q.cfg.DelayWarning), humanDuration(life))
	case dsnSuccess:
		fmt.Fprintf(&text, successTemplate, host)
	default:
		fmt.Fprintf(&text, failureTemplate, host)
	}
	for _, o := range report {
		r := env.Rcpts[o.rcpt]
		line := r.Addr.Bracketed()
		if !r.Orig.IsNull() && r.Orig != r.Addr {
			line += " (expanded from " + r.Orig.Bracketed() + ")"
		}
		why := reason(o)
		if kind == dsnSuccess {
			why = "delivery via " + relayHost(o.relay) + ": " + o.reply.String()
		}
		text.WriteString("\n")
		for _, l := range wrap(line+": "+why, 79, 4) {
			text.WriteString(l + "\n")
		}
	}
	textBody := crlf(sanitize(text.String()))
	textUTF8 := !isASCII(textBody)
	eightBit := textUTF8 || env.Body == "8BITMIME"

	var b bytes.Buffer
	h := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	h("Received: by %s (mxfront) id %s; %s", host, dsnID, date)
	h("Date: %s", date)
	h("From: MAILER-DAEMON@%s (Mail Delivery System)", host)
	h("Subject: %s", kind.subject())
	h("To: %s", to.String())
	h("Auto-Submitted: auto-replied") // RFC 3834 §5
	h("MIME-Version: 1.0")
	h("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	if eightBit {
		h("Content-Transfer-Encoding: 8bit")
	}
	h("Message-Id: <%s.%s@%s>", now.UTC().Format("20060102150405"), dsnID, host)
	h("")
	h("This is a MIME-encapsulated message.")

	// (1) text/plain notification.
	h("")
	h("--%s", boundary)
	h("Content-Description: Notification")
	if textUTF8 {
		h("Content-Type: text/plain; charset=utf-8")
		h("Content-Transfer-Encoding: 8bit")
	} else {
		h("Content-Type: text/plain; charset=us-ascii")
	}
	h("")
	b.WriteString(textBody)

	// (2) message/delivery-status, RFC 3464 §2.2 and §2.3.
	h("")
	h("--%s", boundary)
	h("Content-Description: Delivery report")
	h("Content-Type: message/delivery-status")
	h("")
	if env.EnvID != "" {
		h("Original-Envelope-Id: %s", dsnText(env.EnvID))
	}
	h("Reporting-MTA: dns; %s", host)
	h("X-Postfix-Queue-ID: %s", p.m.id)
	h("X-Postfix-Sender: %s", addrField(env.From))
	if !env.Received.IsZero() {
		h("Arrival-Date: %s", env.Received.Format(time.RFC1123Z))
	}
	for _, o := range report {
		r := env.Rcpts[o.rcpt]
		h("")
		h("Final-Recipient: %s", addrField(r.Addr))
		if r.ORCPT != "" {
			// RFC 3464 §2.3.1: only when ORCPT was given.
			if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok {
				// The address type is case-insensitive; rfc822 is how
				// Postfix and RFC 3464's examples write it.
				h("Original-Recipient: %s; %s", dsnText(strings.ToLower(strings.TrimSpace(typ))), dsnText(strings.TrimSpace(addr)))
			}
		}
		switch kind {
		case dsnDelay:
			h("Action: delayed")
			h("Status: %s", dsnCode(o.reply, false))
		case dsnSuccess:
			h("Action: %s", o.action)
			h("Status: %s", dsnCode(o.reply, false))
		default:
			h("Action: failed")
			h("Status: %s", dsnCode(o.reply, true))
		}
		if name := remoteMTA(o.relay); name != "" {
			h("Remote-MTA: dns; %s", dsnText(name))
		}
		for i, l := range wrap("Diagnostic-Code: smtp; "+dsnText(o.reply.String()), 79, 4) {
			if i > 0 {
				b.WriteString("\r\n")
			}
			b.WriteString(l)
		}
		b.WriteString("\r\n")
		if kind == dsnDelay && !env.Received.IsZero() {
			// RFC 3464 §2.3.9
			h("Will-Retry-Until: %s", env.Received.Add(life).Format(time.RFC1123Z))
		}
	}

	// (3) the original: message/rfc822 for a failure if it fits
	// bounce_size_limit and the sender did not ask for RET=HDRS, else
	// text/rfc822-headers. Delay and success notices return the headers
	// (RFC 3461 §4.3: RET is about failures).
	hdrsOnly := env.Size > int64(q.cfg.BounceSizeLimit)
	switch kind {
	case dsnFailure:
		hdrsOnly = hdrsOnly || env.Ret == "HDRS"
	case dsnDelay, dsnSuccess:
		hdrsOnly = true
	}
	h("")
	h("--%s", boundary)
	if hdrsOnly {
		h("Content-Description: Undelivered Message Headers")
		h("Content-Type: text/rfc822-headers")
	} else {
		h("Content-Description: Undelivered Message")
		h("Content-Type: message/rfc822")
	}
	switch env.Body {
	case "8BITMIME":
		h("Content-Transfer-Encoding: 8bit")
	case "7BIT":
		h("Content-Transfer-Encoding: 7bit")
	}
	h("")
	orig, err := q.readOriginal(p, hdrsOnly)
	if err != nil {
		q.log.Warn("original message unavailable for the notification", "id", p.m.id, "err", err)
		h("\t--- Undelivered message unavailable ---")
	} else {
		// Postfix prepends Return-Path so that the returned copy shows
		// its envelope sender.
		h("Return-Path: %s", env.From.Bracketed())
		b.Write(orig)
		if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\r\n")) {
			b.WriteString("\r\n")
		}
	}
	h("")
	h("--%s--", boundary)
	return b.Bytes(), eightBit
}

// humanDuration renders a duration the way the notification texts speak:
// "4 hour(s)", "5 day(s)".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d day(s)", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d hour(s)", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d minute(s)", d/time.Minute)
	}
	return fmt.Sprintf("%d second(s)", int64(d.Round(time.Second)/time.Second))
}

// relayHost is "name[addr]:port" without the port, for texts.
func relayHost(relay string) string {
	if i := strings.LastIndexByte(relay, ']'); i >= 0 {
		return relay[:i+1]
	}
	return relay
}

// readOriginal returns the content to return: all of it, or the header
// section (like Postfix, not cut at bounce_size_limit, but at most
// header_size_limit's default 102400 bytes, cut at a line end).
func (q *Queue) readOriginal(p *pass, hdrsOnly bool) ([]byte, error) {
	f, err := os.Open(q.path(dirMsg, p.m.id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sf := &spoolFile{contentLen: p.m.contentLen, crcContent: p.m.crcContent}
	limit := max(int64(q.cfg.BounceSizeLimit), headerSizeLimit)
	if !hdrsOnly {
		return io.ReadAll(newBodyReader(f, sf, nil))
	}
	buf, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, headerLen, sf.contentLen), limit))
	if err != nil {
		return nil, err
	}
	if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
		return buf[:i+2], nil
	}
	if int64(len(buf)) == sf.contentLen {
		return buf, nil // a message that is all header
	}
	if i := bytes.LastIndex(buf, []byte("\r\n")); i >= 0 {
		return buf[:i+2], nil
	}
	return nil, nil
}

// headerSizeLimit is Postfix's header_size_limit default.
const headerSizeLimit = 102400

// reason is the human-readable text for one recipient, Postfix style:
// "host unit1.example.com[192.0.2.1] said: 550 5.1.1 ...".
func reason(o outcome) string {
	if o.relay != "" && o.relay != "none" {
		host := o.relay
		if i := strings.LastIndexByte(host, ']'); i >= 0 {
			host = host[:i+1]
		}
		return "host " + host + " said: " + o.reply.String()
	}
	return o.reply.String()
}

// remoteMTA extracts the host name from a Result.Relay
// ("name[addr]:port"), or "" when no server was reached.
func remoteMTA(relay string) string {
	if relay == "" || relay == "none" {
		return ""
	}
	name, rest, ok := strings.Cut(relay, "[")
	if !ok {
		return relay
	}
	if name == "" || name == "unknown" {
		ip, _, _ := strings.Cut(rest, "]")
		return ip
	}
	return name
}

// dsnCode is the RFC 3463 status for the log's dsn= field and the DSN
// Status: field. A recipient that is returned after a temporary failure
// (expired) gets class 5 with the last reply's subject and detail, or 5.4.7
// "delivery time expired" when the reply had none (RFC 3463 §3.5).
func dsnCode(r envelope.Reply, final bool) string {
	e := r.Enhanced
	if e.IsZero() {
		e = envelope.Enhanced{r.Code / 100, 0, 0}
	}
	if final && e[0] != 5 {
		e[0] = 5
		if e[1] == 0 && e[2] == 0 {
			e = envelope.Enhanced{5, 4, 7}
		}
	}
	return e.String()
}

// addrField renders an address for a DSN field: "rfc822; addr", or for a
// non-ASCII address the RFC 6533 §3 "utf-8" type with \x{HEX} escapes (a
// message/delivery-status part is US-ASCII).
func addrField(a envelope.Address) string {
	s := a.String()
	if isASCII(s) {
		return "rfc822; " + s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && r != '\\' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return "utf-8; " + b.String()
}

// dsnText makes text safe for a US-ASCII header field value.
func dsnText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return '?'
		}
		return r
	}, s)
}

// sanitize masks control characters (Postfix masks them too) but keeps
// newlines and valid UTF-8.
func sanitize(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// wrap breaks s at spaces into lines of at most width bytes where possible;
// continuation lines are indented (Postfix line_wrap with 79/4).
func wrap(s string, width, indent int) []string {
	var lines []string
	pad := strings.Repeat(" ", indent)
	first := true
	for {
		limit := width
		if !first {
			limit -= indent
		}
		if len(s) <= limit {
			break
		}
		cut := strings.LastIndexByte(s[:limit+1], ' ')
		if cut <= 0 {
			cut = strings.IndexByte(s, ' ')
			if cut < 0 {
				break
			}
		}
		line := s[:cut]
		if !first {
			line = pad + line
		}
		lines = append(lines, line)
		s = strings.TrimLeft(s[cut:], " ")
		first = false
	}
	if !first {
		s = pad + s
	}
	return append(lines, s)
}
