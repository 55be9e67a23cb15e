// Package harness runs the real peers mxfront talks to, for end-to-end tests:
// Postfix's smtp-sink as a backend unit, Dovecot as an LMTP unit, OpenLDAP's
// slapd as the recipient directory, swaks as a client, and an in-process DNS
// server. It also builds the mxfront binary and replays SMTP dialog files.
//
// Every peer listens on 127.0.0.1 only (port 0 where the peer accepts it, a
// probed free port otherwise), keeps its state in a per-test directory and is
// stopped by its process id in t.Cleanup. Helpers that need a program skip the
// test when it is not installed, unless the environment variable CI is set:
// under CI a missing program is a test failure, because CI must exercise the
// real peers. scripts/install-deps.sh installs them all.
package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sbinDirs are searched after PATH: Debian installs the daemons there, and a
// non-root user's PATH usually lacks them.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"}

// lookProgram returns the path of an installed program, looking in PATH and
// then in the sbin directories.
func lookProgram(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// underCI reports whether the tests run under CI, where a missing peer is a
// failure instead of a skip.
func underCI() bool { return os.Getenv("CI") != "" }

// missing ends the test because something it needs is not installed: a skip
// on a developer machine, a failure under CI.
func missing(t testing.TB, what, pkg string) {
	t.Helper()
	if underCI() {
		t.Fatalf("%s is not installed (Debian package %s); CI is set, so this is a failure, not a skip: run scripts/install-deps.sh", what, pkg)
	}
	t.Skipf("%s is not installed (Debian package %s); run scripts/install-deps.sh (with CI set this would fail)", what, pkg)
}

// requireProgram returns the path of program name, or ends the test via
// missing.
func requireProgram(t testing.TB, name, pkg string) string {
	t.Helper()
	p, ok := lookProgram(name)
	if !ok {
		missing(t, name, pkg)
	}
	return p
}

// requireFile ends the test via missing unless path exists.
func requireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, path, pkg)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It is
// only for peers that must be given a port number on their command line; the
// harness's own starters retry with another port when the peer fails to bind.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("FreePort: %v", err)
	}
	return p
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("close probe listener: %w", err)
	}
	return port, nil
}

// bindAttempts bounds how many free ports a starter tries when the peer
// fails to bind the port it was given (another process took it meanwhile).
const bindAttempts = 5

// errPortTaken is returned by a start attempt whose port was taken between
// choosing it and the peer binding it; the caller retries with another port.
var errPortTaken = errors.New("port already in use")

// shortTempDir returns a new directory with a short path under the system
// temp dir, removed in t.Cleanup. Unix socket paths are limited to 107 bytes
// and t.TempDir paths grow with the test name; daemons that create sockets
// under their state directory (Dovecot) get one of these instead.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("create temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitFor polls cond every interval until it returns true or timeout passes;
// it reports whether cond became true.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// currentUserName is the name passed to daemons that insist on dropping
// privileges (smtp-sink -u) when running as root.
func currentUserName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// tailFile returns at most the last n bytes of the file at path, for failure
// diagnostics.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := fi.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return strings.ToValidUTF8(string(buf), "?")
}

// logOnFailure registers a cleanup that prints the tail of a peer's log files
// when the test failed, so a failure says what the peer thought.
func logOnFailure(t testing.TB, name string, paths ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			t.Logf("%s log %s (tail):\n%s", name, p, tailFile(p, 4096))
		}
	})
}
