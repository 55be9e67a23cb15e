package envelope

import (
	"net/netip"
	"strings"
	"time"
)

// Notify is the RFC 3461 §4.1 NOTIFY parameter as a bit set. Zero means the
// parameter was absent (default: FAILURE and, at our discretion, DELAY).
type Notify uint8

const (
	NotifyNever Notify = 1 << iota
	NotifySuccess
	NotifyFailure
	NotifyDelay
)

// Has reports whether n includes bit, applying the RFC 3461 default when the
// parameter was absent: failures and delays are reported.
func (n Notify) Has(bit Notify) bool {
	if n == 0 {
		return bit == NotifyFailure || bit == NotifyDelay
	}
	return n&bit != 0
}

func (n Notify) String() string {
	if n == 0 {
		return ""
	}
	if n&NotifyNever != 0 {
		return "NEVER"
	}
	var p []string
	if n&NotifySuccess != 0 {
		p = append(p, "SUCCESS")
	}
	if n&NotifyFailure != 0 {
		p = append(p, "FAILURE")
	}
	if n&NotifyDelay != 0 {
		p = append(p, "DELAY")
	}
	return strings.Join(p, ",")
}

// Recipient is one envelope recipient of a queued message.
type Recipient struct {
	// Addr is the address delivery goes to, after virtual alias expansion.
	Addr Address `json:"addr"`
	// Orig is the address the client gave in RCPT TO (before expansion);
	// DSNs report it (RFC 3464 §2.3.1 Original-Recipient comes from ORCPT).
	Orig Address `json:"orig"`
	// ORCPT is the RFC 3461 §4.2 ORCPT parameter value, "rfc822;addr", or "".
	ORCPT  string `json:"orcpt,omitempty"`
	Notify Notify `json:"notify,omitempty"`
}

// Client describes the SMTP client that handed a message over, for Received:
// headers, logs and DSNs.
type Client struct {
	Addr  netip.Addr `json:"addr"`
	Name  string     `json:"name,omitempty"` // verified reverse name, or "unknown"
	Helo  string     `json:"helo,omitempty"`
	Proto string     `json:"proto,omitempty"` // "SMTP", "ESMTP", "ESMTPS", ... (RFC 3848)
	TLS   string     `json:"tls,omitempty"`   // e.g. "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256"
}

// Envelope is everything about a queued message except its content.
type Envelope struct {
	ID       string      `json:"id"`
	From     Address     `json:"from"`
	Rcpts    []Recipient `json:"rcpts"`
	Client   Client      `json:"client"`
	Received time.Time   `json:"received"`
	// Size is the size of the queued content in bytes (with our headers).
	Size int64 `json:"size"`
	// SMTPUTF8 is set when the client used the RFC 6531 parameter.
	SMTPUTF8 bool `json:"smtputf8,omitempty"`
	// Body is the RFC 6152 BODY parameter: "", "7BIT" or "8BITMIME".
	Body string `json:"body,omitempty"`
	// EnvID and Ret are the RFC 3461 §4.4 ENVID and §4.3 RET parameters.
	EnvID string `json:"envid,omitempty"`
	Ret   string `json:"ret,omitempty"` // "FULL", "HDRS" or ""
	// Hold is set when a policy decided to keep the message until released.
	Hold string `json:"hold,omitempty"`
}

// Transport names, as in Postfix master.cf / transport(5).
const (
	TransportSMTP  = "smtp"
	TransportLMTP  = "lmtp"
	TransportError = "error"
	TransportRetry = "retry"
)

// Route is where a recipient's mail goes next: the result of transport_maps
// (transport(5)) resolution.
type Route struct {
	// Transport is "smtp", "lmtp", "error" or "retry".
	Transport string `json:"transport"`
	// Nexthop is the nexthop as written in transport(5) syntax:
	// "[unit12.example.com]:25", "unit12.example.com", "inet:host:24",
	// "unix:/path". For error/retry it is the reply text.
	Nexthop string `json:"nexthop"`
	// Hosts are the parsed next-hop hosts, tried in order (failover).
	Hosts []Host `json:"hosts,omitempty"`
	// Reply is the reply for error: and retry: routes.
	Reply Reply `json:"reply,omitzero"`
}

// String is "transport:nexthop", as Postfix logs it.
func (r Route) String() string { return r.Transport + ":" + r.Nexthop }

// Key identifies the destination for scheduling and connection reuse:
// messages with the same key may share a connection and a concurrency limit.
func (r Route) Key() string { return r.Transport + ":" + r.Nexthop }

// Host is one next-hop host of a Route.
type Host struct {
	// Network is "tcp" or "unix".
	Network string `json:"network"`
	// Name is a host name or IP address (tcp), or a socket path (unix).
	Name string `json:"name"`
	// Port is the TCP port; 0 means the transport's default (25, or 24 for
	// LMTP).
	Port int `json:"port,omitempty"`
	// MX asks for an MX lookup of Name (transport(5) nexthop without
	// brackets, SMTP only).
	MX bool `json:"mx,omitempty"`
}
