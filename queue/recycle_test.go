package queue

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecycledFiles: a finished message's file is reused by the next one,
// which is committed with exactly its own length (a longer old message
// must not leave its tail behind), and survives recovery intact.
func TestRecycledFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	h := startQueue(t, cfg, newFakeDeliverer())
	big := strings.Repeat("long line of an earlier, bigger message\r\n", 500)
	commit(t, h.q, testEnv("a@sender.test", "bob@unit1.test"), testBody(big))
	waitFor(t, "first removed", func() bool { return len(h.logs.lines("removed")) == 1 })
	ents, _ := os.ReadDir(filepath.Join(dir, dirMsg))
	if len(ents) != 1 || !strings.HasSuffix(ents[0].Name(), freeSuffix) {
		t.Fatalf("msg/ = %v, want one free file", ents)
	}
	h.stop()

	// A second life adopts the free file and reuses it for a small message.
	h2 := openQueue(t, cfg, newFakeDeliverer()) // not running: the message stays
	in, err := h2.q.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !in.reused {
		t.Fatal("Create did not reuse the free file")
	}
	in.Write([]byte("Subject: small\r\n\r\nsmall\r\n"))
	if err := in.Commit(context.Background(), testEnv("a@sender.test", "carol@unit1.test")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, dirMsg, in.ID()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := readSpoolFile(f, in.ID())
	if err != nil {
		t.Fatalf("recycled file does not validate: %v", err)
	}
	if sf.contentLen != int64(len("Subject: small\r\n\r\nsmall\r\n")) {
		t.Fatalf("content length %d", sf.contentLen)
	}
	h2.stop()
}
