package policy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

const testMessage = "Received: from a\r\n\tby b; Sun, 1 Jan 2026\r\n" +
	"From: <a@remote.test>\r\nTo: <bob@example.com>\r\nSubject: hello\r\n world\r\nX-Spam: no\r\n\r\n" +
	"line one\r\nbuy cheap pills now\r\nline three\r\n"

// filterMsg runs msg through the content checks, written in pieces of
// chunk bytes, and returns the output, Close's error and the state.
func filterMsg(t *testing.T, p *Policy, msg string, chunk int) (string, *State, error) {
	t.Helper()
	st := &State{}
	var out bytes.Buffer
	r := req{state: st}.build()
	f := p.NewContentFilter(context.Background(), &out, r)
	if f == nil {
		t.Fatal("no filter")
	}
	for b := []byte(msg); len(b) > 0; {
		n := min(chunk, len(b))
		if _, err := f.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	err := f.Close()
	return out.String(), st, err
}

func writeRules(t *testing.T, rules string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "checks")
	if err := os.WriteFile(p, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return "regexp:" + p
}

func TestContentChecks(t *testing.T) {
	e := newEnv(t)
	mk := func(header, body string, limit int64) *Policy {
		return e.policy(func(c *Config) {
			if header != "" {
				c.HeaderChecks = []table.Table{openTable(t, e.set, writeRules(t, header))}
			}
			if body != "" {
				c.BodyChecks = []table.Table{openTable(t, e.set, writeRules(t, body))}
			}
			c.BodyChecksSizeLimit = limit
		})
	}
	replace := func(s string, pairs ...string) string { return strings.NewReplacer(pairs...).Replace(s) }
	for _, tc := range []struct {
		name, header, body string
		limit              int64
		want               string // output
		err                string // reply
		check              func(*State) string
	}{
		{name: "no match keeps every byte", header: "/^X-Other:/ REJECT\n", body: "/nothing/ REJECT\n", want: testMessage},
		{name: "REJECT", header: "/^Subject:.*hello/ REJECT\n", err: "550 5.7.1 message content rejected"},
		{name: "REJECT text", header: "/^Subject: hello/ REJECT spam not wanted here\n", err: "550 5.7.1 spam not wanted here"},
		{name: "REJECT with DSN", header: "/^Subject: hello/ REJECT 5.7.0 custom\n", err: "550 5.7.0 custom"},
		{name: "REJECT 4.x.x defers", header: "/^Subject: hello/ REJECT 4.7.1 later\n", err: "451 4.7.1 later"},
		{name: "DEFER", header: "/^Subject: hello/ DEFER\n", err: "451 4.7.1 service unavailable"},
		{name: "multi-line header joined by newline", header: "/^Subject: hello\\n world$/ REJECT folded\n", err: "550 5.7.1 folded"},
		{name: "IGNORE header", header: "/^X-Spam:/ IGNORE\n", want: replace(testMessage, "X-Spam: no\r\n", "")},
		{name: "IGNORE folded header", header: "/^Subject:/ IGNORE\n", want: replace(testMessage, "Subject: hello\r\n world\r\n", "")},
		{name: "REPLACE header", header: "/^X-Spam:/ REPLACE X-Spam: checked\n", want: replace(testMessage, "X-Spam: no", "X-Spam: checked")},
		{name: "PREPEND header", header: "/^To:/ PREPEND X-Seen: yes\n", want: replace(testMessage, "To:", "X-Seen: yes\r\nTo:")},
		{name: "PREPEND needs a header", header: "/^To:/ PREPEND not a header\n", want: testMessage},
		{name: "WARN", header: "/^From:/ WARN from remote\n", want: testMessage},
		{name: "HOLD", header: "/^From:/ HOLD check this\n", want: testMessage,
			check: func(s *State) string { return s.Hold() }},
		{name: "REDIRECT", header: "/^From:/ REDIRECT trap@example.com\n", want: testMessage,
			check: func(s *State) string { return s.Redirect() }},
		{name: "DISCARD", header: "/^From:/ DISCARD\n", want: "Received: from a\r\n\tby b; Sun, 1 Jan 2026\r\n",
			check: func(s *State) string { _, why := s.Discard(); return why }},
		{name: "header check sees the first match only", header: "/^From:/ DUNNO\n/^From:/ REJECT\n", want: testMessage},
		{name: "body REJECT", body: "/cheap pills/ REJECT no pills\n", err: "550 5.7.1 no pills"},
		{name: "body IGNORE", body: "/cheap pills/ IGNORE\n", want: replace(testMessage, "buy cheap pills now\r\n", "")},
		{name: "body REPLACE", body: "/cheap pills/ REPLACE [removed]\n", want: replace(testMessage, "buy cheap pills now", "[removed]")},
		{name: "body PREPEND", body: "/^line three/ PREPEND inserted\n", want: replace(testMessage, "line three", "inserted\r\nline three")},
		{name: "body does not see headers", body: "/^Subject/ REJECT\n", want: testMessage},
		{name: "body_checks_size_limit", body: "/cheap pills/ REJECT\n", limit: 5, want: testMessage},
		{name: "header_checks does not see the body", header: "/^line/ REJECT\n", want: testMessage},
	} {
		p := mk(tc.header, tc.body, tc.limit)
		for _, chunk := range []int{1, 7, 1 << 20} {
			out, st, err := filterMsg(t, p, testMessage, chunk)
			if tc.err != "" {
				if got := envelope.ReplyOf(err).String(); err == nil || got != tc.err {
					t.Errorf("%s (chunk %d): err %v, want %s", tc.name, chunk, err, tc.err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if out != tc.want {
				t.Errorf("%s (chunk %d):\n got  %q\n want %q", tc.name, chunk, out, tc.want)
			}
			if tc.check != nil && tc.check(st) == "" {
				t.Errorf("%s: state not set", tc.name)
			}
		}
	}
	if !strings.Contains(e.log.String(), "msg=warning") || !strings.Contains(e.log.String(), "from remote") {
		t.Errorf("WARN not logged:\n%s", e.log.String())
	}
}

// TestContentEdges: no header/body separator, long lines, a table error.
func TestContentEdges(t *testing.T) {
	e := newEnv(t)
	p := e.policy(func(c *Config) {
		c.HeaderChecks = []table.Table{openTable(t, e.set, writeRules(t, "/^Subject: bad/ REJECT\n/^X-Long:/ IGNORE\n"))}
		c.BodyChecks = []table.Table{openTable(t, e.set, writeRules(t, "/^tail-marker/ REJECT piece\n"))}
	})
	// A non-header line starts the body: a "Subject: bad" after it is body.
	msg := "From: a\r\nnot a header\r\nSubject: bad\r\n"
	if out, _, err := filterMsg(t, p, msg, 3); err != nil || out != msg {
		t.Errorf("body without separator: %q %v", out, err)
	}
	// A header over header_size_limit is checked on its beginning and
	// removed whole.
	long := "X-Long: " + strings.Repeat("x", headerSizeLimit+100) + "\r\n\tcontinued\r\n"
	msg = long + "To: b\r\n\r\nbody\r\n"
	if out, _, err := filterMsg(t, p, msg, 4096); err != nil || out != "To: b\r\n\r\nbody\r\n" {
		t.Errorf("long header: %q %v", truncate(out, 80), err)
	}
	// A long body line is checked in pieces of line_length_limit bytes.
	msg = "To: b\r\n\r\n" + strings.Repeat("y", lineLengthLimit) + "tail-marker\r\n"
	if _, _, err := filterMsg(t, p, msg, 100); envelope.ReplyOf(err).String() != "550 5.7.1 piece" {
		t.Errorf("long body line: %v", err)
	}
	// A table error defers the message.
	p = e.policy(func(c *Config) { c.HeaderChecks = []table.Table{openTable(t, e.set, "fail:checks")} })
	if _, _, err := filterMsg(t, p, testMessage, 100); envelope.ReplyOf(err).String() != "451 4.3.0 Error: queue file write error" {
		t.Errorf("table error: %v", err)
	}
	if p := e.policy(nil); p.NewContentFilter(context.Background(), &bytes.Buffer{}, &Request{}) != nil {
		t.Error("a filter without checks")
	}
}

func openTable(t *testing.T, set *table.Set, spec string) table.Table {
	t.Helper()
	tb, err := set.Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}
