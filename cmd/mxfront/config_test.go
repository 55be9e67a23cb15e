package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxfront/mxfront/table"
)

// TestExampleConfigs loads every file in configs/ (the examples must never
// rot) and checks that every table they name has a known type.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, f := range files {
		c, err := LoadConfig(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		for _, l := range []List{c.RelayRecipientMaps, c.VirtualAliasMaps, c.TransportMaps} {
			for _, spec := range l {
				typ, _, err := table.SplitSpec(spec)
				if err != nil {
					t.Errorf("%s: %v", f, err)
				}
				known := false
				for _, k := range table.SupportedTypes(table.Options{}) {
					known = known || k == typ
				}
				if !known {
					t.Errorf("%s: table type %q unknown", f, typ)
				}
			}
		}
	}
}

// TestExampleDocumentsEveryKey: configs/example.toml sets every key of
// Config, so that it documents them all.
func TestExampleDocumentsEveryKey(t *testing.T) {
	src, err := os.ReadFile("../../configs/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{}
	var missing []string
	for _, k := range tomlKeys(c) {
		if !bytes.Contains(src, []byte("\n"+k+" =")) && !bytes.Contains(src, []byte("\n["+k+"]")) && !bytes.Contains(src, []byte("\n[["+k+"]]")) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("configs/example.toml does not document: %s", strings.Join(missing, ", "))
	}
}

func TestDefaults(t *testing.T) {
	c, err := ParseConfig("x.toml", []byte(`myhostname = "mx1.example.com"`))
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's defaults (postconf -d).
	checks := []struct {
		name      string
		got, want any
	}{
		{"mydomain", c.MyDomain, "example.com"},
		{"myorigin", c.MyOrigin, "mx1.example.com"},
		{"mydestination", strings.Join(*c.MyDestination, ","), "mx1.example.com,localhost.example.com,localhost"},
		{"mynetworks", strings.Join(*c.MyNetworks, ","), "127.0.0.0/8,[::1]/128"},
		{"smtpd_banner", c.SmtpdBanner, "mx1.example.com ESMTP mxfront"},
		{"message_size_limit", c.MessageSizeLimit, int64(10240000)},
		{"smtpd_recipient_limit", c.SmtpdRecipientLimit, 1000},
		{"smtpd_timeout", time.Duration(c.SmtpdTimeout), 300 * time.Second},
		{"minimal_backoff_time", time.Duration(c.MinimalBackoffTime), 300 * time.Second},
		{"maximal_backoff_time", time.Duration(c.MaximalBackoffTime), 4000 * time.Second},
		{"maximal_queue_lifetime", time.Duration(c.MaximalQueueLifetime), 5 * 24 * time.Hour},
		{"default_destination_recipient_limit", c.DefaultDestinationRecipientLimit, 50},
		{"default_destination_concurrency_limit", c.DefaultDestinationConcurrencyLimit, 20},
		{"hopcount_limit", c.HopcountLimit, 50},
		{"smtpd_forbid_bare_newline", c.SmtpdForbidBareNewline, "normalize"},
		{"smtpd_forbid_bare_newline_exclusions", strings.Join(*c.SmtpdForbidBareNewlineExclusions, ","), "127.0.0.0/8,[::1]/128"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	// message_size_limit = 0 set explicitly means no limit.
	c, err = ParseConfig("x.toml", []byte("myhostname = \"mx1.example.com\"\nmessage_size_limit = 0\n"))
	if err != nil || c.MessageSizeLimit != 0 {
		t.Errorf("explicit 0: %v %v", c.MessageSizeLimit, err)
	}
}

func TestListSyntax(t *testing.T) {
	c, err := ParseConfig("x.toml", []byte(`myhostname = "mx1.example.com"
relay_domains = "example.com, example.net  $mydomain"
transport_maps = ["inline:{ a.test=smtp:[u1], b.test = smtp:[u2] }", "texthash:/etc/t"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.RelayDomains, "|"); got != "example.com|example.net|example.com" {
		t.Errorf("relay_domains = %q", got)
	}
	if len(c.TransportMaps) != 2 || !strings.HasPrefix(c.TransportMaps[0], "inline:{") {
		t.Errorf("transport_maps = %q", c.TransportMaps)
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"300s": 300 * time.Second, "5m": 5 * time.Minute, "5d": 120 * time.Hour, "1w": 168 * time.Hour, "1h30m": 90 * time.Minute} {
		if d, err := parseDuration(in); err != nil || d != want {
			t.Errorf("parseDuration(%q) = %v, %v", in, d, err)
		}
	}
	for _, in := range []string{"300", "", "-5s", "soon"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

// TestBadConfigs: each file in testdata/badconfigs starts with
// "# want: <error>"; loading it must give exactly that error (prefix), with
// file, line and key. @QUEUE@ is replaced by a temporary directory.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/badconfigs/*.toml")
	if len(files) == 0 {
		t.Fatal("no bad configs")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(src), "\n")
		want := strings.TrimPrefix(first, "# want: ")
		src = bytes.ReplaceAll(src, []byte("@QUEUE@"), []byte(t.TempDir()))
		name := filepath.Base(f)
		c, err := ParseConfig(name, src)
		if err == nil {
			var a *app
			a, err = newApp(c, nil)
			if err == nil {
				a.close()
			}
		}
		if err == nil {
			t.Errorf("%s: no error, want %q", name, want)
			continue
		}
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s:\n got  %q\n want %q", name, err.Error(), want)
		}
	}
}
