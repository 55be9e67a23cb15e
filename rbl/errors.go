package rbl

import "errors"

// Why a zone gave no usable answer. In every case the name counts as not
// listed (fail open); Answer.Err says which.
var (
	// ErrTimeout: no answer within Config.Timeout.
	ErrTimeout = errors.New("no answer within dnsbl_timeout")
	// ErrServer: the resolver answered with an error code (SERVFAIL,
	// REFUSED, ...) or could not be reached.
	ErrServer = errors.New("DNS error")
	// ErrBadAnswer: an answer that is not a listing code: an address
	// outside 127.0.0.0/8 (a wildcard or a parked domain), a 127.255.255.x
	// error code (Spamhaus: query refused, typo in the zone name, public
	// resolver), or a malformed message.
	ErrBadAnswer = errors.New("bad DNS list answer")
	// ErrSkipped: the zone kept failing and is skipped until it answers
	// again (circuit breaker open).
	ErrSkipped = errors.New("zone skipped: not responding")
	// ErrDisabled: the zone failed the RFC 5782 §5 health test.
	ErrDisabled = errors.New("zone disabled: failed the RFC 5782 health test")
	// ErrInvalidName: the domain is not a valid host name and was not
	// queried.
	ErrInvalidName = errors.New("not a valid host name: not queried")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("DNS list client closed")
)
