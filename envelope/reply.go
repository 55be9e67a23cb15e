package envelope

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Enhanced is an RFC 3463 enhanced status code class.subject.detail. Its
// class is always derived from the basic reply code when a Reply is built,
// so a 4xx reply never carries 5.x.x.
type Enhanced [3]int

func (e Enhanced) String() string {
	return strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2])
}

// IsZero reports whether no enhanced code is set.
func (e Enhanced) IsZero() bool { return e == Enhanced{} }

// ParseEnhanced parses "4.3.0". It returns false for anything else.
func ParseEnhanced(s string) (Enhanced, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Enhanced{}, false
	}
	var e Enhanced
	for i, p := range parts {
		if p == "" || len(p) > 3 {
			return Enhanced{}, false
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return Enhanced{}, false
		}
		e[i] = n
	}
	if e[0] != 2 && e[0] != 4 && e[0] != 5 {
		return Enhanced{}, false
	}
	return e, true
}

// Reply is an SMTP reply: RFC 5321 §4.2 code, RFC 3463 enhanced code, text.
// Text may hold several lines separated by "\n"; it must never carry internal
// error details (file names, Go errors) — those belong in Error.Err.
type Reply struct {
	Code     int
	Enhanced Enhanced
	Text     string
}

// NewReply builds a Reply, forcing the enhanced class to match the code.
func NewReply(code int, enh Enhanced, text string) Reply {
	if enh.IsZero() {
		enh = Enhanced{code / 100, 0, 0}
	}
	enh[0] = code / 100
	return Reply{Code: code, Enhanced: enh, Text: text}
}

// Temporary reports a 4xx reply (RFC 5321 §4.2.1: transient negative).
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Permanent reports a 5xx reply (permanent negative completion).
func (r Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// Positive reports a 2xx reply.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 300 }

// IsZero reports an unset reply.
func (r Reply) IsZero() bool { return r.Code == 0 }

// String renders the reply as one line "550 5.1.1 text" (multi-line text is
// joined with "; "), the form used in logs and DSNs.
func (r Reply) String() string {
	t := strings.ReplaceAll(r.Text, "\n", "; ")
	if r.Enhanced.IsZero() {
		return strconv.Itoa(r.Code) + " " + t
	}
	return strconv.Itoa(r.Code) + " " + r.Enhanced.String() + " " + t
}

// ParseReply parses "550 5.1.1 text" or "550 text" or "5.1.1 text" (the
// access(5) and transport(5) forms); defCode is used when only an enhanced
// code is given (then the code is defCode's class matched to it:
// 4.x.x → 450, 5.x.x → 550 unless defCode has that class).
func ParseReply(s string, defCode int) (Reply, bool) {
	s = strings.TrimSpace(s)
	code := 0
	if len(s) >= 3 {
		if n, err := strconv.Atoi(s[:3]); err == nil && (len(s) == 3 || s[3] == ' ' || s[3] == '-') {
			if n < 200 || n > 599 {
				return Reply{}, false
			}
			code = n
			s = strings.TrimSpace(s[3:])
		}
	}
	var enh Enhanced
	first, rest, _ := strings.Cut(s, " ")
	if e, ok := ParseEnhanced(first); ok {
		enh = e
		s = strings.TrimSpace(rest)
	}
	if code == 0 {
		if enh.IsZero() {
			return Reply{}, false
		}
		code = defCode
		if code/100 != enh[0] {
			code = enh[0]*100 + 50
		}
	}
	if !enh.IsZero() && enh[0] != code/100 {
		return Reply{}, false
	}
	return NewReply(code, enh, s), true
}

// Error is an error that carries the reply for the SMTP client, kept apart
// from the internal reason (Err), which is only logged. Errors without a
// Reply anywhere in their chain are reported to clients as 451 4.3.0.
type Error struct {
	Reply Reply
	Err   error // internal cause, for logs only; may be nil
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Reply.String() + ": " + e.Err.Error()
	}
	return e.Reply.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the reply is 4xx.
func (e *Error) Temporary() bool { return e.Reply.Temporary() }

// Errorf returns an *Error with a reply built from code, enhanced code and a
// formatted client text.
func Errorf(code int, enh Enhanced, format string, args ...any) *Error {
	return &Error{Reply: NewReply(code, enh, fmt.Sprintf(format, args...))}
}

// Wrap attaches a client reply to an internal error.
func Wrap(err error, code int, enh Enhanced, text string) *Error {
	return &Error{Reply: NewReply(code, enh, text), Err: err}
}

// ReplyOf extracts the client reply from err. Errors without one give
// ReplyInternal (451 4.3.0), never their own text: RFC 5321 §4.2.5 leaves the
// choice to us, and a temporary reply is the one that loses no mail.
func ReplyOf(err error) Reply {
	if err == nil {
		return Reply{}
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reply
	}
	return ReplyInternal
}
