package harness

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A dialog file scripts one SMTP/LMTP session, so tests can keep
// conversations as data (the idea of chasquid's .cmy files). One directive
// per line:
//
//	# comment            (blank lines and lines starting with # are ignored)
//	C: EHLO client.test  send the text and CRLF ("C:" alone sends an empty line)
//	S: 250 2.1.0 Ok      read one reply line; it must equal the text
//	S~ ^250[- ]          read one reply line; it must match the RE2 regexp
//	R: 250 2.0.0 Ok      read a whole reply (skipping "NNN-" continuation
//	R~ ^250 2\.0\.0      lines) and match its last line exactly / by regexp
//	TLS                  start a TLS client handshake (after "C: STARTTLS"
//	                     and its 220); the certificate is not verified
//	EOF                  the server must close the connection now
//
// The text after "C:", "S:", ... starts after one optional space and is
// taken verbatim, trailing spaces included. Every reply line must end with
// CRLF. Each read waits at most dialogReadTimeout.
type dialogStep struct {
	line int    // line number in the file, for messages
	op   string // "C:", "S:", "S~", "R:", "R~", "TLS", "EOF"
	text string
	re   *regexp.Regexp
}

// dialogReadTimeout bounds each wait for a server line.
const dialogReadTimeout = 10 * time.Second

// RunDialog connects to addr ("host:port", or a unix socket path starting
// with "/") and plays the dialog file at path; the test fails at the first
// difference, naming path:line.
func RunDialog(t testing.TB, addr, path string) {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("RunDialog: %v", err)
	}
	RunDialogText(t, addr, path, string(text))
}

// RunDialogText is RunDialog with the dialog given as a string; name is used
// in messages in place of a file name.
func RunDialogText(t testing.TB, addr, name, text string) {
	t.Helper()
	steps, err := parseDialog(name, text)
	if err != nil {
		t.Fatalf("RunDialog: %v", err)
	}
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("RunDialog %s: %v", name, err)
	}
	defer conn.Close()
	var transcript strings.Builder
	if err := runDialog(conn, name, steps, &transcript); err != nil {
		t.Fatalf("%v\ntranscript:\n%s", err, transcript.String())
	}
}

// parseDialog parses dialog text.
func parseDialog(name, text string) ([]dialogStep, error) {
	var steps []dialogStep
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		n := i + 1
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if w := strings.TrimSpace(line); w == "TLS" || w == "EOF" {
			steps = append(steps, dialogStep{line: n, op: w})
			continue
		}
		if len(line) < 2 {
			return nil, fmt.Errorf("%s:%d: unknown directive %q (want C:, S:, S~, R:, R~, TLS or EOF)", name, n, line)
		}
		op, arg := line[:2], strings.TrimPrefix(line[2:], " ")
		st := dialogStep{line: n, op: op, text: arg}
		switch op {
		case "C:", "S:", "R:":
		case "S~", "R~":
			re, err := regexp.Compile(arg)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: bad regexp: %w", name, n, err)
			}
			st.re = re
		default:
			return nil, fmt.Errorf("%s:%d: unknown directive %q (want C:, S:, S~, R:, R~, TLS or EOF)", name, n, line)
		}
		steps = append(steps, st)
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("%s: empty dialog", name)
	}
	return steps, nil
}

// runDialog plays steps on conn, recording the exchange in transcript.
func runDialog(conn net.Conn, name string, steps []dialogStep, transcript io.Writer) error {
	r := bufio.NewReader(conn)
	readLine := func() (string, error) {
		if err := conn.SetReadDeadline(time.Now().Add(dialogReadTimeout)); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			if line != "" {
				return "", fmt.Errorf("partial line %q: %w", line, err)
			}
			return "", err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return "", fmt.Errorf("line %q does not end with CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		fmt.Fprintf(transcript, "S: %s\n", line)
		return line, nil
	}
	for _, st := range steps {
		where := fmt.Sprintf("%s:%d", name, st.line)
		switch st.op {
		case "C:":
			fmt.Fprintf(transcript, "C: %s\n", st.text)
			if err := conn.SetWriteDeadline(time.Now().Add(dialogReadTimeout)); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			if _, err := io.WriteString(conn, st.text+"\r\n"); err != nil {
				return fmt.Errorf("%s: send %q: %w", where, st.text, err)
			}
		case "S:", "S~", "R:", "R~":
			line, err := readLine()
			if err != nil {
				return fmt.Errorf("%s: want %s %s, read: %w", where, st.op, st.text, err)
			}
			if st.op[0] == 'R' {
				// Continuation lines are "NNN-text" (RFC 5321 section 4.2.1).
				for i := 0; len(line) >= 4 && line[3] == '-'; i++ {
					if i >= 1000 {
						return fmt.Errorf("%s: reply with more than 1000 lines", where)
					}
					if line, err = readLine(); err != nil {
						return fmt.Errorf("%s: want %s %s, read: %w", where, st.op, st.text, err)
					}
				}
			}
			if st.re != nil && !st.re.MatchString(line) {
				return fmt.Errorf("%s: got %q, want a match for %s", where, line, st.text)
			}
			if st.re == nil && line != st.text {
				return fmt.Errorf("%s: got %q, want %q", where, line, st.text)
			}
		case "TLS":
			fmt.Fprintf(transcript, "(TLS handshake)\n")
			if r.Buffered() > 0 {
				return fmt.Errorf("%s: server sent data before the TLS handshake", where)
			}
			tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
			if err := tc.SetDeadline(time.Now().Add(dialogReadTimeout)); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("%s: TLS handshake: %w", where, err)
			}
			conn = tc
			r = bufio.NewReader(conn)
		case "EOF":
			line, err := readLine()
			if err == nil {
				return fmt.Errorf("%s: got %q, want the connection closed", where, line)
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
				return fmt.Errorf("%s: want the connection closed, got: %w", where, err)
			}
			fmt.Fprintf(transcript, "(closed)\n")
		}
	}
	return nil
}

// isConnReset reports a connection reset by the peer, which also counts as
// closed.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}
