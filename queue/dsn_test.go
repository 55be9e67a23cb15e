package queue

import (
	"bufio"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"

	"github.com/mxfront/mxfront/envelope"
)

type dsnReport struct {
	header   mail.Header
	text     string
	perMsg   textproto.MIMEHeader
	perRcpt  []textproto.MIMEHeader
	origType string
	orig     string
}

// parseDSN parses a bounce with the standard library as a receiving MUA or
// bounce processor would, failing the test on any structural problem.
func parseDSN(t *testing.T, body string) *dsnReport {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DSN is not a message: %v\n%s", err, body)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	r := &dsnReport{header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []*multipart.Part
	var bodies []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part %d: %v", len(parts), err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("DSN part %d: %v", len(parts), err)
		}
		parts = append(parts, p)
		bodies = append(bodies, string(b))
	}
	if len(parts) != 3 {
		t.Fatalf("DSN has %d parts, want 3", len(parts))
	}
	if ct := parts[0].Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("part 1 Content-Type %q", ct)
	}
	r.text = bodies[0]
	if ct := parts[1].Header.Get("Content-Type"); ct != "message/delivery-status" {
		t.Errorf("part 2 Content-Type %q", ct)
	}
	tr := textproto.NewReader(bufio.NewReader(strings.NewReader(bodies[1])))
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			if r.perMsg == nil {
				r.perMsg = h
			} else {
				r.perRcpt = append(r.perRcpt, h)
			}
		}
		if err != nil {
			break
		}
	}
	r.origType = parts[2].Header.Get("Content-Type")
	r.orig = bodies[2]
	return r
}

func TestBuildDSNStructure(t *testing.T) {
	q := &Queue{cfg: Config{Hostname: "mx.example.test", BounceSizeLimit: 50000, Dir: t.TempDir()}, dir: t.TempDir(), log: slog.New(slog.DiscardHandler)}
	env := testEnv("j\u00f6rg@sender.test", "bob@unit1.test")
	env.SMTPUTF8 = true
	env.Body = "8BITMIME"
	p := &pass{m: &message{id: "ABCDEFGHJKMN"}, env: env}
	long := envelope.NewReply(550, envelope.Enhanced{5, 7, 1},
		strings.Repeat("very long rejection text with\x01control chars ", 5))
	msg, eight := q.buildDSN(dsnFailure, "0123456789AB", p, env.From, []outcome{{rcpt: 0, reply: long, relay: "[192.0.2.7]:25"}}, env.Received)
	if !eight {
		t.Error("8BITMIME original but DSN not 8bit")
	}
	r := parseDSN(t, string(msg))
	if got := r.header.Get("To"); got != "j\u00f6rg@sender.test" {
		t.Errorf("To %q", got)
	}
	if got := r.perMsg.Get("X-Postfix-Sender"); got != `utf-8; j\x{F6}rg@sender.test` {
		t.Errorf("X-Postfix-Sender %q", got)
	}
	b := r.perRcpt[0]
	if got := b.Get("Remote-MTA"); got != "dns; 192.0.2.7" {
		t.Errorf("Remote-MTA %q", got)
	}
	if got := b.Get("Diagnostic-Code"); !strings.HasPrefix(got, "smtp; 550 5.7.1 very long") || strings.Contains(got, "\x01") {
		t.Errorf("Diagnostic-Code %q", got)
	}
	if got := b.Get("Status"); got != "5.7.1" {
		t.Errorf("Status %q", got)
	}
	for _, l := range strings.Split(string(msg), "\r\n") {
		if len(l) > 998 {
			t.Errorf("line longer than RFC 5322 allows: %d", len(l))
		}
		if strings.ContainsAny(l, "\r\n\x01") {
			t.Errorf("bare CR/LF or control char in line %q", l)
		}
	}
	if strings.Contains(r.text, "\x01") || !strings.Contains(r.text, "host [192.0.2.7] said: 550 5.7.1") {
		t.Errorf("text part:\n%s", r.text)
	}
	// No original on disk: a placeholder, still a valid report.
	if !strings.Contains(r.orig, "Undelivered message unavailable") {
		t.Errorf("original part %q", r.orig)
	}
}

func TestWrap(t *testing.T) {
	s := "<bob@example.test>: host unit1.example.test[192.0.2.1] said: 550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown in local recipient table"
	lines := wrap(s, 79, 4)
	if len(lines) < 2 {
		t.Fatalf("not wrapped: %q", lines)
	}
	for i, l := range lines {
		if len(l) > 79 {
			t.Errorf("line %d too long: %q", i, l)
		}
		if i > 0 && !strings.HasPrefix(l, "    ") {
			t.Errorf("continuation %d not indented: %q", i, l)
		}
	}
	var joined []string
	for _, l := range lines {
		joined = append(joined, strings.TrimSpace(l))
	}
	if strings.Join(joined, " ") != s {
		t.Errorf("wrap lost text: %q", lines)
	}
	if got := wrap("short", 79, 4); len(got) != 1 || got[0] != "short" {
		t.Errorf("wrap(short) = %q", got)
	}
	if got := wrap(strings.Repeat("x", 100), 79, 4); len(got) != 1 {
		t.Errorf("unbreakable word split: %q", got)
	}
}

func TestDSNCode(t *testing.T) {
	for _, tc := range []struct {
		reply envelope.Reply
		final bool
		want  string
	}{
		{envelope.NewReply(550, envelope.Enhanced{5, 1, 1}, ""), true, "5.1.1"},
		{envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, ""), true, "5.4.1"},
		{envelope.NewReply(451, envelope.Enhanced{}, ""), true, "5.4.7"},
		{envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, ""), false, "4.4.1"},
		{envelope.Reply{Code: 250}, false, "2.0.0"},
	} {
		if got := dsnCode(tc.reply, tc.final); got != tc.want {
			t.Errorf("dsnCode(%v, %v) = %s, want %s", tc.reply, tc.final, got, tc.want)
		}
	}
	for relay, want := range map[string]string{
		"unit1.test[192.0.2.1]:24": "unit1.test",
		"unknown[192.0.2.1]:25":    "192.0.2.1",
		"none":                     "",
		"":                         "",
		"local":                    "local",
	} {
		if got := remoteMTA(relay); got != want {
			t.Errorf("remoteMTA(%q) = %q, want %q", relay, got, want)
		}
	}
}
