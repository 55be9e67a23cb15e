package relay

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/test/harness"
)

// TestDovecotLMTP delivers to a real Dovecot: alice accepted, nobody
// refused at RCPT (550 5.1.1), bob over quota at DATA (552 5.2.2); a
// second message goes over the same, cached connection.
func TestDovecotLMTP(t *testing.T) {
	dove := harness.StartDovecotLMTP(t, []harness.DovecotUser{
		{Name: "alice@example.test"},
		{Name: "bob@example.test", QuotaBytes: 100},
	})
	addr, socket := dove.Addr(), dove.Socket()
	var dials atomic.Int32
	var d net.Dialer
	r := newRelay(t, Config{
		Hostname: "mx1.example.test",
		Dialer: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, a)
		},
	})
	rt := tcpRoute("lmtp", addr)
	body := "Received: from client.example.test by mx1.example.test\r\n" +
		"From: <s@remote.test>\r\nTo: <alice@example.test>\r\nSubject: relay test\r\n\r\n" +
		strings.Repeat("This line makes the message larger than bob's quota.\r\n", 4)

	res := r.Deliver(context.Background(), delivery(rt, body, "s@remote.test", "alice@example.test", "nobody@example.test", "bob@example.test"))
	for _, x := range res {
		t.Logf("%s: relay=%s %s", x.Rcpt, x.Relay, x.Reply)
	}
	checkResult(t, res[0], 250, "2.0.0", "<alice@example.test>")
	checkResult(t, res[1], 550, "5.1.1", "(in reply to RCPT TO command)")
	checkResult(t, res[2], 552, "5.2.2", "Quota exceeded")
	checkResult(t, res[2], 552, "5.2.2", "(in reply to end of DATA command)")

	res = r.Deliver(context.Background(), delivery(rt, body, "s@remote.test", "alice@example.test", "bob@example.test"))
	checkResult(t, res[0], 250, "2.0.0", "Saved")
	checkResult(t, res[1], 552, "5.2.2", "Quota exceeded")
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for two messages, want 1 (reuse)", n)
	}

	// The same over the UNIX-domain socket.
	urt := envelope.Route{Transport: "lmtp", Nexthop: "unix:" + socket, Hosts: []envelope.Host{{Network: "unix", Name: socket}}}
	res = r.Deliver(context.Background(), delivery(urt, body, "", "alice@example.test"))
	checkResult(t, res[0], 250, "2.0.0", "Saved")
	if res[0].Relay != "mx1.example.test["+socket+"]" {
		t.Errorf("relay %q", res[0].Relay)
	}

	msgs := dove.Maildir("alice@example.test")
	if len(msgs) != 3 {
		t.Fatalf("alice has %d messages, want 3", len(msgs))
	}
	got := msgs[0].Data
	if !strings.Contains(string(got), "Subject: relay test") || !strings.Contains(string(got), "larger than bob's quota") {
		t.Errorf("stored message:\n%s", got)
	}
}
