package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxfront/mxfront/test/harness"
)

func runBin(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.BuildBinary(t), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("myhostname = \"mx.example.com\"\nrelay_domains = \"example.com\"\nqueue_directory = \""+dir+"/q\"\n"), 0o644)
	out, errOut, code := runBin(t, "check", "-config", good)
	if code != 0 {
		t.Fatalf("check good: exit %d: %s", code, errOut)
	}
	for _, w := range []string{`myhostname = "mx.example.com"`, `message_size_limit = 10240000`, `maximal_queue_lifetime = "5d"`, `minimal_backoff_time = "300s"`} {
		if !strings.Contains(out, w) {
			t.Errorf("effective config lacks %q:\n%s", w, out)
		}
	}
	// <postmaster> qualified as postmaster@mx.example.com goes to
	// postmaster@example.com (the built-in fallback): no warning.
	if strings.Contains(errOut, "warning: mail to <postmaster>") {
		t.Errorf("postmaster warning despite the fallback: %q", errOut)
	}
	// With mydomain local too, there is nowhere to send it: a warning.
	local := filepath.Join(dir, "local.toml")
	os.WriteFile(local, []byte("myhostname = \"mx.example.com\"\nmydestination = \"$myhostname, $mydomain\"\nqueue_directory = \""+dir+"/q2\"\n"), 0o644)
	if _, errOut, code := runBin(t, "check", "-config", local); code != 0 || !strings.Contains(errOut, "warning: mail to <postmaster>") {
		t.Errorf("no postmaster warning when it has nowhere to go: exit %d %q", code, errOut)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("myhostname = \"mx.example.com\"\n\nsmtpd_recipient_limt = 10\n"), 0o644)
	_, errOut, code = runBin(t, "check", "-config", bad)
	if code != 1 || !strings.Contains(errOut, bad+":3: smtpd_recipient_limt: unknown key") {
		t.Fatalf("check bad: exit %d: %q", code, errOut)
	}
}

func TestQueryCommand(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "virtual")
	os.WriteFile(f, []byte("# comment\nFoo.Bar@example.com  foo.bar@h42.mail.example.com\n"), 0o644)
	out, _, code := runBin(t, "query", "texthash:"+f, "foo.bar@EXAMPLE.com")
	if code != 0 || out != "foo.bar@h42.mail.example.com\n" {
		t.Fatalf("found: exit %d %q", code, out)
	}
	if out, _, code = runBin(t, "query", "texthash:"+f, "nobody@example.com"); code != 1 || out != "" {
		t.Fatalf("not found: exit %d %q", code, out)
	}
	if _, errOut, code := runBin(t, "query", "fail:x", "key"); code != 2 || !strings.Contains(errOut, "lookup error") {
		t.Fatalf("error: exit %d %q", code, errOut)
	}
	if _, errOut, code := runBin(t, "query", "nosuch:/x", "key"); code != 2 || !strings.Contains(errOut, "unsupported table type") {
		t.Fatalf("bad type: exit %d %q", code, errOut)
	}
	out, _, code = runBin(t, "query", "regexp:"+writeFile(t, dir, "re", "/^(.*)@old\\.example$/ ${1}@new.example\n"), "joe@old.example")
	if code != 0 || out != "joe@new.example\n" {
		t.Fatalf("regexp: exit %d %q", code, out)
	}
}

func TestVersionCommand(t *testing.T) {
	out, _, code := runBin(t, "version")
	if code != 0 || !strings.HasPrefix(out, "mxfront ") || !strings.Contains(out, "go-smtp v0.25.1") {
		t.Fatalf("version: %d %q", code, out)
	}
	if _, errOut, code := runBin(t, "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
