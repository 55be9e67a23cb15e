package test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// TestQueueUnitOutage: unit A is down for longer than two retry intervals
// (backoff 1s..2s) while unit B works. B's mail, including the B half of
// messages for both units, is delivered at once all along; A's mail is
// deferred (A becomes a dead destination, so it is not hammered), never
// bounced, and all of it arrives, once, when A is back.
func TestQueueUnitOutage(t *testing.T) {
	unitA := harness.StartSink(t, harness.SinkOptions{})
	unitB := harness.StartSink(t, harness.SinkOptions{})
	senders := harness.StartSink(t, harness.SinkOptions{}) // where DSNs would go
	unitA.Stop()
	m := startMX(t, mxOptions{
		recipients: "a1@example.com OK\na2@example.com OK\nb1@example.net OK\nb2@example.net OK\n",
		transport: sinkTransport(unitA, "example.com") + sinkTransport(unitB, "example.net") +
			sinkTransport(senders, "remote.test"),
		relayDomains: `"example.com", "example.net"`,
	})
	start := time.Now()
	var aIDs []string
	sentB := 0
	send := func(subject string, rcpts ...string) {
		t.Helper()
		id, err := sendMail(m.addr(), "sender@remote.test", rcpts, subject, "outage test")
		if err != nil {
			t.Fatalf("send %s: %v", subject, err)
		}
		for _, r := range rcpts {
			if strings.HasSuffix(r, "@example.com") {
				aIDs = append(aIDs, id)
				break
			}
		}
		for _, r := range rcpts {
			if strings.HasSuffix(r, "@example.net") {
				sentB++
				break
			}
		}
	}
	// B keeps getting its mail within a second or two all through A's
	// outage.
	waitB := func() {
		t.Helper()
		t0 := time.Now()
		unitB.WaitCount(t, sentB, 10*time.Second)
		if d := time.Since(t0); d > 3*time.Second {
			t.Errorf("unit B waited %v for its mail during A's outage", d)
		}
	}
	for i := range 4 {
		send(fmt.Sprintf("A only %d", i), "a1@example.com", "a2@example.com")
		send(fmt.Sprintf("B only %d", i), "b1@example.net")
		send(fmt.Sprintf("both %d", i), "a2@example.com", "b2@example.net")
	}
	waitB()

	// Longer than two retry intervals: every A message has had at least
	// three attempts (or was suspended as a dead destination).
	attempts := func(id string) int {
		return len(regexp.MustCompile(`msg=delivery id=`+id+` to=<a\d@example.com>.*status=deferred`).FindAllString(m.log.String(), -1))
	}
	for _, id := range aIDs {
		waitUntil(t, "three deferrals of "+id, 30*time.Second, func() bool { return attempts(id) >= 3 })
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("outage lasted only %v", d)
	}
	// Meanwhile B still works.
	send("B during the outage", "b1@example.net", "b2@example.net")
	waitB()

	m.waitLog("destination dead; delivery temporarily suspended", 1, 5*time.Second)
	m.waitLog("delivery temporarily suspended: ", 1, 5*time.Second)
	if log := m.log.String(); strings.Contains(log, "status=bounced") || strings.Contains(log, "status=expired") {
		t.Fatal("mail bounced during the outage")
	}
	// The tools see A's mail deferred for unit A.
	out := m.mustQueueTool(0, "list", "-unit", unitA.Addr())
	if !strings.Contains(out, fmt.Sprintf(" in %d Requests.", len(aIDs))) || strings.Contains(out, "example.net") {
		t.Errorf("queue list -unit %s:\n%s", unitA.Addr(), out)
	}

	unitA.Start(t)
	m.mustQueueTool(0, "flush", "-unit", unitA.Addr())
	want := 0
	for i := 0; i < 4; i++ {
		want += 2 // "A only": one transaction, two recipients; "both": one
	}
	unitA.WaitCount(t, want, 30*time.Second)
	time.Sleep(time.Second)
	msgs := unitA.Messages()
	seen := map[string]int{}
	for _, msg := range msgs {
		seen[msg.Header("Subject")]++
	}
	for i := range 4 {
		for _, s := range []string{fmt.Sprintf("A only %d", i), fmt.Sprintf("both %d", i)} {
			if seen[s] != 1 {
				t.Errorf("unit A got %q %d times, want once", s, seen[s])
			}
		}
	}
	if n := len(unitB.Messages()); n != sentB {
		t.Errorf("unit B got %d messages, want %d", n, sentB)
	}
	if n := len(senders.Messages()); n != 0 {
		t.Errorf("%d notifications went to the sender", n)
	}
	waitUntil(t, "an empty queue", 10*time.Second, func() bool {
		out, _, _ := m.queueTool("list")
		return strings.TrimSpace(out) == "Mail queue is empty"
	})
}
