package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
)

// copyBufSize is the size of the pooled buffers that stream content to the
// next hop: one 32 KiB allocation per message was most of the relay's
// garbage at thousands of messages/s.
const copyBufSize = 32 * 1024

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// transact runs one mail transaction on cn for tx's pending recipients and
// records their answers. It reports whether the session is in a known
// state afterwards and may be cached.
//
// go-smtp's client does not pipeline (RFC 2920), so commands go one at a
// time, each under its own Postfix timeout.
func (r *Relay) transact(ctx context.Context, tx *txn, cn *conn) bool {
	d, c, relay := tx.d, cn.c, cn.t.relay
	rcpts := tx.pending()
	cn.clean = false
	mailStart := time.Now()
	setAll := func(list []*rcptState, rep envelope.Reply, err error) {
		for _, rs := range list {
			tx.set(rs, rep, relay, mailStart, err)
		}
	}

	// RFC 6531 §3.4 offers no downgrade: a message that needs SMTPUTF8
	// goes only to a server that offers it. Like Postfix (smtp_proto.c),
	// other hosts are tried before the message bounces, and a message that
	// merely asked for SMTPUTF8 but is ASCII throughout goes anyway.
	hasUTF8, _ := c.Extension("SMTPUTF8")
	if !hasUTF8 {
		need, err := tx.requiresSMTPUTF8()
		if err != nil {
			tx.stop = true
			setAll(rcpts, localReply(), err)
			return true
		}
		if need {
			tx.siteFail(envelope.NewReply(554, envelope.Enhanced{5, 6, 7},
				"message requires SMTPUTF8, but no server was found that supports SMTPUTF8. The last attempted server was "+cn.t.namaddr),
				relay, nil, false)
			return true
		}
	}
	// RFC 1870 §6: don't send what the server announced it won't take.
	if limit, ok := c.MaxMessageSize(); ok && limit > 0 && d.Env.Size > int64(limit) {
		setAll(rcpts, sizeReply(d.Env.Size, limit, cn), nil)
		return true
	}

	// Open the content before MAIL: once DATA is accepted the only way to
	// abort is to drop the connection.
	body, err := d.Body()
	if err != nil {
		tx.stop = true
		setAll(rcpts, localReply(), fmt.Errorf("open queued content: %w", err))
		return true
	}
	defer body.Close()

	// RFC 3461 §4: with DSN announced, NOTIFY and ORCPT go along and
	// success notices are the next hop's job (queue.Result.DSN).
	dsn, _ := c.Extension("DSN")
	c.CommandTimeout = r.cfg.MailTimeout
	if err := c.Mail(d.Env.From.String(), mailOptions(tx, hasUTF8)); err != nil {
		rep, ok := r.errReply(ctx, cn, stageMail, err)
		setAll(rcpts, rep, err)
		return ok
	}

	c.CommandTimeout = r.cfg.RcptTimeout
	accepted := make([]*rcptState, 0, len(rcpts))
	for i, rs := range rcpts {
		err := c.Rcpt(rs.addr, rcptOptions(rs.rcpt))
		if err == nil {
			accepted = append(accepted, rs)
			continue
		}
		rep, ok := r.errReply(ctx, cn, stageRcpt, err)
		if !ok {
			// The session is gone (421 or network): nobody gets mail.
			setAll(accepted, rep, err)
			setAll(rcpts[i:], rep, err)
			return false
		}
		tx.set(rs, rep, relay, mailStart, err)
	}
	if len(accepted) == 0 {
		// No DATA. The open transaction is cleared by the RSET probe on
		// reuse (Postfix sends RSET here; the effect is the same).
		return true
	}

	c.CommandTimeout = r.cfg.DataInitTimeout
	w, err := c.Data()
	if err != nil {
		rep, ok := r.errReply(ctx, cn, stageData, err)
		setAll(accepted, rep, err)
		return ok
	}
	// Stream the content; go-smtp's DotWriter dot-stuffs (RFC 5321
	// §4.5.2) and ends with CRLF.CRLF.
	src := &trackReader{r: body}
	cn.nc.xfer = r.cfg.DataXferTimeout
	buf := copyBufs.Get().(*[copyBufSize]byte)
	_, err = io.CopyBuffer(w, src, buf[:])
	copyBufs.Put(buf)
	if err != nil {
		cn.nc.xfer = 0
		if src.err != nil {
			// Never send the final dot after a short read: closing the
			// connection makes the server discard the partial message.
			tx.stop = true
			setAll(accepted, localReply(), fmt.Errorf("read queued content: %w", src.err))
			return false
		}
		rep, _ := r.errReply(ctx, cn, stageBody, err)
		setAll(accepted, rep, err)
		return false
	}
	c.SubmissionTimeout = r.cfg.DataDoneTimeout
	if !cn.lmtp {
		resp, err := w.CloseWithResponse()
		cn.nc.xfer = 0
		if err != nil {
			rep, ok := r.errReply(ctx, cn, stageDot, err)
			setAll(accepted, rep, err)
			cn.clean = ok
			return ok
		}
		setAll(accepted, positiveReply(resp.StatusText), nil)
		for _, rs := range accepted {
			rs.res.DSN = dsn
		}
		cn.clean = true
		return true
	}

	// RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
	resps, err := w.CloseWithLMTPResponse()
	cn.nc.xfer = 0
	lerrs, other := splitLMTPError(err)
	ok := other == nil
	for _, rs := range accepted {
		if resp := resps[rs.addr]; resp != nil {
			tx.set(rs, positiveReply(resp.StatusText), relay, mailStart, nil)
			rs.res.DSN = dsn
			continue
		}
		if se := lerrs[rs.addr]; se != nil {
			rep, usable := r.errReply(ctx, cn, stageDot, se)
			ok = ok && usable
			tx.set(rs, rep, relay, mailStart, se)
			continue
		}
		// No reply for this recipient: the session broke first.
		e := other
		if e == nil {
			e = errors.New("no LMTP reply for recipient")
		}
		rep, _ := r.errReply(ctx, cn, stageDot, e)
		tx.set(rs, rep, relay, mailStart, e)
		ok = false
	}
	cn.clean = ok
	return ok
}

// splitLMTPError separates go-smtp's per-recipient LMTP errors from an
// error that ended the reading of replies (CloseWithLMTPResponse returns
// either, or errors.Join of both).
func splitLMTPError(err error) (smtp.LMTPDataError, error) {
	if err == nil {
		return nil, nil
	}
	if le, ok := err.(smtp.LMTPDataError); ok {
		return le, nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var (
			le    smtp.LMTPDataError
			other error
		)
		for _, e := range j.Unwrap() {
			if l, ok := e.(smtp.LMTPDataError); ok {
				le = l
			} else if other == nil {
				other = e
			}
		}
		if other != nil {
			return le, other
		}
		return le, nil
	}
	return nil, err
}

// trackReader remembers a read error, to tell local trouble from network
// trouble after io.Copy.
type trackReader struct {
	r   io.Reader
	err error
}

func (t *trackReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// mailOptions builds the MAIL FROM parameters: SIZE (RFC 1870), SMTPUTF8
// (RFC 6531) when the server offers it and the message asked for it, and
// RET/ENVID (RFC 3461 §4.3, §4.4). go-smtp adds BODY=8BITMIME whenever the
// server offers 8BITMIME, and sends SIZE and the DSN parameters only when
// the server announced them.
func mailOptions(tx *txn, serverUTF8 bool) *smtp.MailOptions {
	env := tx.d.Env
	o := &smtp.MailOptions{Size: env.Size}
	o.UTF8 = serverUTF8 && (env.SMTPUTF8 || !tx.envelopeASCII())
	switch strings.ToUpper(env.Ret) {
	case "FULL":
		o.Return = smtp.DSNReturnFull
	case "HDRS":
		o.Return = smtp.DSNReturnHeaders
	}
	if env.EnvID != "" && printableASCII(env.EnvID) {
		o.EnvelopeID = env.EnvID
	}
	return o
}

// rcptOptions builds the RCPT TO DSN parameters (RFC 3461 §4.1, §4.2).
// Like Postfix, ORCPT falls back to the address the client gave when the
// client sent no ORCPT.
func rcptOptions(rc envelope.Recipient) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	if n := rc.Notify; n != 0 {
		if n&envelope.NotifyNever != 0 {
			o.Notify = []smtp.DSNNotify{smtp.DSNNotifyNever}
		} else {
			if n&envelope.NotifySuccess != 0 {
				o.Notify = append(o.Notify, smtp.DSNNotifySuccess)
			}
			if n&envelope.NotifyFailure != 0 {
				o.Notify = append(o.Notify, smtp.DSNNotifyFailure)
			}
			if n&envelope.NotifyDelay != 0 {
				o.Notify = append(o.Notify, smtp.DSNNotifyDelayed)
			}
		}
	}
	if typ, val, ok := strings.Cut(rc.ORCPT, ";"); ok && val != "" {
		switch strings.ToLower(typ) {
		case "rfc822":
			if printableASCII(val) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, val
			}
		case "utf-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, val
		}
	} else if !rc.Orig.IsNull() {
		s := rc.Orig.String()
		if printableASCII(s) {
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, s
		} else {
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, s
		}
	}
	return o
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// envelopeASCII reports whether the sender and this delivery's recipients
// are all ASCII.
func (tx *txn) envelopeASCII() bool {
	if !tx.d.Env.From.IsASCII() {
		return false
	}
	for _, rc := range tx.d.Rcpts {
		if !rc.Addr.IsASCII() {
			return false
		}
	}
	return true
}

// maxHeaderScan bounds the header scan of requiresSMTPUTF8.
const maxHeaderScan = 4 << 20

// requiresSMTPUTF8 reports whether the message cannot be delivered without
// SMTPUTF8: a non-ASCII envelope address of this delivery, or, when the
// client asked for SMTPUTF8, a non-ASCII byte in the header section
// (Postfix SMTPUTF8_README: only then is the SMTPUTF8 promise at stake).
// The header scan runs only for servers without SMTPUTF8, and once.
func (tx *txn) requiresSMTPUTF8() (bool, error) {
	if tx.utf8Known {
		return tx.utf8, nil
	}
	need := !tx.envelopeASCII()
	if !need && tx.d.Env.SMTPUTF8 {
		var err error
		if need, err = headersNeedUTF8(tx.d.Body); err != nil {
			return false, err
		}
	}
	tx.utf8, tx.utf8Known = need, true
	return need, nil
}

func headersNeedUTF8(open func() (io.ReadCloser, error)) (bool, error) {
	rc, err := open()
	if err != nil {
		return false, fmt.Errorf("open queued content: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, maxHeaderScan))
	for {
		line, err := br.ReadSlice('\n')
		for _, b := range line {
			if b >= 0x80 {
				return true, nil
			}
		}
		if len(line) <= 2 && (len(line) == 0 || line[0] == '\r' || line[0] == '\n') && err == nil {
			return false, nil // end of the header section
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF:
			return false, nil
		default:
			return false, fmt.Errorf("read queued content: %w", err)
		}
	}
}
