package queue

import (
	"context"
	"io"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// Router resolves where a recipient's mail goes next. The queue asks again at
// every delivery attempt, so a mailbox moved to another unit is followed
// (transport(5) resolution lives in package routing; cmd wires it in).
type Router interface {
	Route(ctx context.Context, rcpt envelope.Address) (envelope.Route, error)
}

// Expander applies address rewriting (virtual_alias_maps, virtual(5)) to
// an address: the addresses mail for it goes to, and whether it had an
// entry. A Router that also implements Expander (routing.Resolver does) is
// used by Requeue, which expands a message's original recipients again
// (postsuper -r), and for the recipients of notifications the queue
// generates (bounces to a local sender, 2bounce_notice_recipient).
type Expander interface {
	Expand(ctx context.Context, a envelope.Address) ([]envelope.Address, bool, error)
}

// Deliverer makes one delivery transaction: one message to recipients that
// share a Route (at most default_destination_recipient_limit of them).
//
// It returns exactly one Result per recipient of d, in the same order. A
// Result with a 2xx reply means the next hop took responsibility; 4xx (and any
// network trouble, mapped to 4xx by the Deliverer) means try again later; 5xx
// means the recipient bounces. Deliver must honour ctx (deadline and
// shutdown): on cancellation it returns 4xx results.
type Deliverer interface {
	Deliver(ctx context.Context, d *Delivery) []Result
}

// Delivery is one transaction handed to a Deliverer.
type Delivery struct {
	Env   *envelope.Envelope   // the message's envelope (read-only)
	Route envelope.Route       // where to
	Rcpts []envelope.Recipient // subset of Env.Rcpts, all with this Route
	// Body opens the queued content (headers and body, CRLF line endings,
	// Received: header already prepended). The caller closes it. It may be
	// called more than once (each call starts at the beginning) but not
	// after Deliver has returned. The reader verifies the content checksum
	// at its end and then fails with an error wrapping ErrCorrupt: a
	// Deliverer must treat any read error as "abort the transaction" (never
	// send the final dot) and report 4xx; the queue then moves the damaged
	// message aside.
	Body func() (io.ReadCloser, error)
}

// Result is the outcome for one recipient of a Delivery.
type Result struct {
	Rcpt  envelope.Address
	Reply envelope.Reply // the next hop's reply, or our own for local trouble
	// Relay names the host that answered, Postfix style:
	// "unit12.example.com[192.0.2.12]:25", or "none" when no connection
	// was made. The scheduler relies on this: transactions whose results
	// are all 4xx with Relay "none" (or "") count as connection failures,
	// and enough of them in a row make the destination dead for
	// minimal_backoff_time ("delivery temporarily suspended").
	Relay string
	// Setup and Xmit are connection set-up and transmission times, for the
	// "delays=a/b/c/d" log field.
	Setup, Xmit time.Duration
	// Unreachable marks a result for which no mail transaction could be
	// started with any host of the route: DNS, connect, greeting, EHLO or
	// TLS failure. Such transactions count as connection failures for
	// the destination's concurrency window and dead-destination
	// detection (Postfix: "connection or handshake failure"), as do
	// temporary results with Relay "none". A reply to MAIL, RCPT or DATA
	// (a full mailbox, say) never sets it: a per-recipient problem does
	// not slow a unit down.
	Unreachable bool
	// DSN reports that the next hop announced DSN (RFC 3461 §4), so the
	// NOTIFY and ORCPT parameters went along and a success notification
	// is its job; otherwise the queue sends one itself for NOTIFY=SUCCESS
	// ("relayed" over SMTP, "delivered" over LMTP).
	DSN bool
	// Err is an internal error for logs only, may be nil.
	Err error
}
