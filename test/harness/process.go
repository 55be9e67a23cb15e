package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a peer daemon started in the foreground in its own process
// group, with stdout and stderr appended to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done is closed
}

// startProcess starts argv with output appended to logPath. The output goes
// to an *os.File, not a pipe, so Wait never blocks on grandchildren that
// inherited it.
func startProcess(name, logPath string, argv ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group: stop() can then also reach children a daemon
	// forked (Dovecot's lmtp, auth, log processes).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exitError describes how the process ended, for error messages.
func (p *process) exitError() error {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return fmt.Errorf("%s exited with status 0", p.name)
		}
		return fmt.Errorf("%s exited: %w", p.name, p.waitErr)
	default:
		return nil
	}
}

// killTimeout bounds the wait for a process to be reaped after SIGKILL.
const killTimeout = 10 * time.Second

// stop ends the process: SIGTERM to its group and up to grace for it to
// exit (grace 0 skips that), then SIGKILL to the group so that no child is
// left behind holding a port. It is safe to call more than once.
func (p *process) stop(grace time.Duration) error {
	pgid := p.pid() // Setpgid: the group id is the leader's pid
	if p.running() && grace > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Also after a clean exit of the leader: children may linger.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s group %d: %w", p.name, pgid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("%s (pid %d) not reaped %v after SIGKILL", p.name, pgid, killTimeout)
	}
}
