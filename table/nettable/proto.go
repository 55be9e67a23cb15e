package nettable

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// tcp_table(5) limits: "Replies must be no longer than 4096 characters
// including the newline terminator."
const tcpMaxReply = 4096

// socketmap_table(5): "replies are not longer than 100000 characters (not
// including the netstring encapsulation)".
const socketmapMaxReply = 100000

// tcpProto is the tcp_table(5) protocol.
type tcpProto struct{}

func (tcpProto) write(w *bufio.Writer, key string) error {
	_, err := w.WriteString("get " + encodeTCP(key) + "\n")
	return err
}

func (tcpProto) read(r *bufio.Reader) (string, bool, error) {
	line, err := readLine(r, tcpMaxReply)
	if err != nil {
		return "", false, err
	}
	// "Each reply specifies a status code and text": NNN SP text. Like
	// Postfix dict_tcp.c, the first digit decides.
	if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) || len(line) > 3 && line[3] != ' ' {
		return "", false, protoErrorf("malformed reply %q", trunc(line))
	}
	text := ""
	if len(line) > 4 {
		text = line[4:]
	}
	switch line[0] {
	case '2':
		v, err := decodeTCP(text)
		if err != nil {
			return "", false, protoErrorf("%v in reply %q", err, trunc(line))
		}
		// An empty value is found, as in Postfix dict_tcp.c (a recipient
		// service may answer "200 " for "exists").
		return v, true, nil
	case '5':
		return "", false, nil
	case '4':
		return "", false, &serverError{"server reported a temporary error: " + trunc(line)}
	}
	return "", false, &serverError{"unexpected reply: " + trunc(line)}
}

// readLine reads a line of at most max bytes including the newline and
// returns it without CR LF.
func readLine(r *bufio.Reader, max int) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > max {
			return "", protoErrorf("reply longer than %d bytes", max)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// encodeTCP applies tcp_table(5) ENCODING: "the character %, each
// non-printing character, and each whitespace character must be replaced
// by %XX". Bytes outside printable ASCII are encoded too.
func encodeTCP(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// decodeTCP undoes %XX encoding (hex digits in any case).
func decodeTCP(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", errors.New("truncated %XX escape")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad %%XX escape %q", s[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}

// socketmapProto is the socketmap_table(5) protocol.
type socketmapProto struct{ name string }

func (p socketmapProto) write(w *bufio.Writer, key string) error {
	req := p.name + " " + key
	_, err := fmt.Fprintf(w, "%d:%s,", len(req), req)
	return err
}

func (socketmapProto) read(r *bufio.Reader) (string, bool, error) {
	data, err := readNetstring(r, socketmapMaxReply)
	if err != nil {
		return "", false, err
	}
	status, text, _ := strings.Cut(data, " ")
	switch status {
	case "OK":
		return text, true, nil
	case "NOTFOUND":
		return "", false, nil
	case "TEMP", "TIMEOUT", "PERM":
		// PERM too: a server failure is never a reason to refuse mail
		// for good.
		return "", false, &serverError{fmt.Sprintf("server reported %s: %s", status, trunc(text))}
	}
	return "", false, protoErrorf("unexpected reply %q", trunc(data))
}

// readNetstring reads "len:data," (http://cr.yp.to/proto/netstrings.txt).
func readNetstring(r *bufio.Reader, max int) (string, error) {
	n := 0
	digits := 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if c == ':' && digits > 0 {
			break
		}
		if !isDigit(c) || digits > 0 && n == 0 {
			// Not a digit, or a leading zero before more digits.
			return "", protoErrorf("malformed netstring length")
		}
		n = n*10 + int(c-'0')
		digits++
		if n > max {
			return "", protoErrorf("reply longer than %d bytes", max)
		}
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	if buf[n] != ',' {
		return "", protoErrorf("netstring not terminated by ','")
	}
	return string(buf[:n]), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// trunc shortens server text for errors and logs.
func trunc(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
