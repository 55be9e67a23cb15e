package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// Content checks (header_checks(5), body_checks): each header of the
// primary header section is matched, as one string with its continuation
// lines joined by "\n", against header_checks; each body line, up to
// body_checks_size_limit bytes of body, against body_checks. This is
// Postfix with disable_mime_input_processing = yes: MIME part headers are
// body lines.
const (
	// headerSizeLimit is Postfix's header_size_limit: longer headers are
	// matched on their first bytes only.
	headerSizeLimit = 102400
	// lineLengthLimit is Postfix's line_length_limit: a longer body line is
	// matched in pieces, as cleanup sees it.
	lineLengthLimit = 2048
)

// ContentFilter applies header_checks and body_checks to a message on its
// way to the queue. Input must be the message with CRLF line endings (the
// SMTP server normalises it first); output is the message after IGNORE,
// REPLACE, PREPEND and STRIP. HOLD, DISCARD and REDIRECT go to the
// Request's State; REJECT and DEFER make Close return the reply, and the
// rest of the input is read and dropped.
type ContentFilter struct {
	p   *Policy
	ctx context.Context
	w   io.Writer
	ev  *eval

	inHeader bool
	pending  []byte // current header, raw (CRLF lines)
	overflow bool   // the current header was checked and written early
	skipHdr  bool   // ... and removed: drop the rest of it
	hdrTail  bool   // ... in the middle of one of its lines
	partial  []byte // incomplete line
	body     int64  // body bytes inspected
	stopped  bool   // REJECT, DEFER or DISCARD: no more checks
	dropping bool   // REJECT, DEFER or DISCARD: no more output
	reject   *envelope.Error
	werr     error
}

// NewContentFilter returns a filter writing to w, or nil when neither
// header_checks nor body_checks is configured.
func (p *Policy) NewContentFilter(ctx context.Context, w io.Writer, req *Request) *ContentFilter {
	if len(p.cfg.HeaderChecks) == 0 && len(p.cfg.BodyChecks) == 0 {
		return nil
	}
	ev := p.newEval(req, "DATA")
	ev.begin(stData, "DATA", "Data command")
	return &ContentFilter{p: p, ctx: ctx, w: w, ev: ev, inHeader: true}
}

// Write implements io.Writer.
func (f *ContentFilter) Write(b []byte) (int, error) {
	if f.werr != nil {
		return 0, f.werr
	}
	n := len(b)
	if !f.inHeader && f.passing() && len(f.partial) == 0 {
		f.out(b) // nothing left to inspect
		return n, f.werr
	}
	for len(b) > 0 && f.werr == nil {
		i := bytes.IndexByte(b, '\n')
		if f.inHeader && f.hdrTail {
			// The rest of a line of an overlong header.
			end := len(b)
			if i >= 0 {
				end, f.hdrTail = i+1, false
			}
			if !f.skipHdr {
				f.out(b[:end])
			}
			b = b[end:]
			continue
		}
		if i < 0 {
			f.partial = append(f.partial, b...)
			if !f.inHeader {
				for len(f.partial) > lineLengthLimit && !f.passing() {
					f.bodyPiece(f.partial[:lineLengthLimit], nil)
					f.partial = append(f.partial[:0], f.partial[lineLengthLimit:]...)
				}
			} else if len(f.pending)+len(f.partial) > headerSizeLimit {
				f.overlongHeader()
			}
			break
		}
		line := b[:i+1]
		b = b[i+1:]
		if len(f.partial) > 0 {
			line = append(f.partial, line...)
			f.partial = nil
		}
		if f.inHeader {
			f.headerLine(line)
		} else {
			f.bodyLine(line)
		}
		if !f.inHeader && len(b) > 0 && f.passing() {
			f.out(b)
			break
		}
	}
	return n, f.werr
}

// Close ends the input: a header without a body is checked now. It returns
// the REJECT or DEFER reply, if any, or a write error.
func (f *ContentFilter) Close() error {
	if len(f.partial) > 0 {
		line := f.partial
		f.partial = nil
		if f.inHeader {
			f.headerLine(line)
		} else {
			f.bodyLine(line)
		}
	}
	if f.inHeader {
		f.flushHeader()
	}
	if f.reject != nil {
		return f.reject
	}
	return f.werr
}

func (f *ContentFilter) out(b []byte) {
	if f.dropping || f.werr != nil || len(b) == 0 {
		return
	}
	_, f.werr = f.w.Write(b)
}

func (f *ContentFilter) headerLine(line []byte) {
	switch {
	case isBlank(line):
		// End of the header section.
		f.flushHeader()
		f.inHeader = false
		f.out(line)
	case line[0] == ' ' || line[0] == '\t':
		if f.overflow {
			if !f.skipHdr {
				f.out(line)
			}
			return
		}
		if len(f.pending) == 0 {
			// A continuation without a header: Postfix ends the header
			// section there.
			f.inHeader = false
			f.bodyLine(line)
			return
		}
		f.pending = append(f.pending, line...)
		if len(f.pending) > headerSizeLimit {
			f.overlongHeader()
		}
	case isHeaderBytes(line):
		f.flushHeader()
		f.overflow, f.skipHdr = false, false
		f.pending = append(f.pending[:0], line...)
	default:
		// Not a header: the body starts here (no empty line).
		f.flushHeader()
		f.inHeader = false
		f.bodyLine(line)
	}
}

// overlongHeader checks a header that reached header_size_limit with what
// is there, writes it, and lets the rest of it pass (or drops it when the
// header was removed).
func (f *ContentFilter) overlongHeader() {
	if len(f.partial) > 0 {
		f.pending = append(f.pending, f.partial...)
		f.partial = nil
		f.hdrTail = true
	}
	kept := f.flushHeader()
	f.overflow, f.skipHdr = true, !kept
}

// flushHeader checks and writes the pending header; it reports whether the
// header was kept.
func (f *ContentFilter) flushHeader() bool {
	if len(f.pending) == 0 {
		return true
	}
	raw := f.pending
	f.pending = f.pending[:0]
	if f.stopped || len(f.p.cfg.HeaderChecks) == 0 {
		f.out(raw)
		return true
	}
	key := headerKey(raw)
	val, tbl, found, err := f.match(f.p.cfg.HeaderChecks, key)
	if err != nil {
		f.fail("header_checks", err)
		return true
	}
	if !found {
		f.out(raw)
		return true
	}
	return f.act("header", tbl, key, val, raw)
}

// passing reports that no more body checks apply.
func (f *ContentFilter) passing() bool {
	return f.stopped || len(f.p.cfg.BodyChecks) == 0 || f.body >= f.p.cfg.BodyChecksSizeLimit
}

// bodyLine checks one body line, in pieces of line_length_limit bytes as
// Postfix's cleanup sees a long line.
func (f *ContentFilter) bodyLine(line []byte) {
	content := bytes.TrimRight(line, "\r\n")
	eol := line[len(content):]
	for len(content) > lineLengthLimit && !f.passing() {
		f.bodyPiece(content[:lineLengthLimit], nil)
		content = content[lineLengthLimit:]
	}
	f.bodyPiece(content, eol)
}

func (f *ContentFilter) bodyPiece(piece, eol []byte) {
	if f.passing() {
		f.out(piece)
		f.out(eol)
		return
	}
	f.body += int64(len(piece) + len(eol))
	key := string(piece)
	val, tbl, found, err := f.match(f.p.cfg.BodyChecks, key)
	if err != nil {
		f.fail("body_checks", err)
		return
	}
	if !found {
		f.out(piece)
		f.out(eol)
		return
	}
	raw := append(append([]byte(nil), piece...), eol...)
	f.act("body", tbl, key, val, raw)
}

// match looks key up in the tables in order; the first match wins.
func (f *ContentFilter) match(ts []table.Table, key string) (string, table.Table, bool, error) {
	for _, t := range ts {
		v, ok, err := t.Lookup(f.ctx, key)
		if err != nil {
			return "", t, false, err
		}
		if ok {
			return v, t, true, nil
		}
	}
	return "", nil, false, nil
}

// fail makes a lookup error a temporary failure of the message (451 4.3.0),
// as Postfix's cleanup does (CLEANUP_STAT_WRITE).
func (f *ContentFilter) fail(what string, err error) {
	if f.reject == nil {
		f.reject = envelope.Wrap(fmt.Errorf("%s: %w", what, err), 451, envelope.Enhanced{4, 3, 0}, "Error: queue file write error")
	}
	f.stopped, f.dropping = true, true
}

// act carries out a header_checks/body_checks action on one header or body
// line (cleanup_act.c); it reports whether the input was kept.
func (f *ContentFilter) act(context string, tbl table.Table, key, value string, raw []byte) bool {
	cmd, text, _ := strings.Cut(strings.TrimSpace(value), " ")
	text = strings.TrimSpace(text)
	cmd = strings.ToUpper(cmd)
	ev := f.ev
	what := context + " " + truncate(key, 200)
	ev.trace(TraceEvent{Kind: "result", List: context + "_checks", Table: table.SpecOf(tbl), Key: truncate(key, 200), Value: value, Result: cmd})
	log := func(action, reason string) { ev.logAction(action, reason, "match", what) }
	header := context == "header"
	switch cmd {
	case "REJECT", "DEFER":
		dsn, deftext, code := envelope.Enhanced{5, 7, 1}, "message content rejected", 550
		if cmd == "DEFER" {
			dsn, deftext, code = envelope.Enhanced{4, 7, 1}, "service unavailable", 451
		}
		d, t := dsnSplit(dsn, text, deftext)
		if cmd == "DEFER" && d[0] != 4 {
			d[0] = 4 // Postfix: "bad DSN action ... need 4.x.x"
		}
		if d[0] == 4 {
			code = 451 // cleanup: CLEANUP_STAT_DEFER
		}
		r := envelope.NewReply(code, d, printable(t, 500))
		// Logged once, by the SMTP server, with the match as the cause.
		f.reject = &envelope.Error{Reply: r, Err: fmt.Errorf("%s_checks %s: %s", context, table.SpecOf(tbl), what)}
		f.stopped, f.dropping = true, true
		return false
	case "DISCARD":
		if text == "" {
			text = "triggers DISCARD action"
		}
		log("discard", text)
		ev.req.state().setDiscard(what + ": " + text)
		f.stopped, f.dropping = true, true
		return false
	case "HOLD":
		if text == "" {
			text = "triggers HOLD action"
		}
		log("hold", text)
		ev.req.state().setHold(what + ": " + text)
	case "REDIRECT":
		if !strings.Contains(text, "@") {
			ev.logger().Warn(context+"_checks: REDIRECT requires a user@domain target", "table", table.SpecOf(tbl), "value", value)
			break
		}
		log("redirect", text)
		ev.req.state().setRedirect(text)
	case "WARN":
		log("warning", text)
	case "INFO":
		log("info", text)
	case "IGNORE":
		return false
	case "STRIP":
		log("strip", text)
		return false
	case "PREPEND":
		if text == "" || (header && !isHeader(text)) {
			ev.logger().Warn(context+"_checks: PREPEND needs text (a header for header_checks)", "table", table.SpecOf(tbl), "value", value)
			break
		}
		f.out([]byte(text + "\r\n"))
	case "REPLACE":
		if text == "" || (header && !isHeader(text)) {
			ev.logger().Warn(context+"_checks: REPLACE needs text (a header for header_checks)", "table", table.SpecOf(tbl), "value", value)
			break
		}
		f.out([]byte(text + "\r\n"))
		return false
	case "DUNNO", "OK":
	case "FILTER", "BCC":
		ev.logger().Warn(context+"_checks action is not supported by mxfront, ignored", "table", table.SpecOf(tbl), "action", cmd)
	default:
		ev.logger().Warn(context+"_checks: unknown action, ignored", "table", table.SpecOf(tbl), "value", value)
	}
	f.out(raw)
	return true
}

// headerKey is a header as header_checks sees it: continuation lines joined
// by "\n", no line endings.
func headerKey(raw []byte) string {
	s := strings.TrimRight(string(raw), "\r\n")
	return strings.ReplaceAll(s, "\r\n", "\n")
}

func isBlank(line []byte) bool {
	return string(line) == "\r\n" || string(line) == "\n"
}

// isHeaderBytes is isHeader on a line: a field name (printable ASCII, no
// space) and a colon (RFC 5322 §2.2).
func isHeaderBytes(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
