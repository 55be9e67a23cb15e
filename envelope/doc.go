// Package envelope holds the value types every other mxfront package shares:
// mailbox addresses (RFC 5321 §4.1.2), SMTP replies with enhanced status codes
// (RFC 3463), message envelopes as queued, and delivery routes.
//
// It is a leaf package: standard library only, no I/O.
package envelope
