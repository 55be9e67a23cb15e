package relay

import (
	"log/slog"
	"sync"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// health remembers next-hop addresses that failed to give us a session
// (connect refused or timed out, 4xx greeting or EHLO). A unit with
// several hosts ("smtp:[u42a]:25, [u42b]:25", or MX records) then sends
// its mail to the healthy ones without paying a connect timeout per
// delivery, and a down host gets one probe per HostDownTime. The queue's
// dead-destination logic covers the case where all hosts are down.
type health struct {
	mu   sync.Mutex
	down map[string]time.Time // dial address -> marked down until
}

func (r *Relay) isDown(t target) bool {
	r.health.mu.Lock()
	defer r.health.mu.Unlock()
	until, ok := r.health.down[t.dialAddr]
	return ok && time.Now().Before(until)
}

// markDown marks t down for HostDownTime.
func (r *Relay) markDown(t target, reply envelope.Reply, log *slog.Logger) {
	r.health.mu.Lock()
	if r.health.down == nil {
		r.health.down = make(map[string]time.Time)
	}
	_, was := r.health.down[t.dialAddr]
	until := time.Now().Add(r.cfg.HostDownTime)
	r.health.down[t.dialAddr] = until
	r.health.mu.Unlock()
	if !was {
		log.Warn("next-hop host marked down", "host", t.relay, "until", until.Format(time.RFC3339), "reply", reply.String())
	}
}

// markUp forgets that t was down.
func (r *Relay) markUp(t target, log *slog.Logger) {
	r.health.mu.Lock()
	_, was := r.health.down[t.dialAddr]
	delete(r.health.down, t.dialAddr)
	r.health.mu.Unlock()
	if was {
		log.Info("next-hop host is up again", "host", t.relay)
	}
}
