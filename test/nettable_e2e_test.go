package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxfront/mxfront/test/harness"
)

// End-to-end tests of tcp: and socketmap: tables (issue 5): a site's own
// user service (seed 001's getuser) plugged in without code.

// lookupService is a small in-test tcp_table(5) or socketmap_table(5)
// server answering from a map; a key mapped to "!TEMP" gets a temporary
// error reply.
type lookupService struct {
	socketmap bool
	mu        sync.Mutex
	data      map[string]string
	ln        net.Listener
	addr      string
	conns     map[net.Conn]bool
}

func startLookupService(t *testing.T, socketmap bool, data map[string]string) *lookupService {
	t.Helper()
	s := &lookupService{socketmap: socketmap, data: data, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *lookupService) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go s.handle(c)
		}
	}()
}

// stop closes the listener and every connection: the service is down.
func (s *lookupService) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.Close()
	}
	s.conns = map[net.Conn]bool{}
}

// restart listens again on the same address.
func (s *lookupService) restart(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", s.addr, err)
	}
	s.serve(ln)
}

func (s *lookupService) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		var key string
		if s.socketmap {
			n, err := r.ReadString(':')
			if err != nil {
				return
			}
			size, err := strconv.Atoi(strings.TrimSuffix(n, ":"))
			if err != nil {
				return
			}
			buf := make([]byte, size+1)
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			_, key, _ = strings.Cut(string(buf[:size]), " ")
		} else {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			key = strings.TrimSuffix(strings.TrimPrefix(line, "get "), "\n")
			key = strings.ReplaceAll(key, "%20", " ")
		}
		s.mu.Lock()
		v, ok := s.data[key]
		s.mu.Unlock()
		var reply string
		switch {
		case s.socketmap && v == "!TEMP":
			reply = "TEMP database restarting"
		case s.socketmap && ok:
			reply = "OK " + v
		case s.socketmap:
			reply = "NOTFOUND "
		case v == "!TEMP":
			reply = "400 database restarting"
		case ok:
			reply = "200 " + v
		default:
			reply = "500 no such user"
		}
		if s.socketmap {
			fmt.Fprintf(c, "%d:%s,", len(reply), reply)
		} else {
			fmt.Fprintf(c, "%s\n", reply)
		}
	}
}

// TestNetworkTables: relay_recipient_maps = tcp: (the site's getuser
// service), virtual_alias_maps = socketmap:. Found users are delivered
// (aliases rewritten), unknown ones get 550 5.1.1, a service error or a
// service that is down 451 4.3.0, and the service coming back is noticed.
func TestNetworkTables(t *testing.T) {
	sink := harness.StartSink(t, harness.SinkOptions{})
	getuser := startLookupService(t, false, map[string]string{
		"alice@example.com": "OK",
		"bob@example.com":   "OK",
		"carol@example.com": "OK",
		"busy@example.com":  "!TEMP",
	})
	aliases := startLookupService(t, true, map[string]string{
		"sales@example.com": "alice@example.com,bob@example.com",
		"flaky@example.com": "!TEMP",
	})
	m := startMX(t, mxOptions{
		recipientMaps: fmt.Sprintf("%q", "tcp:"+getuser.addr),
		aliasMaps:     fmt.Sprintf("%q", "socketmap:inet:"+aliases.addr+":virtual"),
		transport:     sinkTransport(sink, "example.com"),
		extra:         "[network_tables]\nnegative_cache_ttl = \"0s\"\n",
	})
	rcpts := []string{"alice@example.com", "sales@example.com", "nobody@example.com", "busy@example.com", "flaky@example.com"}
	got := ldapRcpts(t, m, rcpts...)
	want := []string{"250", "250", ldapUnknown("nobody@example.com"), ldapTempfail("busy@example.com"), ldapTempfail("flaky@example.com")}
	for i := range rcpts {
		if got[i] != want[i] {
			t.Errorf("RCPT %s: %q, want %q", rcpts[i], got[i], want[i])
		}
	}
	if out, code := swaks(t, m, "--from", "sender@remote.test", "--to", "sales@example.com"); code != 0 {
		t.Fatalf("swaks exit %d:\n%s", code, out)
	}
	msgs := sink.WaitCount(t, 1, 20*time.Second)
	if got := strings.Join(msgs[0].Rcpts, ","); got != "alice@example.com,bob@example.com" {
		t.Errorf("sink got %q", got)
	}

	// The getuser service goes down: alice is cached (found), carol is
	// not and gets 451, never 550.
	getuser.stop()
	for range 3 {
		got := ldapRcpts(t, m, "alice@example.com", "carol@example.com")
		if got[0] != "250" || got[1] != ldapTempfail("carol@example.com") {
			t.Errorf("service down: %q", got)
		}
	}
	if !strings.Contains(m.log.String(), "lookup server is down") {
		t.Errorf("no log line for the dead service")
	}
	getuser.restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for ldapRcpt(t, m, "carol@example.com") != "250" {
		if time.Now().After(deadline) {
			t.Fatal("no recovery within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
