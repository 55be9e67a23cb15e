package relay

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

const dovecotBin = "/usr/sbin/dovecot"

// startDovecot runs a private Dovecot LMTP server (recipe from
// /work/shared/testing.md): alice has no quota, bob a 100-byte quota,
// anybody else is unknown. It returns the TCP address and the UNIX socket.
func startDovecot(t *testing.T) (addr, socket, dir string) {
	t.Helper()
	if _, err := os.Stat(dovecotBin); err != nil {
		t.Skipf("Dovecot is not installed (%v): apt-get install dovecot-core dovecot-lmtpd to run this test", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the Dovecot test needs root: Dovecot switches to uid 65534 to deliver")
	}
	dir, err := os.MkdirTemp("", "relay-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Delivery runs as uid 65534: it must traverse dir and own mail/.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "mail"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	users := fmt.Sprintf("alice@example.test:{PLAIN}secret:65534:65534::%[1]s/mail/alice::\n"+
		"bob@example.test:{PLAIN}secret:65534:65534::%[1]s/mail/bob::userdb_quota_rule=*:bytes=100\n", dir)
	conf := fmt.Sprintf(`protocols = lmtp
listen = 127.0.0.1
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
ssl = no
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_plugins = quota
plugin {
  quota = maildir:User quota
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[2]d
  }
}
`, dir, port)
	for name, content := range map[string]string{"users": users, "dovecot.conf": conf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := os.Create(filepath.Join(dir, "fg.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(dovecotBin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			for _, f := range []string{"fg.log", "dovecot.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	socket = filepath.Join(dir, "run", "lmtp")
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			if _, err := os.Stat(socket); err == nil {
				return addr, socket, dir
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "fg.log"))
			t.Fatalf("Dovecot did not start listening on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDovecotLMTP delivers to a real Dovecot: alice accepted, nobody
// refused at RCPT (550 5.1.1), bob over quota at DATA (552 5.2.2); a
// second message goes over the same, cached connection.
func TestDovecotLMTP(t *testing.T) {
	addr, socket, dir := startDovecot(t)
	var dials atomic.Int32
	var d net.Dialer
	r := newRelay(t, Config{
		Hostname: "mx1.example.test",
		Dialer: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, a)
		},
	})
	rt := tcpRoute("lmtp", addr)
	body := "Received: from client.example.test by mx1.example.test\r\n" +
		"From: <s@remote.test>\r\nTo: <alice@example.test>\r\nSubject: relay test\r\n\r\n" +
		strings.Repeat("This line makes the message larger than bob's quota.\r\n", 4)

	res := r.Deliver(context.Background(), delivery(rt, body, "s@remote.test", "alice@example.test", "nobody@example.test", "bob@example.test"))
	for _, x := range res {
		t.Logf("%s: relay=%s %s", x.Rcpt, x.Relay, x.Reply)
	}
	checkResult(t, res[0], 250, "2.0.0", "<alice@example.test>")
	checkResult(t, res[1], 550, "5.1.1", "(in reply to RCPT TO command)")
	checkResult(t, res[2], 552, "5.2.2", "Quota exceeded")
	checkResult(t, res[2], 552, "5.2.2", "(in reply to end of DATA command)")

	res = r.Deliver(context.Background(), delivery(rt, body, "s@remote.test", "alice@example.test", "bob@example.test"))
	checkResult(t, res[0], 250, "2.0.0", "Saved")
	checkResult(t, res[1], 552, "5.2.2", "Quota exceeded")
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for two messages, want 1 (reuse)", n)
	}

	// The same over the UNIX-domain socket.
	urt := envelope.Route{Transport: "lmtp", Nexthop: "unix:" + socket, Hosts: []envelope.Host{{Network: "unix", Name: socket}}}
	res = r.Deliver(context.Background(), delivery(urt, body, "", "alice@example.test"))
	checkResult(t, res[0], 250, "2.0.0", "Saved")
	if res[0].Relay != "mx1.example.test["+socket+"]" {
		t.Errorf("relay %q", res[0].Relay)
	}

	files, err := os.ReadDir(filepath.Join(dir, "mail", "alice", "Maildir", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("alice has %d messages, want 3", len(files))
	}
	got, err := os.ReadFile(filepath.Join(dir, "mail", "alice", "Maildir", "new", files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "Subject: relay test") || !strings.Contains(string(got), "larger than bob's quota") {
		t.Errorf("stored message:\n%s", got)
	}
}
