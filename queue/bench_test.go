package queue

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// BenchmarkCommitParallel measures Create/Write/Commit of 1 KiB messages
// from 1 and 20 concurrent sessions: every message gets its file fsync and
// shares a group-committed directory fsync. Set MXFRONT_BENCH_DIR to
// benchmark a particular file system (default: the test temp dir).
//
//	go test -run '^$' -bench CommitParallel -benchtime 3s ./queue
func BenchmarkCommitParallel(b *testing.B) {
	line := strings.Repeat("x", 62) + "\r\n"
	body := []byte("Subject: bench\r\n\r\n" + strings.Repeat(line, 16))
	body = body[:1024]
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("goroutines=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			if d := os.Getenv("MXFRONT_BENCH_DIR"); d != "" {
				var err error
				if dir, err = os.MkdirTemp(d, "bench-"); err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
			}
			q, err := Open(Config{Dir: dir, Hostname: "mx.test"}, fakeRouter{}, newFakeDeliverer(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			// Where the time goes: file fsync, directory fsync, whole Commit.
			var fileNs, dirNs, nDir, commitNs atomic.Int64
			q.syncFile = func(f *os.File) error {
				t := time.Now()
				defer func() { fileNs.Add(int64(time.Since(t))) }()
				return f.Sync()
			}
			q.commit.syncDir = func(f *os.File) error {
				t := time.Now()
				defer func() { dirNs.Add(int64(time.Since(t))); nDir.Add(1) }()
				return f.Sync()
			}
			procs := runtime.GOMAXPROCS(0)
			if n < procs {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
				procs = n
			}
			b.SetParallelism((n + procs - 1) / procs)
			b.SetBytes(int64(len(body)))
			from := envelope.MustParse("alice@sender.test")
			to := envelope.MustParse("bob@unit1.test")
			ctx := context.Background()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					in, err := q.Create(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					in.Write(body)
					env := &envelope.Envelope{From: from, Rcpts: []envelope.Recipient{{Addr: to, Orig: to}}}
					t := time.Now()
					if err := in.Commit(ctx, env); err != nil {
						b.Error(err)
						return
					}
					commitNs.Add(int64(time.Since(t)))
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/float64(max(q.commit.batches.Load(), 1)), "msgs/dirsync")
			ms := func(ns int64, n int64) float64 { return float64(ns) / float64(max(n, 1)) / 1e6 }
			b.ReportMetric(ms(fileNs.Load(), int64(b.N)), "fsync-ms")
			b.ReportMetric(ms(dirNs.Load(), nDir.Load()), "dirsync-ms")
			b.ReportMetric(ms(commitNs.Load(), int64(b.N)), "commit-ms")
		})
	}
}

// BenchmarkCommitAndDeliver measures the whole queue path with 20
// sessions: commit, immediate delivery to an instant Deliverer, removal.
func BenchmarkCommitAndDeliver(b *testing.B) {
	body := []byte("Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16))[:1024]
	dir := b.TempDir()
	del := DelivererFunc(func(_ context.Context, d *Delivery) []Result {
		res := make([]Result, len(d.Rcpts))
		for i := range res {
			res[i] = Result{Rcpt: d.Rcpts[i].Addr, Reply: ok250, Relay: "unit[192.0.2.1]:24"}
		}
		return res
	})
	q, err := Open(Config{Dir: dir, Hostname: "mx.test"}, fakeRouter{}, del, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- q.Run(ctx) }()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((20 + procs - 1) / procs)
	from := envelope.MustParse("alice@sender.test")
	to := envelope.MustParse("bob@unit1.test")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			in, err := q.Create(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			in.Write(body)
			if err := in.Commit(ctx, &envelope.Envelope{From: from, Rcpts: []envelope.Recipient{{Addr: to}}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for deadline := time.Now().Add(time.Minute); q.Stats().Total > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("queue did not drain: %+v", q.Stats())
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.StopTimer()
	cancel()
	<-done
}
