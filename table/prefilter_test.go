package table

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPrefilter: the prefilter never changes a result. Each pattern is
// matched against each key with and without it.
func TestPrefilter(t *testing.T) {
	patterns := []string{
		`(?is)^Subject:.*\bspam\b`, `(?i)^subject: x`, `^Subject:`, `(?s)^X-K`, `(?i)^kelvin`, `(?i)^ss`,
		`(?i)^(Subject):`, `(?m)^Subject:`, `Subject:`, `(?i)^Ünïcode`, `(?i)^a|^b`, `\A(?:(?i)^From:)`,
		`(?i)^$`, `^`, `(?i)^Subject:.*\bspam\b`, `(?i)x(spam)y`, `spam|eggs`, `(?i)SPAM`, `Sp(a)m`,
	}
	keys := []string{"Subject: spam here", "subject: x", "SUBJECT:", "Subject", "", "X-Kelvin", "X-\u212aelvin",
		"\u212aelvin", "kelvin", "ſs", "SS", "From: a", "Received: x\nSubject: y", "Ünïcode", "a", "b", "ünïcode"}
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		pf := prefilterOf(re)
		for _, k := range keys {
			if pf.impossible(&keyView{key: k}) && re.MatchString(k) {
				t.Errorf("%q: prefilter %+v rules out %q, which matches", p, pf, k)
			}
		}
	}
	if pf := prefilterOf(regexp.MustCompile(`(?is)^Subject:.*xy`)); pf.prefix != "subject:" || !pf.fold || len(pf.need) != 2 || pf.need[1].s != "xy" {
		t.Errorf("prefix = %+v", pf)
	}
	if pf := prefilterOf(regexp.MustCompile(`(?m)^Subject:`)); pf.prefix != "" {
		t.Errorf("multi-line ^ must not give a prefix: %+v", pf)
	}
}

// TestPrefilterTable: a header_checks-like table gives the same answers as
// the same rules without prefixes.
func TestPrefilterTable(t *testing.T) {
	var b strings.Builder
	names := []string{"Subject", "From", "X-Mailer", "Content-Type", "To"}
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&b, "/^%s:.*\\bword%d\\b/ REJECT r%d\n", names[i%len(names)], i, i)
	}
	b.WriteString("!/^X-OK:/ DUNNO\n")
	p := filepath.Join(t.TempDir(), "hc")
	os.WriteFile(p, []byte(b.String()), 0o644)
	tb, err := Open("regexp:"+p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt := tb.(*regexpTable)
	for _, key := range []string{"Subject: word5 x", "subject: WORD10", "From: a word1", "To: word4", "X-OK: 1", "Other: x", "SUBJECT: word0"} {
		got, ok, _ := tb.Lookup(context.Background(), key)
		rules := *rt.rules.Load()
		want, wok := "", false
		for _, r := range rules {
			if r.op == opMatch && r.re.MatchString(key) != r.neg {
				want, wok = expandResult(r.result, key, nil), true
				break
			}
		}
		if got != want || ok != wok {
			t.Errorf("%q: got %q %v, want %q %v", key, got, ok, want, wok)
		}
	}
}

func BenchmarkHeaderChecks(b *testing.B) {
	var sb strings.Builder
	names := []string{"Subject", "From", "X-Mailer", "Content-Type", "Received", "To", "Message-ID"}
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&sb, "/^%s:.*\\bspamword%d\\b/ REJECT bad %d\n", names[i%len(names)], i, i)
	}
	p := filepath.Join(b.TempDir(), "hc")
	os.WriteFile(p, []byte(sb.String()), 0o644)
	tb, err := Open("regexp:"+p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	hdrs := []string{"Received: from mail.remote.test (unknown [127.0.0.1])\n\tby mx.example.com (mxfront) with ESMTP id 01ABCDEF",
		"From: <bench@remote.test>", "To: <rcpt@example.test>", "Subject: a perfectly normal subject line here",
		"Date: Sun, 22 Nov 2026 10:00:00 +0000", "Message-ID: <20261122100000.12345@remote.test>", "MIME-Version: 1.0", "Content-Type: text/plain"}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, h := range hdrs {
			tb.Lookup(ctx, h)
		}
	}
}
