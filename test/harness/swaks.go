package harness

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// swaksTimeout bounds one swaks run; swaks' own per-command timeout
// (--timeout) defaults to 30 s.
const swaksTimeout = 60 * time.Second

// Swaks runs swaks with args and returns its combined output and exit code.
// Exit codes (swaks(1)): 0 success, 2 connection error, 21 greeting
// rejected, 23 MAIL rejected, 24 all RCPTs rejected, 25 DATA or the message
// rejected, ... The test fails if swaks does not finish within 60 s; the
// code is then -1.
//
//	out, code := harness.Swaks(t, "--server", addr, "--to", "a@example.test")
func Swaks(t testing.TB, args ...string) (output string, exitCode int) {
	t.Helper()
	bin := requireProgram(t, "swaks", "swaks")
	ctx, cancel := context.WithTimeout(context.Background(), swaksTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("swaks %q did not finish within %v; output so far:\n%s", args, swaksTimeout, out)
		return string(out), -1
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exitErr):
		return string(out), exitErr.ExitCode()
	default:
		t.Fatalf("run swaks: %v", err)
		return "", -1
	}
}
