package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// TestQueueTools runs every `mxfront queue` command against a daemon that
// holds messages in each state (incoming, active, deferred, hold,
// corrupt), then against the spool with the daemon down.
func TestQueueTools(t *testing.T) {
	up := harness.StartSink(t, harness.SinkOptions{})
	down := harness.StartSink(t, harness.SinkOptions{})
	// The slow unit waits 30s before answering DATA: its message stays
	// active.
	slow := harness.StartSink(t, harness.SinkOptions{ExtraArgs: []string{"-w", "30"}})
	down.Stop()
	m := startMX(t, mxOptions{
		recipients: "x@down.test OK\ny@slow.test OK\nz@up.test OK\nw@up.test OK\nn@up.test OK\nmover@example.com OK\n",
		virtual:    "mover@example.com mover@down.test\n",
		transport: sinkTransport(up, "up.test") + sinkTransport(down, "down.test") + sinkTransport(slow, "slow.test") +
			sinkTransport(up, "example.com"),
		relayDomains: `"example.com", "up.test", "down.test", "slow.test"`,
	})
	// No automatic retries (the test flushes), one message in delivery at
	// a time (so that new mail waits as "incoming"), and a damaged file
	// for recovery to move aside.
	m.term(20 * time.Second)
	m.editConfig(`minimal_backoff_time = "1s"`, `minimal_backoff_time = "1h"`,
		`maximal_backoff_time = "2s"`, `maximal_backoff_time = "1h"`,
		"[log]", "qmgr_message_active_limit = 1\n[log]")
	const damaged = "0000000001AB"
	if err := os.WriteFile(filepath.Join(m.dir, "queue", "msg", damaged), []byte("MXFQ not a queue file"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.restart()
	m.waitLog("damaged queue file moved to corrupt/", 1, 5*time.Second)

	send := func(from, to, subject string) string {
		t.Helper()
		id, err := sendMail(m.addr(), from, []string{to}, subject, "body of "+subject)
		if err != nil || id == "" {
			t.Fatalf("send %s: %q %v", subject, id, err)
		}
		return id
	}
	type jsonItem struct {
		QueueName   string `json:"queue_name"`
		QueueID     string `json:"queue_id"`
		ArrivalTime int64  `json:"arrival_time"`
		MessageSize int64  `json:"message_size"`
		Sender      string `json:"sender"`
		Recipients  []struct {
			Address     string `json:"address"`
			DelayReason string `json:"delay_reason"`
			Unit        string `json:"unit"`
		} `json:"recipients"`
		Attempts int    `json:"attempts"`
		Reason   string `json:"reason"`
	}
	listJSON := func(args ...string) map[string]jsonItem {
		t.Helper()
		out := m.mustQueueTool(0, append([]string{"list", "-json"}, args...)...)
		items := map[string]jsonItem{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l == "" {
				continue
			}
			var it jsonItem
			if err := json.Unmarshal([]byte(l), &it); err != nil {
				t.Fatalf("list -json line %q: %v", l, err)
			}
			items[it.QueueID] = it
		}
		return items
	}
	stateOf := func(id string) string { return listJSON()[id].QueueName }

	// Every state.
	d := send("sender@remote.test", "x@down.test", "tools D")
	m.waitLog("id="+d+" to=<x@down.test>", 1, 10*time.Second)
	waitUntil(t, "D deferred", 10*time.Second, func() bool { return stateOf(d) == "deferred" })
	s := send("sender@remote.test", "y@slow.test", "tools S")
	waitUntil(t, "S active", 10*time.Second, func() bool { return stateOf(s) == "active" })
	i := send("sender@remote.test", "z@up.test", "tools I")
	h := send("other@remote.test", "w@up.test", "tools H")
	mv := send("sender@remote.test", "mover@example.com", "tools M")
	if out := m.mustQueueTool(0, "hold", h, "-reason", "checking"); out != h+": held\n" {
		t.Errorf("hold: %q", out)
	}
	items := listJSON()
	for id, want := range map[string]string{d: "deferred", s: "active", i: "incoming", h: "hold", mv: "incoming", damaged: "corrupt"} {
		if got := items[id].QueueName; got != want {
			t.Errorf("%s: queue_name %q, want %q", id, got, want)
		}
	}
	if it := items[d]; it.Attempts != 1 || it.Sender != "sender@remote.test" || len(it.Recipients) != 1 ||
		!strings.Contains(it.Recipients[0].DelayReason, "Connection refused") || it.Recipients[0].Unit != "smtp:["+strings.Replace(down.Addr(), ":", "]:", 1) {
		t.Errorf("deferred item %+v", it)
	}
	if it := items[h]; it.Reason != "checking" {
		t.Errorf("held item %+v", it)
	}

	// mailq layout.
	out := m.mustQueueTool(0, "list")
	mustContain(t, "mailq", out,
		"-Queue ID-    --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
		s+"*", h+"!", damaged+"#", "(hold: checking)", "Connection refused)\n", " 6 Requests.\n")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, d+" ") && !strings.HasSuffix(l, "  sender@remote.test") {
			t.Errorf("mailq line %q", l)
		}
	}

	// Filters.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-state", "hold"}, []string{h}},
		{[]string{"-state", "incoming,active"}, []string{s, i, mv}},
		{[]string{"-state", "corrupt"}, []string{damaged}},
		{[]string{"-unit", down.Addr()}, []string{d, mv}},
		{[]string{"-sender", "other@remote.test"}, []string{h}},
		{[]string{"-recipient", "z@up.test"}, []string{i}},
		{[]string{"-recipient", "mover@example.com"}, []string{mv}},
		{[]string{"-older-than", "1h"}, nil},
	} {
		got := listJSON(tc.args...)
		if len(got) != len(tc.want) {
			t.Errorf("list %v: %d messages, want %v", tc.args, len(got), tc.want)
		}
		for _, id := range tc.want {
			if _, ok := got[id]; !ok {
				t.Errorf("list %v lacks %s", tc.args, id)
			}
		}
	}
	if out := m.mustQueueTool(0, "list", "-older-than", "1h"); out != "Mail queue is empty\n" {
		t.Errorf("empty list: %q", out)
	}

	// show
	out = m.mustQueueTool(0, "show", d)
	mustContain(t, "show", out, "*** ENVELOPE RECORDS deferred/"+d+" ***", "sender: sender@remote.test",
		"recipient: x@down.test (pending)", "*** DELIVERY HISTORY "+d+" ***", " deferred to=<x@down.test> attempt=1 ",
		"*** MESSAGE CONTENTS "+d+" ***", "Subject: tools D\n", "\nbody of tools D\n", "*** MESSAGE FILE END "+d+" ***")
	out = m.mustQueueTool(0, "show", "-h", d)
	if !strings.Contains(out, "Subject: tools D") || strings.Contains(out, "body of") || strings.Contains(out, "ENVELOPE") {
		t.Errorf("show -h:\n%s", out)
	}
	if out = m.mustQueueTool(0, "show", "-b", d); out != "body of tools D\n" {
		t.Errorf("show -b: %q", out)
	}
	out = m.mustQueueTool(0, "show", "-e", d)
	if !strings.Contains(out, "ENVELOPE RECORDS") || strings.Contains(out, "Subject:") {
		t.Errorf("show -e:\n%s", out)
	}
	var shown struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Content string `json:"content"`
		History []struct {
			Type string `json:"type"`
		} `json:"history"`
	}
	if err := json.Unmarshal([]byte(m.mustQueueTool(0, "show", "-json", d)), &shown); err != nil ||
		shown.ID != d || shown.State != "deferred" || !strings.Contains(shown.Content, "Subject: tools D\r\n") || len(shown.History) != 1 {
		t.Errorf("show -json: %+v %v", shown, err)
	}
	m.mustQueueTool(0, "show", damaged)
	m.mustQueueTool(1, "show", "0000000000ZZ")
	m.mustQueueTool(2, "show")

	// shape
	out = m.mustQueueTool(0, "shape", "-by", "domain")
	mustContain(t, "shape", out, "T 5 10 20 40 80 160 320 640 1280 1280+", "TOTAL 6 6", "up.test 2 2", "down.test 2 2", "slow.test 1 1", "(corrupt) 1 1")
	var sh struct {
		Rows []struct {
			Name  string `json:"name"`
			Total int    `json:"total"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(m.mustQueueTool(0, "shape", "-json", "-state", "deferred,incoming,active")), &sh); err != nil ||
		len(sh.Rows) < 2 || sh.Rows[0].Name != "TOTAL" || sh.Rows[0].Total != 4 {
		t.Errorf("shape -json: %+v %v", sh, err)
	}

	// The slow unit gives up: S is deferred, and the incoming mail moves.
	slow.Stop()
	up.WaitCount(t, 1, 20*time.Second)
	waitUntil(t, "S and M deferred", 20*time.Second, func() bool {
		it := listJSON()
		return it[s].QueueName == "deferred" && it[mv].QueueName == "deferred"
	})

	// release
	if out := m.mustQueueTool(0, "release", h); out != h+": released\n" {
		t.Errorf("release: %q", out)
	}
	up.WaitCount(t, 2, 20*time.Second)
	m.mustQueueTool(1, "release", d) // not on hold

	// requeue: the mailbox moved from the down unit to the up unit.
	os.WriteFile(filepath.Join(m.dir, "virtual"), []byte("mover@example.com mover@up.test\n"), 0o644)
	m.signal(syscall.SIGHUP)
	m.waitLog("reload: tables reloaded", 1, 10*time.Second)
	out = m.mustQueueTool(0, "requeue", "ALL", "-unit", down.Addr())
	mustContain(t, "requeue", out, d+": requeued\n", mv+": requeued\n")
	msgs := up.WaitCount(t, 3, 20*time.Second)
	if last := msgs[2]; last.Header("Subject") != "tools M" || strings.Join(last.Rcpts, ",") != "mover@up.test" {
		t.Errorf("requeued message at the up unit: %q to %v", last.Header("Subject"), last.Rcpts)
	}
	m.waitLog("msg=requeued id="+mv, 1, 10*time.Second)
	waitUntil(t, "D deferred again", 10*time.Second, func() bool { return listJSON()[d].Attempts == 2 })

	// flush -unit: the down unit is back.
	down.Start(t)
	m.mustQueueTool(0, "flush", "-unit", down.Addr())
	down.WaitCount(t, 1, 20*time.Second)

	// delete
	if out := m.mustQueueTool(0, "delete", s); out != s+": deleted\n" {
		t.Errorf("delete: %q", out)
	}
	if out := m.mustQueueTool(0, "delete", "ALL", "-state", "corrupt"); out != damaged+": deleted\n" {
		t.Errorf("delete ALL -state corrupt: %q", out)
	}
	_, errOut, code := m.queueTool("delete", "0000000000ZZ")
	if code != 1 || !strings.Contains(errOut, "0000000000ZZ: no such message") {
		t.Errorf("delete of an unknown ID: exit %d %q", code, errOut)
	}

	// Unit hold.
	m.mustQueueTool(0, "hold", "-unit", up.Addr(), "-reason", "maintenance")
	if out := m.mustQueueTool(0, "hold"); !strings.HasPrefix(out, up.Addr()+"\t") || !strings.HasSuffix(out, "\tmaintenance\n") {
		t.Errorf("unit holds: %q", out)
	}
	n := send("sender@remote.test", "n@up.test", "tools N")
	waitUntil(t, "N deferred by the unit hold", 10*time.Second, func() bool {
		it := listJSON()[n]
		return it.QueueName == "deferred" && it.Recipients[0].DelayReason == "450 4.3.2 unit on hold: maintenance"
	})
	if out := m.mustQueueTool(0, "release", "-unit", up.Addr()); out != "unit "+up.Addr()+": released, 1 messages retried\n" {
		t.Errorf("release -unit: %q", out)
	}
	up.WaitCount(t, 4, 20*time.Second)
	m.mustQueueTool(1, "release", "-unit", "nosuch.test")
	if out := m.mustQueueTool(0, "flush"); out != "deferred: 0 messages retried now\n" {
		t.Errorf("flush: %q", out)
	}
	waitUntil(t, "an empty queue", 10*time.Second, func() bool { return m.mustQueueTool(0, "list") == "Mail queue is empty\n" })

	// Usage errors.
	m.mustQueueTool(2, "frobnicate")
	m.mustQueueTool(2, "delete")
	m.mustQueueTool(2, "list", "-state", "bogus")
	m.mustQueueTool(2, "hold", "-sender", "x@y") // filters without ALL
	m.mustQueueTool(2, "shape", "-by", "color")

	// With the daemon down, the tools work on the spool.
	down.Stop()
	p := send("sender@remote.test", "x@down.test", "tools P")
	waitUntil(t, "P deferred", 10*time.Second, func() bool { return stateOf(p) == "deferred" })
	m.term(20 * time.Second)
	if out := m.mustQueueTool(0, "list"); !strings.Contains(out, p+" ") || !strings.Contains(out, "Connection refused") {
		t.Errorf("offline list:\n%s", out)
	}
	if out := m.mustQueueTool(0, "hold", p); out != p+": held\n" {
		t.Errorf("offline hold: %q", out)
	}
	if got := listJSON("-state", "hold"); len(got) != 1 {
		t.Errorf("offline list -state hold: %v", got)
	}
	m.mustQueueTool(0, "release", p)
	if out := m.mustQueueTool(0, "flush", p); out != p+": flushed (when the daemon starts)\n" {
		t.Errorf("offline flush: %q", out)
	}
	// The same without a configuration file.
	cmd := exec.Command(m.bin, "queue", "-queue-directory", filepath.Join(m.dir, "queue"), "list")
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if b, err := cmd.Output(); err != nil || !strings.Contains(string(b), p+" ") {
		t.Errorf("queue -queue-directory list: %v\n%s", err, b)
	}
	down.Start(t)
	m.restart()
	down.WaitCount(t, 2, 20*time.Second)
}
