package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// The operator's view of the queue: what `mxfront queue` shows and does,
// through the daemon's control socket (package queue/control) or, when the
// daemon is down, on a Queue opened with OpenOffline. Postfix's showq,
// postcat, postsuper and postqueue are the models.
//
// Everything here reads the spool files, which are the truth; a running
// queue adds what only it knows (whether a message is being delivered
// right now) and applies changes to its schedule at once. A message in the
// middle of a delivery attempt is never touched under the attempt: delete
// and hold take effect when the attempt ends.

// Queue states, as Postfix names its queues.
const (
	StateIncoming = "incoming" // committed, not yet attempted
	StateActive   = "active"   // being delivered, or due and waiting for a slot
	StateDeferred = "deferred" // waiting for its next attempt
	StateHold     = "hold"     // on hold: not delivered until released
	StateCorrupt  = "corrupt"  // damaged file moved aside (corrupt/)
)

// States lists the queue states in Postfix's order.
var States = []string{StateIncoming, StateActive, StateDeferred, StateHold, StateCorrupt}

// Recipient statuses in an Item.
const (
	RcptPending = "pending"
	RcptSent    = statusSent
	RcptBounced = statusBounced
	RcptExpired = statusExpired
)

// Item describes one queued message for the tools.
type Item struct {
	ID       string    `json:"id"`
	State    string    `json:"state"`
	Size     int64     `json:"size"`               // content bytes
	Arrival  time.Time `json:"arrival"`            // when the client sent it
	Sender   string    `json:"sender"`             // "" for the null sender
	Attempts int       `json:"attempts,omitempty"` // delivery attempts so far
	Next     time.Time `json:"next,omitzero"`      // next attempt (deferred)
	// Reason is why the message is held (Envelope.Hold or the
	// operator's reason) or why its file is damaged.
	Reason string     `json:"reason,omitempty"`
	Rcpts  []ItemRcpt `json:"rcpts,omitempty"`
	// Show only: the whole envelope and the delivery history.
	Env     *envelope.Envelope `json:"envelope,omitempty"`
	History []Event            `json:"history,omitempty"`
}

// ItemRcpt is one recipient of an Item.
type ItemRcpt struct {
	Addr   string `json:"addr"`
	Orig   string `json:"orig,omitempty"` // as given in RCPT TO, when different
	Status string `json:"status"`         // pending, sent, bounced, expired
	// Dest is the destination (unit): where the last attempt went, or,
	// for a recipient not yet attempted, where it would go now (only a
	// running queue knows that).
	Dest  string `json:"dest,omitempty"`
	Relay string `json:"relay,omitempty"` // host of the last reply
	Reply string `json:"reply,omitempty"` // last reply (the "delay reason")
}

// Pending reports whether the recipient still waits for delivery.
func (r ItemRcpt) Pending() bool { return r.Status == RcptPending }

// Event is one entry of a message's delivery history (its state file).
type Event struct {
	At   time.Time `json:"at"`
	Type string    `json:"type"` // sent, bounced, expired, deferred, hold, release, flush, requeue, delay-warning
	Rcpt string    `json:"rcpt,omitempty"`
	// Attempt and Next are set for "deferred".
	Attempt int       `json:"attempt,omitempty"`
	Next    time.Time `json:"next,omitzero"`
	Dest    string    `json:"dest,omitempty"`
	Relay   string    `json:"relay,omitempty"`
	Reply   string    `json:"reply,omitempty"` // or the hold reason
}

// Filter selects messages. The zero Filter selects everything.
type Filter struct {
	// States keeps messages in these states (StateIncoming, ...).
	States []string `json:"states,omitempty"`
	// Unit keeps messages with a pending recipient for this destination
	// (see UnitMatch).
	Unit string `json:"unit,omitempty"`
	// Sender and Recipient match addresses (see MatchAddress); Recipient
	// looks at pending recipients, and at the address each was given as.
	Sender    string `json:"sender,omitempty"`
	Recipient string `json:"recipient,omitempty"`
	// OlderThan keeps messages that arrived at least this long ago.
	OlderThan time.Duration `json:"older_than,omitempty"`
}

// Match reports whether it passes the filter at time now.
func (f Filter) Match(it *Item, now time.Time) bool {
	if len(f.States) > 0 && !slices.Contains(f.States, it.State) {
		return false
	}
	if f.OlderThan > 0 && now.Sub(it.Arrival) < f.OlderThan {
		return false
	}
	if f.Sender != "" && !MatchAddress(f.Sender, it.Sender) {
		return false
	}
	if f.Recipient == "" && f.Unit == "" {
		return true
	}
	for _, r := range it.Rcpts {
		if !r.Pending() {
			continue
		}
		if f.Recipient != "" && !MatchAddress(f.Recipient, r.Addr) && !MatchAddress(f.Recipient, r.Orig) {
			continue
		}
		if f.Unit != "" && !UnitMatch(f.Unit, r.Dest) {
			continue
		}
		return true
	}
	return false
}

// MatchAddress matches an address against a pattern, case-insensitively:
// "<>" is the null sender, "@example.com" an address in that domain or a
// subdomain, "user@example.com" that address, anything else a substring.
func MatchAddress(pattern, addr string) bool {
	p, a := strings.ToLower(strings.TrimSpace(pattern)), strings.ToLower(addr)
	switch {
	case p == "<>":
		return a == ""
	case strings.HasPrefix(p, "@"):
		i := strings.LastIndexByte(a, '@')
		if i < 0 {
			return false
		}
		dom := a[i+1:]
		return dom == p[1:] || strings.HasSuffix(dom, "."+p[1:])
	case strings.Contains(p, "@"):
		return strings.Trim(p, "<>") == a
	}
	return a != "" && strings.Contains(a, p)
}

// scheduledState is the state of a message the scheduler knows. Caller
// holds q.mu.
func (q *Queue) scheduledState(m *message) string {
	switch m.state {
	case stateFresh:
		if q.running {
			return StateIncoming
		}
	case stateActive:
		return StateActive
	case stateDeferred:
		return StateDeferred
	case stateReady:
		if q.running {
			return StateActive
		}
	}
	// A queue that does not run (OpenOffline) has no active mail.
	if m.attempts == 0 {
		return StateIncoming
	}
	return StateDeferred
}

// List calls fn for every queued message that passes f, in the order
// incoming/active/deferred (msg/), hold, corrupt, and by ID (arrival)
// within each. Messages that vanish while the list is made are skipped.
// An error from fn ends the listing and is returned.
func (q *Queue) List(ctx context.Context, f Filter, fn func(*Item) error) error {
	now := q.now()
	want := func(states ...string) bool {
		if len(f.States) == 0 {
			return true
		}
		for _, s := range states {
			if slices.Contains(f.States, s) {
				return true
			}
		}
		return false
	}
	for _, sub := range []string{dirMsg, dirHold, dirCorrupt} {
		switch sub {
		case dirMsg:
			if !want(StateIncoming, StateActive, StateDeferred) {
				continue
			}
		case dirHold:
			if !want(StateHold) {
				continue
			}
		case dirCorrupt:
			if !want(StateCorrupt) {
				continue
			}
		}
		ids, err := q.listIDs(sub)
		if err != nil {
			return err
		}
		// Files are read in parallel, a batch at a time, and reported in
		// order: a listing of 100 000 messages is mostly open(2) and
		// read(2) latency.
		for len(ids) > 0 {
			batch := ids[:min(len(ids), listBatch)]
			ids = ids[len(batch):]
			items := make([]*Item, len(batch))
			errs := make([]error, len(batch))
			var wg sync.WaitGroup
			next := make(chan int)
			for range min(listWorkers, len(batch)) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						items[i], errs[i] = q.listOne(ctx, sub, batch[i], want)
					}
				}()
			}
			for i := range batch {
				next <- i
			}
			close(next)
			wg.Wait()
			for i, it := range items {
				if errs[i] != nil {
					return errs[i]
				}
				if it == nil || !f.Match(it, now) {
					continue
				}
				if err := fn(it); err != nil {
					return err
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// List reads this many messages in parallel, in batches of listBatch.
const (
	listWorkers = 8
	listBatch   = 256
)

// listOne reads one message for List: nil when it vanished or is in a
// state the caller does not want.
func (q *Queue) listOne(ctx context.Context, sub, id string, want func(...string) bool) (*Item, error) {
	state := ""
	if sub == dirMsg {
		q.mu.Lock()
		if m := q.msgs[id]; m != nil {
			state = q.scheduledState(m)
		}
		q.mu.Unlock()
		if state != "" && !want(state) {
			return nil, nil // no need to read the file
		}
	}
	it, _, err := q.readItem(ctx, sub, id, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && sub != dirCorrupt {
			return nil, err
		}
		// Damaged (perhaps found before the scheduler did): show it as
		// what it is.
		it = q.corruptItem(sub, id, err)
	}
	if state != "" {
		it.State = state
	}
	return it, nil
}

// listIDs returns the message IDs in a spool subdirectory, sorted.
func (q *Queue) listIDs(sub string) ([]string, error) {
	ents, err := os.ReadDir(q.path(sub, ""))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if validID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// Show returns one message with its envelope, delivery history and
// content (headers and body, as queued). A damaged content checksum is
// reported as an error wrapping ErrCorrupt, with the item and the content
// read so far.
func (q *Queue) Show(ctx context.Context, id string) (*Item, []byte, error) {
	if !validID(id) {
		return nil, nil, fmt.Errorf("%w: %q is not a queue ID", ErrNotFound, id)
	}
	sub := q.locate(id)
	if sub == "" {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	it, content, err := q.readItem(ctx, sub, id, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if it != nil && sub == dirMsg {
		q.mu.Lock()
		if m := q.msgs[id]; m != nil {
			it.State = q.scheduledState(m)
		}
		q.mu.Unlock()
	}
	if err != nil && errors.Is(err, ErrCorrupt) && it == nil {
		it = q.corruptItem(sub, id, err)
		raw, rerr := os.ReadFile(q.path(sub, id))
		if rerr == nil {
			content = raw
		}
	}
	return it, content, err
}

// ErrNotFound is returned for a queue ID that is not in the queue, and
// (wrapped) for a message not in a state an operation applies to.
var ErrNotFound = errors.New("queue: no such message")

// notApplicable is an operation's refusal for a message's state; it counts
// as ErrNotFound (the tools exit 1 for both).
type notApplicable string

func (e notApplicable) Error() string        { return string(e) }
func (e notApplicable) Is(target error) bool { return target == ErrNotFound }

// locate returns the spool subdirectory holding message id, or "".
func (q *Queue) locate(id string) string {
	for _, sub := range []string{dirMsg, dirHold, dirCorrupt} {
		if _, err := os.Lstat(q.path(sub, id)); err == nil {
			return sub
		}
	}
	return ""
}

// corruptItem describes a damaged file as far as that is possible.
func (q *Queue) corruptItem(sub, id string, reason error) *Item {
	it := &Item{ID: id, State: StateCorrupt, Reason: strings.TrimPrefix(reason.Error(), "queue: ")}
	if fi, err := os.Stat(q.path(sub, id)); err == nil {
		it.Size = fi.Size()
		it.Arrival = fi.ModTime()
	}
	return it
}

// readItem reads sub/id and its state file. With detail it also returns
// the envelope, the history and the content.
func (q *Queue) readItem(ctx context.Context, sub, id string, detail bool) (*Item, []byte, error) {
	f, err := os.Open(q.path(sub, id))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sf, err := readSpoolFile(f, id)
	if err != nil {
		return nil, nil, err
	}
	env := sf.meta.Env
	it := &Item{
		ID:      id,
		Size:    sf.contentLen,
		Arrival: env.Received,
		Sender:  env.From.String(),
		Reason:  env.Hold,
	}
	switch sub {
	case dirHold:
		it.State = StateHold
	case dirCorrupt:
		it.State = StateCorrupt
	}
	it.Rcpts = make([]ItemRcpt, len(env.Rcpts))
	for i, r := range env.Rcpts {
		it.Rcpts[i] = ItemRcpt{Addr: r.Addr.String(), Status: RcptPending}
		if !r.Orig.IsNull() && r.Orig.Key() != r.Addr.Key() {
			it.Rcpts[i].Orig = r.Orig.String()
		}
	}
	if err := q.replayItem(sub, id, env, it, detail); err != nil {
		return nil, nil, err
	}
	if it.State == "" {
		it.State = StateIncoming
		if it.Attempts > 0 {
			it.State = StateDeferred
		}
	}
	q.mu.Lock()
	running := q.running
	q.mu.Unlock()
	if sub == dirMsg && running {
		// Where pending recipients that were never tried would go now.
		for i := range it.Rcpts {
			r := &it.Rcpts[i]
			if r.Pending() && r.Dest == "" {
				if rt, err := q.router.Route(ctx, env.Rcpts[i].Addr); err == nil {
					r.Dest = rt.Key()
				}
			}
		}
	}
	if !detail {
		return it, nil, nil
	}
	it.Env = env
	content, err := io.ReadAll(newBodyReader(f, sf, nil))
	return it, content, err
}

// replayItem applies sub/id.state to it.
func (q *Queue) replayItem(sub, id string, env *envelope.Envelope, it *Item, detail bool) error {
	sfile, err := os.Open(q.path(sub, id+stateSuffix))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer sfile.Close()
	st, err := readState(sfile)
	if err != nil {
		return err
	}
	rcptName := func(i int) string {
		if i >= 0 && i < len(env.Rcpts) {
			return env.Rcpts[i].Addr.String()
		}
		return fmt.Sprintf("#%d", i)
	}
	valid := func(i int) bool { return i >= 0 && i < len(it.Rcpts) }
	for _, rec := range st.recs {
		switch rec.T {
		case recordDone:
			reasons := map[int]deferReason{}
			for _, r := range rec.Reasons {
				reasons[r.Rcpt] = r
			}
			for _, i := range rec.Rcpts {
				if !valid(i) {
					continue
				}
				it.Rcpts[i].Status = rec.Status
				if r, ok := reasons[i]; ok {
					it.Rcpts[i].Reply, it.Rcpts[i].Relay, it.Rcpts[i].Dest = r.Reply, r.Relay, r.Dest
				}
				if detail {
					ev := Event{At: rec.At, Type: rec.Status, Rcpt: rcptName(i)}
					if r, ok := reasons[i]; ok {
						ev.Reply, ev.Relay, ev.Dest = r.Reply, r.Relay, r.Dest
					}
					it.History = append(it.History, ev)
				}
			}
		case recordDefer:
			it.Attempts, it.Next = rec.Attempts, rec.Next
			for _, r := range rec.Reasons {
				if valid(r.Rcpt) {
					it.Rcpts[r.Rcpt].Reply, it.Rcpts[r.Rcpt].Relay, it.Rcpts[r.Rcpt].Dest = r.Reply, r.Relay, r.Dest
				}
				if detail {
					it.History = append(it.History, Event{At: rec.At, Type: StateDeferred, Rcpt: rcptName(r.Rcpt),
						Attempt: rec.Attempts, Next: rec.Next, Dest: r.Dest, Relay: r.Relay, Reply: r.Reply})
				}
			}
		case recordHold:
			if rec.Text != "" {
				it.Reason = rec.Text
			}
			if detail {
				it.History = append(it.History, Event{At: rec.At, Type: "hold", Reply: rec.Text})
			}
		case recordRelease, recordFlush, recordRequeue:
			if rec.T != recordRequeue {
				it.Next = time.Time{}
			}
			if detail {
				it.History = append(it.History, Event{At: rec.At, Type: rec.T})
			}
		case recordWarned:
			if detail {
				it.History = append(it.History, Event{At: rec.At, Type: "delay-warning"})
			}
		}
	}
	return nil
}

// Op is an operation of Apply.
type Op string

// Operations, after Postfix's postsuper -d, -h, -H, -r and postqueue -i.
const (
	OpDelete  Op = "delete"  // remove the message (any state)
	OpHold    Op = "hold"    // put on hold: no delivery until released
	OpRelease Op = "release" // release from hold, deliver now
	OpRequeue Op = "requeue" // expand the original recipients again, deliver now
	OpFlush   Op = "flush"   // deliver now (also ignores defer_transports)
)

// Selection picks the messages for Apply: the listed IDs, or with All
// every message that passes Filter (by default in the states the
// operation applies to).
type Selection struct {
	IDs    []string `json:"ids,omitempty"`
	All    bool     `json:"all,omitempty"`
	Filter Filter   `json:"filter"`
	// Reason is the hold reason (OpHold), shown by list and show.
	Reason string `json:"reason,omitempty"`
}

// OpResult is what Apply did to one message.
type OpResult struct {
	ID string `json:"id"`
	// Status says what was done: "deleted", "held", "released",
	// "requeued", "flushed", optionally with a remark in parentheses
	// ("(after the delivery attempt in progress)").
	Status string `json:"status,omitempty"`
	// Err is set when nothing was done; NotFound when the ID is not in
	// the queue (or not in a state the operation applies to).
	Err      string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
}

// defaultStates are the states Apply with All covers unless the filter
// names others (Postfix postsuper's "ALL" covers all queues but corrupt).
func defaultStates(op Op) []string {
	switch op {
	case OpDelete:
		return []string{StateIncoming, StateActive, StateDeferred, StateHold}
	case OpRelease:
		return []string{StateHold}
	case OpFlush:
		return []string{StateDeferred, StateIncoming}
	}
	return []string{StateIncoming, StateActive, StateDeferred}
}

// Apply performs op on the selected messages and reports per message.
func (q *Queue) Apply(ctx context.Context, op Op, sel Selection) (_ []OpResult, err error) {
	switch op {
	case OpDelete, OpHold, OpRelease, OpRequeue, OpFlush:
	default:
		return nil, fmt.Errorf("queue: unknown operation %q", op)
	}
	ids := sel.IDs
	if sel.All {
		f := sel.Filter
		if len(f.States) == 0 {
			f.States = defaultStates(op)
		}
		ids = nil
		if err := q.List(ctx, f, func(it *Item) error { ids = append(ids, it.ID); return nil }); err != nil {
			return nil, err
		}
	}
	out := make([]OpResult, 0, len(ids))
	// One fsync per directory for the whole selection, not one per
	// message: deleting or holding 100 000 messages must not take hours.
	// Until then a crash can only undo an operation, never lose a message
	// (each rename is atomic).
	ds := dirSyncs{}
	defer func() {
		if serr := q.syncDirs(nil, ds.list()...); serr != nil && err == nil {
			err = serr
		}
	}()
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r := OpResult{ID: id}
		if !validID(id) {
			r.Err, r.NotFound = "not a queue ID", true
			out = append(out, r)
			continue
		}
		var err error
		switch op {
		case OpDelete:
			r.Status, err = q.deleteOne(id, ds)
		case OpHold:
			r.Status, err = q.holdOne(id, sel.Reason, ds)
		case OpRelease:
			r.Status, err = q.releaseOne(id, ds)
		case OpRequeue:
			r.Status, err = q.retryOne(id, true, ds)
		case OpFlush:
			r.Status, err = q.retryOne(id, false, ds)
		}
		if err != nil {
			r.Status, r.Err = "", strings.TrimPrefix(err.Error(), "queue: ")
			r.NotFound = errors.Is(err, ErrNotFound)
		}
		out = append(out, r)
	}
	return out, nil
}

const afterAttempt = " (after the delivery attempt in progress)"

// takeScheduled takes message id out of the schedule unless it is active;
// then it sets flag (and the hold reason) for finishPass instead.
func (q *Queue) takeScheduled(id string, flag msgFlags, reason string) (m *message, active bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	m = q.msgs[id]
	if m == nil {
		return nil, false
	}
	if m.state == stateActive {
		m.flags |= flag
		if flag == flagHold {
			q.holdReasons[id] = reason
		}
		return m, true
	}
	q.unschedule(m)
	return m, false
}

// reschedule puts a message back after a failed operation.
func (q *Queue) reschedule(m *message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs[m.id] = m
	q.makeDue(m)
	q.pump()
}

func (q *Queue) deleteOne(id string, ds dirSyncs) (string, error) {
	switch q.locate(id) {
	case dirMsg:
		m, active := q.takeScheduled(id, flagDelete, "")
		if active {
			return "deleted" + afterAttempt, nil
		}
		if err := q.deleteFiles(dirMsg, id, ds); err != nil {
			if m != nil {
				q.reschedule(m)
			}
			return "", err
		}
	case dirHold:
		if err := q.deleteFiles(dirHold, id, ds); err != nil {
			return "", err
		}
		q.mu.Lock()
		q.held--
		q.mu.Unlock()
	case dirCorrupt:
		if err := q.deleteFiles(dirCorrupt, id, ds); err != nil {
			return "", err
		}
	default:
		return "", ErrNotFound
	}
	q.log.Info("removed", "id", id, "reason", "deleted by the operator")
	return "deleted", nil
}

func (q *Queue) holdOne(id, reason string, ds dirSyncs) (string, error) {
	switch q.locate(id) {
	case dirMsg:
		m, active := q.takeScheduled(id, flagHold, reason)
		if active {
			return "held" + afterAttempt, nil
		}
		if err := q.moveToHold(id, reason, ds); err != nil {
			if m != nil {
				q.reschedule(m)
			}
			return "", err
		}
		return "held", nil
	case dirHold:
		return "held (already)", nil
	case dirCorrupt:
		return "", notApplicable("damaged (in corrupt/): only delete applies")
	}
	return "", ErrNotFound
}

func (q *Queue) releaseOne(id string, ds dirSyncs) (string, error) {
	switch q.locate(id) {
	case dirHold:
		if err := q.moveFromHold(id, ds); err != nil {
			return "", err
		}
		return "released", nil
	case dirMsg, dirCorrupt:
		return "", notApplicable("not on hold")
	}
	return "", ErrNotFound
}

// retryOne makes a message due now (flush), optionally with its recipients
// expanded again first (requeue). A queue that does not run records the
// request in the state file, for the daemon's next start.
func (q *Queue) retryOne(id string, requeue bool, ds dirSyncs) (string, error) {
	status, rec := "flushed", recordFlush
	if requeue {
		status, rec = "requeued", recordRequeue
	}
	switch q.locate(id) {
	case dirMsg:
	case dirHold:
		return "", notApplicable("on hold: release it instead")
	case dirCorrupt:
		return "", notApplicable("damaged (in corrupt/): only delete applies")
	default:
		return "", ErrNotFound
	}
	q.mu.Lock()
	m := q.msgs[id]
	running := q.running
	if m == nil {
		q.mu.Unlock()
		return "", notApplicable("not scheduled (being received, or just removed)")
	}
	flags := flagForce
	if requeue {
		flags |= flagRequeue
	}
	m.flags |= flags
	state := m.state
	if running && state == stateDeferred {
		heap.Remove(&q.deferred, m.heapIdx)
		q.makeDue(m)
		q.pump()
	}
	q.mu.Unlock()
	if state == stateActive {
		return status + afterAttempt, nil
	}
	if requeue || !running {
		// Durable, so that a restart before the attempt keeps the request.
		if err := q.appendRecords(dirMsg, id, ds, stateRecord{T: rec, At: q.now()}); err != nil {
			return "", err
		}
	}
	if !running {
		return status + " (when the daemon starts)", nil
	}
	return status, nil
}

// deleteFiles removes a message and its state file from sub and makes that
// durable. The message file goes first: a crash leaves at most an orphan
// state file, which recovery removes. Files are unlinked, never recycled,
// so a reader that still has one open is not disturbed.
func (q *Queue) deleteFiles(sub, id string, ds dirSyncs) error {
	if err := os.Remove(q.path(sub, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Remove(q.path(sub, id+stateSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: %w", err)
	}
	return q.syncDirs(ds, q.dirFile(sub))
}

// dirSyncs collects the spool directories whose fsync an operation on many
// messages owes; a nil dirSyncs means "fsync now".
type dirSyncs map[*os.File]bool

func (ds dirSyncs) list() []*os.File {
	var out []*os.File
	for d := range ds {
		out = append(out, d)
	}
	return out
}

// syncDirs fsyncs dirs now (ds nil) or notes them in ds.
func (q *Queue) syncDirs(ds dirSyncs, dirs ...*os.File) error {
	for _, d := range dirs {
		if ds != nil {
			ds[d] = true
			continue
		}
		if err := q.commit.sync(d); err != nil {
			return fmt.Errorf("queue: fsync %s: %w", d.Name(), err)
		}
	}
	return nil
}

func (q *Queue) dirFile(sub string) *os.File {
	switch sub {
	case dirHold:
		return q.holdDir
	case dirCorrupt:
		return q.corruptDir
	}
	return q.msgDir
}

// moveToHold moves msg/ID (and its state file, with a hold record) to
// hold/. The message file goes first; recovery reunites a state file left
// behind by a crash (recover.go).
func (q *Queue) moveToHold(id, reason string, ds dirSyncs) error {
	if reason == "" {
		reason = "held by the operator"
	}
	if err := q.appendRecords(dirMsg, id, ds, stateRecord{T: recordHold, At: q.now(), Text: reason}); err != nil {
		return err
	}
	if err := q.moveMessage(dirMsg, dirHold, id, ds); err != nil {
		return err
	}
	q.mu.Lock()
	q.held++
	q.mu.Unlock()
	q.log.Info("hold", "id", id, "reason", reason)
	return nil
}

// moveFromHold moves hold/ID back to msg/ and schedules it now.
func (q *Queue) moveFromHold(id string, ds dirSyncs) error {
	if err := q.appendRecords(dirHold, id, ds, stateRecord{T: recordRelease, At: q.now()}); err != nil {
		return err
	}
	if err := q.moveMessage(dirHold, dirMsg, id, ds); err != nil {
		return err
	}
	q.mu.Lock()
	q.held--
	q.mu.Unlock()
	q.log.Info("released", "id", id)
	q.reload(id)
	return nil
}

// moveMessage renames from/ID then from/ID.state to the same names in to/,
// then fsyncs both directories (to/ first; each rename is atomic, so a
// crash leaves the message in one place or the other, never in none).
func (q *Queue) moveMessage(from, to, id string, ds dirSyncs) error {
	if err := os.Rename(q.path(from, id), q.path(to, id)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Rename(q.path(from, id+stateSuffix), q.path(to, id+stateSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		q.log.Error("cannot move queue state file; recovery will", "id", id, "err", err)
	}
	return q.syncDirs(ds, q.dirFile(to), q.dirFile(from))
}

// reload reads msg/ID back into the schedule, due now (release, and a
// hold that could not be carried out).
func (q *Queue) reload(id string) {
	_, err := os.Stat(q.path(dirMsg, id+stateSuffix))
	m, _, err := q.loadMessage(dirMsg, id, err == nil)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			q.moveCorrupt(id, err)
			return
		}
		q.log.Error("cannot read queue file; it is scheduled at the next start", "id", id, "err", err)
		return
	}
	if m.pending() == 0 {
		q.deleteFiles(dirMsg, id, nil)
		q.log.Info("removed", "id", id)
		return
	}
	q.reschedule(m)
}

// settleRequest carries out a delete or hold requested while the message
// was in delivery, after it has left the schedule.
func (q *Queue) settleRequest(id string, flags msgFlags) {
	q.mu.Lock()
	reason := q.holdReasons[id]
	delete(q.holdReasons, id)
	q.mu.Unlock()
	if flags&flagDelete != 0 {
		if err := q.deleteFiles(dirMsg, id, nil); err != nil {
			q.log.Error("cannot delete queue file", "id", id, "err", err)
			q.reload(id)
			return
		}
		q.log.Info("removed", "id", id, "reason", "deleted by the operator")
		return
	}
	if err := q.moveToHold(id, reason, nil); err != nil {
		q.log.Error("cannot put message on hold", "id", id, "err", err)
		q.reload(id)
	}
}

// appendRecords appends records to sub/ID.state (creating it) and makes
// them durable: the file's fsync, and a directory fsync when it is new.
func (q *Queue) appendRecords(sub, id string, ds dirSyncs, recs ...stateRecord) error {
	path := q.path(sub, id+stateSuffix)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	}
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(encodeState(recs...)); err != nil {
		return ioError("state write", id, err)
	}
	if err := q.syncFile(f); err != nil {
		return ioError("state fsync", id, err)
	}
	if created {
		if err := q.syncDirs(ds, q.dirFile(sub)); err != nil {
			return ioError("directory fsync", id, err)
		}
	}
	return nil
}
