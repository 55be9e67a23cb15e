package queue

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

func TestProbeCommit(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(Config{Dir: dir, Hostname: "mx.test"}, fakeRouter{}, newFakeDeliverer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var fileNs, dirNs, commitNs, nfile, ndir atomic.Int64
	q.syncFile = func(f *os.File) error { s := time.Now(); err := f.Sync(); fileNs.Add(int64(time.Since(s))); nfile.Add(1); return err }
	q.commit.syncDir = func(f *os.File) error { s := time.Now(); err := f.Sync(); dirNs.Add(int64(time.Since(s))); ndir.Add(1); return err }
	body := make([]byte, 1024)
	var wg sync.WaitGroup
	start := time.Now()
	var n atomic.Int64
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 3*time.Second {
				in, _ := q.Create(context.Background())
				in.Write(body)
				s := time.Now()
				to := envelope.MustParse("b@unit1.test")
				in.Commit(context.Background(), &envelope.Envelope{Rcpts: []envelope.Recipient{{Addr: to}}})
				commitNs.Add(int64(time.Since(s)))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	t.Logf("%d msgs, %.0f/s; file fsync avg %v (n=%d); dir fsync avg %v (n=%d); commit avg %v",
		n.Load(), float64(n.Load())/el.Seconds(),
		time.Duration(fileNs.Load()/max(nfile.Load(), 1)), nfile.Load(),
		time.Duration(dirNs.Load()/max(ndir.Load(), 1)), ndir.Load(),
		time.Duration(commitNs.Load()/max(n.Load(), 1)))
}
