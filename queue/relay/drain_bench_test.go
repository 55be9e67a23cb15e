package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

// BenchmarkQueueDrain measures how fast a backlog drains: N messages
// (default 20 000, MXFRONT_DRAIN_N) queued for 4 units while the queue is
// stopped, then delivered by the real scheduler and relay over SMTP to 4
// in-process go-smtp units on loopback. Two runs in one process:
//
//	fast: all 4 units answer at once;
//	slow: unit 4 takes 50 ms per message (MXFRONT_DRAIN_SLOW).
//
// It reports the drain rates and, as the ratio that matters, how fast the
// three healthy units drain beside the slow one compared with the
// all-fast run: per-destination concurrency must keep a slow unit from
// holding the others back.
//
//	go test -run '^$' -bench QueueDrain -benchtime 1x ./queue/relay
func BenchmarkQueueDrain(b *testing.B) {
	n := 20000
	if s := os.Getenv("MXFRONT_DRAIN_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	slow := 50 * time.Millisecond
	if s := os.Getenv("MXFRONT_DRAIN_SLOW"); s != "" {
		slow, _ = time.ParseDuration(s)
	}
	for range b.N {
		fast := drain(b, n, 0)
		mixed := drain(b, n, slow)
		b.ReportMetric(float64(n)/fast.all.Seconds(), "fast-msgs/s")
		b.ReportMetric(float64(mixed.healthyN)/mixed.healthy.Seconds(), "healthy-beside-slow-msgs/s")
		b.ReportMetric(float64(n-mixed.healthyN)/mixed.all.Seconds(), "slow-unit-msgs/s")
		b.ReportMetric(float64(n)/mixed.all.Seconds(), "with-slow-msgs/s")
		b.ReportMetric((float64(mixed.healthyN)/mixed.healthy.Seconds())/(float64(fast.healthyN)/fast.healthy.Seconds()), "healthy-ratio")
		b.ReportMetric(fast.fill.Seconds(), "fill-s")
	}
}

type drainResult struct {
	fill     time.Duration // queueing the backlog
	healthy  time.Duration // until units 1-3 had all their mail
	healthyN int
	all      time.Duration // until every message was delivered
}

// benchUnit is an in-process SMTP unit that counts messages.
type benchUnit struct {
	delay time.Duration
	n     atomic.Int64
	srv   *smtp.Server
	addr  string
}

type benchSession struct{ u *benchUnit }

func (s benchSession) Reset()                               {}
func (s benchSession) Logout() error                        { return nil }
func (s benchSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s benchSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s benchSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	if s.u.delay > 0 {
		time.Sleep(s.u.delay)
	}
	s.u.n.Add(1)
	return nil
}

func startBenchUnit(b *testing.B, delay time.Duration) *benchUnit {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	u := &benchUnit{delay: delay, addr: ln.Addr().String()}
	u.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return benchSession{u}, nil }))
	u.srv.Domain = "unit.bench.test"
	u.srv.ErrorLog = nopLogger{}
	go u.srv.Serve(ln)
	return u
}

// unitRouter sends uN.test to unit N.
type unitRouter map[string]envelope.Route

func (r unitRouter) Route(_ context.Context, a envelope.Address) (envelope.Route, error) {
	rt, ok := r[a.Domain]
	if !ok {
		return envelope.Route{}, fmt.Errorf("no route for %s", a)
	}
	return rt, nil
}

func drain(b *testing.B, n int, slowDelay time.Duration) drainResult {
	units := make([]*benchUnit, 4)
	router := unitRouter{}
	for i := range units {
		d := time.Duration(0)
		if i == 3 {
			d = slowDelay
		}
		units[i] = startBenchUnit(b, d)
		defer units[i].srv.Close()
		router[fmt.Sprintf("u%d.test", i)] = tcpRoute("smtp", units[i].addr)
	}
	r, err := New(Config{Hostname: "mx.bench.test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	q, err := queue.Open(queue.Config{Dir: b.TempDir(), Hostname: "mx.bench.test"}, router, r, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()

	body := []byte("Received: from client.test by mx.bench.test\r\nSubject: drain\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 15))[:1024]
	from := envelope.MustParse("sender@remote.test")
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				to := envelope.MustParse(fmt.Sprintf("user%d@u%d.test", i, i%4))
				env := &envelope.Envelope{From: from, Rcpts: []envelope.Recipient{{Addr: to, Orig: to}}}
				if _, err := q.Enqueue(context.Background(), env, strings.NewReader(string(body))); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	res := drainResult{fill: time.Since(t0)}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	start := time.Now()
	go func() { done <- q.Run(ctx) }()
	healthyWant := int64(0) // units 0-2 (i%4 < 3)
	for i := 0; i < n; i++ {
		if i%4 != 3 {
			healthyWant++
		}
	}
	res.healthyN = int(healthyWant)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		h := units[0].n.Load() + units[1].n.Load() + units[2].n.Load()
		if res.healthy == 0 && h >= healthyWant {
			res.healthy = time.Since(start)
		}
		if h+units[3].n.Load() >= int64(n) {
			res.all = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("drain did not finish: %d of %d delivered", h+units[3].n.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	return res
}
