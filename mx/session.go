package mx

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/envelope"
)

// session is one go-smtp Session. go-smtp makes it at the first EHLO/HELO
// and again after STARTTLS handled by go-smtp (never here: conn does
// STARTTLS), so it lives as long as the connection.
type session struct {
	srv  *Server
	c    *smtp.Conn
	info *connInfo
	ctx  context.Context
	stop context.CancelFunc
	log  *slog.Logger

	// Transaction state, cleared by Reset.
	from     *envelope.Address
	mailOpts smtp.MailOptions
	rcpts    []envelope.Recipient
	nrcpt    int // accepted RCPT commands
	rcptOrig []envelope.Address
	rawFrom  string // MAIL FROM as given, for reject logs
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	cc, ok := c.Conn().(*conn)
	if !ok {
		return nil, toSMTP(errors.New("mx: connection not wrapped"))
	}
	ctx, cancel := context.WithCancel(s.ctx)
	sess := &session{
		srv:  s,
		c:    c,
		info: cc.info,
		ctx:  ctx,
		stop: cancel,
		log:  s.log.With("conn", cc.info.id),
	}
	cc.info.sess.Store(sess) // for conn's DATA restrictions (hygiene.go)
	return sess, nil
}

// toSMTP is the one place where errors become SMTP replies. An error with no
// reply of its own becomes 451 4.3.0 without its text (temporary: nothing
// is lost, and nothing internal leaks).
func toSMTP(err error) *smtp.SMTPError {
	if err == nil {
		return nil
	}
	var r envelope.Reply
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		r = envelope.ReplyTooBig
	default:
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		r = envelope.ReplyOf(err)
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

func (s *session) client() envelope.Client {
	helo, ehlo := s.info.greeting()
	cl := envelope.Client{
		Addr:  s.info.remote.Addr().Unmap(),
		Name:  s.info.clientName(),
		Helo:  helo,
		Proto: "SMTP",
	}
	if ehlo {
		cl.Proto = "ESMTP"
	}
	if s.mailOpts.UTF8 {
		cl.Proto = "UTF8SMTP" // RFC 6531 §3.7.3
	}
	if st := s.info.tlsInfo(); st != nil {
		cl.Proto += "S"
		cl.TLS = tlsDescription(st)
	}
	return cl
}

// logReject writes Postfix's "NOQUEUE: reject" line.
func (s *session) logReject(stage string, to string, err error) {
	r := envelope.ReplyOf(err)
	if se := toSMTP(err); se != nil {
		r = envelope.NewReply(se.Code, envelope.Enhanced(se.EnhancedCode), se.Message)
	}
	helo, _ := s.info.greeting()
	from := s.rawFrom
	if s.from != nil {
		from = s.from.String()
	}
	attrs := []any{"stage", stage, "client", s.info.clientString(), "helo", helo, "from", from, "to", to,
		"code", r.Code, "dsn", r.Enhanced.String(), "reason", r.Text}
	var ee *envelope.Error
	if errors.As(err, &ee) && ee.Err != nil {
		attrs = append(attrs, "err", ee.Err.Error())
	} else if ee == nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.log.Info("reject", attrs...)
}

// Mail implements smtp.Session (RFC 5321 §4.1.1.2).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.from != nil {
		return toSMTP(envelope.Errorf(503, envelope.Enhanced{5, 5, 1}, "Error: nested MAIL command"))
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	s.info.pstate.ResetTransaction()
	if err := s.messageRate(); err != nil {
		return toSMTP(err)
	}
	s.rawFrom = from
	addr, err := envelope.ParseAddress(from, opts.UTF8)
	if err != nil {
		e := envelope.Wrap(err, 501, envelope.Enhanced{5, 1, 7}, "Bad sender address syntax")
		if errors.Is(err, envelope.ErrNonASCII) {
			// RFC 6531 §3.4: non-ASCII without SMTPUTF8.
			e = envelope.Wrap(err, 553, envelope.Enhanced{5, 6, 7}, "Must declare SMTPUTF8 to send unicode address")
		}
		s.logReject("MAIL", "", e)
		return toSMTP(e)
	}
	if lim := s.srv.cfg.MessageSizeLimit; lim > 0 && opts.Size > lim {
		e := envelope.Errorf(552, envelope.Enhanced{5, 3, 4}, "Message size exceeds fixed limit")
		s.logReject("MAIL", "", e)
		return toSMTP(e)
	}
	if a, ok := s.srv.spool.(Admitter); ok {
		if err := a.Admit(s.ctx, opts.Size); err != nil {
			s.logReject("MAIL", "", err)
			return toSMTP(err)
		}
	}
	if !s.srv.policy.DelayReject() {
		// smtpd_delay_reject = no: smtpd_sender_restrictions now.
		req := s.request(envelope.Address{})
		req.From, req.SMTPUTF8 = &addr, opts.UTF8
		ctx, cancel := context.WithTimeout(s.ctx, policyCheckTimeout)
		err := s.srv.policy.CheckMail(ctx, req)
		cancel()
		if err != nil {
			s.info.pstate.ResetTransaction()
			s.logReject("MAIL", "", err)
			return toSMTP(err)
		}
	}
	s.from = &addr
	s.mailOpts = *opts
	return nil
}

// Rcpt implements smtp.Session (RFC 5321 §4.1.1.3). Recipients are verified
// now, so unknown users are refused in the session and never bounce later.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.from == nil {
		return toSMTP(envelope.Errorf(503, envelope.Enhanced{5, 5, 1}, "Error: need MAIL command"))
	}
	if err := s.recipientRate(); err != nil {
		s.logReject("RCPT", to, err)
		return toSMTP(err)
	}
	if lim := s.srv.cfg.RecipientLimit; lim > 0 && s.nrcpt >= lim {
		e := &envelope.Error{Reply: envelope.ReplyTooManyRcpts}
		s.logReject("RCPT", to, e)
		return toSMTP(e)
	}
	rcpt, err := envelope.ParseAddress(to, s.mailOpts.UTF8)
	if err != nil || rcpt.IsNull() {
		if err == nil {
			err = envelope.ErrNoDomain
		}
		e := envelope.Wrap(err, 501, envelope.Enhanced{5, 1, 3}, "Bad recipient address syntax")
		if errors.Is(err, envelope.ErrNonASCII) {
			e = envelope.Wrap(err, 553, envelope.Enhanced{5, 6, 7}, "Must declare SMTPUTF8 to send unicode address")
		}
		s.logReject("RCPT", to, e)
		return toSMTP(e)
	}
	ctx, cancel := context.WithTimeout(s.ctx, rcptCheckTimeout)
	defer cancel()
	v, err := s.srv.policy.CheckRcpt(ctx, s.request(rcpt))
	if err != nil {
		s.logReject("RCPT", rcpt.String(), err)
		return toSMTP(err)
	}
	var notify envelope.Notify
	var orcpt string
	if opts != nil {
		notify = notifyBits(opts.Notify)
		if opts.OriginalRecipient != "" {
			orcpt = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	for _, a := range v.Expanded {
		if dup(s.rcpts, a) {
			continue
		}
		s.rcpts = append(s.rcpts, envelope.Recipient{Addr: a, Orig: rcpt, ORCPT: orcpt, Notify: notify})
	}
	s.rcptOrig = append(s.rcptOrig, rcpt)
	s.nrcpt++
	return nil
}

// rcptCheckTimeout bounds one RCPT's lookups; a directory that does not
// answer in time gives 451 4.3.0.
const rcptCheckTimeout = 60 * time.Second

func dup(rs []envelope.Recipient, a envelope.Address) bool {
	for _, r := range rs {
		if r.Addr.Key() == a.Key() {
			return true
		}
	}
	return false
}

func notifyBits(ns []smtp.DSNNotify) envelope.Notify {
	var n envelope.Notify
	for _, x := range ns {
		switch strings.ToUpper(string(x)) {
		case "NEVER":
			n |= envelope.NotifyNever
		case "SUCCESS":
			n |= envelope.NotifySuccess
		case "FAILURE":
			n |= envelope.NotifyFailure
		case "DELAY":
			n |= envelope.NotifyDelay
		}
	}
	return n
}

// Data implements smtp.Session for DATA and BDAT: the content is streamed to
// the queue (line endings checked, Received: prepended, size and hop count
// limited), made durable, and only then answered 250.
func (s *session) Data(r io.Reader) error {
	err := s.data(r)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code >= 400 {
			s.logReject("DATA", s.toList(), err)
		}
	}
	return toSMTP(err)
}

func (s *session) toList() string {
	parts := make([]string, len(s.rcptOrig))
	for i, a := range s.rcptOrig {
		parts[i] = a.String()
	}
	return strings.Join(parts, ",")
}

func (s *session) data(r io.Reader) error {
	if s.from == nil || len(s.rcpts) == 0 {
		// go-smtp checks this too; kept for BDAT safety.
		return envelope.Errorf(503, envelope.Enhanced{5, 5, 1}, "Error: need RCPT command")
	}
	in, err := s.srv.spool.Create(s.ctx)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			in.Abort()
		}
	}()
	cl := s.client()
	now := time.Now()
	st := s.info.pstate
	// access(5) PREPEND headers go above our Received: header, as in
	// Postfix.
	hdr := strings.Join(append(st.Prepend(), ""), "\r\n") +
		receivedHeader(cl, s.srv.cfg.Hostname, in.ID(), s.singleRcpt(), now)
	if _, err := io.WriteString(in, hdr); err != nil {
		return envelope.Wrap(err, 451, envelope.Enhanced{4, 3, 0}, "Error: queue file write error")
	}
	var single envelope.Address
	if len(s.rcptOrig) == 1 {
		single = s.rcptOrig[0]
	}
	req := s.request(single)
	var dst io.Writer = in
	cf := s.srv.policy.NewContentFilter(s.ctx, in, req) // header_checks, body_checks
	if cf != nil {
		dst = cf
	}
	bareReject := s.srv.cfg.BareNewline == BareNewlineReject
	if bareReject && s.srv.cfg.BareNewlineExclusions != nil && s.srv.cfg.BareNewlineExclusions(s.ctx, cl.Addr) {
		bareReject = false
	}
	bw := newBodyWriter(dst, bareReject, s.srv.cfg.HopcountLimit)
	buf := copyBufs.Get().(*[copyBufSize]byte)
	_, err = io.CopyBuffer(bw, r, buf[:])
	copyBufs.Put(buf)
	if err != nil {
		return bodyError(err)
	}
	if err := bw.Close(); err != nil {
		return bodyError(err)
	}
	if cf != nil {
		if err := cf.Close(); err != nil {
			return bodyError(err)
		}
	}
	if lim := s.srv.cfg.MessageSizeLimit; lim > 0 && bw.n > lim {
		return &envelope.Error{Reply: envelope.ReplyTooBig}
	}
	if err := s.endOfData(req); err != nil {
		return err
	}
	if discard, why := st.Discard(); discard {
		// access(5) or header_checks DISCARD: the client is told the
		// message was queued; it is dropped (Postfix does the same).
		s.log.Info("discarded", "id", in.ID(), "client", s.info.clientString(), "from", s.from.String(), "to", s.toList(), "reason", why)
		s.info.forgive()
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + in.ID()}
	}
	env := &envelope.Envelope{
		From:     *s.from,
		Rcpts:    append([]envelope.Recipient(nil), s.rcpts...),
		Client:   cl,
		Received: now,
		SMTPUTF8: s.mailOpts.UTF8,
		Body:     string(s.mailOpts.Body),
		EnvID:    s.mailOpts.EnvelopeID,
		Ret:      string(s.mailOpts.Return),
		Hold:     st.Hold(),
	}
	if err := s.redirect(env, st.Redirect()); err != nil {
		return err
	}
	if err := in.Commit(s.ctx, env); err != nil {
		return err
	}
	committed = true
	s.info.forgive()
	s.log.Info("accepted", "id", env.ID, "client", s.info.clientString(), "helo", cl.Helo, "proto", cl.Proto,
		"from", env.From.String(), "to", s.toList(), "size", env.Size)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + env.ID}
}

// copyBufSize is the size of the pooled buffers DATA is copied through (one
// 32 KiB allocation per message otherwise).
const copyBufSize = 32 * 1024

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

func bodyError(err error) error {
	var ee *envelope.Error
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, smtp.ErrDataTooLarge) {
		return &envelope.Error{Reply: envelope.ReplyTooBig, Err: err}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return err
	}
	// A read error from the client (timeout, disconnect) or a write error
	// to the spool: temporary.
	return envelope.Wrap(err, 451, envelope.Enhanced{4, 3, 0}, "Error: queue file write error")
}

func (s *session) singleRcpt() string {
	if len(s.rcptOrig) == 1 {
		return s.rcptOrig[0].String()
	}
	return ""
}

// Reset implements smtp.Session (RSET, new EHLO, end of transaction).
func (s *session) Reset() {
	s.info.pstate.ResetTransaction()
	s.from = nil
	s.mailOpts = smtp.MailOptions{}
	s.rcpts = nil
	s.rcptOrig = nil
	s.nrcpt = 0
}

// Logout implements smtp.Session.
func (s *session) Logout() error {
	s.info.sess.CompareAndSwap(s, nil)
	s.stop()
	return nil
}
