package test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// dialogConfig is the configuration of the dialogs in
// testdata/dialogs/policy_*.dialog: example.com with alice and bob, no
// trusted network, no DNS. A dialog adds lines with "# config: key = value"
// comments.
const dialogConfig = `myhostname = "mx.example.com"
mynetworks = []
relay_domains = ["example.com"]
relay_recipient_maps = ["inline:{ alice@example.com=OK, bob@example.com=OK }"]
transport_maps = ["inline:{ {example.com=retry:4.3.5 no unit in this test} }"]
queue_directory = "%[1]s/queue"
smtpd_peername_lookup = false
smtpd_error_sleep_time = "0s"
%[2]s
[log]
level = "debug"
`

// TestPolicyDialogs plays each dialog file over TCP against the binary
// started with the dialog's configuration.
func TestPolicyDialogs(t *testing.T) {
	files, err := filepath.Glob("testdata/dialogs/policy_*.dialog")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dialogs: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".dialog"), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var extra []string
			for _, line := range strings.Split(string(src), "\n") {
				if c, ok := strings.CutPrefix(line, "# config: "); ok {
					extra = append(extra, c)
				}
			}
			dir := t.TempDir()
			m := startMXConfig(t, dir, fmt.Sprintf(dialogConfig, dir, strings.Join(extra, "\n")))
			harness.RunDialog(t, m.addr(), f)
		})
	}
}

// TestClientConnectionLimit: smtpd_client_connection_count_limit, with
// smtpd_client_event_limit_exceptions ($mynetworks) not counted.
func TestClientConnectionLimit(t *testing.T) {
	dir := t.TempDir()
	m := startMXConfig(t, dir, fmt.Sprintf(dialogConfig, dir, "smtpd_client_connection_count_limit = 2"))
	first := holdConn(t, m.addr())
	defer first.Close()
	second := holdConn(t, m.addr())
	defer second.Close()
	harness.RunDialogText(t, m.addr(), "third", "S: 421 4.7.0 mx.example.com Error: too many connections from 127.0.0.1\nEOF\n")
	m.waitLog("Connection concurrency limit exceeded", 1, 5*time.Second)

	dir = t.TempDir()
	m = startMXConfig(t, dir, fmt.Sprintf(dialogConfig, dir, "smtpd_client_connection_count_limit = 1\nsmtpd_client_event_limit_exceptions = [\"127.0.0.0/8\"]"))
	c := holdConn(t, m.addr())
	defer c.Close()
	harness.RunDialogText(t, m.addr(), "excepted", "S: 220 mx.example.com ESMTP mxfront\nC: QUIT\nS: 221 2.0.0 Bye\n")
}

// holdConn opens a session and waits for the banner, so that the server
// counts it.
func holdConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") {
		t.Fatalf("banner %q: %v", l, err)
	}
	return c
}
