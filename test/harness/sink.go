package harness

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SinkOptions configures StartSink. The zero value is an SMTP sink on TCP
// that accepts everything. Command names are smtp-sink's: CONNECT, HELO,
// EHLO, LHLO, MAIL, RCPT, VRFY, DATA, "." (end of data), RSET, NOOP, QUIT.
// smtp-sink applies a rejection to every instance of the command; it cannot
// reject some recipients and accept others (use StartDovecotLMTP for real
// per-recipient results).
type SinkOptions struct {
	// LMTP makes the sink speak LMTP (smtp-sink -L).
	LMTP bool
	// Unix listens on a unix-domain socket in the test's temp dir instead
	// of TCP; Addr then returns the socket path.
	Unix bool
	// HardReject lists commands answered with a 5xx reply (smtp-sink -f).
	// A rejected "." is still dumped: Messages includes it.
	HardReject []string
	// SoftReject lists commands answered with a 4xx reply (smtp-sink -r).
	SoftReject []string
	// HardReply and SoftReply replace the default rejection texts
	// "500 5.3.0 Error: command failed" and "450 4.3.0 Error: command failed"
	// (smtp-sink -B, -b).
	HardReply, SoftReply string
	// Disconnect421 lists commands answered with 421 followed by a
	// disconnect (smtp-sink -Q).
	Disconnect421 []string
	// Hangup lists commands after which the sink disconnects without
	// replying (smtp-sink -q).
	Hangup []string
	// Hostname is used in the greeting and EHLO reply (smtp-sink -h). Zero
	// value: "sink-" plus random hex, which also lets the harness recognise
	// its own sink when probing the port.
	Hostname string
	// ExtraArgs are passed to smtp-sink before the address, for options
	// not covered above (for example "-W", "rcpt:2" to delay RCPT replies).
	ExtraArgs []string
}

// Sink is a running Postfix smtp-sink that dumps every mail transaction to
// a file (smtp-sink -d), so tests can see what arrived.
type Sink struct {
	opts     SinkOptions
	argv     []string
	addr     string // host:port, or socket path with Unix
	dumpDir  string
	logPath  string
	hostname string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// SinkMessage is one mail transaction as recorded by smtp-sink.
type SinkMessage struct {
	// From is the MAIL FROM address without angle brackets ("" for the
	// null sender); MailArgs is the whole MAIL argument including ESMTP
	// parameters ("<a@example.test> SIZE=123").
	From     string
	MailArgs string
	// Rcpts are the RCPT TO addresses in the order sent, without angle
	// brackets; RcptArgs the whole RCPT arguments.
	Rcpts    []string
	RcptArgs []string
	// Helo is the last HELO/EHLO/LHLO argument, ClientAddr the client's IP
	// address and Proto SMTP, ESMTP or LMTP.
	Helo, ClientAddr, Proto string
	// Data is the message as received, without smtp-sink's own headers
	// and with dot-stuffing undone. smtp-sink stores lines with LF endings,
	// so Data uses "\n", not "\r\n".
	Data []byte
	// Path is the dump file.
	Path string
}

// Header returns the first value of header field name in the message, or
// "" (a simple lookup for tests: folded lines are joined with a space).
func (m SinkMessage) Header(name string) string {
	head, _, _ := bytes.Cut(m.Data, []byte("\n\n"))
	lines := strings.Split(string(head), "\n")
	for i := 0; i < len(lines); i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		v = strings.TrimSpace(v)
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += " " + strings.TrimSpace(lines[i])
		}
		return v
	}
	return ""
}

// sinkStartTimeout bounds the wait for smtp-sink to answer its first
// connection.
const sinkStartTimeout = 10 * time.Second

// StartSink starts smtp-sink on 127.0.0.1 (or a unix socket) and stops it in
// t.Cleanup.
func StartSink(t testing.TB, opts SinkOptions) *Sink {
	t.Helper()
	bin := requireProgram(t, "smtp-sink", "postfix")
	dir := t.TempDir()
	s := &Sink{
		opts:     opts,
		dumpDir:  filepath.Join(dir, "dump"),
		logPath:  filepath.Join(dir, "smtp-sink.log"),
		hostname: opts.Hostname,
	}
	if s.hostname == "" {
		s.hostname = "sink-" + randomHex(4)
	}
	if err := os.MkdirAll(s.dumpDir, 0o777); err != nil {
		t.Fatalf("StartSink: %v", err)
	}
	// smtp-sink drops privileges to -u after binding; the dump directory
	// must stay writable for that user.
	if err := os.Chmod(s.dumpDir, 0o777); err != nil {
		t.Fatalf("StartSink: %v", err)
	}
	logOnFailure(t, "smtp-sink", s.logPath)
	t.Cleanup(s.Stop)

	if opts.Unix {
		s.addr = filepath.Join(shortTempDir(t, "sink"), "sink.sock")
		s.argv = s.buildArgv(bin, "unix:"+s.addr)
		if err := s.start(); err != nil {
			t.Fatalf("StartSink: %v", err)
		}
		return s
	}
	var err error
	for range bindAttempts {
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.argv = s.buildArgv(bin, "inet:"+s.addr)
		if err = s.start(); err != errPortTaken {
			break
		}
	}
	if err != nil {
		t.Fatalf("StartSink: %v", err)
	}
	return s
}

func (s *Sink) buildArgv(bin, listen string) []string {
	o := s.opts
	argv := []string{bin, "-c", "-h", s.hostname, "-d", strings.ReplaceAll(s.dumpDir, "%", "%%") + "/"}
	if os.Geteuid() == 0 {
		argv = append(argv, "-u", currentUserName()) // required when root
	}
	if o.LMTP {
		argv = append(argv, "-L")
	}
	if len(o.HardReject) > 0 {
		argv = append(argv, "-f", strings.Join(o.HardReject, ","))
	}
	if len(o.SoftReject) > 0 {
		argv = append(argv, "-r", strings.Join(o.SoftReject, ","))
	}
	if o.HardReply != "" {
		argv = append(argv, "-B", o.HardReply)
	}
	if o.SoftReply != "" {
		argv = append(argv, "-b", o.SoftReply)
	}
	if len(o.Disconnect421) > 0 {
		argv = append(argv, "-Q", strings.Join(o.Disconnect421, ","))
	}
	if len(o.Hangup) > 0 {
		argv = append(argv, "-q", strings.Join(o.Hangup, ","))
	}
	argv = append(argv, o.ExtraArgs...)
	return append(argv, listen, "100")
}

// start runs smtp-sink with s.argv and waits until it greets with its own
// hostname. It returns errPortTaken when smtp-sink could not bind.
func (s *Sink) start() error {
	if s.opts.Unix {
		os.Remove(s.addr) // a socket left by a killed sink
	}
	p, err := startProcess("smtp-sink", s.logPath, s.argv...)
	if err != nil {
		return err
	}
	network := "tcp"
	if s.opts.Unix {
		network = "unix"
	}
	var greeting string
	ok := waitFor(sinkStartTimeout, 20*time.Millisecond, func() bool {
		if !p.running() {
			return true
		}
		greeting = probeGreeting(network, s.addr)
		return greeting != ""
	})
	switch {
	case !p.running():
		if strings.Contains(tailFile(s.logPath, 2048), "in use") {
			return errPortTaken
		}
		return fmt.Errorf("%w; log: %s", p.exitError(), tailFile(s.logPath, 1024))
	case !ok:
		p.stop(0)
		return fmt.Errorf("smtp-sink on %s did not greet within %v", s.addr, sinkStartTimeout)
	case !strings.Contains(greeting, s.hostname):
		// Someone else answers on our port: smtp-sink cannot have bound it.
		p.stop(0)
		return errPortTaken
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// probeGreeting connects, reads the greeting line and quits; it returns ""
// when nothing answers yet.
func probeGreeting(network, addr string) string {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return line
}

// Addr returns the sink's address: "127.0.0.1:port", or the socket path
// with SinkOptions.Unix.
func (s *Sink) Addr() string { return s.addr }

// Port returns the TCP port (0 with a unix socket).
func (s *Sink) Port() int {
	_, p, err := net.SplitHostPort(s.addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// Stop kills smtp-sink: the unit is down and connections are refused. Dumps
// of transactions that were in progress (no final reply sent) are removed.
// Messages received before stay visible. Stop is idempotent.
func (s *Sink) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	open := openFiles(p.pid(), s.dumpDir)
	if err := p.stop(0); err != nil {
		fmt.Fprintf(os.Stderr, "harness: Sink.Stop: %v\n", err)
	}
	for f := range open {
		os.Remove(f)
	}
}

// Start starts the sink again after Stop, on the same address and with the
// same dump directory.
func (s *Sink) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		t.Fatalf("Sink.Start: sink on %s is already running", s.addr)
	}
	if err := s.start(); err != nil {
		t.Fatalf("Sink.Start on %s: %v", s.addr, err)
	}
}

// Messages returns the completed transactions received so far, oldest
// first. A transaction is complete once smtp-sink has closed its dump file,
// which it does when it receives the "." ending the data (whatever its
// reply); transactions still in progress are left out.
func (s *Sink) Messages() []SinkMessage {
	// List the files before looking at which are open: a file that is
	// listed and then not open is complete, with no race.
	entries, err := os.ReadDir(s.dumpDir)
	if err != nil {
		return nil
	}
	var open map[string]bool
	s.mu.Lock()
	if s.proc != nil {
		open = openFiles(s.proc.pid(), s.dumpDir)
	}
	s.mu.Unlock()
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		path := filepath.Join(s.dumpDir, e.Name())
		if !e.Type().IsRegular() || open[path] {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() == 0 { // empty: a transaction aborted before DATA
			continue
		}
		files = append(files, file{path, fi.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool {
		if !files[i].mod.Equal(files[j].mod) {
			return files[i].mod.Before(files[j].mod)
		}
		return files[i].path < files[j].path
	})
	var msgs []SinkMessage
	for _, f := range files {
		raw, err := os.ReadFile(f.path)
		if err != nil {
			continue
		}
		msgs = append(msgs, parseSinkDump(f.path, raw))
	}
	return msgs
}

// Clear deletes the completed messages received so far, so that a test
// can count from a known point; transactions in progress are kept.
func (s *Sink) Clear() {
	for _, m := range s.Messages() {
		os.Remove(m.Path)
	}
}

// WaitCount waits until at least n messages have arrived and returns them
// all; the test fails if that takes longer than timeout.
func (s *Sink) WaitCount(t testing.TB, n int, timeout time.Duration) []SinkMessage {
	t.Helper()
	var msgs []SinkMessage
	if !waitFor(timeout, 20*time.Millisecond, func() bool {
		msgs = s.Messages()
		return len(msgs) >= n
	}) {
		t.Fatalf("sink %s: %d messages after %v, want at least %d", s.addr, len(msgs), timeout, n)
	}
	return msgs
}

// parseSinkDump parses one dump file: smtp-sink's X-* records, its
// three-line Received header, then the message, then an empty line
// (smtp-sink(1), DUMP FILE FORMAT).
func parseSinkDump(path string, raw []byte) SinkMessage {
	m := SinkMessage{Path: path}
	rest := raw
	for len(rest) > 0 {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		k, v, ok := strings.Cut(string(line), ": ")
		if !ok {
			break
		}
		switch k {
		case "X-Client-Addr":
			m.ClientAddr = v
		case "X-Client-Proto":
			m.Proto = v
		case "X-Helo-Args":
			m.Helo = v
		case "X-Mail-Args":
			m.MailArgs = v
			m.From = pathArg(v)
		case "X-Rcpt-Args":
			m.RcptArgs = append(m.RcptArgs, v)
			m.Rcpts = append(m.Rcpts, pathArg(v))
		case "Received":
			// "Received: from ...", "\tby ...", "\t<date>"; the
			// message starts after the continuation lines.
			rest = after
			for bytes.HasPrefix(rest, []byte("\t")) {
				_, rest, _ = bytes.Cut(rest, []byte("\n"))
			}
			m.Data = bytes.TrimSuffix(rest, []byte("\n")) // the empty line ending the dump
			return m
		default:
			// Unknown record: keep going, a newer smtp-sink may add some.
		}
		rest = after
	}
	m.Data = rest
	return m
}

// pathArg returns the address in a MAIL/RCPT argument "<addr> PARAM=...".
func pathArg(arg string) string {
	arg = strings.TrimSpace(arg)
	if strings.HasPrefix(arg, "<") {
		if i := strings.IndexByte(arg, '>'); i > 0 {
			return arg[1:i]
		}
	}
	f, _, _ := strings.Cut(arg, " ")
	return f
}

// openFiles returns the files under dir that process pid has open, from
// /proc/PID/fd (Linux).
func openFiles(pid int, dir string) map[string]bool {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return nil
	}
	open := make(map[string]bool)
	prefix := dir + string(filepath.Separator)
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err == nil && strings.HasPrefix(target, prefix) {
			open[target] = true
		}
	}
	return open
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
