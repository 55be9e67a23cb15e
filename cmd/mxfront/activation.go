package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// activationListeners returns the listening sockets passed by systemd socket
// activation (sd_listen_fds(3)): LISTEN_FDS sockets starting at fd 3. When
// LISTEN_PID is set it must be our pid; an unset LISTEN_PID is accepted too,
// so that any supervisor (or a test) can pass sockets. It returns nil when
// there are none; the [[listen]] addresses are then used.
func activationListeners() ([]net.Listener, error) {
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	if pid := os.Getenv("LISTEN_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDNAMES")
	var lns []net.Listener
	for i := 0; i < n; i++ {
		f := os.NewFile(uintptr(3+i), "listen-fd-"+strconv.Itoa(3+i))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: fd %d: %w", 3+i, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
