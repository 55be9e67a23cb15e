package test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/test/harness"
)

// TestKill9DuringLoad: a few hundred messages from parallel sessions, the
// daemon killed with SIGKILL at a random moment in the middle, restarted:
// every message that got a 250 reaches the unit. Duplicates are reported;
// they can only come from the window between the unit's 250 and our
// bookkeeping.
func TestKill9DuringLoad(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{recipients: "alice@example.com OK\n", transport: sinkTransport(sink, "example.com")})
	const total, workers = 300, 10
	var (
		mu       sync.Mutex
		accepted = map[string]bool{} // Subject of every message that got 250
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	send := func(subject string) error {
		c, err := smtp.Dial(m.addr())
		if err != nil {
			return err
		}
		defer c.Close()
		c.CommandTimeout = 5 * time.Second
		c.SubmissionTimeout = 5 * time.Second
		if err := c.Hello("load.remote.test"); err != nil {
			return err
		}
		if err := c.Mail("sender@remote.test", nil); err != nil {
			return err
		}
		if err := c.Rcpt("alice@example.com", nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "Subject: %s\r\n\r\n%s\r\n", subject, strings.Repeat("load test line\r\n", 20))
		if err := w.Close(); err != nil {
			return err
		}
		mu.Lock()
		accepted[subject] = true
		mu.Unlock()
		c.Quit()
		return nil
	}
	killAt := 60 + rand.IntN(120)
	killed := make(chan struct{})
	var failures atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				if int(i) == killAt {
					m.kill()
					close(killed)
				}
				subject := fmt.Sprintf("load-%04d", i)
				// Retry like a real MTA until accepted or out of time; a
				// failure before 250 is fine (the client keeps the mail).
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) {
					if send(subject) == nil {
						break
					}
					failures.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	<-killed
	time.Sleep(300 * time.Millisecond)
	m.start()
	wg.Wait()
	mu.Lock()
	n := len(accepted)
	mu.Unlock()
	if n != total {
		t.Fatalf("only %d of %d messages were accepted after the restart", n, total)
	}
	t.Logf("killed at message %d; %d sends failed and were retried by the client", killAt, failures.Load())
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]int
	for time.Now().Before(deadline) {
		got = map[string]int{}
		for _, msg := range sink.Messages() {
			got[msg.Header("Subject")]++
		}
		missing := 0
		for s := range accepted {
			if got[s] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var missing []string
	dups := 0
	for s := range accepted {
		if got[s] == 0 {
			missing = append(missing, s)
		}
		if got[s] > 1 {
			dups += got[s] - 1
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d messages that got 250 never arrived: %v", len(missing), missing)
	}
	t.Logf("all %d accepted messages arrived; %d duplicates (delivered before the kill, not yet recorded)", total, dups)
	// A kill can duplicate at most the transactions in flight at that moment.
	if dups > 50 {
		t.Errorf("%d duplicates: more than the deliveries that can be in flight", dups)
	}
}

// TestSIGTERM: the daemon stops promptly, and mail it accepted while its unit
// was down is still there after a restart.
func TestSIGTERMKeepsQueue(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	sink.Stop()
	m := startMX(t, mxOptions{recipients: "alice@example.com OK\n", transport: sinkTransport(sink, "example.com")})
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "alice@example.com", "--header", "Subject: survives"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	m.waitLog("status=deferred", 1, 20*time.Second)
	m.term(20 * time.Second)
	if !strings.Contains(m.log.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log")
	}
	sink.Start(t)
	m.start()
	msgs := sink.WaitCount(t, 1, 30*time.Second)
	if msgs[0].Header("Subject") != "survives" {
		t.Fatalf("got %q", msgs[0].Header("Subject"))
	}
}
