package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// The scheduler follows Postfix qmgr(8) in spirit: a message in delivery
// ("active") has all its pending recipients routed again, grouped by
// destination (Route.Key) into transactions of at most RecipientLimit
// recipients, and the transactions wait in per-destination FIFOs. Workers
// take them round-robin across destinations, at most ConcurrencyLimit per
// destination and ProcessLimit overall, so a dead destination cannot take
// every worker. When the last transaction of a message's attempt ("pass")
// ends, the pass is settled: bounced recipients get one DSN, the rest is
// deferred with exponential backoff or the message is removed.
//
// Only small records of deferred messages stay in memory; their envelopes
// are read back when they are next due.
//
// Each destination has a concurrency window (Postfix's concurrency
// scheduler): it starts at initial_destination_concurrency, grows by one
// per window of transactions that reached a server, up to
// default_destination_concurrency_limit, and shrinks on connection or
// handshake failures; a failed cohort makes the destination dead. Replies
// about single recipients (a full mailbox) count as reaching the server:
// they never slow a unit down.

type msgState uint8

const (
	stateReady    msgState = iota // due (a retry, or recovered), waiting for an active slot
	stateActive                   // a pass is in progress
	stateDeferred                 // waiting in the deferred heap
	stateFresh                    // just committed ("incoming"), waiting for an active slot
)

// msgFlags are operator requests and facts about a message; guarded by
// sched.mu.
type msgFlags uint8

const (
	flagDelete  msgFlags = 1 << iota // delete when the pass in progress ends
	flagHold                         // put on hold when the pass in progress ends
	flagRequeue                      // expand the recipients again at the next pass
	flagForce                        // the next pass ignores defer_transports (flush)
	flagWarned                       // the delay warning was sent
)

// message is the scheduler's record of one queued message.
type message struct {
	id         string
	received   time.Time // Envelope.Received
	queued     time.Time // commit time
	nullSender bool
	done       []bool // per recipient: delivered or bounced, durably
	contentLen int64
	crcContent uint32

	// guarded by sched.mu while the message is not active
	attempts int
	next     time.Time
	state    msgState
	flags    msgFlags // always guarded by sched.mu
	heapIdx  int
	env      *envelope.Envelope // cached while ready/active; nil when deferred
	// dests are the destinations (interned Route.Key values) of the
	// recipients deferred at the last attempt: FlushUnit and ReleaseUnit
	// find a unit's mail by them.
	dests []string
}

func (m *message) pending() int {
	n := 0
	for _, d := range m.done {
		if !d {
			n++
		}
	}
	return n
}

type msgHeap []*message

func (h msgHeap) Len() int { return len(h) }
func (h msgHeap) Less(i, j int) bool {
	if !h[i].next.Equal(h[j].next) {
		return h[i].next.Before(h[j].next)
	}
	return h[i].id < h[j].id
}
func (h msgHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *msgHeap) Push(x any) {
	m := x.(*message)
	m.heapIdx = len(*h)
	*h = append(*h, m)
}
func (h *msgHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	m.heapIdx = -1
	return m
}

// destination is the per-Route.Key scheduling state (Postfix "queue").
type destination struct {
	key     string
	jobs    []*job
	running int
	inRing  bool
	// window is the concurrency window (slow start); failCohorts counts
	// the cohorts of transactions that reached no server since the last
	// one that did (each such transaction adds 1/window).
	window      float64
	failCohorts float64
	deadUntil   time.Time // "delivery temporarily suspended" until then
	deadReply   envelope.Reply
	nextStart   time.Time // default_destination_rate_delay: no transaction before
}

func (d *destination) dead(now time.Time) bool { return now.Before(d.deadUntil) }

// sched is the scheduler state of a Queue.
type sched struct {
	mu       sync.Mutex
	msgs     map[string]*message // every scheduled message (not held)
	fresh    []*message          // just committed, waiting for an active slot
	due      []*message          // retries and recovered mail, waiting likewise
	takeDue  bool                // alternate between fresh and due
	starting int                 // passes being started (envelope read, routing)
	deferred msgHeap
	active   int
	held     int
	dests    map[string]*destination
	ring     []*destination // destinations with waiting jobs
	ringPos  int
	busy     int // transactions in progress
	running  bool
	closed   bool
	runCtx   context.Context
	wg       sync.WaitGroup

	// wake re-runs dispatch at wakeT (default_destination_rate_delay).
	wake  *time.Timer
	wakeT time.Time

	holds       []UnitHold        // units on hold (units.go)
	holdReasons map[string]string // reasons of holds requested during a pass
	keys        interner          // Route.Key strings shared by message records
}

func (s *sched) init() {
	s.msgs = make(map[string]*message)
	s.dests = make(map[string]*destination)
	s.holdReasons = make(map[string]string)
}

// interner shares equal strings (destination keys kept per deferred
// message), so 100 000 messages for one unit hold one copy of its key.
type interner struct {
	mu sync.Mutex
	m  map[string]string
}

func (in *interner) get(s string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.m[s]; ok {
		return v
	}
	if in.m == nil {
		in.m = make(map[string]string)
	}
	in.m[s] = s
	return s
}

// outcome is one recipient's result in a pass.
type outcome struct {
	rcpt        int
	reply       envelope.Reply
	relay       string
	dest        string // Route.Key of the attempt ("" when routing failed)
	setup, xmit time.Duration
	status      string // sent, deferred, bounced, expired
	action      string // success notices: "delivered" (LMTP) or "relayed"
	unitHold    bool   // deferred because its unit was on hold
}

const statusDeferred = "deferred"

// pass is one delivery attempt of a message.
type pass struct {
	m   *message
	env *envelope.Envelope
	ctx context.Context // Run's context

	mu          sync.Mutex
	outstanding int   // transactions not finished
	unrecorded  []int // delivered in the last transaction, not yet in the state file
	bounced     []outcome
	deferred    []outcome
	succeeded   []outcome // delivered with NOTIFY=SUCCESS to a next hop without DSN

	st     *os.File // state file, opened on first append
	stSize int64
	stNew  bool // created; its directory entry is not yet durable

	corrupt atomic.Bool // content checksum failed while reading
	gone    atomic.Bool // message file vanished (deleted by a tool)
}

func (p *pass) closeState() {
	if p.st != nil {
		p.st.Close()
		p.st = nil
	}
}

// job is one delivery transaction.
type job struct {
	p     *pass
	route envelope.Route
	rcpts []int
	dest  *destination
}

// Run delivers queued mail until ctx is done. It then lets the transactions
// in progress finish (they see ctx cancelled and report 4xx), records their
// results, and returns nil. Mail not delivered stays queued; a later Run or
// Open picks it up without counting the interrupted attempt.
func (q *Queue) Run(ctx context.Context) error {
	if q.offline {
		return errors.New("queue: Run on a queue opened with OpenOffline")
	}
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return errors.New("queue: Run after Close")
	case q.running:
		q.mu.Unlock()
		return errors.New("queue: Run called twice")
	}
	q.running = true
	q.runCtx = ctx
	q.pump()
	q.mu.Unlock()

	t := time.NewTicker(q.cfg.QueueRunDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			q.stop()
			return nil
		case <-t.C:
			q.scan()
		}
	}
}

func (q *Queue) stop() {
	q.mu.Lock()
	q.running = false
	var drained []*job
	for _, d := range q.ring {
		drained = append(drained, d.jobs...)
		d.jobs = nil
		d.inRing = false
	}
	q.ring = nil
	if q.wake != nil {
		q.wake.Stop()
		q.wakeT = time.Time{}
	}
	q.mu.Unlock()
	for _, j := range drained {
		q.jobDone(j, fillResults(j, envelope.ReplyShutdown, nil), false)
	}
	q.wg.Wait()
}

// scan moves deferred messages whose time has come to the ready list
// (queue_run_delay).
func (q *Queue) scan() {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.deferred.Len() > 0 && !q.deferred[0].next.After(now) {
		q.makeDue(heap.Pop(&q.deferred).(*message))
	}
	for k, d := range q.dests {
		if len(d.jobs) == 0 && d.running == 0 && !d.dead(now) && !now.Before(d.nextStart) {
			delete(q.dests, k)
		}
	}
	q.pump()
}

// Flush makes every deferred message due now, forgets dead destinations,
// and lets the next attempt ignore defer_transports (postqueue -f,
// SIGUSR1). Units on hold stay on hold.
func (q *Queue) Flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.deferred.Len() > 0 {
		m := heap.Pop(&q.deferred).(*message)
		m.flags |= flagForce
		q.makeDue(m)
	}
	for _, m := range q.fresh {
		m.flags |= flagForce
	}
	for _, m := range q.due {
		m.flags |= flagForce
	}
	for _, d := range q.dests {
		d.revive()
	}
	q.pump()
}

// revive forgets that d was dead.
func (d *destination) revive() {
	d.deadUntil = time.Time{}
	d.failCohorts = 0
}

// Stats counts the queued messages.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{Active: q.active + len(q.fresh) + len(q.due), Deferred: q.deferred.Len(), Hold: q.held}
	s.Total = s.Active + s.Deferred + s.Hold
	return s
}

// makeFresh queues a just-committed message for activation. Caller holds
// q.mu.
func (q *Queue) makeFresh(m *message) {
	m.state = stateFresh
	q.fresh = append(q.fresh, m)
}

// unschedule takes a message that is not active out of the schedule.
// Caller holds q.mu.
func (q *Queue) unschedule(m *message) {
	drop := func(list *[]*message) {
		for i, x := range *list {
			if x == m {
				*list = append((*list)[:i], (*list)[i+1:]...)
				return
			}
		}
	}
	switch m.state {
	case stateFresh:
		drop(&q.fresh)
	case stateReady:
		drop(&q.due)
	case stateDeferred:
		if m.heapIdx >= 0 && m.heapIdx < len(q.deferred) && q.deferred[m.heapIdx] == m {
			heap.Remove(&q.deferred, m.heapIdx)
		}
	}
	m.env = nil
	delete(q.msgs, m.id)
}

// wakeAt makes dispatch run again at t. Caller holds q.mu.
func (q *Queue) wakeAt(t time.Time) {
	if !q.wakeT.IsZero() && !t.Before(q.wakeT) {
		return
	}
	q.wakeT = t
	d := max(t.Sub(q.now()), time.Millisecond)
	if q.wake == nil {
		q.wake = time.AfterFunc(d, func() {
			q.mu.Lock()
			q.wakeT = time.Time{}
			q.pump()
			q.mu.Unlock()
		})
		return
	}
	q.wake.Reset(d)
}

// makeDue queues a retry (or recovered message) for activation. Caller
// holds q.mu.
func (q *Queue) makeDue(m *message) {
	m.state = stateReady
	q.due = append(q.due, m)
}

// maxStarting bounds the passes being started at once (each reads an
// envelope and asks the Router), so that 100 000 recovered messages do not
// open 100 000 files at the same moment.
const maxStarting = 32

// nextReady takes the next message to activate, alternating between fresh
// mail and retries as Postfix qmgr alternates between the incoming and
// deferred queues, so a backlog of retries does not delay new mail (nor
// the reverse). Caller holds q.mu.
func (q *Queue) nextReady() *message {
	q.takeDue = !q.takeDue
	list := &q.fresh
	if (q.takeDue && len(q.due) > 0) || len(q.fresh) == 0 {
		list = &q.due
	}
	if len(*list) == 0 {
		return nil
	}
	m := (*list)[0]
	(*list)[0] = nil
	*list = (*list)[1:]
	return m
}

// pump starts whatever work the limits allow. Caller holds q.mu.
func (q *Queue) pump() {
	if !q.running {
		return
	}
	for q.active < q.cfg.ActiveLimit && q.starting < maxStarting {
		m := q.nextReady()
		if m == nil {
			break
		}
		m.state = stateActive
		q.active++
		q.starting++
		q.wg.Add(1)
		go q.startPass(q.runCtx, m)
	}
	q.dispatch()
}

// dispatch starts transactions round-robin over destinations. Caller holds
// q.mu.
func (q *Queue) dispatch() {
	now := q.now()
	idle := 0
	for len(q.ring) > 0 && idle < len(q.ring) {
		if q.ringPos >= len(q.ring) {
			q.ringPos = 0
		}
		d := q.ring[q.ringPos]
		if len(d.jobs) == 0 || d.dead(now) {
			if len(d.jobs) > 0 {
				// Postfix: a dead destination's mail is deferred without
				// an attempt until the destination is tried again.
				q.suspend(d.jobs, d.deadReply)
				d.jobs = nil
			}
			d.inRing = false
			q.ring = append(q.ring[:q.ringPos], q.ring[q.ringPos+1:]...)
			if d.running == 0 && !d.dead(now) && !now.Before(d.nextStart) {
				delete(q.dests, d.key)
			}
			continue
		}
		if q.busy >= q.cfg.ProcessLimit {
			return
		}
		if d.running >= q.limit(d) {
			q.ringPos++
			idle++
			continue
		}
		if now.Before(d.nextStart) {
			// default_destination_rate_delay
			q.wakeAt(d.nextStart)
			q.ringPos++
			idle++
			continue
		}
		j := d.jobs[0]
		d.jobs[0] = nil
		d.jobs = d.jobs[1:]
		d.running++
		q.busy++
		q.wg.Add(1)
		go q.runJob(q.runCtx, j)
		q.ringPos++
		idle = 0
	}
}

// limit is the number of parallel transactions d may have now: its
// concurrency window, or one with default_destination_rate_delay.
func (q *Queue) limit(d *destination) int {
	if q.cfg.RateDelay > 0 {
		return 1
	}
	return max(1, int(d.window))
}

// suspend completes jobs of a dead destination with a deferral. Caller holds
// q.mu.
func (q *Queue) suspend(jobs []*job, last envelope.Reply) {
	reply := envelope.NewReply(last.Code, last.Enhanced, "delivery temporarily suspended: "+last.Text)
	if !reply.Temporary() {
		reply = envelope.NewReply(450, envelope.Enhanced{4, 4, 1}, "delivery temporarily suspended")
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		for _, j := range jobs {
			q.jobDone(j, fillResults(j, reply, nil), true)
		}
	}()
}

// enqueueJob puts j in its destination's FIFO. Caller holds q.mu.
func (q *Queue) enqueueJob(j *job) {
	key := j.route.Key()
	d := q.dests[key]
	if d == nil {
		d = &destination{key: key, window: q.initialWindow()}
		q.dests[key] = d
	}
	j.dest = d
	d.jobs = append(d.jobs, j)
	if !d.inRing {
		d.inRing = true
		q.ring = append(q.ring, d)
	}
}

func (q *Queue) initialWindow() float64 {
	return float64(min(q.cfg.InitialConcurrency, q.cfg.ConcurrencyLimit))
}

// startPass routes the pending recipients of m and queues its transactions.
func (q *Queue) startPass(ctx context.Context, m *message) {
	defer q.wg.Done()
	defer func() {
		q.mu.Lock()
		q.starting--
		q.pump()
		q.mu.Unlock()
	}()
	if ctx.Err() != nil {
		q.unstart(m)
		return
	}
	q.mu.Lock()
	flags := m.flags
	m.flags &^= flagForce | flagRequeue
	q.mu.Unlock()
	if flags&(flagDelete|flagHold) != 0 {
		// Requested while the message waited for its turn.
		q.forget(m)
		q.settleRequest(m.id, flags)
		return
	}
	env := m.env
	if env == nil {
		var err error
		if env, err = q.loadEnvelope(m); err != nil {
			q.loadFailed(m, err)
			return
		}
	}
	if flags&flagRequeue != 0 && q.expander != nil && q.rewrite(ctx, m, env) {
		return // replaced by a new message
	}
	p := &pass{m: m, env: env, ctx: ctx}
	now := q.now()
	type group struct {
		route envelope.Route
		rcpts []int
	}
	var groups []*group
	byKey := make(map[string]*group)
	for i, r := range env.Rcpts {
		if m.done[i] {
			continue
		}
		route, err := q.router.Route(ctx, r.Addr)
		if err != nil {
			if ctx.Err() != nil {
				q.unstart(m)
				return
			}
			p.immediate(q, i, "", envelope.ReplyTempLookup, now, err)
			continue
		}
		key := route.Key()
		switch route.Transport {
		case envelope.TransportError:
			// error(8): bounce, or defer when the text is a 4.X.X status.
			p.immediate(q, i, key, routeReply(route, 550), now, nil)
			continue
		case envelope.TransportRetry:
			// retry(8): always defer.
			reply := routeReply(route, 450)
			if !reply.Temporary() {
				reply = envelope.NewReply(450, envelope.Enhanced{4, reply.Enhanced[1], reply.Enhanced[2]}, reply.Text)
			}
			p.immediate(q, i, key, reply, now, nil)
			continue
		}
		if h, held := q.unitHeld(key); held {
			// A unit on hold for maintenance: no attempt until released.
			text := "unit on hold"
			if h.Reason != "" {
				text += ": " + h.Reason
			}
			p.immediate(q, i, key, envelope.NewReply(450, envelope.Enhanced{4, 3, 2}, text), now, nil)
			p.deferred[len(p.deferred)-1].unitHold = true
			continue
		}
		if flags&flagForce == 0 && slices.Contains(q.cfg.DeferTransports, route.Transport) {
			// defer_transports: only a flush delivers this mail.
			p.immediate(q, i, key, envelope.NewReply(450, envelope.Enhanced{4, 3, 2}, "deferred transport"), now, nil)
			continue
		}
		g := byKey[route.Key()]
		if g == nil {
			g = &group{route: route}
			byKey[route.Key()] = g
			groups = append(groups, g)
		}
		g.rcpts = append(g.rcpts, i)
	}
	var jobs []*job
	for _, g := range groups {
		for len(g.rcpts) > 0 {
			n := min(len(g.rcpts), q.cfg.RecipientLimit)
			jobs = append(jobs, &job{p: p, route: g.route, rcpts: g.rcpts[:n:n]})
			g.rcpts = g.rcpts[n:]
		}
	}
	if len(jobs) == 0 {
		q.finishPass(p)
		return
	}
	p.outstanding = len(jobs)
	q.mu.Lock()
	if !q.running {
		q.mu.Unlock()
		for _, j := range jobs {
			q.jobDone(j, fillResults(j, envelope.ReplyShutdown, nil), false)
		}
		return
	}
	for _, j := range jobs {
		q.enqueueJob(j)
	}
	q.pump()
	q.mu.Unlock()
}

// routeReply is the reply of an error: or retry: route: Route.Reply, else
// the nexthop text parsed as transport(5) does ("5.1.1 text"), else a
// generic one.
func routeReply(r envelope.Route, def int) envelope.Reply {
	if !r.Reply.IsZero() {
		return r.Reply
	}
	if rep, ok := envelope.ParseReply(r.Nexthop, def); ok {
		return rep
	}
	text := r.Nexthop
	if text == "" {
		text = "delivery failed"
		if def < 500 {
			text = "delivery temporarily suspended"
		}
	}
	return envelope.NewReply(def, envelope.Enhanced{def / 100, 0, 0}, text)
}

// immediate records a result that needed no transaction (routing, a unit
// on hold, a deferred transport). Only the pass's starter calls it, before
// any job exists.
func (p *pass) immediate(q *Queue, rcpt int, dest string, reply envelope.Reply, now time.Time, err error) {
	o := outcome{rcpt: rcpt, reply: reply, relay: "none", dest: dest}
	if reply.Permanent() {
		o.status = statusBounced
		p.bounced = append(p.bounced, o)
	} else {
		o.status = statusDeferred
		p.deferred = append(p.deferred, o)
	}
	q.logOutcome(p, o, err, now)
}

// unstart returns an activated message to the ready list untouched
// (shutdown).
func (q *Queue) unstart(m *message) {
	q.mu.Lock()
	q.active--
	q.makeDue(m)
	q.pump()
	q.mu.Unlock()
}

// forget drops a finished (or vanished) message.
func (q *Queue) forget(m *message) {
	q.mu.Lock()
	delete(q.msgs, m.id)
	q.active--
	q.pump()
	q.mu.Unlock()
}

func (q *Queue) loadEnvelope(m *message) (*envelope.Envelope, error) {
	f, err := os.Open(q.path(dirMsg, m.id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sf, err := readSpoolFile(f, m.id)
	if err != nil {
		return nil, err
	}
	if len(sf.meta.Env.Rcpts) != len(m.done) {
		return nil, corruptf("recipient count changed")
	}
	return sf.meta.Env, nil
}

func (q *Queue) loadFailed(m *message, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		q.log.Warn("queue file disappeared; message dropped from the schedule", "id", m.id)
		q.forget(m)
	case errors.Is(err, ErrCorrupt):
		q.moveCorrupt(m.id, err)
		q.forget(m)
	default:
		q.log.Error("queue file read error", "id", m.id, "err", err)
		q.mu.Lock()
		q.active--
		m.next = q.now().Add(q.cfg.MinimalBackoff)
		m.state = stateDeferred
		heap.Push(&q.deferred, m)
		q.pump()
		q.mu.Unlock()
	}
}

// runJob runs one transaction in its own goroutine.
func (q *Queue) runJob(ctx context.Context, j *job) {
	defer q.wg.Done()
	results := q.deliverJob(ctx, j)
	now := q.now()
	q.mu.Lock()
	d := j.dest
	d.running--
	q.busy--
	if q.cfg.RateDelay > 0 {
		d.nextStart = now.Add(q.cfg.RateDelay)
	}
	if ctx.Err() == nil {
		q.feedback(d, results, now)
	}
	q.pump()
	q.mu.Unlock()
	q.jobDone(j, results, true)
}

// feedback updates a destination's concurrency window and health after a
// transaction, like Postfix qmgr's concurrency feedback with its default
// positive and negative feedback of 1/window: a transaction that reached
// a server widens the window by 1/window (one per window of successes),
// up to ConcurrencyLimit; one that reached none narrows it by 1/window
// (never below 1) and adds 1/window to the failed cohorts. At
// FailedCohortLimit failed cohorts the destination is dead for
// minimal_backoff_time: its waiting mail is deferred without an attempt
// ("delivery temporarily suspended"), and the window starts again from
// initial_destination_concurrency. Caller holds q.mu.
func (q *Queue) feedback(d *destination, results []Result, now time.Time) {
	if reachedServer(results) {
		if d.dead(now) || d.failCohorts > 0 {
			q.log.Info("destination is reachable again", "dest", d.key)
		}
		d.revive()
		if limit := float64(q.cfg.ConcurrencyLimit); d.window < limit {
			d.window = min(d.window+1/d.window, limit)
		}
		return
	}
	d.failCohorts += 1 / d.window
	d.window = max(1, d.window-1/d.window)
	if d.failCohorts >= float64(q.cfg.FailedCohortLimit)-1e-9 && !d.dead(now) {
		d.deadUntil = now.Add(q.cfg.MinimalBackoff)
		d.deadReply = results[0].Reply
		d.failCohorts = 0
		d.window = q.initialWindow()
		q.log.Warn("destination dead; delivery temporarily suspended", "dest", d.key,
			"until", d.deadUntil.Format(time.RFC3339), "reply", d.deadReply.String())
	}
}

// reachedServer reports whether a transaction got as far as a mail
// transaction with some server (see Result.Unreachable).
func reachedServer(results []Result) bool {
	for _, r := range results {
		if r.Unreachable {
			continue
		}
		if !r.Reply.Temporary() || (r.Relay != "" && r.Relay != "none") {
			return true
		}
	}
	return false
}

var replyReadError = envelope.NewReply(451, envelope.Enhanced{4, 3, 0}, "mail system error: queue file read error")

func (q *Queue) deliverJob(ctx context.Context, j *job) []Result {
	p := j.p
	rcpts := make([]envelope.Recipient, len(j.rcpts))
	for i, idx := range j.rcpts {
		rcpts[i] = p.env.Rcpts[idx]
	}
	f, err := os.Open(q.path(dirMsg, p.m.id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			p.gone.Store(true)
		}
		return fillResults(j, replyReadError, err)
	}
	defer f.Close()
	sf := &spoolFile{contentLen: p.m.contentLen, crcContent: p.m.crcContent}
	d := &Delivery{
		Env:   p.env,
		Route: j.route,
		Rcpts: rcpts,
		Body: func() (io.ReadCloser, error) {
			return newBodyReader(f, sf, func() { p.corrupt.Store(true) }), nil
		},
	}
	res := q.safeDeliver(ctx, d)
	if len(res) != len(rcpts) {
		q.log.Error("deliverer returned a wrong number of results", "id", p.m.id,
			"dest", j.route.Key(), "want", len(rcpts), "got", len(res))
	}
	out := fillResults(j, envelope.NewReply(451, envelope.Enhanced{4, 3, 0}, "mail system error: no delivery status"), nil)
	for i := range out {
		if i >= len(res) {
			break
		}
		r := res[i]
		if !r.Reply.Positive() && !r.Reply.Temporary() && !r.Reply.Permanent() {
			q.log.Error("deliverer returned an invalid reply", "id", p.m.id, "reply", r.Reply.String())
			r.Reply = out[i].Reply
		}
		r.Rcpt = rcpts[i].Addr
		out[i] = r
	}
	return out
}

// safeDeliver calls the Deliverer; a panic in it is a bug, but it must not
// take the whole MX down (and keep doing so at every restart).
func (q *Queue) safeDeliver(ctx context.Context, d *Delivery) (res []Result) {
	defer func() {
		if v := recover(); v != nil {
			q.log.Error("BUG: deliverer panicked", "id", d.Env.ID, "dest", d.Route.Key(),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res = nil
		}
	}()
	return q.deliverer.Deliver(ctx, d)
}

func fillResults(j *job, reply envelope.Reply, err error) []Result {
	res := make([]Result, len(j.rcpts))
	for i, idx := range j.rcpts {
		res[i] = Result{Rcpt: j.p.env.Rcpts[idx].Addr, Reply: reply, Relay: "none", Err: err}
	}
	return res
}

// jobDone records a transaction's results. Delivered recipients are written
// to the state file at once, unless this was the pass's last transaction
// (then finishPass writes them, or removes the message).
func (q *Queue) jobDone(j *job, results []Result, logit bool) {
	p := j.p
	now := q.now()
	p.mu.Lock()
	last := p.outstanding == 1
	var delivered []int
	dest := j.route.Key()
	for i, r := range results {
		o := outcome{rcpt: j.rcpts[i], reply: r.Reply, relay: r.Relay, dest: dest, setup: r.Setup, xmit: r.Xmit}
		switch {
		case r.Reply.Positive():
			o.status = statusSent
			delivered = append(delivered, o.rcpt)
			p.m.done[o.rcpt] = true
			if !r.DSN && p.env.Rcpts[o.rcpt].Notify.Has(envelope.NotifySuccess) {
				// RFC 3461 §5.2.2: the next hop does not do DSN, so we
				// report the success ourselves.
				o.action = "relayed"
				if j.route.Transport == envelope.TransportLMTP {
					o.action = "delivered"
				}
				p.succeeded = append(p.succeeded, o)
			}
		case r.Reply.Permanent():
			o.status = statusBounced
			p.bounced = append(p.bounced, o)
		default:
			o.status = statusDeferred
			p.deferred = append(p.deferred, o)
		}
		if logit {
			q.logOutcome(p, o, r.Err, now)
		}
	}
	// (A message deleted under us by a tool gets no orphan state file.)
	if len(delivered) > 0 && !p.gone.Load() {
		if last {
			p.unrecorded = append(p.unrecorded, delivered...)
		} else if err := q.appendState(p, stateRecord{T: recordDone, At: now, Rcpts: delivered, Status: statusSent}); err != nil {
			q.log.Error("queue state write error; a restart may repeat these deliveries", "id", p.m.id, "err", err)
		}
	}
	p.outstanding--
	p.mu.Unlock()
	if last {
		q.finishPass(p)
	}
}

// finishPass settles a pass once all its transactions are done: expiry,
// the DSN for bounced recipients (queued before they are marked done),
// success and delay notices, the state record, and removal, rescheduling
// or what an operator asked for meanwhile (delete, hold, requeue).
func (q *Queue) finishPass(p *pass) {
	defer p.closeState()
	m := p.m
	now := q.now()
	interrupted := p.ctx.Err() != nil
	switch {
	case p.gone.Load():
		q.log.Warn("queue file disappeared; message dropped from the schedule", "id", m.id)
		q.forget(m)
		return
	case p.corrupt.Load():
		q.moveCorrupt(m.id, corruptf("content checksum mismatch"))
		q.forget(m)
		return
	}
	if !interrupted && len(p.deferred) > 0 && q.expired(m, now) {
		// maximal_queue_lifetime: the deferred recipients are returned
		// with their last reply.
		for _, o := range p.deferred {
			o.status = statusExpired
			q.logOutcome(p, o, nil, now)
			p.bounced = append(p.bounced, o)
		}
		p.deferred = nil
	}
	if len(p.bounced) > 0 {
		if err := q.bounce(p, now); err != nil {
			q.log.Error("cannot queue non-delivery notification; recipients stay deferred",
				"id", m.id, "err", err)
			for _, o := range p.bounced {
				o.status = statusDeferred
				p.deferred = append(p.deferred, o)
			}
			p.bounced = nil
		}
		for _, o := range p.bounced {
			m.done[o.rcpt] = true
		}
	}
	if len(p.succeeded) > 0 {
		// A lost success notice is not lost mail: errors are only logged.
		if err := q.notifySuccess(p, now); err != nil {
			q.log.Error("cannot queue success notification", "id", m.id, "err", err)
		}
	}
	q.mu.Lock()
	warned := m.flags&flagWarned != 0
	q.mu.Unlock()
	warnNow := false
	if !interrupted && !warned && q.cfg.DelayWarning > 0 && len(p.deferred) > 0 &&
		now.Sub(m.received) >= q.cfg.DelayWarning {
		if err := q.notifyDelay(p, now); err != nil {
			q.log.Error("cannot queue delay notification; will try again", "id", m.id, "err", err)
		} else {
			warnNow = true
		}
	}
	if m.pending() == 0 {
		q.remove(p)
		q.forget(m)
		return
	}
	var recs []stateRecord
	if len(p.unrecorded) > 0 {
		recs = append(recs, stateRecord{T: recordDone, At: now, Rcpts: p.unrecorded, Status: statusSent})
	}
	for _, status := range []string{statusBounced, statusExpired} {
		rec := stateRecord{T: recordDone, At: now, Status: status}
		for _, o := range p.bounced {
			if o.status == status {
				rec.Rcpts = append(rec.Rcpts, o.rcpt)
				rec.Reasons = append(rec.Reasons, deferReason{Rcpt: o.rcpt, Relay: o.relay, Reply: o.reply.String(), Dest: o.dest})
			}
		}
		if len(rec.Rcpts) > 0 {
			recs = append(recs, rec)
		}
	}
	if warnNow {
		recs = append(recs, stateRecord{T: recordWarned, At: now})
	}
	// A unit released while this pass was deferring its mail: retry now
	// (ReleaseUnit only finds messages that are already deferred).
	retryNow := false
	for _, o := range p.deferred {
		if o.unitHold {
			if _, held := q.unitHeld(o.dest); !held {
				retryNow = true
			}
		}
	}
	attempts, next := m.attempts, now
	var dests []string
	if !interrupted {
		attempts++
		next = now.Add(q.backoff(attempts))
		rec := stateRecord{T: recordDefer, At: now, Attempts: attempts, Next: next}
		for _, o := range p.deferred {
			rec.Reasons = append(rec.Reasons, deferReason{Rcpt: o.rcpt, Relay: o.relay, Reply: o.reply.String(), Dest: o.dest})
			if o.dest != "" && !slices.Contains(dests, o.dest) {
				dests = append(dests, q.keys.get(o.dest))
			}
		}
		recs = append(recs, rec)
	}
	if len(recs) > 0 {
		if err := q.appendState(p, recs...); err != nil {
			q.log.Error("queue state write error; a restart may repeat deliveries", "id", m.id, "err", err)
		}
	}
	q.mu.Lock()
	m.env = nil
	if warnNow {
		m.flags |= flagWarned
	}
	flags := m.flags
	switch {
	case flags&(flagDelete|flagHold) != 0:
		delete(q.msgs, m.id)
		q.active--
	case interrupted:
		q.active--
		q.makeDue(m)
	default:
		q.active--
		m.attempts = attempts
		m.next = next
		m.dests = dests
		if flags&flagRequeue != 0 || retryNow {
			q.makeDue(m) // requeue asked for, or unit released, during the attempt
		} else {
			m.state = stateDeferred
			heap.Push(&q.deferred, m)
		}
	}
	q.pump()
	q.mu.Unlock()
	if flags&(flagDelete|flagHold) != 0 {
		p.closeState()
		q.settleRequest(m.id, flags)
	}
}

func (q *Queue) expired(m *message, now time.Time) bool {
	life := q.cfg.MaxLifetime
	if m.nullSender {
		life = q.cfg.BounceLifetime
	}
	return now.Sub(m.received) >= life
}

// backoff is the delay after the n-th failed attempt: minimal_backoff_time
// doubled per attempt, at most maximal_backoff_time, plus up to 10% jitter
// so that a burst deferred together does not come back together.
func (q *Queue) backoff(n int) time.Duration {
	d := q.cfg.MinimalBackoff
	for i := 1; i < n && d < q.cfg.MaximalBackoff; i++ {
		d *= 2
	}
	d = min(d, q.cfg.MaximalBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// appendState appends records to the message's state file and makes them
// durable (fsync; the directory too when the file is new).
func (q *Queue) appendState(p *pass, recs ...stateRecord) error {
	if p.st == nil {
		path := q.path(dirMsg, p.m.id+stateSuffix)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			p.stNew = true
		} else if errors.Is(err, fs.ErrExist) {
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		}
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		p.st, p.stSize = f, fi.Size()
	}
	b := encodeState(recs...)
	if _, err := p.st.Write(b); err != nil {
		p.st.Truncate(p.stSize) // no torn line in the middle of the file
		return err
	}
	p.stSize += int64(len(b))
	if err := q.syncFile(p.st); err != nil {
		return err
	}
	if p.stNew {
		if err := q.commit.sync(q.msgDir); err != nil {
			return err
		}
		p.stNew = false
	}
	return nil
}

// remove deletes a finished message: the message file first (so that a
// crash leaves at most an orphan state file, which recovery deletes), then
// the state file, then one group-committed directory fsync.
func (q *Queue) remove(p *pass) {
	id := p.m.id
	if err := q.release(id); err != nil && !errors.Is(err, fs.ErrNotExist) {
		q.log.Error("cannot remove queue file; a restart may repeat deliveries", "id", id, "err", err)
		return
	}
	if err := os.Remove(q.path(dirMsg, id+stateSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		q.log.Warn("cannot remove queue state file", "id", id, "err", err)
	}
	if err := q.commit.sync(q.msgDir); err != nil {
		q.log.Error("queue directory fsync error; a restart may repeat deliveries", "id", id, "err", err)
	}
	q.log.Info("removed", "id", id)
}

// moveCorrupt moves a damaged message (and its state file) to corrupt/,
// like Postfix's queue manager does, so it never blocks the others.
func (q *Queue) moveCorrupt(id string, reason error) {
	for _, name := range []string{id, id + stateSuffix} {
		err := os.Rename(q.path(dirMsg, name), q.path(dirCorrupt, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.log.Error("cannot move damaged queue file", "id", id, "file", name, "err", err)
		}
	}
	q.commit.syncDir(q.corruptDir)
	q.commit.sync(q.msgDir)
	q.log.Error("damaged queue file moved to corrupt/", "id", id, "reason", reason.Error())
}

// logOutcome writes the Postfix-style delivery log line:
// id, to, orig_to, relay, delay, delays=a/b/c/d, dsn, status, reply.
func (q *Queue) logOutcome(p *pass, o outcome, err error, now time.Time) {
	m := p.m
	r := p.env.Rcpts[o.rcpt]
	total := now.Sub(m.received)
	a := max(m.queued.Sub(m.received), 0)
	b := max(total-a-o.setup-o.xmit, 0)
	relay := o.relay
	if relay == "" {
		relay = "none"
	}
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs, slog.String("id", m.id), slog.String("to", r.Addr.Bracketed()))
	if !r.Orig.IsNull() && r.Orig != r.Addr {
		attrs = append(attrs, slog.String("orig_to", r.Orig.Bracketed()))
	}
	attrs = append(attrs,
		slog.String("relay", relay),
		slog.Float64("delay", round2(total)),
		slog.String("delays", fmtSec(a)+"/"+fmtSec(b)+"/"+fmtSec(o.setup)+"/"+fmtSec(o.xmit)),
		slog.String("dsn", dsnCode(o.reply, o.status == statusExpired)),
		slog.String("status", o.status),
		slog.String("reply", o.reply.String()))
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	q.log.LogAttrs(context.Background(), slog.LevelInfo, "delivery", attrs...)
}

func round2(d time.Duration) float64 {
	return float64(d.Round(10*time.Millisecond)) / float64(time.Second)
}

func fmtSec(d time.Duration) string {
	return strconv.FormatFloat(round2(d), 'f', -1, 64)
}
