package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/table/nettable"
)

func TestNetworkTablesConfig(t *testing.T) {
	c, err := ParseConfig("x.toml", []byte(`myhostname = "mx.example.com"`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.netTableConfig(), nettable.DefaultConfig(); got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	c, err = ParseConfig("x.toml", []byte(`myhostname = "mx.example.com"
[network_tables]
timeout = "3s"
pool_size = 8
cache_ttl = "0s"
negative_cache_ttl = "1m"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := nettable.Config{Timeout: 3 * time.Second, PoolSize: 8, NegativeCacheTTL: time.Minute}
	if got := c.netTableConfig(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	opts := tableOptions(c, nil)
	for _, typ := range []string{"ldap", "tcp", "socketmap"} {
		if opts.Openers[typ] == nil {
			t.Errorf("no opener for %s:", typ)
		}
	}
}

// tcpServer answers tcp_table(5) requests from m ("400" for key "busy").
func tcpServer(t *testing.T, m map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					key := strings.TrimSuffix(strings.TrimPrefix(line, "get "), "\n")
					switch v, ok := m[key]; {
					case key == "busy":
						c.Write([]byte("400 database restarting\n"))
					case ok:
						c.Write([]byte("200 " + v + "\n"))
					default:
						c.Write([]byte("500 no such user\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestQueryNetworkTables: mxfront query asks tcp: and ldap: tables like
// postmap -q: exit 0 with the value, 1 not found, 2 error.
func TestQueryNetworkTables(t *testing.T) {
	addr := tcpServer(t, map[string]string{"alice@example.com": "alice@h7.mail.example.com"})
	for _, c := range []struct {
		key  string
		code int
		out  string
		err  string
	}{
		{"alice@example.com", 0, "alice@h7.mail.example.com\n", ""},
		{"nobody@example.com", 1, "", ""},
		{"busy", 2, "", "400 database restarting"},
	} {
		var stdout, stderr bytes.Buffer
		code := cmdQuery([]string{"tcp:" + addr, c.key}, &stdout, &stderr)
		if code != c.code || stdout.String() != c.out || !strings.Contains(stderr.String(), c.err) {
			t.Errorf("query %s: exit %d, stdout %q, stderr %q", c.key, code, stdout.String(), stderr.String())
		}
	}

	// ldap: against a server that is not there: exit 2, quickly.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	cf := filepath.Join(t.TempDir(), "ldap.cf")
	os.WriteFile(cf, []byte("server_host = ldap://"+deadAddr+"\nquery_filter = (mail=%s)\n"), 0o644)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if code := cmdQuery([]string{"ldap:" + cf, "a@example.com"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "lookup error") {
		t.Errorf("ldap down: exit %d, stderr %q", code, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	// A broken .cf file names file and line.
	os.WriteFile(cf, []byte("query_filter = (mail=%s)\nscope = everything\n"), 0o644)
	stderr.Reset()
	if code := cmdQuery([]string{"ldap:" + cf, "a@example.com"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), cf+":2: scope: want sub, one or base") {
		t.Errorf("bad cf: exit %d, stderr %q", code, stderr.String())
	}
}
