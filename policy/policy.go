// Package policy decides, at each SMTP stage, whether to accept: Postfix
// restriction lists (postconf(5) smtpd_*_restrictions, access(5) tables,
// smtpd_restriction_classes), recipient verification against the directory
// (smtpd_reject_unlisted_recipient, relay_recipient_maps,
// virtual_alias_maps), and content checks (header_checks, body_checks).
//
// Replies follow Postfix's codes and texts (smtpd_check.c), e.g.
//
//	554 5.7.1 <b@remote.test>: Relay access denied
//	550 5.1.1 <x@example.com>: Recipient address rejected: User unknown in relay recipient table
//	451 4.3.0 <x@example.com>: Temporary lookup failure
//	450 4.7.25 Client host rejected: cannot find your hostname, [203.0.113.9]
//
// Stages. With smtpd_delay_reject = yes (the default) the client, HELO and
// sender restrictions are evaluated again at every RCPT, so that a
// rejection names the recipient in the log; CheckConnect, CheckHelo and
// CheckMail then do nothing. The SMTP server (package mx) and `mxfront
// explain` call the same methods.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/table"
)

// Router is what policy needs from package routing: alias expansion and
// next-hop resolution (to refuse error: routes at RCPT time).
type Router interface {
	Expand(ctx context.Context, a envelope.Address) ([]envelope.Address, bool, error)
	Route(ctx context.Context, a envelope.Address) (envelope.Route, error)
}

// Config configures a Policy. Nil lists and tables mean "empty"; zero codes
// mean Postfix's defaults (see Codes).
type Config struct {
	// MyNetworks is mynetworks: trusted clients that may relay.
	MyNetworks *table.NetList
	// MyDestination is mydestination: domains delivered "locally". An MX
	// has no local delivery, so these recipients must be aliased in
	// virtual_alias_maps (postmaster is always accepted, RFC 5321 §4.5.1).
	MyDestination *table.DomainList
	// RelayDomains is relay_domains.
	RelayDomains *table.DomainList
	// RelayRecipientMaps is relay_recipient_maps. Empty means every
	// recipient in relay_domains is accepted (Postfix semantics).
	RelayRecipientMaps []table.Table
	// RecipientDelimiter is recipient_delimiter.
	RecipientDelimiter string

	// ClientRestrictions .. EODRestrictions are smtpd_client_restrictions,
	// smtpd_helo_restrictions, smtpd_sender_restrictions,
	// smtpd_relay_restrictions, smtpd_recipient_restrictions,
	// smtpd_data_restrictions and smtpd_end_of_data_restrictions.
	// RelayRestrictions nil means DefaultRelayRestrictions; the others
	// default to empty.
	ClientRestrictions    []string
	HeloRestrictions      []string
	SenderRestrictions    []string
	RelayRestrictions     []string
	RecipientRestrictions []string
	DataRestrictions      []string
	EODRestrictions       []string
	// RestrictionClasses is smtpd_restriction_classes with each class's
	// definition: a name usable in any restriction list and as an access
	// table result.
	RestrictionClasses map[string][]string
	// NoDelayReject is smtpd_delay_reject = no: client, HELO and sender
	// restrictions are evaluated at connect, HELO and MAIL time. The
	// default (false, Postfix's yes) evaluates them at every RCPT.
	NoDelayReject bool
	// AcceptUnlistedRecipient is smtpd_reject_unlisted_recipient = no
	// (the default is yes). RejectUnlistedSender is
	// smtpd_reject_unlisted_sender (default no).
	AcceptUnlistedRecipient bool
	RejectUnlistedSender    bool
	// ParentDomainMatchesSubdomains is true when smtpd_access_maps is in
	// parent_domain_matches_subdomains (the Postfix default): an access
	// table key "example.com" also matches sub.example.com.
	ParentDomainMatchesSubdomains bool
	// NullAccessLookupKey is smtpd_null_access_lookup_key; "" means "<>".
	NullAccessLookupKey string
	// Codes are the *_reject_code and *_tempfail_action parameters.
	Codes Codes

	// HeaderChecks and BodyChecks are header_checks and body_checks;
	// BodyChecksSizeLimit is body_checks_size_limit (0 = Postfix's 51200).
	HeaderChecks        []table.Table
	BodyChecks          []table.Table
	BodyChecksSizeLimit int64

	// DNSBL configures the DNS list restrictions (rbl.go).
	DNSBL DNSBL

	// Resolver answers the DNS questions of reject_unknown_* restrictions;
	// nil means they are evaluated as a DNS failure (they defer).
	Resolver Resolver
	// Tables opens the tables named in restrictions (check_*_access).
	Tables *table.Set
	// Router expands aliases and resolves routes; required.
	Router Router
}

// Codes are Postfix's reply code parameters. Zero values mean Postfix's
// defaults, given in brackets.
type Codes struct {
	Reject              int // reject_code [554]
	Defer               int // defer_code [450]
	AccessMapReject     int // access_map_reject_code [554]
	AccessMapDefer      int // access_map_defer_code [450]
	InvalidHostname     int // invalid_hostname_reject_code [501]
	NonFQDN             int // non_fqdn_reject_code [504]
	UnknownClient       int // unknown_client_reject_code [450]
	UnknownHostname     int // unknown_hostname_reject_code [450]
	UnknownAddress      int // unknown_address_reject_code [450]
	RelayDomains        int // relay_domains_reject_code [554]
	UnknownRelayRcpt    int // unknown_relay_recipient_reject_code [550]
	UnknownLocalRcpt    int // unknown_local_recipient_reject_code [550]
	MultiRecipientBounc int // multi_recipient_bounce_reject_code [550]
	Plaintext           int // plaintext_reject_code [450]
	// UnknownHelloTempfail and UnknownAddressTempfail are
	// unknown_helo_hostname_tempfail_action and
	// unknown_address_tempfail_action: TempfailDeferIfPermit (the default)
	// or TempfailDefer.
	UnknownHelloTempfail   string
	UnknownAddressTempfail string
}

// Tempfail actions (Postfix reject_tempfail_action).
const (
	TempfailDeferIfPermit = "defer_if_permit"
	TempfailDefer         = "defer"
)

func (c *Codes) setDefaults() error {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Reject, 554)
	def(&c.Defer, 450)
	def(&c.AccessMapReject, 554)
	def(&c.AccessMapDefer, 450)
	def(&c.InvalidHostname, 501)
	def(&c.NonFQDN, 504)
	def(&c.UnknownClient, 450)
	def(&c.UnknownHostname, 450)
	def(&c.UnknownAddress, 450)
	def(&c.RelayDomains, 554)
	def(&c.UnknownRelayRcpt, 550)
	def(&c.UnknownLocalRcpt, 550)
	def(&c.MultiRecipientBounc, 550)
	def(&c.Plaintext, 450)
	for _, p := range []*string{&c.UnknownHelloTempfail, &c.UnknownAddressTempfail} {
		switch *p {
		case "":
			*p = TempfailDeferIfPermit
		case TempfailDeferIfPermit, TempfailDefer:
		default:
			return fmt.Errorf("tempfail action %q: want defer_if_permit or defer", *p)
		}
	}
	return nil
}

// DefaultRelayRestrictions is our smtpd_relay_restrictions default. Postfix
// uses defer_unauth_destination; an internet-facing MX answers definite relay
// attempts with a permanent 554 instead.
var DefaultRelayRestrictions = []string{"permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination"}

// Policy evaluates restriction lists, verifies recipients and builds
// content filters. Safe for concurrent use.
type Policy struct {
	cfg   Config
	defs  map[string]restrictionDef
	lists map[stage][]restriction
	relay []restriction
	// classes are the parsed smtpd_restriction_classes.
	classes map[string][]restriction
	dnsbl   *dnsbl
	// valueCache holds access table results parsed as restriction lists.
	valueCache sync.Map // string -> []restriction
	log        *slog.Logger
}

// New parses the restriction lists and classes. A mistyped restriction name
// is an error naming the list and the name, as is a relay policy that can
// never refuse a relay attempt.
func New(cfg Config, logger *slog.Logger) (*Policy, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Router == nil {
		return nil, errors.New("policy: Router is required")
	}
	if cfg.RelayRestrictions == nil {
		cfg.RelayRestrictions = DefaultRelayRestrictions
	}
	if cfg.NullAccessLookupKey == "" {
		cfg.NullAccessLookupKey = "<>"
	}
	if cfg.BodyChecksSizeLimit == 0 {
		cfg.BodyChecksSizeLimit = 51200
	}
	if err := cfg.Codes.setDefaults(); err != nil {
		return nil, err
	}
	defs, err := mergeRestrictionDefs()
	if err != nil {
		return nil, err
	}
	p := &Policy{cfg: cfg, defs: defs, log: logger, lists: map[stage][]restriction{}, classes: map[string][]restriction{}}
	// Classes first: lists may name them. A class may name another class
	// defined later, so names are registered before parsing.
	for name := range cfg.RestrictionClasses {
		lname := strings.ToLower(name)
		if _, ok := p.defs[lname]; ok {
			return nil, fmt.Errorf("smtpd_restriction_classes: class %q has the name of a built-in restriction", name)
		}
		if len(cfg.RestrictionClasses[name]) == 0 {
			return nil, fmt.Errorf("smtpd_restriction_classes: restriction class %q needs a definition", name)
		}
		p.classes[lname] = nil
	}
	for name, items := range cfg.RestrictionClasses {
		rs, err := p.parseList("smtpd_restriction_classes: "+name, items, true)
		if err != nil {
			return nil, err
		}
		p.classes[strings.ToLower(name)] = rs
	}
	for _, l := range []struct {
		st    stage
		name  string
		items []string
	}{
		{stClient, "smtpd_client_restrictions", cfg.ClientRestrictions},
		{stHelo, "smtpd_helo_restrictions", cfg.HeloRestrictions},
		{stSender, "smtpd_sender_restrictions", cfg.SenderRestrictions},
		{stRecipient, "smtpd_recipient_restrictions", cfg.RecipientRestrictions},
		{stData, "smtpd_data_restrictions", cfg.DataRestrictions},
		{stEOD, "smtpd_end_of_data_restrictions", cfg.EODRestrictions},
	} {
		rs, err := p.parseList(l.name, l.items, true)
		if err != nil {
			return nil, err
		}
		p.lists[l.st] = rs
	}
	if p.relay, err = p.parseList("smtpd_relay_restrictions", cfg.RelayRestrictions, true); err != nil {
		return nil, err
	}
	if err := p.initDNSBL(cfg.DNSBL); err != nil {
		return nil, err
	}
	if !p.hasRequired(p.relay, 0) && !p.hasRequired(p.lists[stRecipient], 0) {
		// smtpd_check_init(): "People screw up the relay restrictions too
		// often." An open relay is refused at startup.
		return nil, fmt.Errorf("in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: %s",
			strings.Join(relayRequired, ", "))
	}
	return p, nil
}

// DelayReject reports smtpd_delay_reject.
func (p *Policy) DelayReject() bool { return !p.cfg.NoDelayReject }

// MyNetworks reports whether ip is in mynetworks (errors count as no).
func (p *Policy) MyNetworks(ctx context.Context, ip netip.Addr) bool {
	if p.cfg.MyNetworks == nil || !ip.IsValid() {
		return false
	}
	ok, err := p.cfg.MyNetworks.Match(ctx, ip.Unmap())
	return err == nil && ok
}

// Request is what the restrictions see about one SMTP command.
type Request struct {
	// Client is the client: address, HELO name, protocol, TLS.
	Client envelope.Client
	// Peer holds the client's verified and reverse names and their lookup
	// status (LookupPeer); the zero value means "unknown, permanently".
	Peer Peer
	// From is the MAIL FROM address; nil outside a mail transaction
	// (VRFY; CONNECT and HELO with smtpd_delay_reject = no), a null
	// address for MAIL FROM:<>.
	From *envelope.Address
	// Rcpt is the RCPT TO (or VRFY) address; zero at other stages, and at
	// DATA when more than one recipient was accepted.
	Rcpt envelope.Address
	// RcptCount is the number of recipients accepted so far in the
	// transaction.
	RcptCount int
	// Pipelined reports that the client sent commands ahead of replies
	// where RFC 2920 does not allow it (reject_unauth_pipelining).
	Pipelined bool
	// SMTPUTF8 is MAIL FROM's SMTPUTF8 parameter.
	SMTPUTF8 bool
	// DNSLists are the client's DNS list lookups started at connect time
	// (StartDNSLists); nil: looked up when needed.
	DNSLists *DNSLists
	// State carries access(5) side effects (HOLD, DISCARD, REDIRECT,
	// PREPEND) to DATA, and stage results between commands when
	// smtpd_delay_reject = no. Nil means a throw-away State.
	State *State
	// Log receives warn, hold, discard, redirect and reject_warning lines;
	// nil means the Policy's logger.
	Log *slog.Logger
	// Trace, when set, receives each decision step (mxfront explain).
	Trace func(TraceEvent)
}

func (r *Request) state() *State {
	if r.State == nil {
		r.State = &State{}
	}
	return r.State
}

// RcptVerdict is the result of an accepted RCPT.
type RcptVerdict struct {
	// Expanded are the delivery addresses after virtual_alias_maps.
	Expanded []envelope.Address
}

// CheckConnect runs smtpd_client_restrictions at connect time when
// smtpd_delay_reject = no; otherwise it does nothing.
func (p *Policy) CheckConnect(ctx context.Context, req *Request) error {
	if !p.cfg.NoDelayReject {
		return nil
	}
	ev := p.newEval(req, "CONNECT")
	v, err := ev.clientStage(ctx)
	req.state().setDeferral(stClient, ev.deferIfPermit)
	return result(v, err)
}

// CheckHelo runs smtpd_helo_restrictions for a HELO/EHLO when
// smtpd_delay_reject = no; otherwise it does nothing.
func (p *Policy) CheckHelo(ctx context.Context, req *Request) error {
	if !p.cfg.NoDelayReject {
		return nil
	}
	ev := p.newEval(req, "HELO")
	ev.deferIfPermit = req.state().deferral(stClient)
	v, err := ev.heloStage(ctx)
	if err == nil && v.action != actReject {
		req.state().setDeferral(stHelo, ev.deferIfPermit)
	}
	return result(v, err)
}

// CheckMail runs smtpd_sender_restrictions (and reject_unlisted_sender)
// for MAIL FROM when smtpd_delay_reject = no; otherwise it does nothing.
func (p *Policy) CheckMail(ctx context.Context, req *Request) error {
	if !p.cfg.NoDelayReject {
		return nil
	}
	ev := p.newEval(req, "MAIL")
	ev.deferIfPermit = req.state().deferral(stHelo)
	if ev.deferIfPermit == nil {
		ev.deferIfPermit = req.state().deferral(stClient)
	}
	v, err := ev.senderStage(ctx)
	if err == nil && v.action != actReject {
		req.state().setDeferral(stSender, ev.deferIfPermit)
	}
	return result(v, err)
}

// CheckRcpt runs, for one RCPT TO (or VRFY), the delayed client, HELO and
// sender restrictions (smtpd_delay_reject = yes), smtpd_relay_restrictions,
// smtpd_recipient_restrictions, the implicit reject_unlisted_recipient, and
// refuses recipients that resolve only to error: routes.
func (p *Policy) CheckRcpt(ctx context.Context, req *Request) (*RcptVerdict, error) {
	ev := p.newEval(req, "RCPT")
	if req.From == nil {
		ev.where = "VRFY"
	}
	if !p.cfg.NoDelayReject {
		for _, f := range []func(context.Context) (verdict, error){ev.clientStage, ev.heloStage, ev.senderStage} {
			v, err := f(ctx)
			if err != nil || v.action == actReject {
				return nil, result(v, err)
			}
		}
	} else {
		// The deferral of the latest stage that ran (VRFY has no MAIL
		// stage; HELO is optional for Postfix).
		for _, st := range []stage{stSender, stHelo, stClient} {
			if ev.deferIfPermit = req.state().deferral(st); ev.deferIfPermit != nil {
				break
			}
		}
	}
	v, err := ev.recipientStage(ctx)
	if err != nil || v.action == actReject {
		return nil, result(v, err)
	}
	if ev.deferIfPermit != nil {
		return nil, &envelope.Error{Reply: *ev.deferIfPermit}
	}
	if !p.cfg.AcceptUnlistedRecipient && !ev.rcptMapChecked && !req.state().discarding() {
		ev.trace(TraceEvent{Kind: "stage", List: "smtpd_reject_unlisted_recipient", Text: "implicit reject_unlisted_recipient"})
		v, err := ev.checkRcptMaps(ctx, req.Rcpt, false)
		if err != nil {
			v = ev.tempFailure(err)
		}
		if v.action == actReject {
			return nil, result(v, nil)
		}
	}
	if req.state().discarding() {
		return &RcptVerdict{Expanded: []envelope.Address{req.Rcpt}}, nil
	}
	info, err := ev.resolve(ctx, req.Rcpt)
	if err != nil {
		return nil, err
	}
	if info.errorOnly != nil {
		// Refuse now what could only bounce later: every target resolves
		// to an error: transport (transport(5)).
		return nil, rcptReject(req.Rcpt, info.errorOnly.Code, info.errorOnly.Enhanced, "Recipient address rejected: "+info.errorOnly.Text)
	}
	return &RcptVerdict{Expanded: info.expanded}, nil
}

// CheckData runs smtpd_data_restrictions for the DATA (or first BDAT)
// command.
func (p *Policy) CheckData(ctx context.Context, req *Request) error {
	ev := p.newEval(req, "DATA")
	v, err := ev.dataStage(ctx, stData)
	if err == nil && v.action != actReject && ev.deferIfPermit != nil {
		return &envelope.Error{Reply: *ev.deferIfPermit}
	}
	return result(v, err)
}

// CheckEOD runs smtpd_end_of_data_restrictions after the message content
// was received.
func (p *Policy) CheckEOD(ctx context.Context, req *Request) error {
	ev := p.newEval(req, "END-OF-MESSAGE")
	v, err := ev.dataStage(ctx, stEOD)
	if err == nil && v.action != actReject && ev.deferIfPermit != nil {
		return &envelope.Error{Reply: *ev.deferIfPermit}
	}
	return result(v, err)
}

// Redirect expands a REDIRECT target (access(5) or header_checks) through
// virtual_alias_maps, as Postfix's cleanup does.
func (p *Policy) Redirect(ctx context.Context, to string) ([]envelope.Address, error) {
	a, err := envelope.ParseAddress(to, true)
	if err != nil || a.IsNull() {
		return nil, fmt.Errorf("REDIRECT %q: bad address", to)
	}
	out, _, err := p.cfg.Router.Expand(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("REDIRECT %s: virtual_alias_maps: %w", a, err)
	}
	return out, nil
}

// result turns a stage verdict into the error the SMTP server replies with.
func result(v verdict, err error) error {
	if err != nil {
		return err
	}
	if v.action == actReject {
		return &envelope.Error{Reply: v.reply, Err: v.cause}
	}
	return nil
}

// Errors carry their client reply (envelope.Error); the internal reason is
// only logged.

func rcptReject(rcpt envelope.Address, code int, enh envelope.Enhanced, text string) *envelope.Error {
	return envelope.Errorf(code, enh, "%s: %s", rcpt.Bracketed(), text)
}

func tempLookup(name string, err error) *envelope.Error {
	return envelope.Wrap(err, 451, envelope.Enhanced{4, 3, 0}, "<"+name+">: Temporary lookup failure")
}

// addressClass is Postfix's address class of a recipient domain
// (ADDRESS_CLASS_README): local (mydestination), relay, or other.
type addressClass int

const (
	classOther addressClass = iota
	classLocal
	classRelay
)

func (c addressClass) String() string {
	return [...]string{"default", "local", "relay"}[c]
}

func (p *Policy) classify(ctx context.Context, domain string) (addressClass, error) {
	if p.cfg.MyDestination != nil {
		ok, err := p.cfg.MyDestination.Match(ctx, domain)
		if err != nil {
			return classOther, fmt.Errorf("mydestination: %w", err)
		}
		if ok {
			return classLocal, nil
		}
	}
	if p.cfg.RelayDomains != nil {
		ok, err := p.cfg.RelayDomains.Match(ctx, domain)
		if err != nil {
			return classOther, fmt.Errorf("relay_domains: %w", err)
		}
		if ok {
			return classRelay, nil
		}
	}
	return classOther, nil
}

func joinAddrs(as []envelope.Address) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
