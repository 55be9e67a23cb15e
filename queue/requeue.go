package queue

import (
	"context"
	"io"
	"os"

	"github.com/mxfront/mxfront/envelope"
)

// Requeue (Postfix postsuper -r) runs address rewriting again: the
// recipients a message was accepted for (Recipient.Orig, the RCPT TO
// address) are expanded through virtual_alias_maps once more, so mail for a
// mailbox that moved to another unit while the message waited follows it.
// Routes need no requeue: they are resolved again at every attempt.
//
// A message file is immutable, so a changed recipient list means a new
// message: the same content, committed under a new queue ID with the new
// pending recipients and a note that it replaces the old one; then the old
// one is removed. A crash in between leaves both, and recovery removes the
// old one (recover.go), so nothing is delivered twice and nothing is lost.

// rewrite expands m's original recipients again. When the pending
// recipients change, m is replaced by a new message (and forgotten) and
// rewrite reports true; otherwise the pass goes on with m.
func (q *Queue) rewrite(ctx context.Context, m *message, env *envelope.Envelope) bool {
	rcpts, changed, err := q.reexpand(ctx, m, env)
	if err != nil {
		q.log.Warn("requeue: address expansion failed; recipients kept", "id", m.id, "err", err)
		return false
	}
	if !changed {
		q.log.Info("requeue: recipients unchanged", "id", m.id)
		return false
	}
	if len(rcpts) == 0 {
		// Every new address was delivered already.
		q.log.Info("requeue: no recipients left", "id", m.id)
	} else {
		newID, err := q.copyMessage(ctx, m, env, rcpts)
		if err != nil {
			q.log.Error("requeue: cannot queue the rewritten message; recipients kept", "id", m.id, "err", err)
			return false
		}
		q.log.Info("requeued", "id", m.id, "new_id", newID, "nrcpt", len(rcpts))
	}
	if err := q.deleteFiles(dirMsg, m.id, nil); err != nil {
		// The new message says it replaces this one: recovery finishes.
		q.log.Error("requeue: cannot remove the old message", "id", m.id, "err", err)
	}
	q.log.Info("removed", "id", m.id, "reason", "requeued")
	q.forget(m)
	return true
}

// reexpand computes the pending recipients after a new alias expansion of
// each original recipient: a pending address that the expansion still
// yields stays, one it no longer yields goes, and addresses it yields that
// the message never had are added (with the original's ORCPT and NOTIFY).
// Addresses already delivered or bounced for that original are not added
// again.
func (q *Queue) reexpand(ctx context.Context, m *message, env *envelope.Envelope) ([]envelope.Recipient, bool, error) {
	type group struct {
		orig    envelope.Address
		pending []int
		had     map[string]bool
	}
	var groups []*group
	byOrig := map[string]*group{}
	for i, r := range env.Rcpts {
		k := r.Orig.Key()
		g := byOrig[k]
		if g == nil {
			g = &group{orig: r.Orig, had: map[string]bool{}}
			byOrig[k] = g
			groups = append(groups, g)
		}
		g.had[r.Addr.Key()] = true
		if !m.done[i] {
			g.pending = append(g.pending, i)
		}
	}
	var out []envelope.Recipient
	changed := false
	for _, g := range groups {
		if len(g.pending) == 0 {
			continue
		}
		if g.orig.IsNull() {
			for _, i := range g.pending {
				out = append(out, env.Rcpts[i])
			}
			continue
		}
		exp, _, err := q.expander.Expand(ctx, g.orig)
		if err != nil {
			return nil, false, err
		}
		now := map[string]bool{}
		for _, a := range exp {
			now[a.Key()] = true
		}
		for _, i := range g.pending {
			if now[env.Rcpts[i].Addr.Key()] {
				out = append(out, env.Rcpts[i])
			} else {
				changed = true
			}
		}
		tmpl := env.Rcpts[g.pending[0]]
		for _, a := range exp {
			if !g.had[a.Key()] {
				g.had[a.Key()] = true
				r := tmpl
				r.Addr = a
				out = append(out, r)
				changed = true
			}
		}
	}
	return out, changed, nil
}

// copyMessage queues m's content again with rcpts, as a message that
// replaces m, and returns the new ID.
func (q *Queue) copyMessage(ctx context.Context, m *message, env *envelope.Envelope, rcpts []envelope.Recipient) (string, error) {
	f, err := os.Open(q.path(dirMsg, m.id))
	if err != nil {
		return "", err
	}
	defer f.Close()
	in, err := q.create(ctx, false)
	if err != nil {
		return "", err
	}
	in.replaces = m.id
	sf := &spoolFile{contentLen: m.contentLen, crcContent: m.crcContent}
	if _, err := io.Copy(in, newBodyReader(f, sf, nil)); err != nil {
		// A damaged content is moved aside by the pass that follows.
		in.Abort()
		return "", err
	}
	nenv := *env
	nenv.ID, nenv.Size, nenv.Hold = "", 0, ""
	nenv.Rcpts = rcpts
	if err := in.Commit(ctx, &nenv); err != nil {
		return "", err
	}
	return in.ID(), nil
}
