package rbl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// zone is the health of one DNS list: a circuit breaker fed by lookups,
// and the verdict of the last RFC 5782 health test.
type zone struct {
	name string

	kinds Kind // guarded by Client.mu

	mu       sync.Mutex
	fails    int       // failed lookups in a row
	open     bool      // breaker open: lookups are skipped...
	until    time.Time // ...until then, when one lookup probes the zone
	probing  bool
	backoff  time.Duration
	disabled error // failed health test, or nil

	// gen is the context of the lookups in flight; it is cancelled (and
	// replaced) when the breaker opens, so that sessions waiting for a
	// dead zone are released at once.
	gen       context.Context
	cancelGen context.CancelFunc
}

func newZone(name string) *zone {
	z := &zone{name: name}
	z.gen, z.cancelGen = context.WithCancel(context.Background())
	return z
}

type transition string

const (
	trOpened   transition = "opened"
	trReopened transition = "reopened"
	trClosed   transition = "closed"
)

func (z *zone) disabledErr() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.disabled
}

// admit decides whether a lookup may query the zone now. probe is true for
// the one lookup that tests a zone whose breaker is open.
func (z *zone) admit(now time.Time) (gen context.Context, probe bool, err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.disabled != nil {
		return nil, false, z.disabled
	}
	if z.open {
		if z.probing || now.Before(z.until) {
			return nil, false, ErrSkipped
		}
		z.probing = true
		return z.gen, true, nil
	}
	return z.gen, false, nil
}

// release ends a lookup that was cancelled before it had a result.
func (z *zone) release(probe bool) {
	if probe {
		z.mu.Lock()
		z.probing = false
		z.mu.Unlock()
	}
}

// record feeds the result of a lookup to the breaker and reports a state
// change.
func (z *zone) record(cfg Config, probe bool, err error) transition {
	z.mu.Lock()
	defer z.mu.Unlock()
	if probe {
		z.probing = false
	}
	if err == nil {
		z.fails = 0
		if z.open {
			z.open = false
			z.backoff = 0
			return trClosed
		}
		return ""
	}
	z.fails++
	now := cfg.Now()
	switch {
	case z.open && probe:
		z.backoff = min(2*z.backoff, cfg.BreakerMaxBackoff)
		z.until = now.Add(z.backoff)
		return trReopened
	case !z.open && z.fails >= cfg.BreakerFailures:
		z.open = true
		z.backoff = cfg.BreakerBackoff
		z.until = now.Add(z.backoff)
		z.cancelGen()
		z.gen, z.cancelGen = context.WithCancel(context.Background())
		return trOpened
	}
	return ""
}

// setDisabled records a health verdict (nil: passed) and reports whether
// it changed.
func (z *zone) setDisabled(err error) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	changed := (z.disabled == nil) != (err == nil)
	z.disabled = err
	return changed
}

// healthLoop runs the health test of every zone each HealthInterval.
func (c *Client) healthLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		type job struct {
			z *zone
			k Kind
		}
		c.mu.Lock()
		jobs := make([]job, 0, len(c.zones))
		for _, z := range c.zones {
			jobs = append(jobs, job{z, z.kinds})
		}
		c.mu.Unlock()
		var wg sync.WaitGroup
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.healthTest(j.z, j.k)
			}()
		}
		wg.Wait()
	}
}

// healthTest is the RFC 5782 §5 test: an IP list must list 127.0.0.2 and
// must not list 127.0.0.1; a domain list must list TEST and must not list
// INVALID. A zone that fails is disabled (lookups answer ErrDisabled)
// until it passes; a test that gets no answer decides nothing (the breaker
// handles zones that do not answer).
func (c *Client) healthTest(z *zone, kinds Kind) {
	type probe struct {
		listed, unlisted string // query names
		what             string
	}
	var probes []probe
	if kinds&KindIP != 0 {
		probes = append(probes, probe{"2.0.0.127." + z.name, "1.0.0.127." + z.name, "127.0.0.2"})
	}
	if kinds&KindDomain != 0 {
		probes = append(probes, probe{"test." + z.name, "invalid." + z.name, "TEST"})
	}
	var failed []string
	for _, p := range probes {
		pos, neg := c.healthQuery(z, p.listed), c.healthQuery(z, p.unlisted)
		if pos.Err != nil || neg.Err != nil {
			err := pos.Err
			if err == nil {
				err = neg.Err
			}
			c.log.Debug("dnsbl health test: no answer", "zone", z.name, "err", err)
			return
		}
		if neg.Listed() {
			failed = append(failed, fmt.Sprintf("lists %s, the name that must never be listed (%s): it may list everything", neg.Query, neg))
		}
		if !pos.Listed() {
			failed = append(failed, fmt.Sprintf("does not list the test entry %s (%s)", p.listed, p.what))
		}
	}
	if len(failed) > 0 {
		err := fmt.Errorf("%w: %s", ErrDisabled, strings.Join(failed, "; "))
		if z.setDisabled(err) {
			c.cache.purge("." + z.name)
			c.log.Error("dnsbl zone disabled: failed the RFC 5782 health test; it counts as not listed", "zone", z.name, "reason", strings.Join(failed, "; "))
		}
		return
	}
	if z.setDisabled(nil) {
		c.cache.purge("." + z.name)
		c.log.Info("dnsbl zone enabled: passed the RFC 5782 health test", "zone", z.name)
	}
}

// healthQuery asks q past the cache, and lets a good answer close the
// zone's breaker.
func (c *Client) healthQuery(z *zone, q string) Answer {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	a, _ := c.query(ctx, z.name, q)
	if a.Err == nil {
		z.mu.Lock()
		open := z.open
		z.mu.Unlock()
		if open {
			if tr := z.record(c.cfg, false, nil); tr != "" {
				c.logTransition(z, tr)
			}
		}
	}
	return a
}
