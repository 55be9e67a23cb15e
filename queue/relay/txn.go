package relay

import (
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

// txn is the state of one Deliver call: the recipients, deduplicated, and
// what happened to each so far.
type txn struct {
	d     *queue.Delivery
	start time.Time
	rcpts []*rcptState // unique by address string, in first-seen order

	// stop is set on local trouble (the queued content cannot be read):
	// another host would not do better.
	stop bool

	// utf8 caches whether the message requires SMTPUTF8; utf8Known says
	// whether it was computed.
	utf8, utf8Known bool
}

// rcptState is one unique recipient. go-smtp keys LMTP replies by the
// address string, so duplicates are sent once and answered for all.
type rcptState struct {
	addr  string // Address.String(), as sent in RCPT TO
	rcpt  envelope.Recipient
	idx   []int // positions in Delivery.Rcpts
	final bool  // 2xx or 5xx from a server: no more attempts
	res   queue.Result
}

func newTxn(d *queue.Delivery) *txn {
	tx := &txn{d: d, start: time.Now()}
	seen := make(map[string]*rcptState, len(d.Rcpts))
	for i, rc := range d.Rcpts {
		s := rc.Addr.String()
		if rs := seen[s]; rs != nil {
			rs.idx = append(rs.idx, i)
			continue
		}
		rs := &rcptState{addr: s, rcpt: rc, idx: []int{i}}
		seen[s] = rs
		tx.rcpts = append(tx.rcpts, rs)
	}
	return tx
}

// pending returns the recipients still without a final answer.
func (tx *txn) pending() []*rcptState {
	var p []*rcptState
	for _, rs := range tx.rcpts {
		if !rs.final {
			p = append(p, rs)
		}
	}
	return p
}

func (tx *txn) done() bool {
	for _, rs := range tx.rcpts {
		if !rs.final {
			return false
		}
	}
	return true
}

// set records a server's (or our) answer for rs from a transaction that
// started MAIL at mailStart. Positive and permanent answers are final;
// temporary ones leave rs for the next host (Postfix smtp_trouble.c: soft
// errors on a non-final server keep the recipient for a backup server).
func (tx *txn) set(rs *rcptState, rep envelope.Reply, relay string, mailStart time.Time, err error) {
	now := time.Now()
	rs.res.Reply = rep
	rs.res.Relay = relay
	rs.res.Setup = mailStart.Sub(tx.start)
	rs.res.Xmit = now.Sub(mailStart)
	rs.res.Err = err
	rs.res.Unreachable = false
	rs.res.DSN = false
	rs.final = !rep.Temporary()
}

// failPending gives rep to every pending recipient as a final or
// temporary answer, by its code.
func (tx *txn) failPending(rep envelope.Reply, relay string, err error) {
	now := time.Now()
	for _, rs := range tx.pending() {
		tx.set(rs, rep, relay, now, err)
	}
}

// failAll is failPending before anything was tried.
func (tx *txn) failAll(rep envelope.Reply, err error) { tx.failPending(rep, "none", err) }

// siteFail records a problem with a host rather than with recipients (DNS,
// connect, greeting, SMTPUTF8 support): it never makes a recipient final,
// because another host may still take the mail, and a permanent one does
// not replace an earlier temporary answer. Postfix likewise bounces only
// when no host would do better. unreachable marks a failure to start a
// mail transaction at all (queue.Result.Unreachable).
func (tx *txn) siteFail(rep envelope.Reply, relay string, err error, unreachable bool) {
	for _, rs := range tx.pending() {
		if rep.Permanent() && rs.res.Reply.Temporary() {
			continue
		}
		rs.res = queue.Result{Reply: rep, Relay: relay, Setup: time.Since(tx.start), Err: err, Unreachable: unreachable}
	}
}

// fillUnset answers recipients that have no answer at all.
func (tx *txn) fillUnset(rep envelope.Reply, err error) {
	for _, rs := range tx.rcpts {
		if rs.res.Reply.IsZero() {
			rs.res = queue.Result{Reply: rep, Relay: "none", Setup: time.Since(tx.start), Err: err, Unreachable: true}
		}
	}
}

// results expands the per-address answers to one Result per Delivery
// recipient.
func (tx *txn) results() []queue.Result {
	tx.fillUnset(envelope.NewReply(451, envelope.Enhanced{4, 4, 1}, "no next-hop host could be tried"), nil)
	out := make([]queue.Result, len(tx.d.Rcpts))
	for _, rs := range tx.rcpts {
		for _, i := range rs.idx {
			out[i] = rs.res
			out[i].Rcpt = tx.d.Rcpts[i].Addr
		}
	}
	return out
}
