package mx

import (
	"net/netip"

	"github.com/mxfront/mxfront/policy"
)

// DNSListStarter starts the DNS list lookups of a client address and
// returns at once (package policy's StartDNSLists).
type DNSListStarter interface {
	StartDNSLists(ip netip.Addr) *policy.DNSLists
}

// startDNSLists runs when a connection is accepted, before the banner: the
// client's DNSBL/DNSWL lookups start now, every zone in parallel, so the
// answers are ready when a restriction needs them (the client spends at
// least a round trip on EHLO, MAIL and RCPT first). The handle lives on
// connInfo, which survives STARTTLS, and every policy.Request of the
// session carries it.
func (s *Server) startDNSLists(ci *connInfo) {
	if s.cfg.DNSLists != nil {
		ci.dnsLists = s.cfg.DNSLists.StartDNSLists(ci.remote.Addr().Unmap())
	}
}
