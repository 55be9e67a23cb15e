package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestCacheTTLs(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	l := New(Config{TTL: time.Minute, NegativeTTL: 10 * time.Second, Now: clk.Now})
	var calls atomic.Int32
	answer := map[string]Result{"a": {Value: "1", Found: true}}
	fail := map[string]bool{}
	fn := func(key string) func(context.Context) (Result, error) {
		return func(context.Context) (Result, error) {
			calls.Add(1)
			if fail[key] {
				return Result{}, errors.New("down")
			}
			return answer[key], nil
		}
	}
	ctx := context.Background()
	get := func(key string) (Result, bool, error) { return l.Do(ctx, key, fn(key)) }

	if r, cached, err := get("a"); err != nil || cached || r.Value != "1" {
		t.Fatalf("a: %v %v %v", r, cached, err)
	}
	if r, cached, _ := get("a"); !cached || r.Value != "1" {
		t.Errorf("a not cached: %v", r)
	}
	if r, cached, _ := get("b"); cached || r.Found {
		t.Errorf("b: %v %v", r, cached)
	}
	if _, cached, _ := get("b"); !cached {
		t.Errorf("negative result not cached")
	}
	clk.add(11 * time.Second)
	if _, cached, _ := get("b"); cached {
		t.Errorf("negative result outlived its TTL")
	}
	if _, cached, _ := get("a"); !cached {
		t.Errorf("positive result expired early")
	}
	clk.add(time.Minute)
	if _, cached, _ := get("a"); cached {
		t.Errorf("positive result outlived its TTL")
	}
	fail["c"] = true
	for range 2 {
		if _, cached, err := get("c"); err == nil || cached {
			t.Errorf("c: %v %v", cached, err)
		}
	}
	if n := calls.Load(); n != 6 {
		t.Errorf("%d calls, want 6 (a, b, b, a, c, c: errors are not cached)", n)
	}
	l.Flush()
	if _, cached, _ := get("a"); cached {
		t.Errorf("Flush kept a")
	}
}

func TestNoCache(t *testing.T) {
	l := New(Config{})
	var calls atomic.Int32
	for range 3 {
		l.Do(context.Background(), "a", func(context.Context) (Result, error) {
			calls.Add(1)
			return Result{Value: "x", Found: true}, nil
		})
	}
	if calls.Load() != 3 || l.Len() != 0 {
		t.Errorf("zero Config cached: %d calls, %d entries", calls.Load(), l.Len())
	}
}

func TestEviction(t *testing.T) {
	l := New(Config{TTL: time.Hour, MaxEntries: 10})
	for i := range 100 {
		l.Do(context.Background(), fmt.Sprint(i), func(context.Context) (Result, error) { return Result{Found: true}, nil })
	}
	if n := l.Len(); n != 10 {
		t.Errorf("%d entries, max 10", n)
	}
}

func TestMergedAndCallerDeadline(t *testing.T) {
	l := New(Config{TTL: time.Hour})
	release := make(chan struct{})
	var calls atomic.Int32
	fn := func(ctx context.Context) (Result, error) {
		calls.Add(1)
		select {
		case <-release:
			return Result{Value: "v", Found: true}, nil
		case <-ctx.Done():
			return Result{}, context.Cause(ctx)
		}
	}
	// One impatient caller leaves at its deadline; the others get the
	// answer of the same single call.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var got atomic.Int32
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, _, err := l.Do(context.Background(), "k", fn); err == nil && r.Value == "v" {
				got.Add(1)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if _, _, err := l.Do(ctx, "k", fn); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("impatient caller: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("impatient caller waited %v", d)
	}
	close(release)
	wg.Wait()
	if calls.Load() != 1 || got.Load() != 10 {
		t.Errorf("%d calls, %d answers; want 1 and 10", calls.Load(), got.Load())
	}
}

func TestAbandonedAndTimeout(t *testing.T) {
	l := New(Config{Timeout: 100 * time.Millisecond})
	causes := make(chan error, 2)
	fn := func(ctx context.Context) (Result, error) {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return Result{}, context.Cause(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, _, err := l.Do(ctx, "k", fn); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	if c := <-causes; !errors.Is(c, ErrAbandoned) {
		t.Errorf("cause %v, want ErrAbandoned", c)
	}
	// The abandoned flight is gone: a new caller starts afresh, and the
	// table's own timeout ends it.
	start := time.Now()
	if _, _, err := l.Do(context.Background(), "k", fn); !errors.Is(err, ErrTimeout) {
		t.Errorf("timeout: %v", err)
	}
	if c := <-causes; !errors.Is(c, ErrTimeout) {
		t.Errorf("cause %v, want ErrTimeout", c)
	}
	if d := time.Since(start); d < 90*time.Millisecond || d > 2*time.Second {
		t.Errorf("timeout after %v", d)
	}
}

func TestFlushDuringFlight(t *testing.T) {
	l := New(Config{TTL: time.Hour})
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		l.Do(context.Background(), "k", func(context.Context) (Result, error) {
			<-release
			return Result{Value: "old", Found: true}, nil
		})
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	l.Flush()
	close(release)
	<-done
	if l.Len() != 0 {
		t.Errorf("a lookup begun before Flush filled the cache")
	}
}

func TestHealth(t *testing.T) {
	var h Health
	now := time.Unix(0, 0)
	if !h.Try(now) {
		t.Fatal("new server not tryable")
	}
	var backoffs []time.Duration
	for range 6 {
		b, _ := h.Fail(now, errors.New("refused"))
		backoffs = append(backoffs, b)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if fmt.Sprint(backoffs) != fmt.Sprint(want) {
		t.Errorf("backoffs %v, want %v", backoffs, want)
	}
	if h.Try(now.Add(9 * time.Second)) {
		t.Error("tryable during backoff")
	}
	if !h.Try(now.Add(10 * time.Second)) {
		t.Error("not tryable after backoff")
	}
	if h.Try(now.Add(10 * time.Second)) {
		t.Error("two probes at once")
	}
	h.Abandon()
	if !h.Try(now.Add(10 * time.Second)) {
		t.Error("not tryable after an abandoned probe")
	}
	if !h.Succeed() {
		t.Error("Succeed did not report the recovery")
	}
	if down, _ := h.Down(); down || !h.Try(now) {
		t.Error("still down after Succeed")
	}
}

// BenchmarkCachedLookup is the warm-cache cost of a lookup.
func BenchmarkCachedLookup(b *testing.B) {
	l := New(Config{TTL: time.Hour})
	ctx := context.Background()
	fn := func(context.Context) (Result, error) { return Result{Value: "v", Found: true}, nil }
	l.Do(ctx, "foo.bar@example.com", fn)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, cached, _ := l.Do(ctx, "foo.bar@example.com", fn); !cached {
				b.Fatal("not cached")
			}
		}
	})
}
