package mx

import (
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// Replies of the content checks.
var (
	// Postfix smtpd_forbid_bare_newline = yes: "Error: bare <LF> received".
	replyBareLF = envelope.NewReply(550, envelope.Enhanced{5, 5, 2}, "Error: bare <LF> received")
	replyBareCR = envelope.NewReply(550, envelope.Enhanced{5, 5, 2}, "Error: bare <CR> received")
	// Postfix hopcount_limit: "554 5.4.0 Error: too many hops".
	replyTooManyHops = envelope.NewReply(554, envelope.Enhanced{5, 4, 0}, "Error: too many hops")
)

// bodyWriter checks and normalises message content on its way to the queue:
// every line ends in CRLF (a bare LF or CR is rewritten, or refused when
// reject is set — go-smtp passes them through, and a backend that takes
// <LF>.<CR><LF> as end of data would re-create SMTP smuggling), and
// Received: headers are counted against hopcount_limit. It counts the bytes
// it writes.
type bodyWriter struct {
	w        io.Writer
	reject   bool
	hopLimit int

	n        int64
	prevCR   bool
	bol      bool // at the beginning of a line
	inHeader bool
	linePfx  []byte // first bytes of the current header line
	hops     int
	buf      []byte
}

func newBodyWriter(w io.Writer, reject bool, hopLimit int) *bodyWriter {
	return &bodyWriter{w: w, reject: reject, hopLimit: hopLimit, bol: true, inHeader: true, buf: make([]byte, 0, 4096)}
}

const receivedPrefix = "received:"

func (b *bodyWriter) Write(p []byte) (int, error) {
	out := b.buf[:0]
	for _, c := range p {
		if b.prevCR {
			b.prevCR = false
			if c == '\n' {
				out = append(out, '\r', '\n')
				if err := b.endLine(); err != nil {
					return 0, err
				}
				continue
			}
			// Bare CR.
			if b.reject {
				return 0, &envelope.Error{Reply: replyBareCR}
			}
			out = append(out, '\r', '\n')
			if err := b.endLine(); err != nil {
				return 0, err
			}
		}
		switch c {
		case '\r':
			b.prevCR = true
		case '\n':
			// Bare LF.
			if b.reject {
				return 0, &envelope.Error{Reply: replyBareLF}
			}
			out = append(out, '\r', '\n')
			if err := b.endLine(); err != nil {
				return 0, err
			}
		default:
			if b.inHeader && len(b.linePfx) < len(receivedPrefix) {
				b.linePfx = append(b.linePfx, c)
			}
			b.bol = false
			out = append(out, c)
		}
	}
	b.buf = out
	n, err := b.w.Write(out)
	b.n += int64(n)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// endLine is called after each CRLF written.
func (b *bodyWriter) endLine() error {
	if b.inHeader {
		if b.bol {
			b.inHeader = false // empty line: end of the header section
		} else if len(b.linePfx) == len(receivedPrefix) && strings.EqualFold(string(b.linePfx), receivedPrefix) {
			b.hops++
			if b.hopLimit > 0 && b.hops+1 > b.hopLimit {
				// +1: our own Received: header.
				return &envelope.Error{Reply: replyTooManyHops}
			}
		}
	}
	b.linePfx = b.linePfx[:0]
	b.bol = true
	return nil
}

// Close ends the content with CRLF when the client did not (possible with
// BDAT, RFC 3030).
func (b *bodyWriter) Close() error {
	var tail []byte
	if b.prevCR {
		if b.reject {
			return &envelope.Error{Reply: replyBareCR}
		}
		tail = []byte("\r\n")
		b.prevCR = false
	} else if !b.bol {
		tail = []byte("\r\n")
	}
	if tail == nil {
		return nil
	}
	if err := b.endLine(); err != nil {
		return err
	}
	n, err := b.w.Write(tail)
	b.n += int64(n)
	return err
}

// receivedHeader builds our trace header (RFC 5321 §4.4, Postfix's layout):
//
//	Received: from helo (name [ip])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))
//		by myhostname (mxfront) with ESMTPS id QUEUEID
//		for <rcpt>; Sun, 22 Nov 2026 10:00:00 +0000 (UTC)
func receivedHeader(cl envelope.Client, hostname, id, rcpt string, now time.Time) string {
	var b strings.Builder
	ip := cl.Addr.String()
	if cl.Addr.Is6() {
		ip = "IPv6:" + ip
	}
	fmt.Fprintf(&b, "Received: from %s (%s [%s])\r\n", sanitize(cl.Helo), cl.Name, ip)
	if cl.TLS != "" {
		fmt.Fprintf(&b, "\t(using %s)\r\n", cl.TLS)
	}
	fmt.Fprintf(&b, "\tby %s (mxfront) with %s id %s", hostname, cl.Proto, id)
	if rcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(rcpt))
	}
	fmt.Fprintf(&b, "; %s\r\n", now.Format("Mon, 2 Jan 2006 15:04:05 -0700 (MST)"))
	return b.String()
}

// sanitize keeps client-supplied text safe inside a header: printable
// characters only (UTF-8 allowed), no parentheses that would unbalance a
// comment, bounded length.
func sanitize(s string) string {
	const max = 255
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			break
		}
		switch {
		case r < 0x21 || r == 0x7f, r == '(' || r == ')' || r == ';':
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

func tlsDescription(st *tls.ConnectionState) string {
	return fmt.Sprintf("%s with cipher %s", tlsVersion(st.Version), tls.CipherSuiteName(st.CipherSuite))
}

// tlsVersion names a TLS version the way Postfix logs it ("TLSv1.3").
func tlsVersion(v uint16) string {
	return strings.Replace(tls.VersionName(v), "TLS ", "TLSv", 1)
}
