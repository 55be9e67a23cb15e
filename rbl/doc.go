// Package rbl is mxfront's DNS list client: DNSBL, DNSWL (RFC 5782 §2, IP
// address lists) and RHSBL, RHSWL (RFC 5782 §3, domain lists), queried with
// miekg/dns. It knows nothing about SMTP: package policy turns answers into
// Postfix restrictions and replies.
//
// Lists are cheap, fast and failure-proof:
//
//   - Prefetch starts the lookups of a client address in every zone, in
//     parallel, when the connection is accepted, so the answers are ready
//     when a restriction needs them.
//   - Identical queries in flight are merged (singleflight), and answers are
//     cached for their TTL clamped to [MinTTL, MaxTTL] (Postfix: 60 s / 1 h),
//     negative answers too (RFC 2308 §5: the SOA minimum).
//   - A zone that does not answer within Timeout counts as "not listed" and
//     the event is logged. A zone that keeps failing is skipped (circuit
//     breaker, with a probe after a backoff) until it answers again; the
//     queries still waiting for it are released at once.
//   - The RFC 5782 §5 health test runs periodically: 127.0.0.2 (or TEST for
//     a domain list) must be listed, 127.0.0.1 (INVALID) must not. A zone
//     that fails it (a dead list that now lists the whole internet) is
//     disabled with a log line until it passes again.
//   - Answers outside 127.0.0.0/8 and Spamhaus-style 127.255.255.x error
//     codes are errors, never listings.
package rbl
