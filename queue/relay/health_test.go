package relay

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
)

// TestHostMarkDown: a unit with two hosts, the first refusing
// connections: after one failure it is marked down, deliveries go to the
// second host without dialing it, and after HostDownTime it is probed
// again (and used once it is back).
func TestHostMarkDown(t *testing.T) {
	good := startServer(t, false, script{})
	dialer := &fakeDialer{
		to:     map[string]string{"192.0.2.2:25": good.addr},
		refuse: map[string]bool{"192.0.2.1:25": true},
	}
	r := newRelay(t, Config{Dialer: dialer.dial, HostDownTime: 150 * time.Millisecond})
	rt := envelope.Route{Transport: "smtp", Nexthop: "[192.0.2.1]:25, [192.0.2.2]:25", Hosts: []envelope.Host{
		{Network: "tcp", Name: "192.0.2.1", Port: 25}, {Network: "tcp", Name: "192.0.2.2", Port: 25}}}
	deliver := func() {
		t.Helper()
		d := delivery(rt, testBody, "s@remote.test", "a@example.test")
		res := r.Deliver(context.Background(), d)
		checkResult(t, res[0], 250, "2.0.0", "")
		if res[0].Unreachable {
			t.Errorf("a delivered result is marked unreachable")
		}
		r.Close() // no connection reuse: every delivery dials
	}
	deliver()
	if got := dialer.attempts(); len(got) != 2 || got[0] != "192.0.2.1:25" {
		t.Fatalf("first delivery dialed %v", got)
	}
	deliver()
	if got := dialer.attempts(); len(got) != 3 || got[2] != "192.0.2.2:25" {
		t.Fatalf("second delivery dialed %v: the down host was tried again", got)
	}
	time.Sleep(200 * time.Millisecond)
	deliver()
	if got := dialer.attempts(); len(got) != 5 || got[3] != "192.0.2.1:25" {
		t.Fatalf("after the down time: %v, want a probe of the first host", got)
	}
	// Back up: it is used first again.
	dialer.refuse = nil
	dialer.to["192.0.2.1:25"] = good.addr
	time.Sleep(200 * time.Millisecond)
	deliver()
	deliver()
	if got := dialer.attempts(); len(got) != 7 || got[5] != "192.0.2.1:25" || got[6] != "192.0.2.1:25" {
		t.Fatalf("host back up: %v", got)
	}
}

// TestAllHostsDown: hosts marked down are still tried when no other host
// is left, and the results say no session could be started.
func TestAllHostsDown(t *testing.T) {
	dialer := &fakeDialer{refuse: map[string]bool{"192.0.2.1:25": true}}
	r := newRelay(t, Config{Dialer: dialer.dial})
	rt := envelope.Route{Transport: "smtp", Nexthop: "[192.0.2.1]:25", Hosts: []envelope.Host{{Network: "tcp", Name: "192.0.2.1", Port: 25}}}
	for i := range 2 {
		res := r.Deliver(context.Background(), delivery(rt, testBody, "s@remote.test", "a@example.test"))
		checkResult(t, res[0], 451, "4.4.1", "Connection refused")
		if !res[0].Unreachable || res[0].Relay != "none" {
			t.Errorf("result %+v: want Unreachable, relay none", res[0])
		}
		if n := len(dialer.attempts()); n != i+1 {
			t.Errorf("delivery %d: %d dials", i, n)
		}
	}
	// A greeting refusal is reaching no mail transaction either.
	r = newRelay(t, Config{})
	addr := rawServer(t, func(c net.Conn) { io.WriteString(c, "421 4.3.2 busy\r\n") })
	res := r.Deliver(context.Background(), delivery(tcpRoute("smtp", addr), testBody, "s@remote.test", "a@example.test"))
	if !res[0].Unreachable || res[0].Reply.Code != 421 {
		t.Errorf("421 greeting: %+v", res[0])
	}
	// A per-recipient refusal is a server's answer.
	ts := startServer(t, false, script{rcpt: map[string]*smtp.SMTPError{"full@example.test": errFull}})
	res = r.Deliver(context.Background(), delivery(tcpRoute("smtp", ts.addr), testBody, "s@remote.test", "full@example.test"))
	if res[0].Unreachable || res[0].Reply.Code/100 != 4 {
		t.Errorf("RCPT refusal: %+v", res[0])
	}
}
