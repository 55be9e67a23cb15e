package harness

import (
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

// DovecotUser is a mailbox of the Dovecot LMTP unit.
type DovecotUser struct {
	// Name is the full address, e.g. "alice@example.test"; LMTP RCPT TO
	// must name it (Dovecot lowercases, and strips a "+detail").
	Name string
	// Password is stored for completeness; LMTP does not authenticate.
	Password string
	// QuotaBytes is the storage quota; 0 means none. A delivery that would
	// exceed it gets "552 5.2.2" after DATA for that recipient only.
	QuotaBytes int64
}

// Dovecot is a running Dovecot 2.3 serving LMTP on TCP and on a unix socket.
// Unknown recipients get "550 5.1.1" at RCPT.
type Dovecot struct {
	dir     string
	conf    string
	logPath string
	fgLog   string
	port    int
	users   map[string]bool

	mu   sync.Mutex
	proc *process
}

// MaildirMessage is one message delivered to a Maildir.
type MaildirMessage struct {
	Path string
	Data []byte // as stored by Dovecot: LF line endings, with its Return-Path/Delivered-To/Received
}

// dovecotStartTimeout bounds the wait for Dovecot's LMTP greeting (it
// usually takes about 1.5 s).
const dovecotStartTimeout = 20 * time.Second

// mailUID is the uid mail is stored with: Dovecot refuses uid 0 for mail.
const mailUID = 65534

// StartDovecotLMTP starts Dovecot with the given users and stops it in
// t.Cleanup. It must run as root: Dovecot delivers as uid 65534.
func StartDovecotLMTP(t testing.TB, users []DovecotUser) *Dovecot {
	t.Helper()
	bin := requireProgram(t, "dovecot", "dovecot-core")
	requireFile(t, "/usr/lib/dovecot/lmtp", "dovecot-lmtpd")
	if os.Geteuid() != 0 {
		if underCI() {
			t.Fatalf("StartDovecotLMTP must run as root (mail is delivered as uid %d); CI is set, so this is a failure", mailUID)
		}
		t.Skipf("StartDovecotLMTP must run as root (mail is delivered as uid %d)", mailUID)
	}
	// A short path: Dovecot puts its sockets under base_dir.
	dir := shortTempDir(t, "dv")
	d := &Dovecot{
		dir:     dir,
		conf:    filepath.Join(dir, "dovecot.conf"),
		logPath: filepath.Join(dir, "dovecot.log"),
		fgLog:   filepath.Join(dir, "fg.log"),
		users:   make(map[string]bool),
	}
	// uid 65534 must be able to reach dir/mail.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatalf("StartDovecotLMTP: %v", err)
	}
	for _, sub := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatalf("StartDovecotLMTP: %v", err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "mail"), mailUID, mailUID); err != nil {
		t.Fatalf("StartDovecotLMTP: %v", err)
	}
	var passwd strings.Builder
	for _, u := range users {
		if u.Name == "" || strings.ContainsAny(u.Name, ":/\n") || strings.ContainsAny(u.Password, ":\n") {
			t.Fatalf("StartDovecotLMTP: invalid user %q (name must be non-empty; no ':', '/' or newline)", u.Name)
		}
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s:%d:%d::%s::", u.Name, u.Password, mailUID, mailUID, d.home(u.Name))
		if u.QuotaBytes > 0 {
			fmt.Fprintf(&passwd, "userdb_quota_rule=*:bytes=%d", u.QuotaBytes)
		}
		passwd.WriteString("\n")
		d.users[strings.ToLower(u.Name)] = true
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(passwd.String()), 0o644); err != nil {
		t.Fatalf("StartDovecotLMTP: %v", err)
	}
	logOnFailure(t, "dovecot", d.logPath, d.fgLog)
	t.Cleanup(d.Stop)

	var err error
	for range bindAttempts {
		if d.port, err = freePort(); err != nil {
			break
		}
		if err = d.writeConfig(); err != nil {
			break
		}
		if err = d.launch(bin); err != errPortTaken {
			break
		}
	}
	if err != nil {
		t.Fatalf("StartDovecotLMTP: %v", err)
	}
	return d
}

func (d *Dovecot) home(user string) string {
	return filepath.Join(d.dir, "mail", strings.ToLower(user))
}

// writeConfig writes the recipe of /work/shared/testing.md ("Dovecot 2.3 as
// an LMTP unit") for the current port.
func (d *Dovecot) writeConfig() error {
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
  unix_listener lmtp {
    mode = 0666
  }
}
`, d.dir, d.port)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write dovecot.conf: %w", err)
	}
	return nil
}

// waitReady waits for the LMTP greeting on the TCP port and the unix socket;
// errPortTaken means Dovecot could not bind its port.
func (d *Dovecot) waitReady(p *process) error {
	var greeting string
	ok := waitFor(dovecotStartTimeout, 50*time.Millisecond, func() bool {
		if !p.running() {
			return true
		}
		if _, err := os.Stat(d.Socket()); err != nil {
			return false
		}
		greeting = probeGreeting("tcp", d.Addr())
		return greeting != ""
	})
	logs := func() string { return tailFile(d.fgLog, 1024) + tailFile(d.logPath, 1024) }
	switch {
	case !p.running():
		if strings.Contains(logs(), "in use") {
			return errPortTaken
		}
		return fmt.Errorf("%w; log: %s", p.exitError(), logs())
	case !ok:
		p.stop(5 * time.Second)
		return fmt.Errorf("dovecot LMTP on %s did not greet within %v; log: %s", d.Addr(), dovecotStartTimeout, logs())
	case !strings.Contains(greeting, "LMTP") && !strings.Contains(greeting, "Dovecot"):
		p.stop(5 * time.Second)
		return errPortTaken
	}
	d.mu.Lock()
	d.proc = p
	d.mu.Unlock()
	return nil
}

// Addr returns the LMTP TCP address "127.0.0.1:port".
func (d *Dovecot) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port)) }

// Socket returns the path of the LMTP unix socket.
func (d *Dovecot) Socket() string { return filepath.Join(d.dir, "run", "lmtp") }

// Stop stops Dovecot (SIGTERM, then SIGKILL to its process group after 5 s).
// It is idempotent.
func (d *Dovecot) Stop() {
	d.mu.Lock()
	p := d.proc
	d.proc = nil
	d.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.stop(5 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "harness: Dovecot.Stop: %v\n", err)
	}
}

// Start starts Dovecot again after Stop, on the same port and mail store.
func (d *Dovecot) Start(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	running := d.proc != nil
	d.mu.Unlock()
	if running {
		t.Fatalf("Dovecot.Start: already running on %s", d.Addr())
	}
	if err := d.launch(requireProgram(t, "dovecot", "dovecot-core")); err != nil {
		t.Fatalf("Dovecot.Start on %s: %v", d.Addr(), err)
	}
}

// launch starts Dovecot (-F: foreground, the master is our child) and waits
// for its LMTP greeting.
func (d *Dovecot) launch(bin string) error {
	p, err := startProcess("dovecot", d.fgLog, bin, "-F", "-c", d.conf)
	if err != nil {
		return err
	}
	return d.waitReady(p)
}

// Maildir returns the messages delivered to user (new and cur), oldest
// first by file name (Dovecot names start with the delivery time).
func (d *Dovecot) Maildir(user string) []MaildirMessage {
	var names []string
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(d.home(user), "Maildir", sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				names = append(names, filepath.Join(dir, e.Name()))
			}
		}
	}
	sort.Slice(names, func(i, j int) bool { return filepath.Base(names[i]) < filepath.Base(names[j]) })
	var msgs []MaildirMessage
	for _, p := range names {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // moved from new to cur meanwhile
		}
		msgs = append(msgs, MaildirMessage{Path: p, Data: data})
	}
	return msgs
}

// WaitCount waits until user has at least n messages and returns them; the
// test fails after timeout.
func (d *Dovecot) WaitCount(t testing.TB, user string, n int, timeout time.Duration) []MaildirMessage {
	t.Helper()
	var msgs []MaildirMessage
	if !waitFor(timeout, 20*time.Millisecond, func() bool {
		msgs = d.Maildir(user)
		return len(msgs) >= n
	}) {
		t.Fatalf("dovecot: %s has %d messages after %v, want at least %d", user, len(msgs), timeout, n)
	}
	return msgs
}

// Log returns Dovecot's log so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}
