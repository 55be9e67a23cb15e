package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
)

// stage is a step of the conversation, named as Postfix smtp_proto.c names
// it in "lost connection with HOST while ..." and "(in reply to ...)".
type stage int

const (
	stageGreeting stage = iota
	stageHelo
	stageStartTLS
	stageMail
	stageRcpt
	stageData
	stageBody
	stageDot
)

func (s stage) while(lmtp bool) string {
	switch s {
	case stageGreeting:
		return "receiving the initial server greeting"
	case stageHelo:
		if lmtp {
			return "performing the LHLO handshake"
		}
		return "performing the EHLO handshake"
	case stageStartTLS:
		return "receiving the STARTTLS response"
	case stageMail:
		return "sending MAIL FROM"
	case stageRcpt:
		return "sending RCPT TO"
	case stageData:
		return "sending DATA command"
	case stageBody:
		return "sending message body"
	default:
		return "sending end of data -- message may be sent more than once"
	}
}

func (s stage) request() string {
	switch s {
	case stageMail:
		return "MAIL FROM command"
	case stageRcpt:
		return "RCPT TO command"
	case stageData:
		return "DATA command"
	default:
		return "end of DATA command"
	}
}

// remoteReply converts a go-smtp client error reply to an envelope.Reply,
// keeping the server's code, enhanced code (X.0.0 when it gave none) and
// text on one line.
func remoteReply(se *smtp.SMTPError) envelope.Reply {
	var enh envelope.Enhanced
	if se.EnhancedCode != smtp.EnhancedCodeNotSet && se.EnhancedCode != smtp.NoEnhancedCode {
		enh = envelope.Enhanced(se.EnhancedCode)
		if _, ok := envelope.ParseEnhanced(enh.String()); !ok {
			enh = envelope.Enhanced{}
		}
	}
	code := se.Code
	if code < 400 || code > 599 {
		// Not a negative reply where one was expected (go-smtp reports
		// any unexpected code as an error): a protocol error, temporary.
		code = 451
		enh = envelope.Enhanced{4, 5, 0}
	}
	return envelope.NewReply(code, enh, strings.Join(strings.Fields(se.Message), " "))
}

// serverText renders the server's reply as it sent it, on one line.
func serverText(se *smtp.SMTPError) string {
	s := strconv.Itoa(se.Code) + " "
	if e := se.EnhancedCode; e != smtp.EnhancedCodeNotSet && e != smtp.NoEnhancedCode {
		s += strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2]) + " "
	}
	return s + strings.Join(strings.Fields(se.Message), " ")
}

// saidReply is Postfix's "host X said: REPLY (in reply to CMD)": the
// server's code and enhanced code, with its reply quoted in the text.
func saidReply(cn *conn, st stage, se *smtp.SMTPError) envelope.Reply {
	rep := remoteReply(se)
	return envelope.NewReply(rep.Code, rep.Enhanced,
		fmt.Sprintf("host %s said: %s (in reply to %s)", cn.t.namaddr, serverText(se), st.request()))
}

// positiveReply builds the 2xx answer from go-smtp's status text, which is
// the reply text after the code ("2.0.0 Ok: queued as X").
func positiveReply(text string) envelope.Reply {
	text = strings.Join(strings.Fields(text), " ")
	if rep, ok := envelope.ParseReply("250 "+text, 250); ok {
		return rep
	}
	return envelope.NewReply(250, envelope.Enhanced{2, 0, 0}, text)
}

// errReply maps any error from a conversation step to a Reply, and says
// whether the session is still in a known state (a reply other than 421
// was read) and may be reused.
func (r *Relay) errReply(ctx context.Context, cn *conn, st stage, err error) (envelope.Reply, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) && !cn.aborted.Load() {
		return saidReply(cn, st, se), se.Code != 421 && se.Code >= 400 && se.Code <= 599
	}
	return r.netFailure(ctx, cn, st, err).reply, false
}

// netFailure maps a network-level error to 4.4.2 (RFC 3463 "bad
// connection"), Postfix smtp_stream_except(); go-smtp's own local errors
// (not network) become 4.3.0.
func (r *Relay) netFailure(ctx context.Context, cn *conn, st stage, err error) *failure {
	while := st.while(cn.lmtp)
	var text string
	switch {
	case cn.aborted.Load() || ctx.Err() != nil:
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			text = fmt.Sprintf("conversation with %s timed out while %s", cn.t.namaddr, while)
		} else {
			text = fmt.Sprintf("conversation with %s interrupted while %s: delivery canceled", cn.t.namaddr, while)
		}
	case isTimeout(err):
		text = fmt.Sprintf("conversation with %s timed out while %s", cn.t.namaddr, while)
	case isNetErr(err):
		text = fmt.Sprintf("lost connection with %s while %s", cn.t.namaddr, while)
	default:
		return &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 3, 0},
			fmt.Sprintf("local error in conversation with %s while %s", cn.t.namaddr, while)), err: err}
	}
	return &failure{reply: envelope.NewReply(451, envelope.Enhanced{4, 4, 2}, text), err: err}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isNetErr recognises errors of the connection itself, as opposed to
// go-smtp refusing to do something locally.
func isNetErr(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return true
	}
	// The server sent something that is not an SMTP reply; the session is
	// lost all the same.
	var pe textproto.ProtocolError
	return errors.As(err, &pe) || errors.Is(err, smtp.ErrTooLongLine)
}

// describeNetErr renders a connect error like strerror(3), as Postfix logs
// it: "Connection refused", "Connection timed out".
func describeNetErr(err error) string {
	if isTimeout(err) {
		return "Connection timed out"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return capitalize(errno.Error())
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return capitalize(oe.Err.Error())
	}
	return capitalize(err.Error())
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// localReply is our answer when the queued content cannot be read.
func localReply() envelope.Reply {
	return envelope.NewReply(451, envelope.Enhanced{4, 3, 0}, "local error: cannot read the queued message content")
}

// sizeReply is Postfix's answer when the message exceeds the SIZE the
// server announced (RFC 1870 §6).
func sizeReply(size int64, limit int, cn *conn) envelope.Reply {
	return envelope.NewReply(552, envelope.Enhanced{5, 3, 4},
		"message size "+strconv.FormatInt(size, 10)+" exceeds size limit "+strconv.Itoa(limit)+" of server "+cn.t.namaddr)
}
