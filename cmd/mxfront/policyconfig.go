package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mxfront/mxfront/mx"
	"github.com/mxfront/mxfront/policy"
	"github.com/mxfront/mxfront/table"
)

// policyDefaults fills the defaults of the restriction, content check and
// session hygiene keys (postconf -d). Explicit zeros of limits are kept
// (Postfix accepts them).
func (c *Config) policyDefaults() {
	yes := func(p **bool) {
		if *p == nil {
			t := true
			*p = &t
		}
	}
	yes(&c.SmtpdDelayReject)
	yes(&c.SmtpdRejectUnlistedRecipient)
	yes(&c.SmtpdForbidUnauthPipelining)
	if c.SmtpdNullAccessLookupKey == "" {
		c.SmtpdNullAccessLookupKey = "<>"
	}
	def := func(key string, p *int, v int) {
		if *p == 0 && c.lineOf(key) == 0 {
			*p = v
		}
	}
	def("reject_code", &c.RejectCode, 554)
	def("defer_code", &c.DeferCode, 450)
	def("access_map_reject_code", &c.AccessMapRejectCode, 554)
	def("access_map_defer_code", &c.AccessMapDeferCode, 450)
	def("invalid_hostname_reject_code", &c.InvalidHostnameRejectCode, 501)
	def("non_fqdn_reject_code", &c.NonFQDNRejectCode, 504)
	def("unknown_client_reject_code", &c.UnknownClientRejectCode, 450)
	def("unknown_hostname_reject_code", &c.UnknownHostnameRejectCode, 450)
	def("unknown_address_reject_code", &c.UnknownAddressRejectCode, 450)
	def("relay_domains_reject_code", &c.RelayDomainsRejectCode, 554)
	def("unknown_relay_recipient_reject_code", &c.UnknownRelayRecipientRejectCode, 550)
	def("unknown_local_recipient_reject_code", &c.UnknownLocalRecipientRejectCode, 550)
	def("multi_recipient_bounce_reject_code", &c.MultiRecipientBounceRejectCode, 550)
	def("plaintext_reject_code", &c.PlaintextRejectCode, 450)
	def("smtpd_soft_error_limit", &c.SmtpdSoftErrorLimit, 10)
	def("smtpd_hard_error_limit", &c.SmtpdHardErrorLimit, 20)
	def("smtpd_junk_command_limit", &c.SmtpdJunkCommandLimit, 100)
	def("smtpd_client_connection_count_limit", &c.SmtpdClientConnectionCountLimit, 50)
	def("smtpd_client_ipv4_prefix_length", &c.SmtpdClientIPv4PrefixLength, 32)
	def("smtpd_client_ipv6_prefix_length", &c.SmtpdClientIPv6PrefixLength, 84)
	if c.BodyChecksSizeLimit == 0 && c.lineOf("body_checks_size_limit") == 0 {
		c.BodyChecksSizeLimit = 51200
	}
	if c.RejectTempfailAction == "" {
		c.RejectTempfailAction = policy.TempfailDeferIfPermit
	}
	for _, p := range []*string{&c.UnknownHeloHostnameTempfailAction, &c.UnknownAddressTempfailAction} {
		if *p == "" || *p == "$reject_tempfail_action" || *p == "${reject_tempfail_action}" {
			*p = c.RejectTempfailAction
		}
	}
	if c.SmtpdErrorSleepTime == 0 && c.lineOf("smtpd_error_sleep_time") == 0 {
		c.SmtpdErrorSleepTime = Duration(time.Second)
	}
	if c.AnvilRateTimeUnit == 0 {
		c.AnvilRateTimeUnit = Duration(60 * time.Second)
	}
	if c.SmtpdForbiddenCommands == nil {
		c.SmtpdForbiddenCommands = ptrList("CONNECT", "GET", "POST")
	}
	if c.SmtpdClientEventLimitExceptions == nil {
		c.SmtpdClientEventLimitExceptions = ptrList("$mynetworks")
	}
}

func (c *Config) validatePolicy() error {
	for _, k := range []struct {
		key string
		v   int
	}{
		{"reject_code", c.RejectCode}, {"defer_code", c.DeferCode},
		{"access_map_reject_code", c.AccessMapRejectCode}, {"access_map_defer_code", c.AccessMapDeferCode},
		{"invalid_hostname_reject_code", c.InvalidHostnameRejectCode}, {"non_fqdn_reject_code", c.NonFQDNRejectCode},
		{"unknown_client_reject_code", c.UnknownClientRejectCode}, {"unknown_hostname_reject_code", c.UnknownHostnameRejectCode},
		{"unknown_address_reject_code", c.UnknownAddressRejectCode}, {"relay_domains_reject_code", c.RelayDomainsRejectCode},
		{"unknown_relay_recipient_reject_code", c.UnknownRelayRecipientRejectCode},
		{"unknown_local_recipient_reject_code", c.UnknownLocalRecipientRejectCode},
		{"multi_recipient_bounce_reject_code", c.MultiRecipientBounceRejectCode}, {"plaintext_reject_code", c.PlaintextRejectCode},
	} {
		if k.v < 400 || k.v > 599 {
			return c.errorf(k.key, "want a 4XX or 5XX reply code, not %d", k.v)
		}
	}
	if c.RelayDomainsRejectCode/100 != 5 {
		return c.errorf("relay_domains_reject_code", "want a 5XX reply code (defer_unauth_destination uses it minus 100), not %d", c.RelayDomainsRejectCode)
	}
	for _, k := range []struct{ key, v string }{
		{"reject_tempfail_action", c.RejectTempfailAction},
		{"unknown_helo_hostname_tempfail_action", c.UnknownHeloHostnameTempfailAction},
		{"unknown_address_tempfail_action", c.UnknownAddressTempfailAction},
	} {
		if k.v != policy.TempfailDeferIfPermit && k.v != policy.TempfailDefer {
			return c.errorf(k.key, "want defer_if_permit or defer, not %q", k.v)
		}
	}
	for _, k := range []struct {
		key string
		v   int
	}{
		{"smtpd_soft_error_limit", c.SmtpdSoftErrorLimit}, {"smtpd_hard_error_limit", c.SmtpdHardErrorLimit},
		{"smtpd_junk_command_limit", c.SmtpdJunkCommandLimit},
		{"smtpd_client_connection_count_limit", c.SmtpdClientConnectionCountLimit},
		{"smtpd_client_connection_rate_limit", c.SmtpdClientConnectionRateLimit},
		{"smtpd_client_message_rate_limit", c.SmtpdClientMessageRateLimit},
		{"smtpd_client_recipient_rate_limit", c.SmtpdClientRecipientRateLimit},
	} {
		if k.v < 0 {
			return c.errorf(k.key, "must not be negative (0 means no limit)")
		}
	}
	if c.BodyChecksSizeLimit < 0 {
		return c.errorf("body_checks_size_limit", "must not be negative")
	}
	if c.SmtpdClientIPv4PrefixLength < 1 || c.SmtpdClientIPv4PrefixLength > 32 {
		return c.errorf("smtpd_client_ipv4_prefix_length", "want 1 to 32, not %d", c.SmtpdClientIPv4PrefixLength)
	}
	if c.SmtpdClientIPv6PrefixLength < 1 || c.SmtpdClientIPv6PrefixLength > 128 {
		return c.errorf("smtpd_client_ipv6_prefix_length", "want 1 to 128, not %d", c.SmtpdClientIPv6PrefixLength)
	}
	if c.SmtpdNullAccessLookupKey == "" || strings.ContainsAny(c.SmtpdNullAccessLookupKey, " \t") {
		return c.errorf("smtpd_null_access_lookup_key", "must be one word")
	}
	for name, l := range c.SmtpdRestrictionClasses {
		if len(l) == 0 {
			return c.errorf("smtpd_restriction_classes."+name, "restriction class %q needs a definition", name)
		}
	}
	return nil
}

// policyConfig builds the policy configuration: the restriction lists and
// classes, the reply codes, header_checks and body_checks, and the DNS
// resolver of the reject_unknown_* restrictions.
func (a *app) policyConfig(myDest, relayDomains *table.DomainList, rcptMaps []table.Table, dnsbl policy.DNSBL, resolver policy.Resolver) (policy.Config, error) {
	cfg := a.cfg
	var relayRestr []string
	if cfg.SmtpdRelayRestrictions != nil {
		relayRestr = *cfg.SmtpdRelayRestrictions
	}
	classes := map[string][]string{}
	for name, l := range cfg.SmtpdRestrictionClasses {
		classes[name] = l
	}
	open := func(key string, l List) ([]table.Table, error) {
		var out []table.Table
		for _, spec := range l {
			t, err := a.tables.Open(spec)
			if err != nil {
				return nil, cfg.errorf(key, "%v", err)
			}
			out = append(out, t)
		}
		return out, nil
	}
	hc, err := open("header_checks", cfg.HeaderChecks)
	if err != nil {
		return policy.Config{}, err
	}
	bc, err := open("body_checks", cfg.BodyChecks)
	if err != nil {
		return policy.Config{}, err
	}
	return policy.Config{
		DNSBL:                         dnsbl,
		MyNetworks:                    a.myNets,
		MyDestination:                 myDest,
		RelayDomains:                  relayDomains,
		RelayRecipientMaps:            rcptMaps,
		RecipientDelimiter:            cfg.RecipientDelimiter,
		ClientRestrictions:            cfg.SmtpdClientRestrictions,
		HeloRestrictions:              cfg.SmtpdHeloRestrictions,
		SenderRestrictions:            cfg.SmtpdSenderRestrictions,
		RelayRestrictions:             relayRestr,
		RecipientRestrictions:         cfg.SmtpdRecipientRestrictions,
		DataRestrictions:              cfg.SmtpdDataRestrictions,
		EODRestrictions:               cfg.SmtpdEndOfDataRestrictions,
		RestrictionClasses:            classes,
		NoDelayReject:                 !*cfg.SmtpdDelayReject,
		AcceptUnlistedRecipient:       !*cfg.SmtpdRejectUnlistedRecipient,
		RejectUnlistedSender:          cfg.SmtpdRejectUnlistedSender,
		ParentDomainMatchesSubdomains: cfg.matchesSubdomains("smtpd_access_maps"),
		NullAccessLookupKey:           cfg.SmtpdNullAccessLookupKey,
		Codes: policy.Codes{
			Reject:                 cfg.RejectCode,
			Defer:                  cfg.DeferCode,
			AccessMapReject:        cfg.AccessMapRejectCode,
			AccessMapDefer:         cfg.AccessMapDeferCode,
			InvalidHostname:        cfg.InvalidHostnameRejectCode,
			NonFQDN:                cfg.NonFQDNRejectCode,
			UnknownClient:          cfg.UnknownClientRejectCode,
			UnknownHostname:        cfg.UnknownHostnameRejectCode,
			UnknownAddress:         cfg.UnknownAddressRejectCode,
			RelayDomains:           cfg.RelayDomainsRejectCode,
			UnknownRelayRcpt:       cfg.UnknownRelayRecipientRejectCode,
			UnknownLocalRcpt:       cfg.UnknownLocalRecipientRejectCode,
			MultiRecipientBounc:    cfg.MultiRecipientBounceRejectCode,
			Plaintext:              cfg.PlaintextRejectCode,
			UnknownHelloTempfail:   cfg.UnknownHeloHostnameTempfailAction,
			UnknownAddressTempfail: cfg.UnknownAddressTempfailAction,
		},
		HeaderChecks:        hc,
		BodyChecks:          bc,
		BodyChecksSizeLimit: cfg.BodyChecksSizeLimit,
		Resolver:            resolver,
		Tables:              a.tables,
		Router:              a.router,
	}, nil
}

// policyError locates a policy.New error at the configuration key it comes
// from: errors start with the list name ("smtpd_helo_restrictions: ...",
// "smtpd_restriction_classes: NAME: ...").
func (c *Config) policyError(err error) error {
	msg := err.Error()
	for _, key := range []string{"smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
		"smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
		"smtpd_end_of_data_restrictions"} {
		if strings.HasPrefix(msg, key+":") {
			return c.errorf(key, "%s", msg)
		}
	}
	if rest, ok := strings.CutPrefix(msg, "smtpd_restriction_classes: "); ok {
		name, _, _ := strings.Cut(rest, ":")
		name, _, _ = strings.Cut(name, " ")
		name = strings.Trim(name, `"`)
		if _, ok := c.SmtpdRestrictionClasses[name]; ok {
			return c.errorf("smtpd_restriction_classes."+name, "%s", msg)
		}
		return c.errorf("smtpd_restriction_classes", "%s", msg)
	}
	if strings.HasPrefix(msg, "in parameter smtpd_relay_restrictions") {
		key := "smtpd_relay_restrictions"
		if c.lineOf(key) == 0 {
			key = "smtpd_recipient_restrictions"
		}
		return c.errorf(key, "%s", msg)
	}
	if strings.Contains(msg, "tempfail action") {
		return c.errorf("unknown_address_tempfail_action", "%s", msg)
	}
	return c.errorf("smtpd_relay_restrictions", "%s", msg)
}

// hygiene builds the SMTP server's session hygiene settings.
func (a *app) hygiene() (mx.Hygiene, error) {
	cfg := a.cfg
	excl, err := table.NewNetList(*cfg.SmtpdClientEventLimitExceptions, a.tables)
	if err != nil {
		return mx.Hygiene{}, cfg.errorf("smtpd_client_event_limit_exceptions", "%v", err)
	}
	return mx.Hygiene{
		SoftErrorLimit:         cfg.SmtpdSoftErrorLimit,
		HardErrorLimit:         cfg.SmtpdHardErrorLimit,
		ErrorSleepTime:         time.Duration(cfg.SmtpdErrorSleepTime),
		JunkCommandLimit:       cfg.SmtpdJunkCommandLimit,
		DisableVRFY:            cfg.DisableVRFYCommand,
		HeloRequired:           cfg.SmtpdHeloRequired,
		ForbidUnauthPipelining: *cfg.SmtpdForbidUnauthPipelining,
		RejectFooter:           cfg.SmtpdRejectFooter,
		StrictRFC821Envelopes:  cfg.StrictRFC821Envelopes,
		ForbiddenCommands:      append([]string(nil), *cfg.SmtpdForbiddenCommands...),
		ConnectionCountLimit:   cfg.SmtpdClientConnectionCountLimit,
		ConnectionRateLimit:    cfg.SmtpdClientConnectionRateLimit,
		MessageRateLimit:       cfg.SmtpdClientMessageRateLimit,
		RecipientRateLimit:     cfg.SmtpdClientRecipientRateLimit,
		RateTimeUnit:           time.Duration(cfg.AnvilRateTimeUnit),
		IPv4PrefixLength:       cfg.SmtpdClientIPv4PrefixLength,
		IPv6PrefixLength:       cfg.SmtpdClientIPv6PrefixLength,
		LimitExceptions: func(ctx context.Context, ip netip.Addr) bool {
			ok, err := excl.Match(ctx, ip)
			return err == nil && ok
		},
	}, nil
}

// newNetResolver returns the resolver of the reject_unknown_* restrictions
// and client name lookups: a pure-Go resolver sending every query to
// dns_servers (ip:port, or ip for port 53), rotating between them; with no
// dns_servers, the nameservers of /etc/resolv.conf.
func newNetResolver(servers []string) (*net.Resolver, error) {
	if len(servers) == 0 {
		return &net.Resolver{PreferGo: true}, nil
	}
	addrs := make([]string, 0, len(servers))
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = strings.Trim(s, "[]"), "53"
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, errors.New("dns_servers: " + s + ": want ip:port")
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	var next atomic.Uint32
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			// Each attempt of the resolver goes to the next server, so a dead
			// one costs one timeout, not every query.
			addr := addrs[int(next.Add(1)-1)%len(addrs)]
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}, nil
}
