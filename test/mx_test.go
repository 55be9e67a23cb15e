// Package test holds mxfront's end-to-end tests: the real binary, driven by
// swaks and the go-smtp client, relaying to real peers (Postfix's
// smtp-sink, Dovecot LMTP).
package test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// mxProc is a running mxfront binary. Its listener is created by the test
// on 127.0.0.1:0 and passed in by socket activation, so a restart keeps the
// port.
type mxProc struct {
	t    testing.TB
	bin  string
	dir  string
	cfg  string
	ln   *net.TCPListener
	file *os.File
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mxConfig is the config template: %[1]s is the test dir; tables are
// written there by startMX.
const mxConfig = `myhostname = "mx.example.com"
mynetworks = []
relay_domains = [%[3]s]
relay_recipient_maps = [%[4]s]
virtual_alias_maps = [%[5]s]
transport_maps = [%[6]s]
recipient_delimiter = "+"
queue_directory = "%[1]s/queue"
minimal_backoff_time = "1s"
maximal_backoff_time = "2s"
queue_run_delay = "1s"
smtpd_peername_lookup = false
%[2]s
[log]
level = "debug"
`

type mxOptions struct {
	recipients, virtual, transport string
	extra                          string // more top-level config lines
	relayDomains                   string // TOML array items; default "example.com"
	// recipientMaps, aliasMaps, transportMaps replace the texthash files
	// of relay_recipient_maps, virtual_alias_maps and transport_maps
	// (TOML array items, e.g. `"ldap:/path/ldap.cf"`) when not empty.
	recipientMaps, aliasMaps, transportMaps string
}

func startMX(t *testing.T, o mxOptions) *mxProc {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("relay_recipients", o.recipients)
	write("virtual", o.virtual)
	write("transport", o.transport)
	if o.relayDomains == "" {
		o.relayDomains = `"example.com"`
	}
	maps := func(items, file string) string {
		if items != "" {
			return items
		}
		return fmt.Sprintf("%q", "texthash:"+filepath.Join(dir, file))
	}
	return startMXConfig(t, dir, fmt.Sprintf(mxConfig, dir, o.extra, o.relayDomains,
		maps(o.recipientMaps, "relay_recipients"), maps(o.aliasMaps, "virtual"), maps(o.transportMaps, "transport")))
}

// startMXConfig starts the binary with a whole configuration written to
// dir/mxfront.toml.
func startMXConfig(t *testing.T, dir, config string) *mxProc {
	t.Helper()
	cfg := filepath.Join(dir, "mxfront.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := l.(*net.TCPListener)
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	m := &mxProc{t: t, bin: harness.BuildBinary(t), dir: dir, cfg: cfg, ln: ln, file: f, log: &syncBuffer{}}
	t.Cleanup(func() {
		m.kill()
		ln.Close()
		f.Close()
		// The binary is built with -race when the tests are.
		if strings.Contains(m.log.String(), "WARNING: DATA RACE") {
			t.Errorf("data race in mxfront")
		}
		if t.Failed() {
			t.Logf("mxfront log:\n%s", m.log.String())
		}
	})
	m.start()
	return m
}

func (m *mxProc) addr() string { return m.ln.Addr().String() }

func (m *mxProc) start() {
	m.t.Helper()
	cmd := exec.Command(m.bin, "serve", "-config", m.cfg)
	cmd.ExtraFiles = []*os.File{m.file}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
	cmd.Stdout = m.log
	cmd.Stderr = m.log
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() { cmd.Wait(); close(m.done) }()
	// Ready when the queue was recovered and the listener served.
	m.waitLog("msg=listening", 1, 20*time.Second)
}

// kill stops the process with SIGKILL (a crash) and waits for it.
func (m *mxProc) kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	m.cmd = nil
}

// term stops the process with SIGTERM and waits up to timeout.
func (m *mxProc) term(timeout time.Duration) {
	m.t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(timeout):
		m.t.Fatalf("mxfront did not stop within %v after SIGTERM", timeout)
	}
	m.cmd = nil
}

// waitLog waits until the log holds n lines containing s.
func (m *mxProc) waitLog(s string, n int, timeout time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Count(m.log.String(), s) >= n {
			return
		}
		select {
		case <-m.done:
			m.t.Fatalf("mxfront exited while waiting for %q:\n%s", s, m.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	m.t.Fatalf("timed out waiting for %d× %q in the log", n, s)
}

func swaks(t *testing.T, m *mxProc, args ...string) (string, int) {
	t.Helper()
	return harness.Swaks(t, append([]string{"--server", m.addr(), "--helo", "mail.remote.test", "--timeout", "20"}, args...)...)
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, out)
		}
	}
}

func sinkTransport(s *harness.Sink, domains ...string) string {
	host, port, _ := net.SplitHostPort(s.Addr())
	var b strings.Builder
	for _, d := range domains {
		fmt.Fprintf(&b, "%s smtp:[%s]:%s\n", d, host, port)
	}
	return b.String()
}
