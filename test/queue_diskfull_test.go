package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/test/harness"
)

// TestQueueDiskFull puts the queue on a small tmpfs and fills it:
//
//   - a message larger than the space left gets 452 4.3.1 at the end of
//     DATA (a real ENOSPC), and leaves no file behind, corrupt or not;
//   - below queue_minfree, MAIL FROM gets 452 4.3.1 before any data;
//   - mail queued before keeps being delivered meanwhile;
//   - when space returns, mail is accepted and delivered again.
//
// Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped and
// queue.TestCommitFailure's injected ENOSPC is the proof.
func TestQueueDiskFull(t *testing.T) {
	unit := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{
		recipients: "alice@example.com OK\n",
		transport:  sinkTransport(unit, "example.com"),
		extra:      "message_size_limit = 0\n",
	})
	m.term(20 * time.Second)
	qdir := filepath.Join(m.dir, "queue")
	os.RemoveAll(qdir)
	os.Mkdir(qdir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", qdir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); the injected ENOSPC of queue.TestCommitFailure covers this", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", qdir).Run() })
	m.restart()

	// Mail queued while the unit is down, to be delivered on a full disk.
	unit.Stop()
	for i := range 3 {
		if _, err := sendMail(m.addr(), "sender@remote.test", []string{"alice@example.com"}, fmt.Sprintf("before %d", i), "queued before the disk filled"); err != nil {
			t.Fatal(err)
		}
	}
	m.waitLog("status=deferred", 3, 20*time.Second)

	// Fill the file system, leaving about 256 KiB.
	filler := filepath.Join(qdir, "filler")
	fill(t, filler, 256<<10)

	// 1. A message bigger than what is left: ENOSPC while writing.
	_, err := sendMail(m.addr(), "sender@remote.test", []string{"alice@example.com"}, "too big", strings.Repeat("0123456789abcdef\r\n", 40000))
	checkSMTPError(t, "message bigger than the free space", err, 452, "4.3.1", "Insufficient system storage")
	assertNoLeftovers(t, qdir)
	m.waitLog("queue file write error", 1, 5*time.Second)

	// 2. queue_minfree: refused at MAIL FROM.
	m.term(20 * time.Second)
	m.editConfig("[log]", "queue_minfree = 1048576\n[log]")
	m.restart()
	c, err := smtp.Dial(m.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Hello("client.remote.test")
	err = c.Mail("sender@remote.test", &smtp.MailOptions{Size: 1000})
	c.Close()
	checkSMTPError(t, "MAIL FROM below queue_minfree", err, 452, "4.3.1", "Insufficient system storage")
	m.waitLog("queue full: new mail is refused", 1, 5*time.Second)
	m.waitLog("stage=MAIL client=unknown[127.0.0.1] helo=client.remote.test from=sender@remote.test to=\"\" code=452 dsn=4.3.1", 1, 5*time.Second)

	// 3. Delivery goes on with the disk full.
	unit.Start(t)
	m.mustQueueTool(0, "flush")
	unit.WaitCount(t, 3, 20*time.Second)
	waitUntil(t, "the queued mail removed", 10*time.Second, func() bool { return strings.Count(m.log.String(), "msg=removed") >= 3 })

	// 4. Space returns: mail is accepted and delivered.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the free-space figure is cached for 100ms
	if _, err := sendMail(m.addr(), "sender@remote.test", []string{"alice@example.com"}, "after", strings.Repeat("0123456789abcdef\r\n", 40000)); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
	msgs := unit.WaitCount(t, 4, 20*time.Second)
	if msgs[3].Header("Subject") != "after" {
		t.Errorf("last message %q", msgs[3].Header("Subject"))
	}
	m.waitLog("queue has room again", 1, 5*time.Second)
	assertNoLeftovers(t, qdir)
}

// fill writes a file until the file system has about leave bytes free.
func fill(t *testing.T, path string, leave int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * int64(st.Bsize)
		if free <= leave {
			return
		}
		n := min(int64(len(buf)), free-leave)
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

func checkSMTPError(t *testing.T, what string, err error, code int, enh, text string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("%s: error %v, want %d %s %s", what, err, code, enh, text)
	}
	got := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	if want := fmt.Sprintf("%d %s %s", code, enh, text); got != want {
		t.Errorf("%s: %q, want %q", what, got, want)
	}
}

// assertNoLeftovers: no damaged file, no temporary file.
func assertNoLeftovers(t *testing.T, qdir string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(qdir, "corrupt"))
	if len(ents) != 0 {
		t.Errorf("corrupt/ holds %d files", len(ents))
	}
	ents, _ = os.ReadDir(filepath.Join(qdir, "msg"))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: msg/%s", e.Name())
		}
	}
}
