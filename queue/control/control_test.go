package control

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

type router struct{}

func (router) Route(_ context.Context, a envelope.Address) (envelope.Route, error) {
	return envelope.Route{Transport: "smtp", Nexthop: "[" + a.Domain + "]:25",
		Hosts: []envelope.Host{{Network: "tcp", Name: a.Domain, Port: 25}}}, nil
}

// deliverer defers everything for "down.test" and delivers the rest.
type deliverer struct {
	mu    sync.Mutex
	count map[string]int
}

func (d *deliverer) Deliver(_ context.Context, dl *queue.Delivery) []queue.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.count == nil {
		d.count = map[string]int{}
	}
	res := make([]queue.Result, len(dl.Rcpts))
	for i, r := range dl.Rcpts {
		d.count[r.Addr.String()]++
		res[i] = queue.Result{Rcpt: r.Addr, Relay: "unit[192.0.2.1]:25", Reply: envelope.NewReply(250, envelope.Enhanced{2, 0, 0}, "Ok")}
		if r.Addr.Domain == "down.test" {
			res[i].Reply = envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, "unit down")
		}
	}
	return res
}

func enqueue(t *testing.T, q *queue.Queue, from string, rcpts ...string) string {
	t.Helper()
	env := &envelope.Envelope{From: envelope.MustParse(from), Received: time.Now()}
	for _, r := range rcpts {
		a := envelope.MustParse(r)
		env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: a, Orig: a})
	}
	id, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: control test\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	del := &deliverer{}
	q, err := queue.Open(queue.Config{Dir: dir, Hostname: "mx.test", MinimalBackoff: time.Hour, MaximalBackoff: time.Hour}, router{}, del, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; q.Close() })

	path := SocketPath(dir)
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Dial without a server: %v", err)
	}
	os.WriteFile(path, nil, 0o600)
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	os.Remove(path)
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// A socket file left by a killed daemon is replaced.
	if l, err := net.Listen("unix", path); err == nil {
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
	}
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v", fi.Mode(), err)
	}
	srv := NewServer(q, nil)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	deferred := enqueue(t, q, "alice@sender.test", "bob@down.test", "carol@up.test")
	waitFor(t, "deferral", func() bool { return q.Stats().Deferred == 1 })

	var items []*queue.Item
	if err := c.List(context.Background(), queue.Filter{}, func(it *queue.Item) error { items = append(items, it); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].ID != deferred || items[0].State != queue.StateDeferred ||
		items[0].Rcpts[0].Reply != "451 4.4.1 unit down" || items[0].Rcpts[1].Status != queue.RcptSent {
		t.Fatalf("list: %+v", items[0])
	}
	it, content, err := c.Show(context.Background(), deferred)
	if err != nil || it.Env == nil || len(it.History) == 0 || !strings.Contains(string(content), "Subject: control test") {
		t.Fatalf("show: %+v %q %v", it, content, err)
	}
	if _, _, err := c.Show(context.Background(), "0000000000ZZ"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("show of an unknown ID: %v", err)
	}
	sh, err := c.Shape(context.Background(), queue.Filter{}, queue.ShapeByUnit)
	if err != nil || len(sh.Rows) != 2 || sh.Rows[1].Name != "smtp:[down.test]:25" || sh.Rows[1].Total != 1 {
		t.Errorf("shape: %+v %v", sh, err)
	}
	if err := c.HoldUnit("down.test", "maintenance"); err != nil {
		t.Fatal(err)
	}
	if h := c.UnitHolds(); len(h) != 1 || h[0].Unit != "down.test" {
		t.Errorf("unit holds: %+v", h)
	}
	n, err := c.FlushUnit("down.test")
	if err != nil || n != 1 {
		t.Errorf("FlushUnit = %d, %v", n, err)
	}
	waitFor(t, "deferral on hold", func() bool {
		it, _, _ := c.Show(context.Background(), deferred)
		return it != nil && it.Rcpts[0].Reply == "450 4.3.2 unit on hold: maintenance"
	})
	if _, err := c.ReleaseUnit("nosuch"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("release of a unit not on hold: %v", err)
	}
	if n, err := c.ReleaseUnit("down.test"); err != nil || n != 1 {
		t.Errorf("ReleaseUnit = %d, %v", n, err)
	}
	waitFor(t, "a real attempt after the release", func() bool {
		it, _, _ := c.Show(context.Background(), deferred)
		return it != nil && it.State == queue.StateDeferred && it.Rcpts[0].Reply == "451 4.4.1 unit down"
	})
	res, err := c.Apply(context.Background(), queue.OpHold, queue.Selection{IDs: []string{deferred, "0000000000ZZ"}})
	if err != nil || len(res) != 2 || res[0].Status != "held" || !res[1].NotFound {
		t.Fatalf("hold: %+v %v", res, err)
	}
	res, err = c.Apply(context.Background(), queue.OpDelete, queue.Selection{All: true, Filter: queue.Filter{Sender: "@sender.test"}})
	if err != nil || len(res) != 1 || res[0].Status != "deleted" {
		t.Fatalf("delete ALL: %+v %v", res, err)
	}
	if n, err := c.FlushAll(context.Background()); err != nil || n != 0 {
		t.Errorf("FlushAll = %d, %v", n, err)
	}
	if _, err := c.Apply(context.Background(), "explode", queue.Selection{}); err == nil {
		t.Error("unknown operation accepted")
	}

	// A bad request gets an error line, not a hang.
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("{not json\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.Contains(string(b), `"error":"control: bad request`) {
		t.Errorf("bad request answered %q", b)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}
