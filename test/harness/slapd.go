package harness

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The directory StartSlapd serves.
const (
	SlapdSuffix = "dc=example,dc=test"
	SlapdRootDN = "cn=admin,dc=example,dc=test"
	SlapdRootPW = "secret"
)

// maildropSchema defines attribute maildrop and auxiliary objectClass
// mailDropRecipient; StartSlapd always loads it.
//
//go:embed testdata/maildrop.schema
var maildropSchema []byte

// slapdSchemas are Debian's schema files StartSlapd loads, in dependency
// order; misc.schema has mailLocalAddress, mailRoutingAddress and mailHost.
var slapdSchemas = []string{"core", "cosine", "inetorgperson", "nis", "misc"}

// slapdBaseEntry is added when the seed LDIF does not define the suffix.
const slapdBaseEntry = `dn: dc=example,dc=test
objectClass: dcObject
objectClass: organization
dc: example
o: example

`

var suffixEntryRE = regexp.MustCompile(`(?im)^dn:\s*dc=example\s*,\s*dc=test\s*$`)

// Slapd is a running OpenLDAP slapd (2.5) with an mdb database for
// SlapdSuffix; SlapdRootDN / SlapdRootPW may write, anyone may read.
type Slapd struct {
	dir     string
	conf    string
	logPath string
	port    int
	tools   map[string]string // ldapsearch, ldapadd, ldapmodify paths

	mu   sync.Mutex
	proc *process
}

// slapdStartTimeout bounds the wait for slapd to answer a search (it
// usually takes about 0.3 s).
const slapdStartTimeout = 15 * time.Second

// ldapToolTimeout bounds each ldapsearch/ldapadd/ldapmodify run.
const ldapToolTimeout = 30 * time.Second

// StartSlapd starts slapd loaded with ldif (the suffix entry
// dc=example,dc=test is added first unless ldif defines it) and stops it in
// t.Cleanup. extraSchema are paths of further schema files to include, e.g.
// "/etc/ldap/schema/dyngroup.schema"; Debian's core, cosine,
// inetorgperson, nis and misc schemas and testdata/maildrop.schema are
// always loaded.
func StartSlapd(t testing.TB, ldif string, extraSchema ...string) *Slapd {
	t.Helper()
	bin := requireProgram(t, "slapd", "slapd")
	slaptest := requireProgram(t, "slaptest", "slapd")
	slapadd := requireProgram(t, "slapadd", "slapd")
	s := &Slapd{tools: make(map[string]string)}
	for _, tool := range []string{"ldapsearch", "ldapadd", "ldapmodify"} {
		s.tools[tool] = requireProgram(t, tool, "ldap-utils")
	}
	for _, name := range slapdSchemas {
		requireFile(t, "/etc/ldap/schema/"+name+".schema", "slapd")
	}
	s.dir = t.TempDir()
	s.conf = filepath.Join(s.dir, "slapd.conf")
	s.logPath = filepath.Join(s.dir, "slapd.log")
	logOnFailure(t, "slapd", s.logPath)
	t.Cleanup(s.Stop)

	schemaPath := filepath.Join(s.dir, "maildrop.schema")
	if err := os.WriteFile(schemaPath, maildropSchema, 0o644); err != nil {
		t.Fatalf("StartSlapd: %v", err)
	}
	if err := os.Mkdir(filepath.Join(s.dir, "data"), 0o700); err != nil {
		t.Fatalf("StartSlapd: %v", err)
	}
	var includes []string
	for _, name := range slapdSchemas {
		includes = append(includes, "/etc/ldap/schema/"+name+".schema")
	}
	includes = append(includes, schemaPath)
	includes = append(includes, extraSchema...)
	if err := s.writeConfig(includes); err != nil {
		t.Fatalf("StartSlapd: %v", err)
	}
	if out, err := runTool(nil, slaptest, "-Q", "-u", "-f", s.conf); err != nil {
		t.Fatalf("StartSlapd: slaptest: %v\n%s", err, out)
	}

	// Offline load before the first start (slapadd -q: no per-entry sync).
	seed := ldif
	if !suffixEntryRE.MatchString(ldif) {
		seed = slapdBaseEntry + ldif
	}
	seedPath := filepath.Join(s.dir, "seed.ldif")
	if err := os.WriteFile(seedPath, []byte(seed), 0o644); err != nil {
		t.Fatalf("StartSlapd: %v", err)
	}
	if out, err := runTool(nil, slapadd, "-q", "-f", s.conf, "-l", seedPath); err != nil {
		t.Fatalf("StartSlapd: slapadd: %v\n%s", err, out)
	}

	var err error
	for range bindAttempts {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.launch(bin); err != errPortTaken {
			break
		}
	}
	if err != nil {
		t.Fatalf("StartSlapd: %v", err)
	}
	return s
}

// writeConfig writes the recipe of /work/shared/testing.md ("OpenLDAP (slapd
// 2.5) with the mail attributes") plus an index on maildrop.
func (s *Slapd) writeConfig(includes []string) error {
	var b strings.Builder
	for _, inc := range includes {
		fmt.Fprintf(&b, "include %s\n", inc)
	}
	fmt.Fprintf(&b, `modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
loglevel none
database mdb
maxsize 104857600
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/data
index objectClass eq
index mail,mailLocalAddress,maildrop eq
access to * by * read
`, s.dir, SlapdSuffix, SlapdRootDN, SlapdRootPW)
	if err := os.WriteFile(s.conf, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write slapd.conf: %w", err)
	}
	return nil
}

// waitReady waits until slapd answers a root DSE search; errPortTaken means
// slapd could not bind its port.
func (s *Slapd) waitReady(p *process) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	var lastErr error
	ok := waitFor(slapdStartTimeout, 20*time.Millisecond, func() bool {
		if !p.running() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			lastErr = err
			return false
		}
		c.Close()
		// Short limit: if something else holds the port, it may never
		// answer; the next round then sees slapd has exited.
		out, err := runToolTimeout(2*time.Second, nil, s.tools["ldapsearch"], "-x", "-LLL", "-o", "nettimeout=2", "-H", s.URL(), "-s", "base", "-b", "", "namingContexts")
		if err != nil {
			lastErr = fmt.Errorf("ldapsearch: %w: %s", err, out)
			return false
		}
		lastErr = nil
		if !strings.Contains(out, SlapdSuffix) {
			lastErr = fmt.Errorf("root DSE without %s: %s", SlapdSuffix, out)
		}
		return true
	})
	switch {
	case !p.running():
		// With -d 0 slapd may exit silently on a bind failure: if
		// something else answers on the port now, that was it.
		if portAnswers(addr) || strings.Contains(tailFile(s.logPath, 2048), "in use") {
			return errPortTaken
		}
		return fmt.Errorf("%w; log: %s", p.exitError(), tailFile(s.logPath, 1024))
	case !ok || lastErr != nil:
		p.stop(0)
		if lastErr != nil && strings.Contains(lastErr.Error(), "root DSE without") {
			return errPortTaken // another LDAP server on our port
		}
		return fmt.Errorf("slapd on %s not ready within %v: %v", addr, slapdStartTimeout, lastErr)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// portAnswers reports whether something accepts TCP connections on addr.
func portAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// URL returns "ldap://127.0.0.1:port".
func (s *Slapd) URL() string { return "ldap://127.0.0.1:" + strconv.Itoa(s.port) }

// Addr returns "127.0.0.1:port".
func (s *Slapd) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Stop stops slapd gracefully (SIGTERM, SIGKILL after 10 s): the directory
// is down and connections are refused. It is idempotent.
func (s *Slapd) Stop() { s.halt(10 * time.Second) }

// Kill kills slapd with SIGKILL, as in a crash. The mdb database survives
// it; Start brings the same data back.
func (s *Slapd) Kill() { s.halt(0) }

func (s *Slapd) halt(grace time.Duration) {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.stop(grace); err != nil {
		fmt.Fprintf(os.Stderr, "harness: Slapd.Stop: %v\n", err)
	}
}

// Start starts slapd again after Stop or Kill, on the same port with the
// same data.
func (s *Slapd) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		t.Fatalf("Slapd.Start: already running on %s", s.URL())
	}
	if err := s.launch(requireProgram(t, "slapd", "slapd")); err != nil {
		t.Fatalf("Slapd.Start on %s: %v", s.URL(), err)
	}
}

// launch starts slapd (-d 0 keeps it in the foreground) on s.port and waits
// until it answers.
func (s *Slapd) launch(bin string) error {
	p, err := startProcess("slapd", s.logPath, bin, "-d", "0", "-f", s.conf, "-h", s.URL()+"/")
	if err != nil {
		return err
	}
	return s.waitReady(p)
}

// Add adds the entries in ldif as the root DN (ldapadd).
func (s *Slapd) Add(t testing.TB, ldif string) {
	t.Helper()
	out, err := runTool([]byte(ldif), s.tools["ldapadd"], "-x", "-o", "nettimeout=5", "-H", s.URL(), "-D", SlapdRootDN, "-w", SlapdRootPW)
	if err != nil {
		t.Fatalf("Slapd.Add: ldapadd: %v\n%s", err, out)
	}
}

// Modify applies the changes in ldif (changetype: modify/delete/add...) as
// the root DN (ldapmodify).
func (s *Slapd) Modify(t testing.TB, ldif string) {
	t.Helper()
	out, err := runTool([]byte(ldif), s.tools["ldapmodify"], "-x", "-o", "nettimeout=5", "-H", s.URL(), "-D", SlapdRootDN, "-w", SlapdRootPW)
	if err != nil {
		t.Fatalf("Slapd.Modify: ldapmodify: %v\n%s", err, out)
	}
}

// Search runs an anonymous subtree search under SlapdSuffix and returns
// the LDIF output (ldapsearch -LLL). The test fails if the search fails.
func (s *Slapd) Search(t testing.TB, filter string, attrs ...string) string {
	t.Helper()
	args := append([]string{"-x", "-LLL", "-o", "nettimeout=5", "-o", "ldif-wrap=no", "-H", s.URL(), "-b", SlapdSuffix, filter}, attrs...)
	out, err := runTool(nil, s.tools["ldapsearch"], args...)
	if err != nil {
		t.Fatalf("Slapd.Search %s: ldapsearch: %v\n%s", filter, err, out)
	}
	return out
}

// runTool runs an LDAP tool with optional stdin, bounded by ldapToolTimeout,
// and returns its combined output. (The tools' -o nettimeout only bounds
// connecting; a peer that accepts and never answers is cut by the timeout.)
func runTool(stdin []byte, bin string, args ...string) (string, error) {
	return runToolTimeout(ldapToolTimeout, stdin, bin, args...)
}

// runToolTimeout is runTool with its own time limit.
func runToolTimeout(timeout time.Duration, stdin []byte, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s timed out after %v: %w", filepath.Base(bin), timeout, ctx.Err())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return string(out), fmt.Errorf("%s exited with status %d", filepath.Base(bin), exitErr.ExitCode())
	}
	return string(out), err
}
