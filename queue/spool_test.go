package queue

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIDs(t *testing.T) {
	var g idGen
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := g.next(now), g.next(now)
	if a >= b || len(a) != idLen || !validID(a) {
		t.Errorf("ids %q %q not increasing", a, b)
	}
	// Clock steps back: still increasing.
	if c := g.next(now.Add(-time.Hour)); c <= b {
		t.Errorf("id after clock step back %q <= %q", c, b)
	}
	var g2 idGen
	g2.floor(encodeID(1 << 58))
	if d := g2.next(now); d <= encodeID(1<<58) {
		t.Errorf("floor ignored: %q", d)
	}
	if v, ok := decodeID(a); !ok || encodeID(v) != a {
		t.Errorf("round trip %q", a)
	}
	for _, bad := range []string{"", "../../etc/pa", "0123456789AI", "0123456789ABC", "0123456789ab"} {
		if validID(bad) {
			t.Errorf("validID(%q)", bad)
		}
	}
	if later := g.next(now.Add(time.Second)); later <= a {
		t.Errorf("not sortable by time")
	}
}

func TestSpoolFileValidation(t *testing.T) {
	dir := t.TempDir()
	h := openQueue(t, testConfig(dir), newFakeDeliverer())
	id := commit(t, h.q, testEnv("alice@sender.test", "bob@unit1.test"), testBody("validate"))
	path := filepath.Join(dir, dirMsg, id)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, b []byte, wantOK bool) {
		t.Helper()
		p := filepath.Join(t.TempDir(), id)
		os.WriteFile(p, b, 0o600)
		f, _ := os.Open(p)
		defer f.Close()
		_, err := readSpoolFile(f, id)
		if (err == nil) != wantOK {
			t.Errorf("%s: err = %v, want ok=%v", name, err, wantOK)
		}
	}
	check("good", good, true)
	check("empty", nil, false)
	check("truncated", good[:len(good)-1], false)
	check("appended", append(bytes.Clone(good), 'x'), false)
	for _, off := range []int{0, 5, len(good) - footerLen - 10, len(good) - footerLen + 8, len(good) - 1} {
		b := bytes.Clone(good)
		b[off] ^= 0x01
		check("flip at "+string(rune('0'+off%10)), b, false)
	}
	// A flipped content byte passes the cheap checks (by design) but fails
	// when the body is read.
	b := bytes.Clone(good)
	b[headerLen] ^= 0x01
	check("content flip", b, true)
	h.stop()

	// Wrong ID: a file renamed by hand.
	f, _ := os.Open(path)
	defer f.Close()
	if _, err := readSpoolFile(f, encodeID(7)); err == nil || !strings.Contains(err.Error(), "envelope is for") {
		t.Errorf("renamed file: %v", err)
	}
}

func TestStateFile(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	data := encodeState(
		stateRecord{T: recordDone, At: now, Rcpts: []int{0, 2}, Status: statusSent},
		stateRecord{T: recordDefer, At: now, Attempts: 2, Next: now.Add(time.Hour),
			Reasons: []deferReason{{Rcpt: 1, Reply: "451 4.2.0 busy"}}},
		stateRecord{T: "future-type", At: now},
	)
	lines := strings.SplitAfter(string(data), "\n")
	// A damaged middle line, a good one after it, and a torn tail.
	damaged := strings.Replace(lines[1], "busy", "bUsy", 1)
	in := lines[0] + damaged + lines[2] + lines[0][:20]
	st, err := readState(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.recs) != 2 || st.bad != 1 || !st.torn || st.goodLen != int64(len(in)-20) {
		t.Errorf("readState = %+v", st)
	}
	if st.recs[0].T != recordDone || len(st.recs[0].Rcpts) != 2 || st.recs[1].T != "future-type" {
		t.Errorf("records %+v", st.recs)
	}
}

func TestRecoveryReplaysState(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := openQueue(t, cfg, newFakeDeliverer())
	id := commit(t, h.q, testEnv("alice@sender.test", "a@unit1.test", "b@unit1.test", "c@unit1.test"), testBody("replay"))
	h.stop()
	next := time.Now().Add(time.Hour)
	data := encodeState(
		stateRecord{T: recordDone, At: time.Now(), Rcpts: []int{0}, Status: statusSent},
		stateRecord{T: recordDone, At: time.Now(), Rcpts: []int{9}, Status: statusSent}, // out of range
		stateRecord{T: recordDefer, At: time.Now(), Attempts: 3, Next: next},
	)
	torn := encodeState(stateRecord{T: recordDone, At: time.Now(), Rcpts: []int{1}, Status: statusSent})
	statePath := filepath.Join(dir, dirMsg, id+stateSuffix)
	os.WriteFile(statePath, append(data, torn[:len(torn)-3]...), 0o600)

	del := newFakeDeliverer()
	h2 := startQueue(t, cfg, del)
	if s := h2.q.Stats(); s.Deferred != 1 {
		t.Fatalf("Stats %+v, want the message deferred until its recorded next attempt", s)
	}
	if b, _ := os.ReadFile(statePath); !bytes.Equal(b, data) {
		t.Errorf("torn record not cut off")
	}
	h2.q.mu.Lock()
	m := h2.q.msgs[id]
	attempts := m.attempts
	h2.q.mu.Unlock()
	if attempts != 3 {
		t.Errorf("attempts %d, want 3", attempts)
	}
	h2.q.Flush()
	waitFor(t, "removal", func() bool { return len(h2.logs.lines("removed")) == 1 })
	calls := del.snapshot()
	if len(calls) != 1 || strings.Join(calls[0].rcpts, ",") != "b@unit1.test,c@unit1.test" {
		t.Errorf("delivered %+v, want b and c only", calls)
	}
}
