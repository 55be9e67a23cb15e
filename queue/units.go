package queue

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// A unit is a destination: the next hop of a route (Route.Key, such as
// "lmtp:inet:h42.mail.example.com:24" or "smtp:[u42a]:25, [u42b]:25").
// Operators name units the short way; UnitMatch decides what matches.
//
// A unit on hold (maintenance) gets no delivery attempts: its mail is
// deferred with "unit on hold" until the unit is released, which retries
// it at once. Holds are kept in Dir/holds, so they survive restarts.

// UnitHold is one unit on hold.
type UnitHold struct {
	Unit   string    `json:"unit"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

const holdsName = "holds"

// UnitMatch reports whether unit, as an operator writes it, names the
// destination key: the key itself ("smtp:[u42a]:25"), its next hop
// ("[u42a]:25"), or one of its hosts by name ("u42a", "[u42a]"), by name
// and port ("u42a:25") or, for LMTP, as written ("inet:h42:24",
// "unix:/path"). Case does not matter.
func UnitMatch(unit, key string) bool {
	unit = strings.ToLower(strings.TrimSpace(unit))
	key = strings.ToLower(key)
	if unit == "" || key == "" {
		return false
	}
	if unit == key {
		return true
	}
	_, nh, ok := strings.Cut(key, ":")
	if !ok {
		return false
	}
	if unit == strings.TrimSpace(nh) {
		return true
	}
	for _, h := range strings.FieldsFunc(nh, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if unit == h {
			return true
		}
		h = strings.TrimPrefix(h, "inet:")
		if strings.HasPrefix(h, "unix:") {
			if unit == strings.TrimPrefix(h, "unix:") {
				return true
			}
			continue
		}
		name, port := h, ""
		if strings.HasPrefix(h, "[") {
			if end := strings.IndexByte(h, ']'); end > 0 {
				name, port = h[1:end], strings.TrimPrefix(h[end+1:], ":")
			}
		} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
			name, port = h[:i], h[i+1:]
		}
		if unit == h || unit == name || unit == "["+name+"]" ||
			(port != "" && (unit == name+":"+port || unit == "["+name+"]:"+port)) {
			return true
		}
	}
	return false
}

// UnitHolds returns the units on hold.
func (q *Queue) UnitHolds() []UnitHold {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.holds)
}

// unitHeld reports whether destination key is on hold. It takes q.mu.
func (q *Queue) unitHeld(key string) (UnitHold, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, h := range q.holds {
		if UnitMatch(h.Unit, key) {
			return h, true
		}
	}
	return UnitHold{}, false
}

// HoldUnit puts a unit on hold: from now on its mail is deferred without
// an attempt (transactions already running finish). Holding a unit that is
// already on hold updates the reason.
func (q *Queue) HoldUnit(unit, reason string) error {
	unit = strings.TrimSpace(unit)
	if unit == "" || strings.ContainsAny(unit, "\r\n") {
		return errors.New("queue: hold: empty or malformed unit name")
	}
	q.holdsMu.Lock()
	defer q.holdsMu.Unlock()
	holds := q.UnitHolds()
	h := UnitHold{Unit: unit, Reason: reason, Since: q.now()}
	i := slices.IndexFunc(holds, func(x UnitHold) bool { return strings.EqualFold(x.Unit, unit) })
	if i >= 0 {
		h.Since = holds[i].Since
		holds[i] = h
	} else {
		holds = append(holds, h)
	}
	if err := q.saveUnitHolds(holds); err != nil {
		return err
	}
	q.mu.Lock()
	q.holds = holds
	q.mu.Unlock()
	q.log.Warn("unit on hold", "unit", unit, "reason", reason)
	return nil
}

// ReleaseUnit ends a unit's hold and retries its mail now. It returns the
// number of messages retried, or an error wrapping ErrNotFound when the
// unit was not on hold.
func (q *Queue) ReleaseUnit(unit string) (int, error) {
	q.holdsMu.Lock()
	holds := q.UnitHolds()
	i := slices.IndexFunc(holds, func(x UnitHold) bool { return strings.EqualFold(x.Unit, strings.TrimSpace(unit)) })
	if i < 0 {
		q.holdsMu.Unlock()
		return 0, fmt.Errorf("%w: unit %q is not on hold", ErrNotFound, unit)
	}
	holds = slices.Delete(holds, i, i+1)
	if err := q.saveUnitHolds(holds); err != nil {
		q.holdsMu.Unlock()
		return 0, err
	}
	q.mu.Lock()
	q.holds = holds
	q.mu.Unlock()
	q.holdsMu.Unlock()
	q.log.Info("unit released", "unit", unit)
	return q.FlushUnit(unit)
}

// FlushUnit retries now the deferred mail whose last attempt went to the
// unit (as ReleaseUnit does) and forgets that the unit was dead. It
// returns the number of messages. A queue that does not run records the
// request for the daemon's next start.
func (q *Queue) FlushUnit(unit string) (int, error) {
	var offline []string
	n := 0
	q.mu.Lock()
	for _, d := range q.dests {
		if UnitMatch(unit, d.key) {
			d.revive()
		}
	}
	for _, m := range q.msgs {
		if m.state != stateDeferred && q.running {
			continue
		}
		if !slices.ContainsFunc(m.dests, func(k string) bool { return UnitMatch(unit, k) }) {
			continue
		}
		n++
		m.flags |= flagForce
		if !q.running {
			offline = append(offline, m.id)
			continue
		}
		heap.Remove(&q.deferred, m.heapIdx)
		q.makeDue(m)
	}
	q.pump()
	q.mu.Unlock()
	var firstErr error
	for _, id := range offline {
		if err := q.appendRecords(dirMsg, id, nil, stateRecord{T: recordFlush, At: q.now()}); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return n, firstErr
}

func (q *Queue) loadUnitHolds() error {
	b, err := os.ReadFile(q.path(holdsName, ""))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	var holds []UnitHold
	if err := json.Unmarshal(b, &holds); err != nil {
		// Written atomically, so this is damage from outside. Refusing to
		// start would stop all mail; delivering to units in maintenance is
		// the lesser harm, and loud.
		q.log.Error("unit holds file unreadable; no unit is on hold", "file", q.path(holdsName, ""), "err", err)
		return nil
	}
	q.holds = holds
	return nil
}

// saveUnitHolds replaces Dir/holds durably: temporary file, fsync, rename,
// directory fsync.
func (q *Queue) saveUnitHolds(holds []UnitHold) error {
	b, err := json.MarshalIndent(holds, "", "  ")
	if err != nil {
		return err
	}
	path := q.path(holdsName, "")
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = q.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: %s: %w", path, err)
	}
	d, err := os.Open(q.dir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	defer d.Close()
	if err := q.commit.syncDir(d); err != nil {
		return fmt.Errorf("queue: fsync %s: %w", q.dir, err)
	}
	return nil
}

// FlushAll is Flush for the tools: it retries every deferred message now
// and returns how many there were. A queue that does not run records the
// request in each deferred message's state file, for the daemon's next
// start.
func (q *Queue) FlushAll(ctx context.Context) (int, error) {
	q.mu.Lock()
	running, n := q.running, q.deferred.Len()
	q.mu.Unlock()
	if running {
		q.Flush()
		return n, nil
	}
	res, err := q.Apply(ctx, OpFlush, Selection{All: true, Filter: Filter{States: []string{StateDeferred}}})
	n = 0
	for _, r := range res {
		if r.Err == "" {
			n++
		}
	}
	return n, err
}
