package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

func TestDeliverHappyPath(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	h := startQueue(t, testConfig(dir), del)
	env := testEnv("alice@sender.test", "bob@unit1.test")
	body := testBody("hello")
	id := commit(t, h.q, env, body)

	if env.ID != id || env.Size != int64(len(body)) {
		t.Errorf("Commit set ID %q Size %d, want %q %d", env.ID, env.Size, id, len(body))
	}
	waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 1 })
	calls := del.snapshot()
	if len(calls) != 1 {
		t.Fatalf("got %d transactions, want 1", len(calls))
	}
	c := calls[0]
	if c.id != id || c.dest != "lmtp:[unit1.test]" || c.body != body || c.from != "alice@sender.test" ||
		!slices.Equal(c.rcpts, []string{"bob@unit1.test"}) {
		t.Errorf("transaction = %+v", c)
	}
	if got := files(t, dir, dirMsg); len(got) != 0 {
		t.Errorf("msg/ still holds %v", got)
	}
	if s := h.q.Stats(); s.Total != 0 {
		t.Errorf("Stats = %+v, want empty", s)
	}
	lines := h.logs.lines("delivery")
	if len(lines) != 1 {
		t.Fatalf("delivery log lines: %v", lines)
	}
	l := lines[0]
	for k, want := range map[string]any{"id": id, "to": "<bob@unit1.test>", "relay": "unit.test[192.0.2.1]:24",
		"dsn": "2.0.0", "status": "sent", "reply": "250 2.0.0 Ok"} {
		if l[k] != want {
			t.Errorf("log %s = %v, want %v", k, l[k], want)
		}
	}
	if d, _ := l["delays"].(string); strings.Count(d, "/") != 3 || !strings.HasSuffix(d, "/0.01/0.02") {
		t.Errorf("delays = %q", d)
	}
	if _, ok := l["delay"].(float64); !ok {
		t.Errorf("delay = %v", l["delay"])
	}
	if q := h.logs.lines("queued"); len(q) != 1 || q[0]["id"] != id || q[0]["nrcpt"] != 1.0 {
		t.Errorf("queued log = %v", q)
	}
}

func TestGroupingAndRecipientLimit(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.RecipientLimit = 2
	h := startQueue(t, cfg, del)
	env := testEnv("alice@sender.test",
		"a1@unit1.test", "b1@unit2.test", "a2@unit1.test", "a3@unit1.test", "a4@unit1.test", "a5@unit1.test")
	commit(t, h.q, env, testBody("group"))
	waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 1 })

	byDest := map[string][][]string{}
	for _, c := range del.snapshot() {
		byDest[c.dest] = append(byDest[c.dest], c.rcpts)
	}
	var sizes []int
	var all []string
	for _, rc := range byDest["lmtp:[unit1.test]"] {
		sizes = append(sizes, len(rc))
		all = append(all, rc...)
	}
	slices.Sort(sizes)
	slices.Sort(all)
	if !slices.Equal(sizes, []int{1, 2, 2}) {
		t.Errorf("unit1 transaction sizes %v, want [1 2 2]", sizes)
	}
	if !slices.Equal(all, []string{"a1@unit1.test", "a2@unit1.test", "a3@unit1.test", "a4@unit1.test", "a5@unit1.test"}) {
		t.Errorf("unit1 recipients %v", all)
	}
	if got := byDest["lmtp:[unit2.test]"]; len(got) != 1 || !slices.Equal(got[0], []string{"b1@unit2.test"}) {
		t.Errorf("unit2 transactions %v", got)
	}
}

func TestDeferThenDeliver(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	del.set("bob@unit1.test", tmp451, tmp451, ok250)
	cfg := testConfig(dir)
	h := startQueue(t, cfg, del)
	id := commit(t, h.q, testEnv("alice@sender.test", "bob@unit1.test"), testBody("retry"))

	waitFor(t, "first deferral", func() bool { return len(h.logs.lines("delivery")) >= 1 })
	waitFor(t, "state file", func() bool {
		_, err := os.Stat(filepath.Join(dir, dirMsg, id+stateSuffix))
		return err == nil
	})
	if s := h.q.Stats(); s.Deferred+s.Active != 1 {
		t.Errorf("Stats after deferral = %+v", s)
	}
	waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 1 })
	calls := del.snapshot()
	if len(calls) != 3 {
		t.Fatalf("%d attempts, want 3", len(calls))
	}
	// Backoff doubles: >= 100ms, then >= 200ms (jitter only adds).
	if d := calls[1].at.Sub(calls[0].at); d < cfg.MinimalBackoff {
		t.Errorf("second attempt after %v, want >= %v", d, cfg.MinimalBackoff)
	}
	if d := calls[2].at.Sub(calls[1].at); d < 2*cfg.MinimalBackoff {
		t.Errorf("third attempt after %v, want >= %v", d, 2*cfg.MinimalBackoff)
	}
	var statuses []string
	for _, l := range h.logs.lines("delivery") {
		statuses = append(statuses, l["status"].(string))
	}
	if !slices.Equal(statuses, []string{"deferred", "deferred", "sent"}) {
		t.Errorf("statuses %v", statuses)
	}
	if n := len(h.logs.lines("sender non-delivery notification")); n != 0 {
		t.Errorf("%d DSNs for a deferred-then-delivered message", n)
	}
}

func TestBackoff(t *testing.T) {
	q := &Queue{cfg: Config{MinimalBackoff: 300 * time.Second, MaximalBackoff: 4000 * time.Second}}
	for _, tc := range []struct {
		n    int
		base time.Duration
	}{{1, 300 * time.Second}, {2, 600 * time.Second}, {3, 1200 * time.Second}, {4, 2400 * time.Second},
		{5, 4000 * time.Second}, {50, 4000 * time.Second}} {
		for range 20 {
			d := q.backoff(tc.n)
			if d < tc.base || d > tc.base+tc.base/10 {
				t.Errorf("backoff(%d) = %v, want in [%v, %v]", tc.n, d, tc.base, tc.base+tc.base/10)
			}
		}
	}
}

func TestBounceDSN(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	del.set("bob@unit1.test", perm550)
	del.set("carol@unit1.test", perm550)
	h := startQueue(t, testConfig(dir), del)
	env := testEnv("alice@sender.test", "bob@unit1.test", "carol@unit1.test", "dave@unit1.test")
	env.EnvID = "QQ314159"
	env.Rcpts[0].ORCPT = "rfc822;Bob@Unit1.test"
	env.Rcpts[1].Orig = envelope.MustParse("list@unit1.test")
	body := testBody("bounce me")
	id := commit(t, h.q, env, body)

	waitFor(t, "DSN delivery", func() bool { return len(callsTo(del.snapshot(), "alice@sender.test")) == 1 })
	waitFor(t, "both removed", func() bool { return len(h.logs.lines("removed")) == 2 })
	dsns := callsTo(del.snapshot(), "alice@sender.test")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1", len(dsns))
	}
	d := dsns[0]
	if d.from != "" || d.env.Rcpts[0].Addr.String() != "alice@sender.test" {
		t.Errorf("DSN envelope from %q to %v", d.from, d.rcpts)
	}
	r := parseDSN(t, d.body)
	if r.header.Get("From") != "MAILER-DAEMON@mx.test (Mail Delivery System)" ||
		r.header.Get("To") != "alice@sender.test" ||
		r.header.Get("Subject") != "Undelivered Mail Returned to Sender" ||
		r.header.Get("Auto-Submitted") != "auto-replied" ||
		r.header.Get("Message-Id") == "" || r.header.Get("Date") == "" || r.header.Get("Mime-Version") != "1.0" {
		t.Errorf("DSN header: %v", r.header)
	}
	if !strings.Contains(r.text, "This is the mail system at host mx.test.") ||
		!strings.Contains(r.text, "I'm sorry to have to inform you that your message could not") ||
		!strings.Contains(r.text, "<bob@unit1.test>: host unit.test[192.0.2.1] said: 550 5.1.1 user unknown") ||
		!strings.Contains(r.text, "<carol@unit1.test> (expanded from <list@unit1.test>)") ||
		strings.Contains(r.text, "dave") {
		t.Errorf("DSN text part:\n%s", r.text)
	}
	if got := r.perMsg.Get("Reporting-MTA"); got != "dns; mx.test" {
		t.Errorf("Reporting-MTA %q", got)
	}
	if got := r.perMsg.Get("X-Postfix-Queue-ID"); got != id {
		t.Errorf("X-Postfix-Queue-ID %q, want %q", got, id)
	}
	if got := r.perMsg.Get("Original-Envelope-Id"); got != "QQ314159" {
		t.Errorf("Original-Envelope-Id %q", got)
	}
	if got := r.perMsg.Get("Arrival-Date"); got == "" {
		t.Error("no Arrival-Date")
	}
	if len(r.perRcpt) != 2 {
		t.Fatalf("%d recipient blocks, want 2", len(r.perRcpt))
	}
	b := r.perRcpt[0]
	for k, want := range map[string]string{
		"Final-Recipient":    "rfc822; bob@unit1.test",
		"Original-Recipient": "rfc822; Bob@Unit1.test",
		"Action":             "failed",
		"Status":             "5.1.1",
		"Remote-MTA":         "dns; unit.test",
		"Diagnostic-Code":    "smtp; 550 5.1.1 user unknown",
	} {
		if got := b.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if got := r.perRcpt[1].Get("Original-Recipient"); got != "" {
		t.Errorf("Original-Recipient without ORCPT: %q", got)
	}
	if r.origType != "message/rfc822" || r.orig != "Return-Path: <alice@sender.test>\r\n"+body {
		t.Errorf("original part %s:\n%q", r.origType, r.orig)
	}
	// The DSN itself was logged and the original's bounced recipients too.
	n := 0
	for _, l := range h.logs.lines("delivery") {
		if l["status"] == "bounced" && l["id"] == id {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d bounced log lines, want 2", n)
	}
}

func TestBounceReturnsHeadersOnly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ret   string
		limit int
	}{
		{"RET=HDRS", "HDRS", 0},
		{"over bounce_size_limit", "FULL", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			del := newFakeDeliverer()
			del.set("bob@unit1.test", perm550)
			cfg := testConfig(t.TempDir())
			cfg.BounceSizeLimit = tc.limit
			h := startQueue(t, cfg, del)
			env := testEnv("alice@sender.test", "bob@unit1.test")
			env.Ret = tc.ret
			body := testBody("big") + strings.Repeat("x", 200) + "\r\n"
			commit(t, h.q, env, body)
			waitFor(t, "DSN", func() bool { return len(callsTo(del.snapshot(), "alice@sender.test")) == 1 })
			r := parseDSN(t, callsTo(del.snapshot(), "alice@sender.test")[0].body)
			hdrs := body[:strings.Index(body, "\r\n\r\n")+2]
			if r.origType != "text/rfc822-headers" || r.orig != "Return-Path: <alice@sender.test>\r\n"+hdrs {
				t.Errorf("original part %s:\n%q", r.origType, r.orig)
			}
		})
	}
}

func TestNoDSN(t *testing.T) {
	for _, tc := range []struct {
		name   string
		from   string
		notify envelope.Notify
		log    string
	}{
		{"double-bounce sender", "double-bounce@mx.test", 0, "undeliverable postmaster notification discarded"},
		{"NOTIFY=NEVER", "alice@sender.test", envelope.NotifyNever, "non-delivery notification suppressed by NOTIFY"},
		{"NOTIFY=SUCCESS", "alice@sender.test", envelope.NotifySuccess, "non-delivery notification suppressed by NOTIFY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			del := newFakeDeliverer()
			del.set("bob@unit1.test", perm550)
			h := startQueue(t, testConfig(dir), del)
			env := testEnv(tc.from, "bob@unit1.test")
			env.Rcpts[0].Notify = tc.notify
			commit(t, h.q, env, testBody("no dsn"))
			waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 1 })
			if n := len(h.logs.lines(tc.log)); n != 1 {
				t.Errorf("%d %q log lines", n, tc.log)
			}
			time.Sleep(50 * time.Millisecond)
			if calls := del.snapshot(); len(calls) != 1 {
				t.Errorf("%d transactions, want only the original", len(calls))
			}
			if s := h.q.Stats(); s.Total != 0 {
				t.Errorf("queue not empty: %+v", s)
			}
		})
	}
}

func TestMixedResults(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	del.set("ok@unit1.test", ok250)
	del.set("bad@unit1.test", perm550)
	del.set("busy@unit1.test", tmp451, ok250)
	h := startQueue(t, testConfig(dir), del)
	id := commit(t, h.q, testEnv("alice@sender.test", "ok@unit1.test", "bad@unit1.test", "busy@unit1.test"), testBody("mixed"))

	waitFor(t, "original removed", func() bool {
		for _, l := range h.logs.lines("removed") {
			if l["id"] == id {
				return true
			}
		}
		return false
	})
	calls := del.snapshot()
	for rcpt, want := range map[string]int{"ok@unit1.test": 1, "bad@unit1.test": 1, "busy@unit1.test": 2} {
		if got := len(callsTo(calls, rcpt)); got != want {
			t.Errorf("%s: %d attempts, want %d", rcpt, got, want)
		}
	}
	waitFor(t, "DSN", func() bool { return len(callsTo(del.snapshot(), "alice@sender.test")) == 1 })
	r := parseDSN(t, callsTo(del.snapshot(), "alice@sender.test")[0].body)
	if len(r.perRcpt) != 1 || r.perRcpt[0].Get("Final-Recipient") != "rfc822; bad@unit1.test" {
		t.Errorf("DSN recipients: %v", r.perRcpt)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(callsTo(del.snapshot(), "alice@sender.test")); n != 1 {
		t.Errorf("%d DSNs, want 1", n)
	}
}

func TestRoutes(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	h := startQueue(t, testConfig(dir), del)
	id := commit(t, h.q, testEnv("alice@sender.test", "x@bad.test", "y@later.test", "z@broken.test"), testBody("routes"))
	waitFor(t, "three results", func() bool { return len(h.logs.lines("delivery")) >= 3 })
	got := map[string]string{}
	for _, l := range h.logs.lines("delivery") {
		if l["id"] == id {
			got[l["to"].(string)] = l["status"].(string) + " " + l["reply"].(string)
		}
	}
	want := map[string]string{
		"<x@bad.test>":    "bounced 550 5.1.1 no such user here",
		"<y@later.test>":  "deferred 450 4.3.2 try later",
		"<z@broken.test>": "deferred 451 4.3.0 Temporary lookup failure",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	waitFor(t, "DSN", func() bool { return len(callsTo(del.snapshot(), "alice@sender.test")) == 1 })
	for _, c := range del.snapshot() {
		if c.id == id {
			t.Errorf("error:/retry: recipients reached the deliverer: %v", c.rcpts)
		}
	}
}

func TestLifetimeExpiry(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	del := newFakeDeliverer()
	del.set("bob@unit1.test", tmp451)
	cfg := testConfig(dir)
	cfg.Now = clock.Now
	cfg.MaxLifetime = time.Hour
	cfg.MinimalBackoff = time.Minute
	cfg.MaximalBackoff = time.Minute
	h := startQueue(t, cfg, del)
	env := testEnv("alice@sender.test", "bob@unit1.test")
	env.Received = clock.Now()
	id := commit(t, h.q, env, testBody("expire"))

	waitFor(t, "first deferral", func() bool { return h.q.Stats().Deferred == 1 })
	clock.Add(30 * time.Minute)
	h.q.Flush()
	waitFor(t, "second deferral", func() bool { return len(del.snapshot()) == 2 && h.q.Stats().Deferred == 1 })
	if n := len(h.logs.lines("sender non-delivery notification")); n != 0 {
		t.Fatalf("bounced before maximal_queue_lifetime")
	}
	clock.Add(31 * time.Minute)
	h.q.Flush()
	waitFor(t, "DSN", func() bool { return len(callsTo(del.snapshot(), "alice@sender.test")) == 1 })
	waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 2 })
	var expired []map[string]any
	for _, l := range h.logs.lines("delivery") {
		if l["status"] == "expired" {
			expired = append(expired, l)
		}
	}
	if len(expired) != 1 || expired[0]["id"] != id || expired[0]["dsn"] != "5.2.0" ||
		expired[0]["reply"] != "451 4.2.0 mailbox busy" {
		t.Errorf("expired log lines: %v", expired)
	}
	r := parseDSN(t, callsTo(del.snapshot(), "alice@sender.test")[0].body)
	if len(r.perRcpt) != 1 || r.perRcpt[0].Get("Status") != "5.2.0" || r.perRcpt[0].Get("Action") != "failed" ||
		r.perRcpt[0].Get("Diagnostic-Code") != "smtp; 451 4.2.0 mailbox busy" {
		t.Errorf("DSN recipient block: %v", r.perRcpt)
	}
}

func TestBounceLifetimeForNullSender(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	del := newFakeDeliverer()
	del.set("bob@unit1.test", tmp451)
	cfg := testConfig(t.TempDir())
	cfg.Now = clock.Now
	cfg.MaxLifetime = 10 * time.Hour
	cfg.BounceLifetime = time.Hour
	h := startQueue(t, cfg, del)
	env := testEnv("", "bob@unit1.test")
	env.Received = clock.Now().Add(-2 * time.Hour)
	commit(t, h.q, env, testBody("old bounce"))
	// The bounce expires after bounce_queue_lifetime; a bounce of a bounce
	// goes to 2bounce_notice_recipient, from double_bounce_sender.
	waitFor(t, "removal", func() bool { return len(h.logs.lines("removed")) == 2 })
	if n := len(h.logs.lines("postmaster non-delivery notification")); n != 1 {
		t.Errorf("postmaster notification not logged")
	}
	calls := callsTo(del.snapshot(), "postmaster@mx.test")
	if len(calls) != 1 || calls[0].from != "double-bounce@mx.test" {
		t.Fatalf("postmaster notification: %+v", calls)
	}
	if !strings.Contains(calls[0].body, "Subject: Postmaster Copy: Undelivered Mail") ||
		!strings.Contains(calls[0].body, "Subject: old bounce") {
		t.Errorf("postmaster notification:\n%s", calls[0].body)
	}
}

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	// First life: commit without running, leave a half-written file.
	h1 := openQueue(t, cfg, newFakeDeliverer())
	id1 := commit(t, h1.q, testEnv("alice@sender.test", "bob@unit1.test"), testBody("one"))
	id2 := commit(t, h1.q, testEnv("alice@sender.test", "carol@unit1.test", "dave@unit2.test"), testBody("two"))
	half, err := h1.q.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(half, "Subject: half\r\n")
	half.w.Flush()
	h1.stop()

	// A damaged file with a valid ID name, and a truncated copy of a good one.
	badID := encodeID(1)
	if err := os.WriteFile(filepath.Join(dir, dirMsg, badID), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, dirMsg, id1))
	truncID := encodeID(2)
	os.WriteFile(filepath.Join(dir, dirMsg, truncID), good[:len(good)-5], 0o600)
	// An orphaned state file.
	os.WriteFile(filepath.Join(dir, dirMsg, encodeID(3)+stateSuffix), []byte("x\n"), 0o600)

	del := newFakeDeliverer()
	h2 := startQueue(t, cfg, del)
	waitFor(t, "both delivered", func() bool { return len(h2.logs.lines("removed")) == 2 })
	time.Sleep(50 * time.Millisecond)
	calls := del.snapshot()
	for _, rcpt := range []string{"bob@unit1.test", "carol@unit1.test", "dave@unit2.test"} {
		if n := len(callsTo(calls, rcpt)); n != 1 {
			t.Errorf("%s delivered %d times, want 1", rcpt, n)
		}
	}
	if len(calls) != 3 {
		t.Errorf("%d transactions, want 3", len(calls))
	}
	for _, c := range calls {
		if c.id != id1 && c.id != id2 {
			t.Errorf("delivered unexpected message %s", c.id)
		}
	}
	if got := files(t, dir, dirIncoming); len(got) != 0 {
		t.Errorf("incoming/ not cleaned: %v", got)
	}
	for _, f := range files(t, dir, dirMsg) {
		if strings.HasSuffix(f, tmpSuffix) {
			t.Errorf("half-written %s left in msg/", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, dirMsg, half.ID()+tmpSuffix)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("half-written file of %s not removed: %v", half.ID(), err)
	}
	corrupt := files(t, dir, dirCorrupt)
	if !slices.Equal(corrupt, []string{badID, truncID}) {
		t.Errorf("corrupt/ = %v, want [%s %s]", corrupt, badID, truncID)
	}
	if got := files(t, dir, dirMsg); len(got) != 0 {
		t.Errorf("msg/ = %v, want empty", got)
	}
	if n := len(h2.logs.lines("damaged queue file moved to corrupt/")); n != 2 {
		t.Errorf("%d corrupt log lines, want 2", n)
	}
	// New IDs sort after everything recovered.
	if id := commit(t, h2.q, testEnv("a@sender.test", "b@unit1.test"), "x\r\n"); id <= id2 {
		t.Errorf("new ID %s does not sort after %s", id, id2)
	}
}

// snapshotSpool copies the spool as it is on disk (what a crash would
// leave), without the lock file.
func snapshotSpool(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		if rel == lockName {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

func TestRestartAfterPartialDelivery(t *testing.T) {
	t.Run("deferred", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(dir)
		cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
		del := newFakeDeliverer()
		del.set("busy@unit1.test", tmp451)
		h1 := startQueue(t, cfg, del)
		id := commit(t, h1.q, testEnv("alice@sender.test", "ok@unit1.test", "busy@unit1.test", "gone@unit1.test"), testBody("partial"))
		del.set("gone@unit1.test", perm550)
		waitFor(t, "deferral", func() bool { return h1.q.Stats().Deferred == 1 })
		h1.stop()

		del2 := newFakeDeliverer()
		h2 := startQueue(t, cfg, del2)
		if s := h2.q.Stats(); s.Deferred != 1 {
			t.Fatalf("after restart Stats = %+v, want 1 deferred (backoff survives restart)", s)
		}
		h2.q.Flush()
		waitFor(t, "removal", func() bool { return len(h2.logs.lines("removed")) == 1 })
		calls := callsTo(del2.snapshot(), "busy@unit1.test")
		if len(calls) != 1 || len(calls[0].rcpts) != 1 || calls[0].id != id {
			t.Errorf("after restart: %+v, want only busy@unit1.test", del2.snapshot())
		}
	})
	t.Run("crash mid-pass", func(t *testing.T) {
		// ok@unit1 is delivered while slow@unit2 is still in progress; a
		// crash then must not deliver ok@unit1 again.
		dir := t.TempDir()
		cfg := testConfig(dir)
		del := newFakeDeliverer()
		release := del.blockDest("lmtp:[unit2.test]")
		defer close(release)
		h1 := startQueue(t, cfg, del)
		id := commit(t, h1.q, testEnv("alice@sender.test", "ok@unit1.test", "slow@unit2.test"), testBody("crash"))
		waitFor(t, "first delivery", func() bool { return len(h1.logs.lines("delivery")) == 1 })
		waitFor(t, "state record", func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, dirMsg, id+stateSuffix))
			return strings.Contains(string(b), `"status":"sent"`)
		})
		crashed := snapshotSpool(t, dir)

		del2 := newFakeDeliverer()
		h2 := startQueue(t, testConfig(crashed), del2)
		waitFor(t, "removal", func() bool { return len(h2.logs.lines("removed")) == 1 })
		calls := del2.snapshot()
		if len(calls) != 1 || !slices.Equal(calls[0].rcpts, []string{"slow@unit2.test"}) {
			t.Errorf("after crash: %+v, want only slow@unit2.test", calls)
		}
	})
	t.Run("shutdown mid-pass", func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig(dir)
		cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
		del := newFakeDeliverer()
		release := del.blockDest("lmtp:[unit2.test]")
		defer close(release)
		h1 := startQueue(t, cfg, del)
		commit(t, h1.q, testEnv("alice@sender.test", "ok@unit1.test", "slow@unit2.test"), testBody("shutdown"))
		waitFor(t, "first delivery", func() bool { return len(h1.logs.lines("delivery")) == 1 })
		h1.stop() // the blocked transaction sees ctx cancelled

		del2 := newFakeDeliverer()
		h2 := startQueue(t, cfg, del2)
		// An interrupted attempt does not count: no backoff.
		waitFor(t, "removal", func() bool { return len(h2.logs.lines("removed")) == 1 })
		calls := del2.snapshot()
		if len(calls) != 1 || !slices.Equal(calls[0].rcpts, []string{"slow@unit2.test"}) {
			t.Errorf("after shutdown: %+v, want only slow@unit2.test", calls)
		}
	})
}

func TestCommitFailure(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	for _, tc := range []struct {
		name   string
		inject func(q *Queue)
		reply  envelope.Reply
	}{
		{"fsync", func(q *Queue) { q.syncFile = func(*os.File) error { return syscall.EIO } }, envelope.ReplyLocalError},
		{"disk full", func(q *Queue) { q.syncFile = func(*os.File) error { return enospc } }, envelope.ReplyNoSpace},
		{"rename", func(q *Queue) {
			q.commit.rename = func(string, string) error { return syscall.EROFS }
		}, envelope.ReplyLocalError},
		{"directory fsync", func(q *Queue) {
			q.commit.syncDir = func(*os.File) error { return syscall.EIO }
		}, envelope.ReplyLocalError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			del := newFakeDeliverer()
			h := startQueue(t, testConfig(dir), del)
			tc.inject(h.q)
			in, err := h.q.Create(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(in, testBody("fail"))
			err = in.Commit(context.Background(), testEnv("alice@sender.test", "bob@unit1.test"))
			if err == nil {
				t.Fatal("Commit succeeded")
			}
			if got := envelope.ReplyOf(err); got != tc.reply {
				t.Errorf("reply %v, want %v", got, tc.reply)
			}
			in.Abort() // harmless after a failed Commit
			for _, sub := range []string{dirIncoming, dirMsg} {
				if got := files(t, dir, sub); len(got) != 0 {
					t.Errorf("%s/ holds %v after a failed Commit", sub, got)
				}
			}
			time.Sleep(30 * time.Millisecond)
			if s := h.q.Stats(); s.Total != 0 || len(del.snapshot()) != 0 {
				t.Errorf("failed message scheduled: %+v", s)
			}
		})
	}
}

func TestWriteErrorCarriesReply(t *testing.T) {
	dir := t.TempDir()
	h := openQueue(t, testConfig(dir), newFakeDeliverer())
	in, err := h.q.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in.f.Close() // the next flush fails
	big := strings.Repeat("x", 128<<10)
	_, werr := io.WriteString(in, big)
	if werr == nil {
		t.Fatal("Write to a closed file succeeded")
	}
	if envelope.ReplyOf(werr) != envelope.ReplyLocalError {
		t.Errorf("reply %v", envelope.ReplyOf(werr))
	}
	if err := in.Commit(context.Background(), testEnv("a@sender.test", "b@unit1.test")); !errors.Is(err, werr) && err.Error() != werr.Error() {
		t.Errorf("Commit error %v, want the write error", err)
	}
	if got := files(t, dir, dirIncoming); len(got) != 0 {
		t.Errorf("incoming/ = %v", got)
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	h := openQueue(t, testConfig(dir), newFakeDeliverer())
	in, err := h.q.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "Subject: x\r\n")
	in.Abort()
	in.Abort()
	if got := files(t, dir, dirIncoming); len(got) != 0 {
		t.Errorf("incoming/ = %v", got)
	}
	if err := in.Commit(context.Background(), testEnv("a@sender.test", "b@unit1.test")); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

func TestConcurrentCommits(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	h := startQueue(t, testConfig(dir), del)
	const workers, per = 20, 15
	var mu sync.Mutex
	ids := map[string]bool{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				env := testEnv("alice@sender.test", fmt.Sprintf("u%d-%d@unit%d.test", w, i, i%3))
				in, err := h.q.Create(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				io.WriteString(in, testBody(fmt.Sprint(w, i)))
				if err := in.Commit(context.Background(), env); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if ids[in.ID()] {
					t.Errorf("duplicate ID %s", in.ID())
				}
				ids[in.ID()] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	waitFor(t, "all delivered", func() bool { return len(h.logs.lines("removed")) == workers*per })
	calls := del.snapshot()
	if len(calls) != workers*per {
		t.Errorf("%d transactions, want %d", len(calls), workers*per)
	}
	seen := map[string]int{}
	for _, c := range calls {
		seen[c.id]++
	}
	for id := range ids {
		if seen[id] != 1 {
			t.Errorf("%s delivered %d times", id, seen[id])
		}
	}
	t.Logf("%d commits in %d directory-sync batches", workers*per, h.q.commit.batches.Load())
}

func TestConcurrencyLimits(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	release := del.blockDest("lmtp:[slow.test]")
	cfg := testConfig(dir)
	cfg.ConcurrencyLimit = 3
	cfg.ProcessLimit = 5
	h := startQueue(t, cfg, del)
	for i := range 10 {
		commit(t, h.q, testEnv("alice@sender.test", fmt.Sprintf("u%d@slow.test", i)), testBody("slow"))
	}
	waitFor(t, "slow destination saturated", func() bool {
		del.mu.Lock()
		defer del.mu.Unlock()
		return del.inflight["lmtp:[slow.test]"] == 3
	})
	// The slow destination must not block the others.
	for i := range 4 {
		commit(t, h.q, testEnv("alice@sender.test", fmt.Sprintf("u%d@fast.test", i)), testBody("fast"))
	}
	waitFor(t, "fast destination served", func() bool {
		return len(callsTo(del.snapshot(), "u3@fast.test")) == 1 && len(h.logs.lines("removed")) == 4
	})
	close(release)
	waitFor(t, "all delivered", func() bool { return len(h.logs.lines("removed")) == 14 })
	del.mu.Lock()
	defer del.mu.Unlock()
	if del.maxDest["lmtp:[slow.test]"] != 3 {
		t.Errorf("slow destination concurrency peaked at %d, want 3", del.maxDest["lmtp:[slow.test]"])
	}
	if del.maxDest["lmtp:[fast.test]"] > 2 || del.maxTotal > 5 {
		t.Errorf("fast peak %d (want <= 2 = ProcessLimit - 3), total peak %d (want <= 5)",
			del.maxDest["lmtp:[fast.test]"], del.maxTotal)
	}
}

func TestDeadDestination(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	del.relay = "none"
	del.set("u0@down.test", tmp451)
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	cfg.ConcurrencyLimit = 1
	h := startQueue(t, cfg, del)
	release := del.blockDest("lmtp:[down.test]")
	for i := range 6 {
		del.set(fmt.Sprintf("u%d@down.test", i), tmp451)
		commit(t, h.q, testEnv("alice@sender.test", fmt.Sprintf("u%d@down.test", i)), testBody("down"))
	}
	waitFor(t, "first attempt in progress", func() bool { return h.q.Stats().Active == 6 })
	close(release)
	waitFor(t, "all deferred", func() bool { return h.q.Stats().Deferred == 6 })
	if n := len(del.snapshot()); n != 1 {
		t.Errorf("%d attempts to a dead destination, want 1", n)
	}
	suspended := 0
	for _, l := range h.logs.lines("delivery") {
		if strings.Contains(l["reply"].(string), "delivery temporarily suspended: lost connection") ||
			strings.Contains(l["reply"].(string), "delivery temporarily suspended: mailbox busy") {
			suspended++
		}
	}
	if suspended != 5 {
		t.Errorf("%d suspended deferrals, want 5", suspended)
	}
	// Flush forgets the dead state.
	del.relay = "unit.test[192.0.2.1]:24"
	for i := range 6 {
		del.set(fmt.Sprintf("u%d@down.test", i), ok250)
	}
	h.q.Flush()
	waitFor(t, "all delivered", func() bool { return len(h.logs.lines("removed")) == 6 })
}

func TestHold(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	h := startQueue(t, testConfig(dir), del)
	env := testEnv("alice@sender.test", "bob@unit1.test")
	env.Hold = "policy says so"
	id := commit(t, h.q, env, testBody("held"))
	time.Sleep(50 * time.Millisecond)
	if len(del.snapshot()) != 0 {
		t.Error("held message delivered")
	}
	if got := files(t, dir, dirHold); !slices.Equal(got, []string{id}) {
		t.Errorf("hold/ = %v", got)
	}
	if s := h.q.Stats(); s.Hold != 1 || s.Total != 1 {
		t.Errorf("Stats = %+v", s)
	}
	h.stop()
	h2 := openQueue(t, testConfig(dir), del)
	if s := h2.q.Stats(); s.Hold != 1 {
		t.Errorf("Stats after reopen = %+v", s)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	openQueue(t, testConfig(dir), newFakeDeliverer())
	if _, err := Open(testConfig(dir), fakeRouter{}, newFakeDeliverer(), nil); err == nil ||
		!strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: %v, want in-use error", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "queue_directory"},
		{Config{Dir: "x", MinimalBackoff: time.Hour, MaximalBackoff: time.Minute}, "minimal_backoff_time"},
		{Config{Dir: "x", RecipientLimit: -1}, "default_destination_recipient_limit"},
		{Config{Dir: "x", QueueRunDelay: -1}, "queue_run_delay"},
	} {
		if _, err := Open(tc.cfg, fakeRouter{}, newFakeDeliverer(), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) = %v, want error naming %s", tc.cfg, err, tc.want)
		}
	}
	c, err := Config{Dir: "x", Hostname: "h"}.withDefaults()
	if err != nil || c.MinimalBackoff != 300*time.Second || c.MaximalBackoff != 4000*time.Second ||
		c.MaxLifetime != 5*24*time.Hour || c.RecipientLimit != 50 || c.ConcurrencyLimit != 20 ||
		c.ProcessLimit != 100 || c.BounceSizeLimit != 50000 || c.QueueRunDelay != 300*time.Second {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestCorruptContentAtDelivery(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	h := openQueue(t, testConfig(dir), del)
	id := commit(t, h.q, testEnv("alice@sender.test", "bob@unit1.test"), testBody("flip"))
	// Flip a content byte: recovery's cheap checks pass, the content
	// checksum fails when the deliverer reads the body.
	path := filepath.Join(dir, dirMsg, id)
	b, _ := os.ReadFile(path)
	b[headerLen+3] ^= 0x20
	os.WriteFile(path, b, 0o600)
	h.run()
	waitFor(t, "moved to corrupt", func() bool { return len(h.logs.lines("damaged queue file moved to corrupt/")) == 1 })
	if got := files(t, dir, dirCorrupt); !slices.Equal(got, []string{id}) {
		t.Errorf("corrupt/ = %v", got)
	}
	if s := h.q.Stats(); s.Total != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestDeliverContract(t *testing.T) {
	// A Deliverer that returns too few results or panics defers the
	// recipients instead of losing them or crashing.
	for _, tc := range []struct {
		name string
		d    DelivererFunc
	}{
		{"short", func(context.Context, *Delivery) []Result { return nil }},
		{"panic", func(context.Context, *Delivery) []Result { panic("boom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			q, err := Open(cfg, fakeRouter{}, tc.d, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- q.Run(ctx) }()
			commit(t, q, testEnv("alice@sender.test", "bob@unit1.test"), testBody("x"))
			waitFor(t, "deferral", func() bool { return q.Stats().Deferred == 1 })
			cancel()
			<-done
		})
	}
}

// DelivererFunc adapts a function to Deliverer (tests).
type DelivererFunc func(context.Context, *Delivery) []Result

func (f DelivererFunc) Deliver(ctx context.Context, d *Delivery) []Result { return f(ctx, d) }
