package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// aliasRouter is fakeRouter with a virtual_alias_maps of its own.
type aliasRouter struct {
	fakeRouter
	mu      sync.Mutex
	aliases map[string][]string
	fail    bool
}

func (r *aliasRouter) set(from string, to ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.aliases == nil {
		r.aliases = map[string][]string{}
	}
	r.aliases[from] = to
}

func (r *aliasRouter) Expand(_ context.Context, a envelope.Address) ([]envelope.Address, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return nil, false, fmt.Errorf("directory down")
	}
	to, ok := r.aliases[a.Key()]
	if !ok {
		return []envelope.Address{a}, false, nil
	}
	var out []envelope.Address
	for _, s := range to {
		out = append(out, envelope.MustParse(s))
	}
	return out, true, nil
}

// openWith opens a queue with router r (running it when run is set).
func openWith(t *testing.T, cfg Config, r Router, del *fakeDeliverer, run bool) *harness {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := Open(cfg, r, del, logger)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h := &harness{t: t, q: q, cfg: cfg, del: del, logs: logs}
	t.Cleanup(h.stop)
	if run {
		h.run()
	}
	return h
}

func list(t *testing.T, q *Queue, f Filter) []*Item {
	t.Helper()
	var out []*Item
	if err := q.List(context.Background(), f, func(it *Item) error { out = append(out, it); return nil }); err != nil {
		t.Fatalf("List: %v", err)
	}
	return out
}

func ids(items []*Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func apply(t *testing.T, q *Queue, op Op, sel Selection) []OpResult {
	t.Helper()
	res, err := q.Apply(context.Background(), op, sel)
	if err != nil {
		t.Fatalf("Apply %s: %v", op, err)
	}
	return res
}

func TestMatchAddress(t *testing.T) {
	for _, tc := range []struct {
		p, a string
		want bool
	}{
		{"alice@example.com", "Alice@Example.com", true},
		{"alice@example.com", "malice@example.com", false},
		{"@example.com", "bob@example.com", true},
		{"@example.com", "bob@sub.example.com", true},
		{"@example.com", "bob@notexample.com", false},
		{"<>", "", true},
		{"<>", "a@b.c", false},
		{"ali", "alice@example.com", true},
		{"ali", "", false},
		{"<alice@example.com>", "alice@example.com", true},
	} {
		if got := MatchAddress(tc.p, tc.a); got != tc.want {
			t.Errorf("MatchAddress(%q, %q) = %v", tc.p, tc.a, got)
		}
	}
}

func TestUnitMatch(t *testing.T) {
	for _, tc := range []struct {
		unit, key string
		want      bool
	}{
		{"u42a", "smtp:[u42a]:25, [u42b]:25", true},
		{"u42b", "smtp:[u42a]:25, [u42b]:25", true},
		{"U42B:25", "smtp:[u42a]:25, [u42b]:25", true},
		{"[u42a]:25", "smtp:[u42a]:25, [u42b]:25", true},
		{"smtp:[u42a]:25, [u42b]:25", "smtp:[u42a]:25, [u42b]:25", true},
		{"u42", "smtp:[u42a]:25, [u42b]:25", false},
		{"u42a:26", "smtp:[u42a]:25", false},
		{"h42.mail.example.com", "lmtp:inet:h42.mail.example.com:24", true},
		{"inet:h42.mail.example.com:24", "lmtp:inet:h42.mail.example.com:24", true},
		{"/run/dovecot/lmtp", "lmtp:unix:/run/dovecot/lmtp", true},
		{"example.com", "smtp:example.com", true},
		{"", "smtp:example.com", false},
		{"x", "", false},
	} {
		if got := UnitMatch(tc.unit, tc.key); got != tc.want {
			t.Errorf("UnitMatch(%q, %q) = %v", tc.unit, tc.key, got)
		}
	}
}

// TestListStatesAndFilters: messages in every state are listed with their
// state, and each filter selects.
func TestListStatesAndFilters(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	cfg.ActiveLimit = 1
	h := startQueue(t, cfg, del)
	// active: blocked in delivery; incoming: waits behind it (ActiveLimit 1).
	release := del.blockDest("lmtp:[slow.test]")
	active := commit(t, h.q, testEnv("alice@sender.test", "a@slow.test"), testBody("active"))
	waitFor(t, "active", func() bool { return del.inflightOf("lmtp:[slow.test]") == 1 })
	incoming := commit(t, h.q, testEnv("bob@other.test", "b@unit1.test"), testBody("incoming"))
	// hold (policy), corrupt (damaged file in corrupt/)
	henv := testEnv("carol@sender.test", "c@unit1.test")
	henv.Hold = "policy hold"
	held := commit(t, h.q, henv, testBody("held"))
	corrupt := "0000000000AB"
	os.WriteFile(h.q.path(dirCorrupt, corrupt), []byte("garbage"), 0o600)

	all := list(t, h.q, Filter{})
	states := map[string]string{}
	for _, it := range all {
		states[it.ID] = it.State
	}
	want := map[string]string{active: StateActive, incoming: StateIncoming, held: StateHold, corrupt: StateCorrupt}
	for id, st := range want {
		if states[id] != st {
			t.Errorf("%s: state %q, want %q (all: %v)", id, states[id], st, states)
		}
	}
	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{States: []string{StateHold}}, []string{held}},
		{Filter{States: []string{StateCorrupt}}, []string{corrupt}},
		{Filter{Sender: "@other.test"}, []string{incoming}},
		{Filter{Recipient: "a@slow.test"}, []string{active}},
		{Filter{Unit: "slow.test"}, []string{active}},
		{Filter{OlderThan: time.Hour}, nil},
	} {
		if got := ids(list(t, h.q, tc.f)); !slices.Equal(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	// Deferred: after the blocked attempt fails.
	del.set("a@slow.test", tmp451)
	close(release)
	waitFor(t, "deferred", func() bool {
		its := list(t, h.q, Filter{States: []string{StateDeferred}})
		return len(its) == 1 && its[0].ID == active
	})
	it := list(t, h.q, Filter{States: []string{StateDeferred}})[0]
	if it.Attempts != 1 || it.Next.IsZero() || it.Rcpts[0].Reply != tmp451.String() ||
		it.Rcpts[0].Dest != "lmtp:[slow.test]" || it.Rcpts[0].Relay != "unit.test[192.0.2.1]:24" {
		t.Errorf("deferred item %+v", it)
	}
}

func (f *fakeDeliverer) inflightOf(dest string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inflight[dest]
}

// TestHoldReleaseDelete: the operations on messages in each state, with
// the history kept across hold and release.
func TestHoldReleaseDelete(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	h := startQueue(t, cfg, del)
	del.set("a@unit1.test", tmp451)
	del.set("b@unit1.test", ok250)
	id := commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test", "b@unit1.test"), testBody("ops"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 1 })

	res := apply(t, h.q, OpHold, Selection{IDs: []string{id}, Reason: "suspicious"})
	if res[0].Err != "" || res[0].Status != "held" {
		t.Fatalf("hold: %+v", res)
	}
	if s := h.q.Stats(); s.Hold != 1 || s.Deferred != 0 {
		t.Errorf("after hold: %+v", s)
	}
	if got := files(t, dir, dirHold); !slices.Equal(got, []string{id, id + stateSuffix}) {
		t.Errorf("hold/ = %v", got)
	}
	it := list(t, h.q, Filter{States: []string{StateHold}})[0]
	if it.Reason != "suspicious" || it.Rcpts[1].Status != RcptSent || !it.Rcpts[0].Pending() {
		t.Errorf("held item %+v", it)
	}
	// Not applicable, not found.
	if r := apply(t, h.q, OpFlush, Selection{IDs: []string{id}}); !r[0].NotFound {
		t.Errorf("flush of a held message: %+v", r)
	}
	if r := apply(t, h.q, OpRelease, Selection{IDs: []string{"0000000000ZZ", "../etc"}}); !r[0].NotFound || !r[1].NotFound {
		t.Errorf("release of unknown IDs: %+v", r)
	}

	del.set("a@unit1.test", ok250)
	res = apply(t, h.q, OpRelease, Selection{All: true})
	if len(res) != 1 || res[0].Status != "released" {
		t.Fatalf("release: %+v", res)
	}
	waitFor(t, "delivery after release", func() bool { return len(h.logs.lines("removed")) == 1 })
	if n := len(callsTo(del.snapshot(), "b@unit1.test")); n != 1 {
		t.Errorf("b delivered %d times: the history was lost in hold", n)
	}
	item, _, err := h.q.Show(context.Background(), id)
	if err == nil || item != nil {
		t.Errorf("Show of a removed message: %v", err)
	}

	// delete: deferred, held and damaged messages.
	del.set("c@unit1.test", tmp451)
	d1 := commit(t, h.q, testEnv("alice@sender.test", "c@unit1.test"), testBody("d1"))
	henv := testEnv("alice@sender.test", "c@unit1.test")
	henv.Hold = "x"
	d2 := commit(t, h.q, henv, testBody("d2"))
	d3 := "0000000000CD"
	os.WriteFile(h.q.path(dirCorrupt, d3), []byte("junk"), 0o600)
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 1 })
	res = apply(t, h.q, OpDelete, Selection{IDs: []string{d1, d2, d3}})
	for _, r := range res {
		if r.Err != "" || r.Status != "deleted" {
			t.Errorf("delete: %+v", r)
		}
	}
	for _, sub := range []string{dirMsg, dirHold, dirCorrupt} {
		if got := files(t, dir, sub); len(got) != 0 {
			t.Errorf("%s/ = %v after delete", sub, got)
		}
	}
	if s := h.q.Stats(); s.Total != 0 {
		t.Errorf("Stats after delete: %+v", s)
	}
}

// TestOperationsOnActiveMessage: hold and delete wait for the attempt in
// progress, whose results are kept.
func TestOperationsOnActiveMessage(t *testing.T) {
	for _, op := range []Op{OpHold, OpDelete} {
		t.Run(string(op), func(t *testing.T) {
			dir := t.TempDir()
			del := newFakeDeliverer()
			cfg := testConfig(dir)
			h := startQueue(t, cfg, del)
			release := del.blockDest("lmtp:[unit2.test]")
			del.set("b@unit2.test", tmp451)
			id := commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test", "b@unit2.test"), testBody("busy"))
			waitFor(t, "in delivery", func() bool { return del.inflightOf("lmtp:[unit2.test]") == 1 })
			res := apply(t, h.q, op, Selection{IDs: []string{id}})
			if !strings.HasSuffix(res[0].Status, afterAttempt) {
				t.Fatalf("%s during delivery: %+v", op, res)
			}
			if it := list(t, h.q, Filter{})[0]; it.State != StateActive {
				t.Errorf("state during the attempt: %s", it.State)
			}
			close(release)
			if op == OpHold {
				waitFor(t, "on hold", func() bool { return h.q.Stats().Hold == 1 && h.q.Stats().Total == 1 })
				it := list(t, h.q, Filter{})[0]
				if it.State != StateHold || it.Rcpts[0].Status != RcptSent || !it.Rcpts[1].Pending() {
					t.Errorf("held item %+v", it)
				}
			} else {
				waitFor(t, "deleted", func() bool { return h.q.Stats().Total == 0 })
				if got := files(t, dir, dirMsg); len(got) != 0 {
					t.Errorf("msg/ = %v", got)
				}
			}
			time.Sleep(200 * time.Millisecond) // backoff is 100ms: no retry may follow
			if n := len(callsTo(del.snapshot(), "b@unit2.test")); n != 1 {
				t.Errorf("%d attempts for b after %s", n, op)
			}
		})
	}
}

// TestRequeue: a mailbox moved to another unit while its mail waited;
// requeue expands the original recipient again, the mail follows, and the
// recipient already delivered is not repeated.
func TestRequeue(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	r := &aliasRouter{}
	r.set("team@example.test", "x@old.test", "y@unit1.test")
	h := openWith(t, cfg, r, del, true)
	del.set("x@old.test", tmp451)
	env := testEnv("alice@sender.test")
	for _, a := range []string{"x@old.test", "y@unit1.test"} {
		env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: envelope.MustParse(a), Orig: envelope.MustParse("team@example.test"),
			ORCPT: "rfc822;team@example.test", Notify: envelope.NotifyFailure})
	}
	id := commit(t, h.q, env, testBody("moved"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 1 })

	// Nothing changed: requeue retries the same message.
	res := apply(t, h.q, OpRequeue, Selection{IDs: []string{id}})
	if res[0].Status != "requeued" {
		t.Fatalf("requeue: %+v", res)
	}
	waitFor(t, "unchanged", func() bool { return len(h.logs.lines("requeue: recipients unchanged")) == 1 })
	waitFor(t, "deferred again", func() bool { return len(callsTo(del.snapshot(), "x@old.test")) == 2 && h.q.Stats().Deferred == 1 })

	r.set("team@example.test", "x@new.test", "y@unit1.test")
	apply(t, h.q, OpRequeue, Selection{All: true, Filter: Filter{Unit: "old.test"}})
	waitFor(t, "delivered to the new unit", func() bool { return len(callsTo(del.snapshot(), "x@new.test")) == 1 })
	waitFor(t, "empty", func() bool { return h.q.Stats().Total == 0 })
	if n := len(callsTo(del.snapshot(), "y@unit1.test")); n != 1 {
		t.Errorf("y delivered %d times", n)
	}
	c := callsTo(del.snapshot(), "x@new.test")[0]
	if c.id == id || c.env.Rcpts[0].Orig.String() != "team@example.test" || c.env.Rcpts[0].ORCPT != "rfc822;team@example.test" ||
		!strings.Contains(c.body, "Subject: moved") || !c.env.Received.Equal(env.Received) {
		t.Errorf("requeued message: id %s env %+v", c.id, c.env)
	}
	if l := h.logs.lines("requeued"); len(l) != 1 || l[0]["id"] != id {
		t.Errorf("requeued log: %v", l)
	}
}

// TestRequeueCrashLeavesBoth: recovery removes the message a requeued copy
// replaces.
func TestRequeueCrashLeavesBoth(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	h := openQueue(t, cfg, del)
	old := commit(t, h.q, testEnv("alice@sender.test", "x@old.test"), testBody("old"))
	m := h.q.msgs[old]
	in, err := h.q.create(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	in.replaces = old
	in.Write([]byte(testBody("old")))
	if err := in.Commit(context.Background(), testEnv("alice@sender.test", "x@new.test")); err != nil {
		t.Fatal(err)
	}
	_ = m
	h.stop() // "crash": both files are there
	h2 := startQueue(t, cfg, del)
	waitFor(t, "delivery", func() bool { return len(h2.logs.lines("removed")) == 2 })
	if n := len(callsTo(del.snapshot(), "x@old.test")); n != 0 {
		t.Errorf("the replaced message was delivered %d times", n)
	}
	if n := len(callsTo(del.snapshot(), "x@new.test")); n != 1 {
		t.Errorf("the new message was delivered %d times", n)
	}
}

// TestReunite: a crash between the two renames of a hold leaves the state
// file behind; recovery gives it back to its message.
func TestReunite(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	h := startQueue(t, cfg, del)
	del.set("a@unit1.test", tmp451)
	id := commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test", "b@unit1.test"), testBody("x"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 1 })
	h.stop()
	// Half a hold: the message moved, its state file did not.
	if err := os.Rename(spoolPath(dir, dirMsg, id), spoolPath(dir, dirHold, id)); err != nil {
		t.Fatal(err)
	}
	h2 := openQueue(t, cfg, del)
	if got := files(t, dir, dirHold); !slices.Equal(got, []string{id, id + stateSuffix}) {
		t.Fatalf("hold/ = %v", got)
	}
	// And back: half a release.
	h2.stop()
	if err := os.Rename(spoolPath(dir, dirHold, id), spoolPath(dir, dirMsg, id)); err != nil {
		t.Fatal(err)
	}
	del.set("a@unit1.test", ok250)
	h3 := startQueue(t, cfg, del)
	h3.q.Flush()
	waitFor(t, "delivered", func() bool { return len(h3.logs.lines("removed")) == 1 })
	if n := len(callsTo(del.snapshot(), "b@unit1.test")); n != 1 {
		t.Errorf("b delivered %d times: its state was lost", n)
	}
}

func spoolPath(dir, sub, name string) string { return dir + "/" + sub + "/" + name }

// TestOffline: with the daemon down, the tools work on the spool, and
// flush, requeue and release take effect at the next start.
func TestOffline(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	h := startQueue(t, cfg, del)
	del.set("a@unit1.test", tmp451)
	del.set("b@unit1.test", tmp451)
	a := commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test"), testBody("a"))
	b := commit(t, h.q, testEnv("alice@sender.test", "b@unit1.test"), testBody("b"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 2 })
	if _, err := OpenOffline(cfg, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("OpenOffline beside a running queue: %v", err)
	}
	h.stop()

	off, err := OpenOffline(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Run(context.Background()); err == nil {
		t.Error("Run on an offline queue")
	}
	its := list(t, off, Filter{})
	if len(its) != 2 || its[0].State != StateDeferred || its[0].Attempts != 1 {
		t.Fatalf("offline list: %+v", its)
	}
	if r := apply(t, off, OpHold, Selection{IDs: []string{b}}); r[0].Status != "held" {
		t.Fatalf("offline hold: %+v", r)
	}
	if r := apply(t, off, OpFlush, Selection{IDs: []string{a}}); r[0].Status != "flushed (when the daemon starts)" {
		t.Fatalf("offline flush: %+v", r)
	}
	if err := off.HoldUnit("unit9.test", "maintenance"); err != nil {
		t.Fatal(err)
	}
	off.Close()

	del.set("a@unit1.test", ok250)
	del.set("b@unit1.test", ok250)
	h2 := startQueue(t, cfg, del)
	waitFor(t, "flushed message delivered", func() bool { return len(h2.logs.lines("removed")) == 1 })
	if s := h2.q.Stats(); s.Hold != 1 || s.Total != 1 {
		t.Errorf("Stats: %+v", s)
	}
	if hs := h2.q.UnitHolds(); len(hs) != 1 || hs[0].Unit != "unit9.test" || hs[0].Reason != "maintenance" {
		t.Errorf("unit holds after restart: %+v", hs)
	}
	apply(t, h2.q, OpRelease, Selection{IDs: []string{b}})
	waitFor(t, "released message delivered", func() bool { return len(h2.logs.lines("removed")) == 2 })
}

// TestUnitHold: a unit on hold gets no attempts, the others do; release
// delivers its mail at once; a flush does not override the hold.
func TestUnitHold(t *testing.T) {
	dir := t.TempDir()
	del := newFakeDeliverer()
	cfg := testConfig(dir)
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	h := startQueue(t, cfg, del)
	if err := h.q.HoldUnit("unit2.test", "disk swap"); err != nil {
		t.Fatal(err)
	}
	commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test", "b@unit2.test"), testBody("mixed"))
	commit(t, h.q, testEnv("alice@sender.test", "c@unit2.test"), testBody("held unit"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 2 })
	h.q.Flush()
	time.Sleep(50 * time.Millisecond)
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 2 })
	if n := len(callsTo(del.snapshot(), "a@unit1.test")); n != 1 {
		t.Errorf("a delivered %d times", n)
	}
	for _, r := range []string{"b@unit2.test", "c@unit2.test"} {
		if n := len(callsTo(del.snapshot(), r)); n != 0 {
			t.Errorf("%s attempted %d times while its unit was on hold", r, n)
		}
	}
	if l := h.logs.lines("delivery"); !slices.ContainsFunc(l, func(m map[string]any) bool {
		return m["to"] == "<b@unit2.test>" && m["reply"] == "450 4.3.2 unit on hold: disk swap"
	}) {
		t.Errorf("no 'unit on hold' deferral logged")
	}
	if got := ids(list(t, h.q, Filter{Unit: "unit2.test"})); len(got) != 2 {
		t.Errorf("list -unit: %v", got)
	}
	if _, err := h.q.ReleaseUnit("nosuch.test"); err == nil {
		t.Error("ReleaseUnit of a unit not on hold")
	}
	n, err := h.q.ReleaseUnit("UNIT2.test")
	if err != nil || n != 2 {
		t.Fatalf("ReleaseUnit = %d, %v", n, err)
	}
	waitFor(t, "delivered", func() bool { return h.q.Stats().Total == 0 })
	if b, _ := os.ReadFile(dir + "/" + holdsName); strings.Contains(string(b), "unit2") {
		t.Errorf("holds file still names the unit: %s", b)
	}
}

// TestDeferTransports: defer_transports keeps mail until a flush.
func TestDeferTransports(t *testing.T) {
	del := newFakeDeliverer()
	cfg := testConfig(t.TempDir())
	cfg.MinimalBackoff, cfg.MaximalBackoff = time.Hour, time.Hour
	cfg.DeferTransports = []string{envelope.TransportLMTP}
	h := startQueue(t, cfg, del)
	commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test"), testBody("later"))
	waitFor(t, "deferred", func() bool { return h.q.Stats().Deferred == 1 })
	if n := len(del.snapshot()); n != 0 {
		t.Fatalf("%d attempts for a deferred transport", n)
	}
	if l := h.logs.lines("delivery"); len(l) != 1 || l[0]["reply"] != "450 4.3.2 deferred transport" {
		t.Errorf("log: %v", l)
	}
	n, err := h.q.FlushAll(context.Background())
	if err != nil || n != 1 {
		t.Errorf("FlushAll = %d, %v", n, err)
	}
	waitFor(t, "delivered", func() bool { return h.q.Stats().Total == 0 })
}

// TestSlowStart: a destination starts at initial_destination_concurrency
// and grows to default_destination_concurrency_limit as transactions
// succeed.
func TestSlowStart(t *testing.T) {
	del := newFakeDeliverer()
	cfg := testConfig(t.TempDir())
	cfg.InitialConcurrency, cfg.ConcurrencyLimit = 2, 6
	h := startQueue(t, cfg, del)
	release := del.blockDest("lmtp:[unit1.test]")
	for i := range 30 {
		commit(t, h.q, testEnv("alice@sender.test", fmt.Sprintf("u%d@unit1.test", i)), testBody("slow start"))
	}
	waitFor(t, "first window", func() bool { return del.inflightOf("lmtp:[unit1.test]") == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := del.inflightOf("lmtp:[unit1.test]"); n != 2 {
		t.Fatalf("%d in flight at the start, want initial_destination_concurrency 2", n)
	}
	close(release)
	waitFor(t, "all delivered", func() bool { return len(h.logs.lines("removed")) == 30 })
	if m := del.maxDest["lmtp:[unit1.test]"]; m > 6 {
		t.Errorf("peak concurrency %d above the limit 6", m)
	}
	h.q.mu.Lock()
	d := h.q.dests["lmtp:[unit1.test]"]
	h.q.mu.Unlock()
	if d != nil && d.window != 6 {
		t.Errorf("window %.2f after 30 successes, want the limit 6", d.window)
	}
}

func TestFeedback(t *testing.T) {
	q := &Queue{cfg: Config{ConcurrencyLimit: 20, InitialConcurrency: 5, FailedCohortLimit: 1, MinimalBackoff: time.Minute},
		log: slog.New(slog.DiscardHandler)}
	now := time.Now()
	d := &destination{key: "smtp:[u1]", window: q.initialWindow()}
	reached := []Result{{Reply: envelope.NewReply(552, envelope.Enhanced{5, 2, 2}, "mailbox full"), Relay: "u1[192.0.2.1]:25"}}
	failed := []Result{{Reply: envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, "connect refused"), Relay: "none", Unreachable: true}}
	greeting := []Result{{Reply: envelope.NewReply(421, envelope.Enhanced{4, 3, 2}, "busy"), Relay: "u1[192.0.2.1]:25", Unreachable: true}}
	for range 5 {
		q.feedback(d, reached, now) // a full mailbox is a server's answer
	}
	if d.window <= 5 || d.dead(now) {
		t.Fatalf("window %.2f after 5 per-recipient failures", d.window)
	}
	for range 200 {
		q.feedback(d, reached, now)
	}
	if d.window != 20 {
		t.Fatalf("window %.2f, want the limit", d.window)
	}
	// A cohort (one window) of connection failures makes it dead.
	n := 0
	for !d.dead(now) && n < 100 {
		q.feedback(d, greeting, now)
		n++
	}
	if n < 15 || n > 25 {
		t.Errorf("dead after %d failures at window 20, want about one cohort (20)", n)
	}
	if d.window != 5 {
		t.Errorf("window %.2f after death, want initial 5", d.window)
	}
	d2 := &destination{key: "smtp:[u2]", window: q.initialWindow()}
	n = 0
	for !d2.dead(now) && n < 100 {
		q.feedback(d2, failed, now)
		n++
	}
	if n != 5 {
		t.Errorf("new destination dead after %d failures, want 5 (initial window)", n)
	}
}

// TestRateDelay: default_destination_rate_delay spaces transactions to a
// destination, one at a time.
func TestRateDelay(t *testing.T) {
	del := newFakeDeliverer()
	cfg := testConfig(t.TempDir())
	cfg.RateDelay = 60 * time.Millisecond
	h := openQueue(t, cfg, del)
	for i := range 4 {
		commit(t, h.q, testEnv("alice@sender.test", fmt.Sprintf("u%d@unit1.test", i)), testBody("rate"))
	}
	commit(t, h.q, testEnv("alice@sender.test", "x@unit2.test"), testBody("other"))
	h.run()
	waitFor(t, "all delivered", func() bool { return len(h.logs.lines("removed")) == 5 })
	calls := del.snapshot()
	var at []time.Time
	for _, c := range calls {
		if c.dest == "lmtp:[unit1.test]" {
			at = append(at, c.at)
		}
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 55*time.Millisecond {
			t.Errorf("gap %v between transactions %d and %d", gap, i-1, i)
		}
	}
	if del.maxDest["lmtp:[unit1.test]"] != 1 {
		t.Errorf("concurrency %d with a rate delay", del.maxDest["lmtp:[unit1.test]"])
	}
}

// TestSuccessAndDelayNotices: NOTIFY=SUCCESS to a next hop without DSN
// gets a success notice; delay_warning_time sends one delay notice.
func TestSuccessAndDelayNotices(t *testing.T) {
	del := newFakeDeliverer()
	cfg := testConfig(t.TempDir())
	cfg.DelayWarning = time.Millisecond
	cfg.MinimalBackoff, cfg.MaximalBackoff = 20*time.Millisecond, 20*time.Millisecond
	h := startQueue(t, cfg, del)
	env := testEnv("alice@sender.test", "ok@unit1.test", "late@unit1.test", "quiet@unit1.test")
	env.EnvID = "ENV-42"
	env.Received = time.Now().Add(-time.Second)
	env.Rcpts[0].Notify = envelope.NotifySuccess | envelope.NotifyFailure
	env.Rcpts[0].ORCPT = "rfc822;ok@unit1.test"
	env.Rcpts[2].Notify = envelope.NotifyFailure
	del.set("late@unit1.test", tmp451, tmp451, tmp451, ok250)
	del.set("quiet@unit1.test", tmp451, tmp451, tmp451, ok250)
	commit(t, h.q, env, testBody("notices"))
	waitFor(t, "delivered", func() bool { return len(h.logs.lines("removed")) == 3 })
	notices := callsTo(del.snapshot(), "alice@sender.test")
	if len(notices) != 2 {
		t.Fatalf("%d notices to the sender, want success + one delay", len(notices))
	}
	var success, delay *dsnReport
	for _, c := range notices {
		r := parseDSN(t, c.body)
		switch {
		case strings.Contains(c.body, "Subject: Successful Mail Delivery Report"):
			success = r
		case strings.Contains(c.body, "Subject: Delayed Mail (still being retried)"):
			delay = r
		}
		if c.from != "" {
			t.Errorf("notice from %q", c.from)
		}
	}
	if success == nil || delay == nil {
		t.Fatalf("notices: %v", notices)
	}
	if b := success.perRcpt; len(b) != 1 || b[0].Get("Final-Recipient") != "rfc822; ok@unit1.test" ||
		b[0].Get("Action") != "delivered" || b[0].Get("Status") != "2.0.0" ||
		b[0].Get("Original-Recipient") != "rfc822; ok@unit1.test" || success.perMsg.Get("Original-Envelope-Id") != "ENV-42" {
		t.Errorf("success notice: %v %v", success.perMsg, b)
	}
	if success.origType != "text/rfc822-headers" {
		t.Errorf("success notice returns %s", success.origType)
	}
	if b := delay.perRcpt; len(b) != 1 || b[0].Get("Final-Recipient") != "rfc822; late@unit1.test" ||
		b[0].Get("Action") != "delayed" || b[0].Get("Status") != "4.2.0" || b[0].Get("Will-Retry-Until") == "" {
		t.Errorf("delay notice (quiet@ has NOTIFY=FAILURE and must not be in it): %v", b)
	}
	if !strings.Contains(delay.text, "THIS IS A WARNING ONLY") {
		t.Errorf("delay text:\n%s", delay.text)
	}
}

// TestSuccessNoticeLeftToNextHop: a next hop that announced DSN gets the
// NOTIFY parameter and sends success notices itself.
func TestSuccessNoticeLeftToNextHop(t *testing.T) {
	del := &dsnDeliverer{fakeDeliverer: newFakeDeliverer()}
	cfg := testConfig(t.TempDir())
	logs := &syncBuffer{}
	q, err := Open(cfg, fakeRouter{}, del, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, q: q, cfg: cfg, logs: logs}
	t.Cleanup(h.stop)
	h.run()
	env := testEnv("alice@sender.test", "ok@unit1.test")
	env.Rcpts[0].Notify = envelope.NotifySuccess
	commit(t, h.q, env, testBody("dsn"))
	waitFor(t, "removed", func() bool { return len(logs.lines("removed")) == 1 })
	time.Sleep(50 * time.Millisecond)
	if n := len(del.snapshot()); n != 1 {
		t.Errorf("%d transactions: a success notice was sent", n)
	}
}

type dsnDeliverer struct{ *fakeDeliverer }

func (d *dsnDeliverer) Deliver(ctx context.Context, dl *Delivery) []Result {
	res := d.fakeDeliverer.Deliver(ctx, dl)
	for i := range res {
		res[i].DSN = true
	}
	return res
}

// TestAdmit: queue_message_limit and queue_minfree refuse new mail with
// 452 4.3.1; notifications are still queued.
func TestAdmit(t *testing.T) {
	del := newFakeDeliverer()
	cfg := testConfig(t.TempDir())
	cfg.MessageLimit = 2
	h := openQueue(t, cfg, del)
	commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test"), testBody("1"))
	if err := h.q.Admit(context.Background(), 0); err != nil {
		t.Fatalf("Admit with room: %v", err)
	}
	commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test"), testBody("2"))
	for _, err := range []error{h.q.Admit(context.Background(), 0), func() error { _, err := h.q.Create(context.Background()); return err }()} {
		if r := envelope.ReplyOf(err); r.String() != "452 4.3.1 Insufficient system storage" {
			t.Errorf("full queue: %v", r)
		}
	}
	if _, err := h.q.create(context.Background(), false); err != nil {
		t.Errorf("internal create refused: %v", err)
	}
	if n := len(h.logs.lines("queue full: new mail is refused with 452 4.3.1 until space returns")); n != 1 {
		t.Errorf("%d 'queue full' log lines, want one per transition", n)
	}

	cfg2 := testConfig(t.TempDir())
	cfg2.MinFree = 1 << 62
	h2 := openQueue(t, cfg2, del)
	if r := envelope.ReplyOf(h2.q.Admit(context.Background(), 100)); r.Code != 452 {
		t.Errorf("below queue_minfree: %v", r)
	}
	cfg3 := testConfig(t.TempDir())
	cfg3.MinFree = 1
	h3 := openQueue(t, cfg3, del)
	if err := h3.q.Admit(context.Background(), 1000); err != nil {
		t.Errorf("enough space: %v", err)
	}
	if r := envelope.ReplyOf(h3.q.Admit(context.Background(), 1<<62)); r.Code != 452 {
		t.Errorf("SIZE above the free space: %v", r)
	}
}

func TestShape(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	b, err := NewShapeBuilder(ShapeByUnit, now)
	if err != nil {
		t.Fatal(err)
	}
	add := func(age time.Duration, dests ...string) {
		it := &Item{Arrival: now.Add(-age), State: StateDeferred, Sender: "a@x.test"}
		for _, d := range dests {
			it.Rcpts = append(it.Rcpts, ItemRcpt{Addr: "r@y.test", Status: RcptPending, Dest: d})
		}
		b.Add(it)
	}
	add(time.Minute, "smtp:[u1]")
	add(7*time.Minute, "smtp:[u1]", "smtp:[u2]")
	add(30*time.Hour, "smtp:[u2]")
	add(2*time.Minute, "smtp:[u2]", "smtp:[u2]")
	s := b.Shape()
	if len(s.Buckets) != 11 || s.Buckets[0] != "T" || s.Buckets[10] != "1280+" {
		t.Fatalf("buckets %v", s.Buckets)
	}
	want := []ShapeRow{
		{Name: "TOTAL", Total: 4, Counts: []int{2, 1, 0, 0, 0, 0, 0, 0, 0, 1}},
		{Name: "smtp:[u2]", Total: 3, Counts: []int{1, 1, 0, 0, 0, 0, 0, 0, 0, 1}},
		{Name: "smtp:[u1]", Total: 2, Counts: []int{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for i, w := range want {
		if i >= len(s.Rows) || s.Rows[i].Name != w.Name || s.Rows[i].Total != w.Total || !slices.Equal(s.Rows[i].Counts, w.Counts) {
			t.Errorf("row %d = %+v, want %+v", i, s.Rows, w)
			break
		}
	}
	if _, err := NewShapeBuilder("color", now); err == nil {
		t.Error("unknown grouping accepted")
	}
}

// TestLongStateRecord: a record longer than the reader's buffer (a
// deferral of 2000 recipients with their replies) is read whole, and a
// torn one at the end is still recognised.
func TestLongStateRecord(t *testing.T) {
	rec := stateRecord{T: recordDefer, At: time.Now(), Attempts: 2, Next: time.Now().Add(time.Hour)}
	for i := range 2000 {
		rec.Reasons = append(rec.Reasons, deferReason{Rcpt: i, Relay: "none", Dest: "lmtp:[unit1.test]",
			Reply: "451 4.4.1 connect to unit1.test[192.0.2.1]:24: Connection refused"})
	}
	b := encodeState(stateRecord{T: recordDone, Rcpts: []int{1}, Status: statusSent}, rec)
	if len(b) < 100<<10 {
		t.Fatalf("record of %d bytes is not long", len(b))
	}
	st, err := readState(strings.NewReader(string(b)))
	if err != nil || len(st.recs) != 2 || st.bad != 0 || st.torn || st.goodLen != int64(len(b)) {
		t.Fatalf("readState: %d records, bad %d, torn %v, goodLen %d of %d, %v", len(st.recs), st.bad, st.torn, st.goodLen, len(b), err)
	}
	if got := len(st.recs[1].Reasons); got != 2000 {
		t.Errorf("%d reasons", got)
	}
	st, err = readState(strings.NewReader(string(b[:len(b)-10])))
	if err != nil || len(st.recs) != 1 || !st.torn || st.goodLen != int64(len(encodeState(stateRecord{T: recordDone, Rcpts: []int{1}, Status: statusSent}))) {
		t.Errorf("torn long record: %d records, torn %v, goodLen %d", len(st.recs), st.torn, st.goodLen)
	}
}
