package remote

import (
	"sync"
	"time"
)

// Backoff bounds for Health when its fields are zero.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 10 * time.Second
)

// Health tracks whether one server is worth trying. After a failure the
// server is skipped for a backoff that doubles with each further failure
// (MinBackoff, 2×, 4× … MaxBackoff); when it has passed, exactly one
// caller may probe the server again (Try), everyone else keeps skipping
// it until the probe reports. This is what makes a dead server cost one
// failed connection attempt per backoff period instead of one per lookup.
//
// The zero value is a healthy server with the default backoff bounds. Its
// methods are safe for concurrent use.
type Health struct {
	MinBackoff, MaxBackoff time.Duration

	mu       sync.Mutex
	fails    int
	retryAt  time.Time
	probing  bool
	lastFail error
}

// Try reports whether the caller may use the server now. It returns true
// for a healthy server; for a failed one only once its backoff has passed,
// and then to one caller at a time, who must report the outcome with
// Succeed, Fail or Abandon.
func (h *Health) Try(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fails == 0 {
		return true
	}
	if h.probing || now.Before(h.retryAt) {
		return false
	}
	h.probing = true
	return true
}

// Succeed marks the server healthy. It reports whether it was down.
func (h *Health) Succeed() (wasDown bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wasDown = h.fails > 0
	h.fails, h.probing, h.lastFail = 0, false, nil
	return wasDown
}

// Fail records a failure at now and returns how long the server will be
// skipped, and whether it was healthy until now.
func (h *Health) Fail(now time.Time, err error) (backoff time.Duration, wasUp bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wasUp = h.fails == 0
	h.fails++
	h.probing = false
	h.lastFail = err
	minB, maxB := h.MinBackoff, h.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB < minB {
		maxB = max(DefaultMaxBackoff, minB)
	}
	backoff = minB
	for i := 1; i < h.fails && backoff < maxB; i++ {
		backoff *= 2
	}
	backoff = min(backoff, maxB)
	h.retryAt = now.Add(backoff)
	return backoff, wasUp
}

// Abandon ends a probe without a verdict (the caller gave up before the
// server answered or failed).
func (h *Health) Abandon() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probing = false
}

// Due reports whether Try would let a caller use the server at now (it is
// healthy, or its backoff is over and nobody is probing it), without
// claiming the probe.
func (h *Health) Due(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails == 0 || !h.probing && !now.Before(h.retryAt)
}

// Down reports whether the server is currently considered failed, and the
// last failure.
func (h *Health) Down() (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails > 0, h.lastFail
}
