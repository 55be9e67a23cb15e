package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

var (
	errUnknown = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "<unknown@example.test>: Recipient address rejected: User unknown"}
	errFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2},
		Message: "<full@example.test>: Mailbox full"}
	errQuota = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2},
		Message: "Quota exceeded (mailbox for user is full)"}
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no hostname", Config{}, "Hostname"},
		{"space in hostname", Config{Hostname: "mx 1"}, "white space"},
		{"negative timeout", Config{Hostname: "mx1", RcptTimeout: -time.Second}, "RcptTimeout"},
		{"negative reuse count", Config{Hostname: "mx1", ConnectionReuseCountLimit: -1}, "ConnectionReuseCountLimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: err %v, want one naming %s", err, tc.want)
			}
		})
	}
	r, err := New(Config{Hostname: "mx1.example.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.DataDoneTimeout != 600*time.Second || r.cfg.RcptTimeout != 300*time.Second ||
		r.cfg.ConnectionCacheTimeLimit != 2*time.Second || r.cfg.MXAddressLimit != 5 {
		t.Errorf("defaults not applied: %+v", r.cfg)
	}
}

// TestSMTPReplies runs transactions against a scripted SMTP server and
// checks each recipient's result.
func TestSMTPReplies(t *testing.T) {
	type want struct {
		code int
		enh  string
		text string
	}
	for _, tc := range []struct {
		name      string
		sc        script
		rcpts     []string
		want      []want
		delivered []string // recipients in the message the server got; nil: no message
	}{
		{
			name:      "accept all",
			rcpts:     []string{"a@example.test", "b@example.test"},
			want:      []want{{250, "2.0.0", "OK: queued"}, {250, "2.0.0", "OK: queued"}},
			delivered: []string{"a@example.test", "b@example.test"},
		},
		{
			name:  "550 and 452 at RCPT",
			sc:    script{rcpt: map[string]*smtp.SMTPError{"unknown@example.test": errUnknown, "full@example.test": errFull}},
			rcpts: []string{"ok@example.test", "unknown@example.test", "full@example.test"},
			want: []want{
				{250, "2.0.0", "OK: queued"},
				{550, "5.1.1", "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <unknown@example.test>: Recipient address rejected: User unknown (in reply to RCPT TO command)"},
				{452, "4.2.2", "said: 452 4.2.2 <full@example.test>: Mailbox full (in reply to RCPT TO command)"},
			},
			delivered: []string{"ok@example.test"},
		},
		{
			name:  "no recipient accepted: no DATA",
			sc:    script{rcpt: map[string]*smtp.SMTPError{"unknown@example.test": errUnknown}},
			rcpts: []string{"unknown@example.test"},
			want:  []want{{550, "5.1.1", "(in reply to RCPT TO command)"}},
		},
		{
			name:  "MAIL FROM 4xx",
			sc:    script{mail: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}},
			rcpts: []string{"a@example.test", "b@example.test"},
			want:  []want{{451, "4.3.0", "said: 451 4.3.0 try later (in reply to MAIL FROM command)"}, {451, "4.3.0", "MAIL FROM"}},
		},
		{
			name:  "MAIL FROM 5xx",
			sc:    script{mail: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender rejected"}},
			rcpts: []string{"a@example.test"},
			want:  []want{{553, "5.7.1", "(in reply to MAIL FROM command)"}},
		},
		{
			name:  "DATA 5xx for all accepted",
			sc:    script{data: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam"}},
			rcpts: []string{"a@example.test", "b@example.test"},
			want:  []want{{554, "5.7.1", "said: 554 5.7.1 spam (in reply to end of DATA command)"}, {554, "5.7.1", "end of DATA"}},
		},
		{
			name:  "DATA 4xx for all accepted",
			sc:    script{data: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "disk full"}},
			rcpts: []string{"a@example.test"},
			want:  []want{{451, "4.3.0", "(in reply to end of DATA command)"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, false, tc.sc)
			r := newRelay(t, Config{})
			res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), testBody, "sender@remote.test", tc.rcpts...))
			if len(res) != len(tc.rcpts) {
				t.Fatalf("got %d results for %d recipients", len(res), len(tc.rcpts))
			}
			for i, w := range tc.want {
				if res[i].Rcpt.String() != tc.rcpts[i] {
					t.Errorf("result %d is for %s, want %s", i, res[i].Rcpt, tc.rcpts[i])
				}
				checkResult(t, res[i], w.code, w.enh, w.text)
				if res[i].Relay != relayName(ts.addr) {
					t.Errorf("relay %q, want %q", res[i].Relay, relayName(ts.addr))
				}
			}
			msgs := ts.messages()
			if tc.delivered == nil {
				if len(msgs) != 0 {
					t.Fatalf("server got %d messages, want none", len(msgs))
				}
				return
			}
			if len(msgs) != 1 {
				t.Fatalf("server got %d messages, want 1", len(msgs))
			}
			m := msgs[0]
			if !slices.Equal(m.Rcpts, tc.delivered) {
				t.Errorf("delivered to %v, want %v", m.Rcpts, tc.delivered)
			}
			if m.From != "sender@remote.test" {
				t.Errorf("MAIL FROM %q", m.From)
			}
			if m.Data != testBody {
				t.Errorf("content differs:\n got %q\nwant %q", m.Data, testBody)
			}
			if m.Opts.Size != int64(len(testBody)) || m.Opts.Body != smtp.Body8BitMIME {
				t.Errorf("MAIL parameters: SIZE=%d BODY=%s", m.Opts.Size, m.Opts.Body)
			}
		})
	}
}

// TestLMTPPerRecipient: per-recipient replies after DATA (RFC 2033 §4.2),
// with a duplicate recipient sent once and answered twice.
func TestLMTPPerRecipient(t *testing.T) {
	ts := startServer(t, true, script{
		rcpt: map[string]*smtp.SMTPError{"unknown@example.test": errUnknown},
		lmtp: map[string]*smtp.SMTPError{"bob@example.test": errQuota},
	})
	r := newRelay(t, Config{})
	rcpts := []string{"alice@example.test", "bob@example.test", "unknown@example.test", "alice@example.test", "carol@example.test"}
	res := r.Deliver(context.Background(), delivery(tcpRoute("lmtp", ts.addr), testBody, "", rcpts...))
	checkResult(t, res[0], 250, "2.0.0", "<alice@example.test> OK: queued") // go-smtp's LMTP server names the recipient
	checkResult(t, res[1], 552, "5.2.2", "said: 552 5.2.2 <bob@example.test> Quota exceeded (mailbox for user is full) (in reply to end of DATA command)")
	checkResult(t, res[2], 550, "5.1.1", "(in reply to RCPT TO command)")
	checkResult(t, res[3], 250, "2.0.0", "OK: queued")
	checkResult(t, res[4], 250, "2.0.0", "OK: queued")
	if res[3].Rcpt.String() != "alice@example.test" {
		t.Errorf("duplicate result for %s", res[3].Rcpt)
	}
	msgs := ts.messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].Rcpts, []string{"alice@example.test", "carol@example.test"}) {
		t.Fatalf("server got %+v", msgs)
	}
	if n := strings.Count(ts.transcript(), "RCPT TO:<alice@example.test>"); n != 1 {
		t.Errorf("alice sent %d times, want once", n)
	}
	if !strings.Contains(ts.transcript(), "LHLO mx1.example.test") {
		t.Errorf("no LHLO in transcript:\n%s", ts.transcript())
	}
}

// TestConnectionReuse: the second delivery to the same destination uses
// the cached connection (one TCP connection, a NOOP probe before reuse
// after a completed transaction, one EHLO in all); the
// cache expires idle connections; limits are honoured.
func TestConnectionReuse(t *testing.T) {
	t.Run("reuse", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		rt := tcpRoute("smtp", ts.addr)
		for i := range 3 {
			res := r.Deliver(context.Background(), delivery(rt, testBody, "s@remote.test", "a@example.test"))
			checkResult(t, res[0], 250, "2.0.0", "queued")
			if i == 0 && res[0].Setup <= 0 {
				t.Errorf("Setup %v, want > 0", res[0].Setup)
			}
		}
		if n := ts.accepted.Load(); n != 1 {
			t.Errorf("%d connections for 3 deliveries, want 1", n)
		}
		if len(ts.messages()) != 3 {
			t.Errorf("server got %d messages", len(ts.messages()))
		}
		tr := ts.transcript()
		if n := strings.Count(tr, "NOOP"); n != 2 {
			t.Errorf("%d NOOP probes, want 2:\n%s", n, tr)
		}
		if n := strings.Count(tr, "RSET") + strings.Count(tr, "EHLO"); n != 1 {
			t.Errorf("%d RSET/EHLO, want only the first EHLO:\n%s", n, tr)
		}
		if r.idleCount() != 1 {
			t.Errorf("%d cached connections, want 1", r.idleCount())
		}
		r.Close()
		if r.idleCount() != 0 {
			t.Errorf("Close left %d cached connections", r.idleCount())
		}
		if !strings.Contains(ts.transcript(), "QUIT") {
			t.Error("Close sent no QUIT")
		}
	})
	t.Run("idle expiry", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{ConnectionCacheTimeLimit: 50 * time.Millisecond})
		rt := tcpRoute("smtp", ts.addr)
		checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		deadline := time.Now().Add(5 * time.Second)
		for r.idleCount() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if r.idleCount() != 0 {
			t.Fatal("idle connection not expired")
		}
		for ts.logouts.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if ts.logouts.Load() != 1 {
			t.Error("server did not see the expired session end")
		}
		checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		if n := ts.accepted.Load(); n != 2 {
			t.Errorf("%d connections, want 2 after expiry", n)
		}
	})
	t.Run("reuse count limit", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{ConnectionReuseCountLimit: 1})
		rt := tcpRoute("smtp", ts.addr)
		for range 4 {
			checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		}
		// used, reused once, closed; used, reused once, closed.
		if n := ts.accepted.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("reuse time limit", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{ConnectionReuseTimeLimit: time.Nanosecond})
		rt := tcpRoute("smtp", ts.addr)
		for range 2 {
			checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		}
		if n := ts.accepted.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("reuse after rejected transaction", func(t *testing.T) {
		ts := startServer(t, false, script{rcpt: map[string]*smtp.SMTPError{"unknown@example.test": errUnknown}})
		r := newRelay(t, Config{})
		rt := tcpRoute("smtp", ts.addr)
		checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "unknown@example.test"))[0], 550, "5.1.1", "")
		checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		if n := ts.accepted.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
}

// TestDeadCachedConnection: a cached connection the server has closed is
// replaced by a fresh one without any failure showing.
func TestDeadCachedConnection(t *testing.T) {
	ts := startServer(t, false, script{})
	r := newRelay(t, Config{})
	rt := tcpRoute("smtp", ts.addr)
	checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
	ts.killConns()
	res := r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))
	checkResult(t, res[0], 250, "2.0.0", "")
	if res[0].Err != nil {
		t.Errorf("Err %v", res[0].Err)
	}
	if n := ts.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestConnectFailures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		addr := refusedAddr(t)
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.1", "connect to "+relayName(addr)+": Connection refused")
		if res[0].Relay != "none" {
			t.Errorf("relay %q, want none", res[0].Relay)
		}
	})
	t.Run("failover to second host", func(t *testing.T) {
		bad := refusedAddr(t)
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", bad, ts.addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 250, "2.0.0", "")
		if res[0].Relay != relayName(ts.addr) {
			t.Errorf("relay %s, want the second host", res[0].Relay)
		}
	})
	t.Run("no greeting", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
		r := newRelay(t, Config{HeloTimeout: 200 * time.Millisecond})
		start := time.Now()
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.2", "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting")
		if res[0].Relay != relayName(addr) {
			t.Errorf("relay %q", res[0].Relay)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})
	for _, tc := range []struct {
		name, banner string
		code         int
		enh          string
	}{
		{"421 greeting", "421 4.3.2 Service shutting down\r\n", 421, "4.3.2"},
		{"554 greeting is treated as 4xx", "554 5.7.1 No SMTP service here\r\n", 454, "4.7.1"},
		{"not a greeting", "250 hello\r\n", 451, "4.5.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(c net.Conn) { io.WriteString(c, tc.banner) })
			r := newRelay(t, Config{})
			res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
			checkResult(t, res[0], tc.code, tc.enh, "host 127.0.0.1[127.0.0.1] refused to talk to me: "+strings.TrimSpace(tc.banner))
			// With a second host, the mail goes there.
			ts := startServer(t, false, script{})
			res = r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr, ts.addr), testBody, "", "a@example.test"))
			checkResult(t, res[0], 250, "2.0.0", "")
		})
	}
	t.Run("lost connection after RCPT", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn) {
			io.WriteString(c, "220 unit ESMTP\r\n")
			buf := make([]byte, 512)
			for _, reply := range []string{"250 unit\r\n", "250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n"} {
				if _, err := c.Read(buf); err != nil {
					return
				}
				io.WriteString(c, reply)
			}
			c.Read(buf) // DATA: hang up without a reply
		})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.2", "lost connection with 127.0.0.1[127.0.0.1] while sending DATA command")
	})
	t.Run("soft RCPT failure tries the next host", func(t *testing.T) {
		first := startServer(t, false, script{rcpt: map[string]*smtp.SMTPError{"full@example.test": errFull}})
		second := startServer(t, false, script{})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", first.addr, second.addr), testBody, "",
			"full@example.test", "a@example.test"))
		checkResult(t, res[0], 250, "2.0.0", "")
		checkResult(t, res[1], 250, "2.0.0", "")
		if res[0].Relay != relayName(second.addr) || res[1].Relay != relayName(first.addr) {
			t.Errorf("relays %s, %s", res[0].Relay, res[1].Relay)
		}
	})
}

// TestUnixLMTP delivers over a UNIX-domain socket.
func TestUnixLMTP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lmtp")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ts := serveOn(t, ln, true, script{lmtp: map[string]*smtp.SMTPError{"bob@example.test": errQuota}})
	r := newRelay(t, Config{})
	rt := envelope.Route{Transport: "lmtp", Nexthop: "unix:" + path, Hosts: []envelope.Host{{Network: "unix", Name: path}}}
	for range 2 {
		res := r.Deliver(context.Background(), delivery(rt, testBody, "s@remote.test", "alice@example.test", "bob@example.test"))
		checkResult(t, res[0], 250, "2.0.0", "")
		checkResult(t, res[1], 552, "5.2.2", "host mx1.example.test["+path+"] said: 552 5.2.2")
		if res[0].Relay != "mx1.example.test["+path+"]" {
			t.Errorf("relay %q", res[0].Relay)
		}
	}
	if n := ts.accepted.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	t.Run("missing socket", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope")
		rt := envelope.Route{Transport: "lmtp", Nexthop: "unix:" + missing, Hosts: []envelope.Host{{Network: "unix", Name: missing}}}
		res := r.Deliver(context.Background(), delivery(rt, testBody, "", "alice@example.test"))
		checkResult(t, res[0], 451, "4.4.1", "connect to mx1.example.test["+missing+"]: No such file or directory")
	})
}

// TestMX: MX lookups through a fake resolver; connections go through a
// fake dialer to a loopback server.
func TestMX(t *testing.T) {
	ts := startServer(t, false, script{})
	mxRoute := func(domain string) envelope.Route {
		return envelope.Route{Transport: "smtp", Nexthop: domain, Hosts: []envelope.Host{{Network: "tcp", Name: domain, MX: true}}}
	}
	res := &fakeResolver{
		mx: map[string][]*net.MX{
			"pref.test":   {{Host: "mx20.pref.test.", Pref: 20}, {Host: "mx10.pref.test.", Pref: 10}},
			"null.test":   {{Host: ".", Pref: 0}},
			"norr.test":   {{Host: "gone.norr.test.", Pref: 10}},
			"tied.test":   {{Host: "a.tied.test.", Pref: 10}, {Host: "b.tied.test.", Pref: 10}},
			"broken.test": nil,
		},
		hosts: map[string][]string{
			"mx10.pref.test": {"192.0.2.10"},
			"mx20.pref.test": {"192.0.2.20"},
			"noMX.test":      {"192.0.2.30"},
			"nomx.test":      {"192.0.2.30"},
			"broken.test":    {"192.0.2.40"},
			"a.tied.test":    {"192.0.2.51"},
			"b.tied.test":    {"192.0.2.52"},
		},
		fail: map[string]bool{"servfail.test": true},
	}
	for _, tc := range []struct {
		name   string
		domain string
		dialer *fakeDialer
		code   int
		enh    string
		text   string
		relay  string
		dials  []string
	}{
		{
			name: "preference order, failover to the second MX", domain: "pref.test",
			dialer: &fakeDialer{refuse: map[string]bool{"192.0.2.10:25": true}, to: map[string]string{"192.0.2.20:25": ts.addr}},
			code:   250, enh: "2.0.0", relay: "mx20.pref.test[192.0.2.20]:25",
			dials: []string{"192.0.2.10:25", "192.0.2.20:25"},
		},
		{
			name: "no MX: the domain's address (RFC 5321 §5.1)", domain: "nomx.test",
			dialer: &fakeDialer{to: map[string]string{"192.0.2.30:25": ts.addr}},
			code:   250, enh: "2.0.0", relay: "nomx.test[192.0.2.30]:25", dials: []string{"192.0.2.30:25"},
		},
		{
			name: "empty MX answer: the domain's address", domain: "broken.test",
			dialer: &fakeDialer{to: map[string]string{"192.0.2.40:25": ts.addr}},
			code:   250, enh: "2.0.0", relay: "broken.test[192.0.2.40]:25", dials: []string{"192.0.2.40:25"},
		},
		{
			name: "NXDOMAIN", domain: "nxdomain.test",
			code: 554, enh: "5.4.4", text: "Host or domain name not found. Name service error for name=nxdomain.test type=MX: Host not found",
			relay: "none",
		},
		{
			name: "SERVFAIL", domain: "servfail.test",
			code: 451, enh: "4.4.3", text: "Host not found, try again", relay: "none",
		},
		{
			name: "null MX (RFC 7505)", domain: "null.test",
			code: 556, enh: "5.1.10", text: "Domain null.test does not accept mail (nullMX)", relay: "none",
		},
		{
			name: "MX host without address is temporary", domain: "norr.test",
			code: 451, enh: "4.4.4", text: "Name service error for name=gone.norr.test type=A: Host not found", relay: "none",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dialer == nil {
				tc.dialer = &fakeDialer{}
			}
			r := newRelay(t, Config{Resolver: res, Dialer: tc.dialer.dial})
			out := r.Deliver(context.Background(), delivery(mxRoute(tc.domain), testBody, "", "a@"+tc.domain))
			checkResult(t, out[0], tc.code, tc.enh, tc.text)
			if out[0].Relay != tc.relay {
				t.Errorf("relay %q, want %q", out[0].Relay, tc.relay)
			}
			if got := tc.dialer.attempts(); !slices.Equal(got, tc.dials) {
				t.Errorf("dialed %v, want %v", got, tc.dials)
			}
		})
	}
	t.Run("configured unit that does not resolve is retried, not bounced", func(t *testing.T) {
		r := newRelay(t, Config{Resolver: res, Dialer: (&fakeDialer{}).dial})
		rt := envelope.Route{Transport: "smtp", Nexthop: "[unit9.example.test]", Hosts: []envelope.Host{{Network: "tcp", Name: "unit9.example.test"}}}
		out := r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))
		checkResult(t, out[0], 451, "4.4.4", "type=A: Host not found (configured next hop; will retry)")
	})
	t.Run("equal preference is shuffled", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 64 && len(seen) < 2; i++ {
			d := &fakeDialer{refuse: map[string]bool{"192.0.2.51:25": true, "192.0.2.52:25": true}}
			r := newRelay(t, Config{Resolver: res, Dialer: d.dial})
			out := r.Deliver(context.Background(), delivery(mxRoute("tied.test"), testBody, "", "a@tied.test"))
			checkResult(t, out[0], 451, "4.4.1", "Connection refused")
			if a := d.attempts(); len(a) == 2 {
				seen[a[0]] = true
			} else {
				t.Fatalf("dialed %v", a)
			}
		}
		if len(seen) != 2 {
			t.Errorf("first MX was always %v", seen)
		}
	})
	t.Run("cached connection skips DNS", func(t *testing.T) {
		d := &fakeDialer{to: map[string]string{"192.0.2.30:25": ts.addr}}
		rs := &fakeResolver{hosts: res.hosts}
		r := newRelay(t, Config{Resolver: rs, Dialer: d.dial})
		for range 2 {
			checkResult(t, r.Deliver(context.Background(), delivery(mxRoute("nomx.test"), testBody, "", "a@nomx.test"))[0], 250, "2.0.0", "")
		}
		if len(rs.queries) != 2 || len(d.attempts()) != 1 {
			t.Errorf("queries %v, dials %v: want one lookup and one connection", rs.queries, d.attempts())
		}
	})
}

// TestQuotedLocalPart: a local part that needs quoting goes out quoted.
func TestQuotedLocalPart(t *testing.T) {
	ts := startServer(t, false, script{})
	r := newRelay(t, Config{})
	d := delivery(tcpRoute("smtp", ts.addr), testBody, "", "x@example.test")
	d.Rcpts[0].Addr = envelope.Address{Local: "john doe", Domain: "example.test"}
	d.Env.From = envelope.Address{Local: `a"b`, Domain: "remote.test"}
	res := r.Deliver(context.Background(), d)
	checkResult(t, res[0], 250, "2.0.0", "")
	tr := ts.transcript()
	for _, want := range []string{`RCPT TO:<"john doe"@example.test>`, `MAIL FROM:<"a\"b"@remote.test>`} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript lacks %s:\n%s", want, tr)
		}
	}
}

// TestConcurrentDeliver: concurrent deliveries to one destination each get
// their own connection and all succeed (run with -race).
func TestConcurrentDeliver(t *testing.T) {
	for _, lmtp := range []bool{false, true} {
		ts := startServer(t, lmtp, script{})
		tr := "smtp"
		if lmtp {
			tr = "lmtp"
		}
		r := newRelay(t, Config{})
		rt := tcpRoute(tr, ts.addr)
		const workers, each = 8, 20
		var wg sync.WaitGroup
		errs := make(chan string, workers*each)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					res := r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test", "b@example.test"))
					for _, x := range res {
						if x.Reply.Code != 250 {
							errs <- x.Reply.String()
						}
					}
					_ = w + i
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("%s: %s", tr, e)
		}
		if n := len(ts.messages()); n != workers*each {
			t.Errorf("%s: server got %d messages, want %d", tr, n, workers*each)
		}
		if n := ts.accepted.Load(); n > workers {
			t.Errorf("%s: %d connections for %d workers", tr, n, workers)
		}
	}
}

// TestContext: an ended ctx aborts the conversation; nothing claims
// success without the server's 2xx.
func TestContext(t *testing.T) {
	t.Run("deadline while waiting for end of data", func(t *testing.T) {
		hit := make(chan struct{})
		t.Cleanup(func() { close(hit) })
		ts := startServer(t, false, script{dataHit: hit})
		r := newRelay(t, Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		res := r.Deliver(ctx, delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.2", "timed out while sending end of data -- message may be sent more than once")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
		if r.idleCount() != 0 {
			t.Error("aborted connection was cached")
		}
	})
	t.Run("canceled before start", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res := r.Deliver(ctx, delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test", "b@example.test"))
		for _, x := range res {
			if !x.Reply.Temporary() {
				t.Errorf("%s: %s", x.Rcpt, x.Reply)
			}
		}
		if ts.accepted.Load() != 0 {
			t.Error("connected despite canceled ctx")
		}
	})
	t.Run("cancel during greeting wait", func(t *testing.T) {
		addr := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
		r := newRelay(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		res := r.Deliver(ctx, delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.2", "interrupted while receiving the initial server greeting: delivery canceled")
	})
}

// TestSMTPUTF8 follows Postfix: no SMTPUTF8 at the server means 5.6.7 only
// when the message needs it.
func TestSMTPUTF8(t *testing.T) {
	utf8Body := "Subject: caf\u00e9\r\n\r\nhi\r\n"
	for _, tc := range []struct {
		name       string
		serverUTF8 bool
		rcpt       string
		body       string
		smtputf8   bool
		code       int
		wantParam  bool
	}{
		{"non-ASCII recipient, server without SMTPUTF8", false, "j\u00f8ran@example.test", testBody, true, 554, false},
		{"UTF-8 header, server without SMTPUTF8", false, "a@example.test", utf8Body, true, 554, false},
		{"requested but all ASCII: sent without it", false, "a@example.test", testBody, true, 250, false},
		{"server with SMTPUTF8", true, "j\u00f8ran@example.test", utf8Body, true, 250, true},
		{"not requested, server with SMTPUTF8", true, "a@example.test", testBody, false, 250, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, false, script{}, func(s *smtp.Server) { s.EnableSMTPUTF8 = tc.serverUTF8 })
			r := newRelay(t, Config{})
			d := delivery(tcpRoute("smtp", ts.addr), tc.body, "s@remote.test", tc.rcpt)
			d.Env.SMTPUTF8 = tc.smtputf8
			res := r.Deliver(context.Background(), d)
			if tc.code == 554 {
				checkResult(t, res[0], 554, "5.6.7", "message requires SMTPUTF8, but no server was found that supports SMTPUTF8. The last attempted server was 127.0.0.1[127.0.0.1]")
				return
			}
			checkResult(t, res[0], 250, "2.0.0", "")
			if m := ts.messages(); len(m) != 1 || m[0].Opts.UTF8 != tc.wantParam {
				t.Errorf("server got %+v, want SMTPUTF8=%v", m, tc.wantParam)
			}
		})
	}
}

// TestDSNParameters: RET, ENVID, NOTIFY and ORCPT reach a DSN server.
func TestDSNParameters(t *testing.T) {
	ts := startServer(t, false, script{}, func(s *smtp.Server) { s.EnableDSN = true })
	r := newRelay(t, Config{})
	d := delivery(tcpRoute("smtp", ts.addr), testBody, "s@remote.test", "a@example.test", "b@example.test")
	d.Env.Ret, d.Env.EnvID = "HDRS", "QQ314159"
	d.Rcpts[0].Notify = envelope.NotifySuccess | envelope.NotifyFailure
	d.Rcpts[0].ORCPT = "rfc822;alias@example.test"
	d.Rcpts[1].Notify = envelope.NotifyNever
	d.Rcpts[1].Orig = envelope.MustParse("list@example.test")
	res := r.Deliver(context.Background(), d)
	checkResult(t, res[0], 250, "2.0.0", "")
	m := ts.messages()
	if len(m) != 1 {
		t.Fatalf("got %d messages", len(m))
	}
	if m[0].Opts.Return != smtp.DSNReturnHeaders || m[0].Opts.EnvelopeID != "QQ314159" {
		t.Errorf("MAIL options %+v", m[0].Opts)
	}
	o0, o1 := m[0].RcptOpts[0], m[0].RcptOpts[1]
	if !slices.Equal(o0.Notify, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}) ||
		o0.OriginalRecipient != "alias@example.test" || o0.OriginalRecipientType != smtp.DSNAddressTypeRFC822 {
		t.Errorf("first RCPT options %+v", o0)
	}
	if !slices.Equal(o1.Notify, []smtp.DSNNotify{smtp.DSNNotifyNever}) || o1.OriginalRecipient != "list@example.test" {
		t.Errorf("second RCPT options %+v", o1)
	}
	// The queue leaves success notices to a next hop with DSN.
	if !res[0].DSN || !res[1].DSN {
		t.Errorf("Result.DSN not set for a server with DSN: %+v", res)
	}
	// A server without DSN gets none of them (go-smtp would refuse them).
	plain := startServer(t, false, script{})
	d.Route = tcpRoute("smtp", plain.addr)
	res = r.Deliver(context.Background(), d)
	checkResult(t, res[0], 250, "2.0.0", "")
	if strings.Contains(plain.transcript(), "NOTIFY") || strings.Contains(plain.transcript(), "ENVID") {
		t.Errorf("DSN parameters sent to a server without DSN:\n%s", plain.transcript())
	}
	if res[0].DSN {
		t.Errorf("Result.DSN set for a server without DSN")
	}
}

func TestSTARTTLS(t *testing.T) {
	cert := selfSigned(t)
	withTLS := func(s *smtp.Server) { s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} }
	t.Run("opportunistic TLS and reuse", func(t *testing.T) {
		ts := startServer(t, false, script{}, withTLS)
		r := newRelay(t, Config{TLS: &tls.Config{InsecureSkipVerify: true}})
		rt := tcpRoute("smtp", ts.addr)
		for range 2 {
			checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		}
		m := ts.messages()
		if len(m) != 2 || !m[0].TLS || !m[1].TLS {
			t.Fatalf("messages %+v, want 2 over TLS", m)
		}
		if ts.accepted.Load() != 1 {
			t.Errorf("%d connections, want 1", ts.accepted.Load())
		}
	})
	t.Run("handshake failure falls back to plaintext", func(t *testing.T) {
		ts := startServer(t, false, script{}, withTLS)
		r := newRelay(t, Config{TLS: &tls.Config{}}) // self-signed: verification fails
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 250, "2.0.0", "")
		if m := ts.messages(); len(m) != 1 || m[0].TLS {
			t.Fatalf("messages %+v, want 1 in plaintext", m)
		}
		if ts.accepted.Load() != 2 {
			t.Errorf("%d connections, want 2", ts.accepted.Load())
		}
	})
	t.Run("no TLS config: no STARTTLS", func(t *testing.T) {
		ts := startServer(t, false, script{}, withTLS)
		r := newRelay(t, Config{})
		checkResult(t, r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test"))[0], 250, "2.0.0", "")
		if strings.Contains(ts.transcript(), "STARTTLS\r\n220") {
			t.Error("STARTTLS sent")
		}
	})
}

// TestContent: size limit, unreadable content, and streaming fidelity.
func TestContent(t *testing.T) {
	t.Run("SIZE limit of the server", func(t *testing.T) {
		ts := startServer(t, false, script{}, func(s *smtp.Server) { s.MaxMessageBytes = 100 })
		r := newRelay(t, Config{})
		body := testBody + strings.Repeat("x", 200) + "\r\n"
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), body, "", "a@example.test"))
		checkResult(t, res[0], 552, "5.3.4", "exceeds size limit 100 of server 127.0.0.1[127.0.0.1]")
		if strings.Contains(ts.transcript(), "MAIL FROM") {
			t.Error("MAIL sent for an oversized message")
		}
	})
	t.Run("read error mid-body: no final dot", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		d := delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test")
		d.Body = func() (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart"), errReader{})), nil
		}
		res := r.Deliver(context.Background(), d)
		checkResult(t, res[0], 451, "4.3.0", "cannot read")
		if res[0].Err == nil {
			t.Error("no internal error recorded")
		}
		time.Sleep(50 * time.Millisecond)
		if len(ts.messages()) != 0 {
			t.Error("server stored a truncated message")
		}
	})
	t.Run("open error", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		d := delivery(tcpRoute("smtp", ts.addr), testBody, "", "a@example.test")
		d.Body = func() (io.ReadCloser, error) { return nil, errors.New("gone") }
		checkResult(t, r.Deliver(context.Background(), d)[0], 451, "4.3.0", "cannot read")
	})
	t.Run("large message streams intact", func(t *testing.T) {
		ts := startServer(t, false, script{})
		r := newRelay(t, Config{})
		var b strings.Builder
		b.WriteString("Subject: big\r\n\r\n")
		for i := range 20000 {
			if i%7 == 0 {
				b.WriteString(".")
			}
			b.WriteString("line of a large message body 0123456789 abcdefghijklmnopqrstuvwxyz\r\n")
		}
		body := b.String()
		checkResult(t, r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), body, "", "a@example.test"))[0], 250, "2.0.0", "")
		if m := ts.messages(); len(m) != 1 || m[0].Data != body {
			t.Fatal("content altered in transit")
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestRouteErrors: routes the relay cannot use get a temporary reply.
func TestRouteErrors(t *testing.T) {
	r := newRelay(t, Config{})
	for _, rt := range []envelope.Route{
		{Transport: "smtp", Nexthop: "x"},
		{Transport: "uucp", Nexthop: "x", Hosts: []envelope.Host{{Network: "tcp", Name: "127.0.0.1"}}},
	} {
		res := r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))
		checkResult(t, res[0], 451, "4.3.5", "mail transport unavailable")
	}
	rt := envelope.Route{Transport: "error", Nexthop: "5.1.1 no such user", Reply: envelope.NewReply(550, envelope.Enhanced{5, 1, 1}, "no such user")}
	checkResult(t, r.Deliver(context.Background(), delivery(rt, testBody, "", "a@example.test"))[0], 550, "5.1.1", "no such user")
	if res := r.Deliver(context.Background(), &queue.Delivery{Env: &envelope.Envelope{}, Route: tcpRoute("smtp", "127.0.0.1:1")}); len(res) != 0 {
		t.Errorf("results for no recipients: %v", res)
	}
}

// TestScriptedPeers covers replies go-smtp's server cannot be made to give.
func TestScriptedPeers(t *testing.T) {
	ok := func(line string) string {
		switch {
		case strings.HasPrefix(line, "EHLO"), strings.HasPrefix(line, "LHLO"):
			return "250-unit.example.test\r\n250 ENHANCEDSTATUSCODES\r\n"
		case line == "DATA":
			return "354 go ahead\r\n"
		case line == "QUIT":
			return "221 2.0.0 bye\r\n"
		default:
			return "250 2.0.0 ok\r\n"
		}
	}
	t.Run("EHLO 5xx is final", func(t *testing.T) {
		addr := scriptedServer(t, "220 unit ESMTP\r\n", func(line string) string {
			if strings.HasPrefix(line, "EHLO") {
				return "554 5.7.1 you are not welcome\r\n"
			}
			return ok(line)
		})
		r := newRelay(t, Config{})
		ts := startServer(t, false, script{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr, ts.addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 554, "5.7.1", "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 you are not welcome")
		if ts.accepted.Load() != 0 {
			t.Error("tried the next host after a permanent EHLO refusal")
		}
	})
	t.Run("LMTP connection lost after the first recipient's reply", func(t *testing.T) {
		addr := scriptedServer(t, "220 unit LMTP\r\n", func(line string) string {
			if line == "." {
				return "250 2.0.0 <a@example.test> Saved\r\n" + hangUp // before b's reply
			}
			if line == "RSET" {
				return ""
			}
			return ok(line)
		})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("lmtp", addr), testBody, "", "a@example.test", "b@example.test"))
		checkResult(t, res[0], 250, "2.0.0", "<a@example.test> Saved")
		checkResult(t, res[1], 451, "4.4.2", "lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once")
		if r.idleCount() != 0 {
			t.Error("broken session was cached")
		}
	})
	t.Run("421 at RCPT ends the session for everyone", func(t *testing.T) {
		addr := scriptedServer(t, "220 unit ESMTP\r\n", func(line string) string {
			if strings.HasPrefix(line, "RCPT TO:<b@") {
				return "421 4.7.0 too many errors, closing\r\n"
			}
			return ok(line)
		})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test", "b@example.test", "c@example.test"))
		for _, x := range res {
			checkResult(t, x, 421, "4.7.0", "said: 421 4.7.0 too many errors, closing (in reply to RCPT TO command)")
		}
	})
	t.Run("reply without enhanced code", func(t *testing.T) {
		addr := scriptedServer(t, "220 unit ESMTP\r\n", func(line string) string {
			if strings.HasPrefix(line, "RCPT") {
				return "550 no such user here\r\n"
			}
			return ok(line)
		})
		r := newRelay(t, Config{})
		res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "", "a@example.test"))
		checkResult(t, res[0], 550, "5.0.0", "said: 550 no such user here (in reply to RCPT TO command)")
	})
}

// TestBodyStall: a server that stops reading during the content trips
// DataXferTimeout (smtp_data_xfer_timeout), not the 10-minute end-of-data
// wait.
func TestBodyStall(t *testing.T) {
	stalled := make(chan struct{})
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		io.WriteString(c, "220 unit ESMTP\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "EHLO") {
				io.WriteString(c, "250 unit\r\n")
				continue
			}
			if strings.HasPrefix(line, "DATA") {
				io.WriteString(c, "354 go ahead\r\n")
				<-stalled // stop reading
				return
			}
			io.WriteString(c, "250 2.0.0 ok\r\n")
		}
	})
	t.Cleanup(func() { close(stalled) }) // runs before rawServer waits for its handlers
	r := newRelay(t, Config{DataXferTimeout: 200 * time.Millisecond})
	body := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 998)+"\r\n", 32<<10) // 32 MiB
	start := time.Now()
	res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), body, "", "a@example.test"))
	checkResult(t, res[0], 451, "4.4.2", "conversation with 127.0.0.1[127.0.0.1] timed out while sending message body")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}
