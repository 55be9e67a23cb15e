package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds `go build ./cmd/mxfront`.
const buildTimeout = 5 * time.Minute

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BuildBinary builds ./cmd/mxfront once per test process and returns the
// path of the binary. When the test binary itself was built with -race, so
// is mxfront, so that e2e runs also look for data races in it (a race makes
// the process print "WARNING: DATA RACE" and exit with status 66).
//
// The binary lives in a temp dir that Main removes at the end; packages
// using BuildBinary should have
//
//	func TestMain(m *testing.M) { harness.Main(m) }
func BuildBinary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = buildMxfront() })
	if build.err != nil {
		t.Fatalf("BuildBinary: %v", build.err)
	}
	return build.path
}

// Main runs the tests, removes what BuildBinary built, and exits.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

func buildMxfront() (string, error) {
	goBin := goTool()
	root, err := moduleRoot(goBin)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "mxfront-bin-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	build.dir = dir
	out := filepath.Join(dir, "mxfront")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/mxfront")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, msg)
	}
	return out, nil
}

// goTool returns the go command: `go test` puts $GOROOT/bin first in PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// moduleRoot returns the directory of the main module's go.mod, as reported
// by `go env GOMOD` from the test's working directory.
func moduleRoot(goBin string) (string, error) {
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module (got %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}
