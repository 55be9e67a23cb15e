package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// BenchmarkDeferredMemory measures what 100 000 deferred messages cost a
// running queue: the spool is written directly (a 1 KiB message with two
// recipients and a state file saying "deferred, next attempt in an hour",
// as after a unit outage), then Open recovers it and Run holds it. It
// reports the heap per deferred message (live heap after GC, minus the
// empty queue's), the recovery time, and the time of a full `mxfront queue
// list` pass (List over every message). MXFRONT_DEFERRED_N sets the count.
//
//	go test -run '^$' -bench DeferredMemory -benchtime 1x ./queue
func BenchmarkDeferredMemory(b *testing.B) {
	n := 100000
	if s := os.Getenv("MXFRONT_DEFERRED_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for range b.N {
		dir := b.TempDir()
		writeDeferredSpool(b, dir, n)
		cfg := Config{Dir: dir, Hostname: "mx.test", MinimalBackoff: time.Hour, MaximalBackoff: time.Hour, QueueRunDelay: time.Hour}
		del := DelivererFunc(func(context.Context, *Delivery) []Result { panic("no delivery expected") })

		base := liveHeap()
		t0 := time.Now()
		q, err := Open(cfg, fakeRouter{}, del, nil)
		if err != nil {
			b.Fatal(err)
		}
		recovery := time.Since(t0)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- q.Run(ctx) }()
		if s := q.Stats(); s.Deferred != n {
			b.Fatalf("Stats %+v, want %d deferred", s, n)
		}
		heap := liveHeap() - base
		t1 := time.Now()
		listed := 0
		if err := q.List(ctx, Filter{}, func(*Item) error { listed++; return nil }); err != nil || listed != n {
			b.Fatalf("List: %d items, %v", listed, err)
		}
		list := time.Since(t1)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		cancel()
		<-done
		q.Close()
		b.ReportMetric(float64(n), "deferred")
		b.ReportMetric(float64(heap)/float64(n), "heap-B/msg")
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(ms.Sys)/(1<<20), "sys-MiB")
		b.ReportMetric(recovery.Seconds(), "recovery-s")
		b.ReportMetric(list.Seconds(), "list-s")
	}
}

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// writeDeferredSpool writes n deferred messages in the spool format
// (spool.go), without fsync: their durability is not what is measured.
func writeDeferredSpool(b *testing.B, dir string, n int) {
	for _, sub := range []string{dirIncoming, dirMsg, dirHold, dirCorrupt} {
		if err := os.MkdirAll(dir+"/"+sub, 0o700); err != nil {
			b.Fatal(err)
		}
	}
	content := []byte("Received: from client.test by mx.test; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: deferred\r\n\r\n")
	for len(content) < 1024 {
		content = append(content, "a line of a deferred message body, waiting for its unit......\r\n"...)
	}
	received := time.Now().Add(-time.Hour)
	next := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	jobs := make(chan int)
	var failed error
	var mu sync.Mutex
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id := encodeID(uint64(received.UnixMicro()) + uint64(i))
				env := &envelope.Envelope{ID: id, From: envelope.MustParse("alice@sender.test"), Received: received, Size: int64(len(content))}
				for _, r := range []string{fmt.Sprintf("u%d@unit%d.test", i, i%4), fmt.Sprintf("v%d@unit%d.test", i, i%4)} {
					a := envelope.MustParse(r)
					env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: a, Orig: a})
				}
				meta, _ := json.Marshal(fileMeta{Env: env, Queued: received})
				file := append(fileHeader(), content...)
				file = append(file, meta...)
				file = append(file, fileFooter(int64(len(content)), len(meta), crc32.Checksum(content, crcTable), crc32.Checksum(meta, crcTable))...)
				state := encodeState(stateRecord{T: recordDefer, At: received, Attempts: 3, Next: next, Reasons: []deferReason{
					{Rcpt: 0, Relay: "none", Dest: fmt.Sprintf("lmtp:[unit%d.test]", i%4), Reply: "451 4.4.1 connect to unit: Connection refused"},
					{Rcpt: 1, Relay: "none", Dest: fmt.Sprintf("lmtp:[unit%d.test]", i%4), Reply: "451 4.4.1 connect to unit: Connection refused"}}})
				err := os.WriteFile(dir+"/"+dirMsg+"/"+id, file, 0o600)
				if err == nil {
					err = os.WriteFile(dir+"/"+dirMsg+"/"+id+stateSuffix, state, 0o600)
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
}
