package table

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// write100k writes a 100 000-line relay_recipient_maps-style texthash file.
func write100k(b *testing.B) string {
	b.Helper()
	var sb strings.Builder
	sb.WriteString("# 100k recipients\n")
	for i := range 100_000 {
		fmt.Fprintf(&sb, "User%06d@Domain%03d.example OK\n", i, i%500)
	}
	return writeFile(b, b.TempDir(), "recipients", sb.String())
}

func BenchmarkTexthashLoad100k(b *testing.B) {
	p := write100k(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open("texthash:"+p, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTexthashLookup100k(b *testing.B) {
	p := write100k(b)
	tbl, err := Open("texthash:"+p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	keys := []string{"user012345@domain345.example", "User099999@Domain499.example", "nobody@domain001.example"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _, _ = tbl.Lookup(ctx, keys[i%len(keys)])
		i++
	}
}

func BenchmarkCIDRLookup1000(b *testing.B) {
	var sb strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&sb, "10.%d.%d.0/24 R%d\n", i/256, i%256, i)
	}
	p := writeFile(b, b.TempDir(), "c.cidr", sb.String())
	tbl, err := Open("cidr:"+p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = tbl.Lookup(ctx, "192.0.2.1") // worst case: no rule matches
	}
}

func BenchmarkRegexpLookup100(b *testing.B) {
	var sb strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sb, "/^Subject:.*spam%d/ REJECT\n", i)
	}
	p := writeFile(b, filepath.Join(b.TempDir()), "h.regexp", sb.String())
	tbl, err := Open("regexp:"+p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = tbl.Lookup(ctx, "Subject: a perfectly ordinary message subject line")
	}
}
