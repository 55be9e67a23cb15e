package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// TestSIGHUPReload: a new user is known after SIGHUP; a broken table file
// keeps the old contents (and the error names file and line).
func TestSIGHUPReload(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{recipients: "alice@example.com OK\n", transport: sinkTransport(sink, "example.com")})
	rr := filepath.Join(m.dir, "relay_recipients")
	if out, _ := swaks(t, m, "--from", "s@remote.test", "--to", "carol@example.com", "--quit-after", "RCPT"); !strings.Contains(out, "550 5.1.1") {
		t.Fatalf("carol known before reload:\n%s", out)
	}
	// Rename into place, as an operator should.
	tmp := rr + ".new"
	os.WriteFile(tmp, []byte("alice@example.com OK\ncarol@example.com OK\n"), 0o644)
	os.Rename(tmp, rr)
	m.cmd.Process.Signal(syscall.SIGHUP)
	m.waitLog("reload: tables reloaded", 1, 10*time.Second)
	if out, _ := swaks(t, m, "--from", "s@remote.test", "--to", "carol@example.com", "--quit-after", "RCPT"); !strings.Contains(out, "250 2.1.5 Ok") {
		t.Fatalf("carol unknown after reload:\n%s", out)
	}
	// A broken file: the old contents stay in force.
	os.WriteFile(tmp, []byte("alice@example.com OK\nbroken-line-without-value\n"), 0o644)
	os.Rename(tmp, rr)
	m.cmd.Process.Signal(syscall.SIGHUP)
	m.waitLog("reload: kept the old contents", 1, 10*time.Second)
	mustContain(t, "log", m.log.String(), rr+":2:")
	if out, _ := swaks(t, m, "--from", "s@remote.test", "--to", "carol@example.com", "--quit-after", "RCPT"); !strings.Contains(out, "250 2.1.5 Ok") {
		t.Fatalf("old table not kept:\n%s", out)
	}
}
