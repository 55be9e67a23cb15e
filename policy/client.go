package policy

import (
	"context"
	"strings"

	"github.com/mxfront/mxfront/envelope"
)

// PeerStatus is the outcome of a client name lookup (Postfix
// SMTPD_PEER_CODE_*). The zero value is PeerPerm.
type PeerStatus int

const (
	// PeerPerm: no name (no PTR, or the name does not resolve back to the
	// address: "forged").
	PeerPerm PeerStatus = iota
	// PeerOK: the name was found (and, for Peer.Name, forward-confirmed).
	PeerOK
	// PeerTemp: the lookup failed temporarily.
	PeerTemp
)

func (s PeerStatus) String() string {
	return [...]string{"permanent failure", "ok", "temporary failure"}[s]
}

// Peer is what is known about the client's name, as Postfix's smtpd_peer.c
// establishes it at connect time.
type Peer struct {
	// Name is the forward-confirmed name, or "unknown".
	Name       string     `json:"name"`
	NameStatus PeerStatus `json:"name_status"`
	// ReverseName is the unverified PTR name, or "unknown".
	ReverseName   string     `json:"reverse_name"`
	ReverseStatus PeerStatus `json:"reverse_status"`
}

func permitMynetworks(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	ip := ev.req.Client.Addr
	if ev.p.cfg.MyNetworks == nil || !ip.IsValid() {
		return verdict{}, nil
	}
	ok, err := ev.p.cfg.MyNetworks.Match(ctx, ip.Unmap())
	if err != nil || !ok {
		return verdict{}, err
	}
	return verdict{action: actPermit}, nil
}

// rejectUnknownClient: reject_unknown_client_hostname, no forward-confirmed
// name (RFC 7372 4.7.25).
func rejectUnknownClient(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.rejectUnknownPeer(ev.req.Peer.NameStatus, envelope.Enhanced{4, 7, 25}, "hostname"), nil
}

// rejectUnknownReverseClient: reject_unknown_reverse_client_hostname, no
// PTR name at all.
func rejectUnknownReverseClient(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	return ev.rejectUnknownPeer(ev.req.Peer.ReverseStatus, envelope.Enhanced{4, 7, 1}, "reverse hostname"), nil
}

// rejectUnknownPeer rejects a client whose name lookup (st) did not
// succeed; a temporary lookup failure always gives 450.
func (ev *eval) rejectUnknownPeer(st PeerStatus, enh envelope.Enhanced, what string) verdict {
	if st == PeerOK {
		return verdict{}
	}
	code := ev.p.cfg.Codes.UnknownClient
	if st == PeerTemp {
		code = 450
	}
	return ev.reject(code, enh, "Client host rejected: cannot find your "+what+", [%s]", ev.req.Client.Addr.Unmap())
}

func checkClientAccess(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	name := ev.req.Peer.Name
	if name == "" {
		name = "unknown"
	}
	return ev.checkNamAddrAccess(ctx, r, name, ev.req.Client.Addr.Unmap().String(), ev.namaddr(), "Client host")
}

func checkReverseClientAccess(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	name := ev.req.Peer.ReverseName
	if name == "" {
		name = "unknown"
	}
	v, err := ev.checkNamAddrAccess(ctx, r, name, ev.req.Client.Addr.Unmap().String(), name, "Unverified Client host")
	if err == nil && v.action == actPermit {
		// forbid_allowlist: an unverified name must not grant anything.
		return ev.serverError(errorf("restriction %s returns OK for %s; this is not allowed for security reasons, use DUNNO instead", r.name, name)), nil
	}
	return v, err
}

// --- HELO ---------------------------------------------------------------------

// heloName returns the HELO argument without one trailing dot (Postfix
// dup_if_truncate).
func (ev *eval) heloName() string {
	h := ev.req.Client.Helo
	if len(h) > 1 && strings.HasSuffix(h, ".") && !strings.HasSuffix(h, "..") {
		h = h[:len(h)-1]
	}
	return h
}

func (ev *eval) invalidHostaddr(helo string) verdict {
	lit := strings.TrimSuffix(strings.TrimPrefix(helo, "["), "]")
	if validMailhostAddr(lit) {
		return verdict{}
	}
	return ev.reject(ev.p.cfg.Codes.InvalidHostname, envelope.Enhanced{5, 5, 2}, "<%s>: Helo command rejected: invalid ip address", ev.req.Client.Helo)
}

func rejectInvalidHelo(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	helo := ev.req.Client.Helo
	if helo == "" {
		return verdict{}, nil
	}
	if strings.HasPrefix(helo, "[") {
		return ev.invalidHostaddr(helo), nil
	}
	if h := ev.heloName(); validHostname(h, false) || validHostaddr(h) {
		return verdict{}, nil
	}
	return ev.reject(ev.p.cfg.Codes.InvalidHostname, envelope.Enhanced{5, 5, 2}, "<%s>: Helo command rejected: Invalid name", helo), nil
}

func rejectNonFQDNHelo(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	helo := ev.req.Client.Helo
	if helo == "" {
		return verdict{}, nil
	}
	if strings.HasPrefix(helo, "[") {
		return ev.invalidHostaddr(helo), nil
	}
	if h := ev.heloName(); validHostname(h, ev.req.SMTPUTF8) && strings.Contains(h, ".") {
		return verdict{}, nil
	}
	return ev.reject(ev.p.cfg.Codes.NonFQDN, envelope.Enhanced{5, 5, 2}, "<%s>: Helo command rejected: need fully-qualified hostname", helo), nil
}

// rejectUnknownHelo: reject_unknown_helo_hostname, the HELO name has no
// A, AAAA or MX record (a null MX is fine for an MTA name).
func rejectUnknownHelo(ctx context.Context, ev *eval, _ *restriction) (verdict, error) {
	helo := ev.req.Client.Helo
	if helo == "" {
		return verdict{}, nil
	}
	if strings.HasPrefix(helo, "[") {
		return ev.invalidHostaddr(helo), nil
	}
	switch ev.hostExists(ctx, ev.heloName()) {
	case dnsOK, dnsNullMX:
		return verdict{}, nil
	case dnsNotFound:
		return ev.reject(ev.p.cfg.Codes.UnknownHostname, envelope.Enhanced{4, 7, 1}, "<%s>: Helo command rejected: Host not found", helo), nil
	}
	r := envelope.NewReply(450, envelope.Enhanced{4, 7, 1}, "<"+helo+">: Helo command rejected: Host not found")
	return ev.deferIfPermitReply(r, ev.p.cfg.Codes.UnknownHelloTempfail), nil
}

// permitNakedIP: permit_naked_ip_address, HELO is a bare IP address
// (deprecated in Postfix, kept for old configurations).
func permitNakedIP(_ context.Context, ev *eval, _ *restriction) (verdict, error) {
	helo := ev.req.Client.Helo
	if helo == "" || strings.Trim(helo, "0123456789.:") != "" {
		return verdict{}, nil
	}
	if v := ev.invalidHostaddr(helo); v.action != actDunno || v.checked {
		return v, nil
	}
	return verdict{action: actPermit}, nil
}

func checkHeloAccess(ctx context.Context, ev *eval, r *restriction) (verdict, error) {
	helo := ev.req.Client.Helo
	if helo == "" {
		return verdict{}, nil
	}
	v, _, err := ev.checkDomainAccess(ctx, r, strings.ToLower(ev.heloName()), helo, "Helo command")
	return v, err
}
