package test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// TestQueueCrashFiveKills: 600 messages from 12 parallel clients, each to
// two units (two transactions per message, so the per-recipient state
// file is exercised), while the daemon is killed with SIGKILL at 5 random
// moments and restarted each time. Every message that got a 250 reaches
// both units at least once. Duplicates are counted and reported; each one
// must be explained by a kill that fell between a unit's 250 and our
// bookkeeping: a message whose removal was logged (logged only once it is
// durable) before a kill must never be delivered again.
func TestQueueCrashFiveKills(t *testing.T) {
	unitA := harness.StartSink(t, harness.SinkOptions{})
	unitB := harness.StartSink(t, harness.SinkOptions{})
	m := startMX(t, mxOptions{
		recipients:   "alice@example.com OK\ncarol@example.net OK\n",
		transport:    sinkTransport(unitA, "example.com") + sinkTransport(unitB, "example.net"),
		relayDomains: `"example.com", "example.net"`,
	})
	const total, workers, kills = 600, 12, 5
	// Five kill points, spread over the load.
	var killAt []int64
	for len(killAt) < kills {
		k := int64(40 + rand.IntN(total-80))
		if !slices.ContainsFunc(killAt, func(x int64) bool { return x > k-60 && x < k+60 }) {
			killAt = append(killAt, k)
		}
	}
	slices.Sort(killAt)
	var (
		mu       sync.Mutex
		accepted = map[string]bool{} // Subject of every message that got 250
		next     atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
		killReq  = make(chan int64, kills)
	)
	// segments[i] is the daemon's log up to the i-th kill.
	var segments []string
	ctrlDone := make(chan struct{})
	go func() {
		defer close(ctrlDone)
		for k := range killReq {
			m.kill()
			segments = append(segments, m.log.String())
			t.Logf("kill %d at message %d", len(segments), k)
			time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond)
			m.restart()
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				if slices.Contains(killAt, i) {
					killReq <- i
				}
				subject := fmt.Sprintf("crash-%04d", i)
				// Retry like a real MTA until accepted; a failure before
				// the 250 is fine (the client keeps the mail).
				deadline := time.Now().Add(90 * time.Second)
				for time.Now().Before(deadline) {
					if _, err := sendMail(m.addr(), "sender@remote.test", []string{"alice@example.com", "carol@example.net"},
						subject, strings.Repeat("crash test line\r\n", 20)); err == nil {
						mu.Lock()
						accepted[subject] = true
						mu.Unlock()
						break
					}
					failures.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(killReq)
	<-ctrlDone
	if len(segments) != kills {
		t.Fatalf("%d kills, want %d", len(segments), kills)
	}
	if len(accepted) != total {
		t.Fatalf("only %d of %d messages were accepted", len(accepted), total)
	}
	t.Logf("%d sends failed during the kills and were retried by the clients", failures.Load())

	// Copies per subject and unit, by queue ID: two copies with one ID are
	// a delivery the queue repeated; copies with two IDs are a message the
	// client sent twice because a kill came after our commit but before it
	// read the 250 (unavoidable in SMTP, RFC 1047).
	type copyKey struct{ subject, unit string }
	count := func() map[copyKey]map[string]int {
		got := map[copyKey]map[string]int{}
		for unit, s := range map[string]*harness.Sink{"A": unitA, "B": unitB} {
			for _, msg := range s.Messages() {
				k := copyKey{msg.Header("Subject"), unit}
				if got[k] == nil {
					got[k] = map[string]int{}
				}
				got[k][queueIDOf(string(msg.Data))]++
			}
		}
		return got
	}
	var got map[copyKey]map[string]int
	waitUntil(t, "every accepted message at both units", 90*time.Second, func() bool {
		got = count()
		for s := range accepted {
			if len(got[copyKey{s, "A"}]) == 0 || len(got[copyKey{s, "B"}]) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond) // late duplicates
	got = count()
	// The log of each run of the daemon.
	var runs []string
	prev := 0
	for _, seg := range append(segments, m.log.String()) {
		runs = append(runs, seg[prev:])
		prev = len(seg)
	}
	repeats, resent, unexplained := 0, 0, 0
	for k, byID := range got {
		if !accepted[k.subject] {
			t.Errorf("the unit received %q, which was never accepted", k.subject)
		}
		resent += len(byID) - 1
		for id, n := range byID {
			if n <= 1 {
				continue
			}
			repeats += n - 1
			// A repeat is a bug when a run of the daemon delivered it
			// after an earlier run had logged its removal (logged once
			// durable), or when one run delivered it twice.
			rcpt := map[string]string{"A": "alice@example.com", "B": "carol@example.net"}[k.unit]
			sent := "msg=delivery id=" + id + " to=<" + rcpt + ">"
			removedIn := -1
			for r, run := range runs {
				nsent := 0
				for _, l := range strings.Split(run, "\n") {
					if strings.Contains(l, sent) && strings.Contains(l, "status=sent") {
						nsent++
					}
				}
				if nsent > 1 || (nsent > 0 && removedIn >= 0) {
					unexplained++
					t.Errorf("%s to unit %s: message %s delivered %d times in run %d (removed in run %d)", k.subject, k.unit, id, nsent, r+1, removedIn+1)
				}
				if removedIn < 0 && strings.Contains(run, "msg=removed id="+id) {
					removedIn = r
				}
			}
		}
	}
	t.Logf("all %d accepted messages reached both units; duplicates: %d deliveries repeated by the queue (kills between a unit's 250 and our bookkeeping; %d unexplained), %d copies the clients sent again (kills between our commit and the client reading the 250)",
		total, repeats, unexplained, resent)
	dups := repeats + resent
	// A kill can only repeat what was in flight: at most the process limit
	// (100) per kill.
	if dups > kills*100 {
		t.Errorf("%d duplicates: more than the deliveries that can be in flight", dups)
	}
	// And the queue is empty at the end.
	waitUntil(t, "an empty queue", 30*time.Second, func() bool {
		out, _, code := m.queueTool("list")
		return code == 0 && strings.TrimSpace(out) == "Mail queue is empty"
	})
}
