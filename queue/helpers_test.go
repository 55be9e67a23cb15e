package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// fakeRouter routes by domain: "bad.test" to error:, "later.test" to
// retry:, "broken.test" fails the lookup, anything else to
// "lmtp:[<domain>]".
type fakeRouter struct{}

func (fakeRouter) Route(_ context.Context, a envelope.Address) (envelope.Route, error) {
	switch a.Domain {
	case "bad.test":
		return envelope.Route{Transport: envelope.TransportError, Nexthop: "5.1.1 no such user here",
			Reply: envelope.NewReply(550, envelope.Enhanced{5, 1, 1}, "no such user here")}, nil
	case "later.test":
		return envelope.Route{Transport: envelope.TransportRetry, Nexthop: "4.3.2 try later"}, nil
	case "broken.test":
		return envelope.Route{}, fmt.Errorf("table lookup failed")
	}
	return envelope.Route{Transport: envelope.TransportLMTP, Nexthop: "[" + a.Domain + "]"}, nil
}

// call is one transaction seen by fakeDeliverer.
type call struct {
	id    string
	dest  string
	rcpts []string
	body  string
	from  string
	at    time.Time
	env   *envelope.Envelope
}

// fakeDeliverer answers per recipient from a script (one reply per attempt;
// the last one repeats; default 250) and records every transaction.
type fakeDeliverer struct {
	mu       sync.Mutex
	script   map[string][]envelope.Reply
	relay    string
	calls    []call
	block    map[string]chan struct{} // per dest: wait for close (or ctx)
	inflight map[string]int
	maxDest  map[string]int
	total    int
	maxTotal int
}

func newFakeDeliverer() *fakeDeliverer {
	return &fakeDeliverer{
		script:   make(map[string][]envelope.Reply),
		relay:    "unit.test[192.0.2.1]:24",
		block:    make(map[string]chan struct{}),
		inflight: make(map[string]int),
		maxDest:  make(map[string]int),
	}
}

func (f *fakeDeliverer) set(rcpt string, replies ...envelope.Reply) {
	f.mu.Lock()
	f.script[rcpt] = replies
	f.mu.Unlock()
}

func (f *fakeDeliverer) blockDest(dest string) chan struct{} {
	ch := make(chan struct{})
	f.mu.Lock()
	f.block[dest] = ch
	f.mu.Unlock()
	return ch
}

var (
	ok250   = envelope.NewReply(250, envelope.Enhanced{2, 0, 0}, "Ok")
	tmp451  = envelope.NewReply(451, envelope.Enhanced{4, 2, 0}, "mailbox busy")
	perm550 = envelope.NewReply(550, envelope.Enhanced{5, 1, 1}, "user unknown")
)

func (f *fakeDeliverer) Deliver(ctx context.Context, d *Delivery) []Result {
	key := d.Route.Key()
	f.mu.Lock()
	f.inflight[key]++
	f.total++
	f.maxDest[key] = max(f.maxDest[key], f.inflight[key])
	f.maxTotal = max(f.maxTotal, f.total)
	ch := f.block[key]
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight[key]--
		f.total--
		f.mu.Unlock()
	}()

	var body []byte
	rc, err := d.Body()
	if err == nil {
		body, err = io.ReadAll(rc)
		rc.Close()
	}
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	c := call{id: d.Env.ID, dest: key, body: string(body), from: d.Env.From.String(), at: time.Now(), env: d.Env}
	res := make([]Result, len(d.Rcpts))
	f.mu.Lock()
	for i, r := range d.Rcpts {
		a := r.Addr.String()
		c.rcpts = append(c.rcpts, a)
		reply := ok250
		if s := f.script[a]; len(s) > 0 {
			reply = s[0]
			if len(s) > 1 {
				f.script[a] = s[1:]
			}
		}
		if err != nil || ctx.Err() != nil {
			reply = envelope.NewReply(451, envelope.Enhanced{4, 4, 2}, "lost connection")
		}
		res[i] = Result{Rcpt: r.Addr, Reply: reply, Relay: f.relay, Setup: 10 * time.Millisecond, Xmit: 20 * time.Millisecond}
	}
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	return res
}

func (f *fakeDeliverer) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// syncBuffer collects JSON log lines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log records whose msg is msg (all if "").
func (b *syncBuffer) lines(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && (msg == "" || m["msg"] == msg) {
			out = append(out, m)
		}
	}
	return out
}

type harness struct {
	t      *testing.T
	q      *Queue
	cfg    Config
	del    *fakeDeliverer
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func testConfig(dir string) Config {
	return Config{
		Dir:            dir,
		MinimalBackoff: 100 * time.Millisecond,
		MaximalBackoff: 400 * time.Millisecond,
		QueueRunDelay:  10 * time.Millisecond,
		Hostname:       "mx.test",
	}
}

// openQueue opens a queue without running it.
func openQueue(t *testing.T, cfg Config, del *fakeDeliverer) *harness {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := Open(cfg, fakeRouter{}, del, logger)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h := &harness{t: t, q: q, cfg: cfg, del: del, logs: logs}
	t.Cleanup(h.stop)
	return h
}

// startQueue opens and runs a queue; the test's cleanup stops it.
func startQueue(t *testing.T, cfg Config, del *fakeDeliverer) *harness {
	h := openQueue(t, cfg, del)
	h.run()
	return h
}

func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.q.Run(ctx) }()
}

// halt stops Run (and waits for it) but keeps the queue open.
func (h *harness) halt() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("Run did not return after cancel")
	}
	h.cancel = nil
}

func (h *harness) stop() {
	if h.q == nil {
		return
	}
	h.halt()
	h.q.Close()
	h.q = nil
}

func testEnv(from string, rcpts ...string) *envelope.Envelope {
	env := &envelope.Envelope{Received: time.Now()}
	if from != "" {
		env.From = envelope.MustParse(from)
	}
	for _, r := range rcpts {
		a := envelope.MustParse(r)
		env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: a, Orig: a})
	}
	return env
}

func testBody(subject string) string {
	return "Received: from client.test by mx.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"From: <alice@sender.test>\r\nSubject: " + subject + "\r\n\r\nHello.\r\n"
}

// commit queues a message through Create/Write/Commit like the SMTP
// server does.
func commit(t *testing.T, q *Queue, env *envelope.Envelope, body string) string {
	t.Helper()
	in, err := q.Create(context.Background())
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := io.WriteString(in, body); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := in.Commit(context.Background(), env); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return in.ID()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// files lists the names in a spool subdirectory.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), freeSuffix) {
			continue // recycled files are not messages (recycle.go)
		}
		names = append(names, e.Name())
	}
	return names
}

// callsTo returns the transactions that included rcpt.
func callsTo(calls []call, rcpt string) []call {
	var out []call
	for _, c := range calls {
		for _, r := range c.rcpts {
			if r == rcpt {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// fakeClock is an adjustable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
