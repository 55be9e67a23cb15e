package test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Helpers for the queue tests (queue_*_test.go).

// restart starts the daemon again after kill or term and waits until it
// serves (its n-th "listening" line).
func (m *mxProc) restart() {
	m.t.Helper()
	n := strings.Count(m.log.String(), "msg=listening")
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
	m.waitLog("msg=listening", n+1, 20*time.Second)
}

// signal sends sig to the daemon.
func (m *mxProc) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
}

// editConfig rewrites the daemon's configuration file (for the next
// start): each pair is old, new text; top-level lines may be added before
// "[log]".
func (m *mxProc) editConfig(pairs ...string) {
	m.t.Helper()
	b, err := os.ReadFile(m.cfg)
	if err != nil {
		m.t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			m.t.Fatalf("editConfig: %q not in the configuration", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(m.cfg, []byte(s), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

// queueTool runs `mxfront queue -config CFG args...` and returns its
// standard output, standard error and exit code.
func (m *mxProc) queueTool(args ...string) (string, string, int) {
	m.t.Helper()
	cmd := exec.Command(m.bin, append([]string{"queue", "-config", m.cfg}, args...)...)
	// A -race binary sleeps a second at exit by default.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		m.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mustQueueTool is queueTool that requires exit code want.
func (m *mxProc) mustQueueTool(want int, args ...string) string {
	m.t.Helper()
	out, errOut, code := m.queueTool(args...)
	if code != want {
		m.t.Fatalf("mxfront queue %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out
}

// sendMail sends one message with the go-smtp client and returns the
// queue ID from the 250 reply.
func sendMail(addr, from string, rcpts []string, subject, body string) (string, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.CommandTimeout = 10 * time.Second
	c.SubmissionTimeout = 10 * time.Second
	if err := c.Hello("client.remote.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(w, "Subject: %s\r\nFrom: <%s>\r\n\r\n%s\r\n", subject, from, body)
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	c.Quit()
	_, id, _ := strings.Cut(resp.StatusText, "Ok: queued as ")
	return id, nil
}

var receivedID = regexp.MustCompile(`\(mxfront\) with \S+ id ([0-9A-Z]{12})`)

// queueIDOf returns the queue ID in a message's Received: header.
func queueIDOf(data string) string {
	if m := receivedID.FindStringSubmatch(data); m != nil {
		return m[1]
	}
	return ""
}

// waitUntil polls cond for up to timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
