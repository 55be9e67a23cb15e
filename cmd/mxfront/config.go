package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mxfront/mxfront/routing"
	"github.com/mxfront/mxfront/table"
)

// Config is the TOML configuration. Key names are Postfix's main.cf
// parameter names where Postfix has one, with Postfix's defaults (see
// configs/example.toml, which documents every key). Values may refer to
// other parameters as $name or ${name}, as in main.cf.
type Config struct {
	MyHostname    string `toml:"myhostname"`
	MyDomain      string `toml:"mydomain"`
	MyOrigin      string `toml:"myorigin"`
	MyDestination *List  `toml:"mydestination"`
	MyNetworks    *List  `toml:"mynetworks"`
	MailName      string `toml:"mail_name"`

	RelayDomains                  List   `toml:"relay_domains"`
	RelayRecipientMaps            List   `toml:"relay_recipient_maps"`
	VirtualAliasMaps              List   `toml:"virtual_alias_maps"`
	TransportMaps                 List   `toml:"transport_maps"`
	RecipientDelimiter            string `toml:"recipient_delimiter"`
	LocalTransport                string `toml:"local_transport"`
	RelayTransport                string `toml:"relay_transport"`
	DefaultTransport              string `toml:"default_transport"`
	RelayHost                     string `toml:"relayhost"`
	PropagateUnmatchedExtensions  *List  `toml:"propagate_unmatched_extensions"`
	ParentDomainMatchesSubdomains *List  `toml:"parent_domain_matches_subdomains"`
	VirtualAliasRecursionLimit    int    `toml:"virtual_alias_recursion_limit"`
	VirtualAliasExpansionLimit    int    `toml:"virtual_alias_expansion_limit"`

	SmtpdBanner                      string   `toml:"smtpd_banner"`
	MessageSizeLimit                 int64    `toml:"message_size_limit"`
	SmtpdRecipientLimit              int      `toml:"smtpd_recipient_limit"`
	SmtpdTimeout                     Duration `toml:"smtpd_timeout"`
	SmtpdForbidBareNewline           string   `toml:"smtpd_forbid_bare_newline"`
	SmtpdForbidBareNewlineExclusions *List    `toml:"smtpd_forbid_bare_newline_exclusions"`
	SmtpdPeernameLookup              *bool    `toml:"smtpd_peername_lookup"`
	SmtpdTLSCertFile                 string   `toml:"smtpd_tls_cert_file"`
	SmtpdTLSKeyFile                  string   `toml:"smtpd_tls_key_file"`
	SmtpdRelayRestrictions           *List    `toml:"smtpd_relay_restrictions"`
	SmtpdRecipientRestrictions       List     `toml:"smtpd_recipient_restrictions"`
	HopcountLimit                    int      `toml:"hopcount_limit"`

	// Restrictions, access maps, content checks and session hygiene
	// (issue 3; policyconfig.go).
	SmtpdClientRestrictions           List            `toml:"smtpd_client_restrictions"`
	SmtpdHeloRestrictions             List            `toml:"smtpd_helo_restrictions"`
	SmtpdSenderRestrictions           List            `toml:"smtpd_sender_restrictions"`
	SmtpdDataRestrictions             List            `toml:"smtpd_data_restrictions"`
	SmtpdEndOfDataRestrictions        List            `toml:"smtpd_end_of_data_restrictions"`
	SmtpdRestrictionClasses           map[string]List `toml:"smtpd_restriction_classes"`
	SmtpdDelayReject                  *bool           `toml:"smtpd_delay_reject"`
	SmtpdRejectUnlistedRecipient      *bool           `toml:"smtpd_reject_unlisted_recipient"`
	SmtpdRejectUnlistedSender         bool            `toml:"smtpd_reject_unlisted_sender"`
	SmtpdNullAccessLookupKey          string          `toml:"smtpd_null_access_lookup_key"`
	RejectCode                        int             `toml:"reject_code"`
	DeferCode                         int             `toml:"defer_code"`
	AccessMapRejectCode               int             `toml:"access_map_reject_code"`
	AccessMapDeferCode                int             `toml:"access_map_defer_code"`
	InvalidHostnameRejectCode         int             `toml:"invalid_hostname_reject_code"`
	NonFQDNRejectCode                 int             `toml:"non_fqdn_reject_code"`
	UnknownClientRejectCode           int             `toml:"unknown_client_reject_code"`
	UnknownHostnameRejectCode         int             `toml:"unknown_hostname_reject_code"`
	UnknownAddressRejectCode          int             `toml:"unknown_address_reject_code"`
	RelayDomainsRejectCode            int             `toml:"relay_domains_reject_code"`
	UnknownRelayRecipientRejectCode   int             `toml:"unknown_relay_recipient_reject_code"`
	UnknownLocalRecipientRejectCode   int             `toml:"unknown_local_recipient_reject_code"`
	MultiRecipientBounceRejectCode    int             `toml:"multi_recipient_bounce_reject_code"`
	PlaintextRejectCode               int             `toml:"plaintext_reject_code"`
	RejectTempfailAction              string          `toml:"reject_tempfail_action"`
	UnknownHeloHostnameTempfailAction string          `toml:"unknown_helo_hostname_tempfail_action"`
	UnknownAddressTempfailAction      string          `toml:"unknown_address_tempfail_action"`
	HeaderChecks                      List            `toml:"header_checks"`
	BodyChecks                        List            `toml:"body_checks"`
	BodyChecksSizeLimit               int64           `toml:"body_checks_size_limit"`
	SmtpdSoftErrorLimit               int             `toml:"smtpd_soft_error_limit"`
	SmtpdHardErrorLimit               int             `toml:"smtpd_hard_error_limit"`
	SmtpdErrorSleepTime               Duration        `toml:"smtpd_error_sleep_time"`
	SmtpdJunkCommandLimit             int             `toml:"smtpd_junk_command_limit"`
	DisableVRFYCommand                bool            `toml:"disable_vrfy_command"`
	SmtpdHeloRequired                 bool            `toml:"smtpd_helo_required"`
	SmtpdForbidUnauthPipelining       *bool           `toml:"smtpd_forbid_unauth_pipelining"`
	SmtpdRejectFooter                 string          `toml:"smtpd_reject_footer"`
	StrictRFC821Envelopes             bool            `toml:"strict_rfc821_envelopes"`
	SmtpdForbiddenCommands            *List           `toml:"smtpd_forbidden_commands"`
	SmtpdClientConnectionCountLimit   int             `toml:"smtpd_client_connection_count_limit"`
	SmtpdClientConnectionRateLimit    int             `toml:"smtpd_client_connection_rate_limit"`
	SmtpdClientMessageRateLimit       int             `toml:"smtpd_client_message_rate_limit"`
	SmtpdClientRecipientRateLimit     int             `toml:"smtpd_client_recipient_rate_limit"`
	AnvilRateTimeUnit                 Duration        `toml:"anvil_rate_time_unit"`
	SmtpdClientIPv4PrefixLength       int             `toml:"smtpd_client_ipv4_prefix_length"`
	SmtpdClientIPv6PrefixLength       int             `toml:"smtpd_client_ipv6_prefix_length"`
	SmtpdClientEventLimitExceptions   *List           `toml:"smtpd_client_event_limit_exceptions"`

	// DNS lists (issue 4): smtpd's rbl_* names, postscreen's dnsbl_*
	// names without the postscreen_ prefix.
	DNSServers              List     `toml:"dns_servers"`
	DNSBLSites              List     `toml:"dnsbl_sites"`
	DNSBLThreshold          int      `toml:"dnsbl_threshold"`
	DNSBLAllowlistThreshold int      `toml:"dnsbl_allowlist_threshold"`
	DNSBLTimeout            Duration `toml:"dnsbl_timeout"`
	DNSBLMinTTL             Duration `toml:"dnsbl_min_ttl"`
	DNSBLMaxTTL             Duration `toml:"dnsbl_max_ttl"`
	DNSBLHealthInterval     Duration `toml:"dnsbl_health_interval"`
	DNSBLReplyMap           string   `toml:"dnsbl_reply_map"`
	RBLReplyMaps            List     `toml:"rbl_reply_maps"`
	DefaultRBLReply         string   `toml:"default_rbl_reply"`
	MapsRBLRejectCode       int      `toml:"maps_rbl_reject_code"`

	QueueDirectory                     string   `toml:"queue_directory"`
	MinimalBackoffTime                 Duration `toml:"minimal_backoff_time"`
	MaximalBackoffTime                 Duration `toml:"maximal_backoff_time"`
	MaximalQueueLifetime               Duration `toml:"maximal_queue_lifetime"`
	BounceQueueLifetime                Duration `toml:"bounce_queue_lifetime"`
	QueueRunDelay                      Duration `toml:"queue_run_delay"`
	DefaultDestinationRecipientLimit   int      `toml:"default_destination_recipient_limit"`
	DefaultDestinationConcurrencyLimit int      `toml:"default_destination_concurrency_limit"`
	DefaultProcessLimit                int      `toml:"default_process_limit"`
	BounceSizeLimit                    int      `toml:"bounce_size_limit"`

	// Queue scheduling, notifications and backpressure (issue 6;
	// queueconfig.go).
	InitialDestinationConcurrency      int      `toml:"initial_destination_concurrency"`
	DestinationConcurrencyFailedCohort int      `toml:"default_destination_concurrency_failed_cohort_limit"`
	DefaultDestinationRateDelay        Duration `toml:"default_destination_rate_delay"`
	DeferTransports                    List     `toml:"defer_transports"`
	DelayWarningTime                   Duration `toml:"delay_warning_time"`
	TwoBounceNoticeRecipient           string   `toml:"2bounce_notice_recipient"`
	DoubleBounceSender                 string   `toml:"double_bounce_sender"`
	QueueMinfree                       int64    `toml:"queue_minfree"`
	QueueMessageLimit                  int      `toml:"queue_message_limit"`
	QmgrMessageActiveLimit             int      `toml:"qmgr_message_active_limit"`
	SmtpHostDownTime                   Duration `toml:"smtp_host_down_time"`

	SmtpConnectTimeout            Duration `toml:"smtp_connect_timeout"`
	SmtpHeloTimeout               Duration `toml:"smtp_helo_timeout"`
	SmtpMailTimeout               Duration `toml:"smtp_mail_timeout"`
	SmtpRcptTimeout               Duration `toml:"smtp_rcpt_timeout"`
	SmtpDataInitTimeout           Duration `toml:"smtp_data_init_timeout"`
	SmtpDataDoneTimeout           Duration `toml:"smtp_data_done_timeout"`
	SmtpConnectionCacheTimeLimit  Duration `toml:"smtp_connection_cache_time_limit"`
	SmtpConnectionReuseTimeLimit  Duration `toml:"smtp_connection_reuse_time_limit"`
	SmtpConnectionReuseCountLimit int      `toml:"smtp_connection_reuse_count_limit"`

	// Listen is master.cf's "smtp inet" service lines (no Postfix main.cf
	// equivalent).
	Listen []Listener `toml:"listen"`
	// Log configures logging (Postfix: maillog_file, syslog).
	Log LogConfig `toml:"log"`
	// NetworkTables tunes tcp: and socketmap: tables (issue 5;
	// tablesconfig.go).
	NetworkTables NetworkTablesConfig `toml:"network_tables"`

	file string
	src  []byte
}

// Listener is one SMTP listening socket.
type Listener struct {
	Address string `toml:"address"` // "0.0.0.0:25", "[::]:25"
	MaxProc int    `toml:"maxproc"` // concurrent sessions, master.cf maxproc; default 100
}

// LogConfig configures the log.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// List is a Postfix list value: a TOML array, or one string with items
// separated by commas or white space ("permit_mynetworks, reject").
// Brace groups such as inline:{ a=b, c=d } stay whole.
type List []string

// UnmarshalTOML implements toml.Unmarshaler.
func (l *List) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*l = table.SplitList(x)
	case []any:
		out := List{}
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("list items must be strings, not %T", e)
			}
			out = append(out, table.SplitList(s)...)
		}
		*l = out
	default:
		return fmt.Errorf("want a string or an array of strings, not %T", v)
	}
	return nil
}

// Duration is a Postfix time value: a number with a unit, s (seconds), m,
// h, d (days) or w (weeks), like "300s" or "5d"; Go forms like "1h30m" are
// accepted too. A unit is required.
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("want a time with a unit such as \"300s\" or \"5d\", not %v", v)
	}
	x, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(x)
	return nil
}

// MarshalText renders the duration the Postfix way for `mxfront check`.
func (d Duration) MarshalText() ([]byte, error) {
	x := time.Duration(d)
	switch {
	case x == 0:
		return []byte("0s"), nil
	case x%(7*24*time.Hour) == 0:
		return []byte(strconv.FormatInt(int64(x/(7*24*time.Hour)), 10) + "w"), nil
	case x%(24*time.Hour) == 0:
		return []byte(strconv.FormatInt(int64(x/(24*time.Hour)), 10) + "d"), nil
	case x%time.Second == 0:
		return []byte(strconv.FormatInt(int64(x/time.Second), 10) + "s"), nil
	}
	return []byte(x.String()), nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty time value")
	}
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}
	if u, ok := units[s[len(s)-1]]; ok {
		if n, err := strconv.ParseInt(s[:len(s)-1], 10, 64); err == nil && n >= 0 {
			return time.Duration(n) * u, nil
		}
	}
	if _, err := strconv.Atoi(s); err == nil {
		return 0, fmt.Errorf("time value %q needs a unit (s, m, h, d or w)", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad time value %q (want e.g. 300s, 5m, 1h, 5d, 1w)", s)
	}
	return d, nil
}

// ConfigError is a configuration problem located in the file.
type ConfigError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *ConfigError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		return loc + ": " + e.Key + ": " + e.Msg
	}
	return loc + ": " + e.Msg
}

func (c *Config) errorf(key, format string, args ...any) *ConfigError {
	return &ConfigError{File: c.file, Line: c.lineOf(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// lineOf finds the line where key ("a" or "table.a") is set; 0 if unknown.
func (c *Config) lineOf(key string) int {
	section, name := "", key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		section, name = key[:i], key[i+1:]
	}
	cur := ""
	keyRe := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(name) + `"?\s*=`)
	for i, line := range bytes.Split(c.src, []byte("\n")) {
		t := strings.TrimSpace(string(line))
		if strings.HasPrefix(t, "[") {
			cur = strings.Trim(t, "[] ")
			continue
		}
		if cur == section && keyRe.Match(line) {
			return i + 1
		}
	}
	return 0
}

// LoadConfig reads, decodes, expands and validates a config file. Unknown
// keys are errors.
func LoadConfig(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, src)
}

var tomlLineRe = regexp.MustCompile(`line (\d+)(?: \(last key "([^"]*)"\))?:?\s*(.*)`)

// ParseConfig is LoadConfig on bytes; file names the source in errors.
func ParseConfig(file string, src []byte) (*Config, error) {
	c := &Config{file: file, src: src}
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		}
		if m := tomlLineRe.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return nil, &ConfigError{File: file, Line: n, Key: m[2], Msg: m[3]}
		}
		return nil, &ConfigError{File: file, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return nil, c.errorf(k, "unknown key (Postfix parameter names are used where Postfix has one; see configs/example.toml)")
	}
	if err := c.applyDefaults(); err != nil {
		return nil, err
	}
	if err := c.expand(); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func ptrList(l ...string) *List { x := List(l); return &x }

// applyDefaults fills Postfix's defaults (postconf -d) for unset keys.
func (c *Config) applyDefaults() error {
	if c.MyHostname == "" {
		h, err := os.Hostname()
		if err != nil || !strings.Contains(h, ".") {
			return c.errorf("myhostname", "not set, and the system host name %q is not fully qualified", h)
		}
		c.MyHostname = h
	}
	if c.MyDomain == "" {
		if _, d, ok := strings.Cut(c.MyHostname, "."); ok && strings.Contains(d, ".") {
			c.MyDomain = d
		} else {
			c.MyDomain = "localdomain"
		}
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.MyOrigin, "$myhostname")
	def(&c.MailName, "mxfront")
	def(&c.SmtpdBanner, "$myhostname ESMTP $mail_name")
	def(&c.RelayTransport, "smtp")
	def(&c.LocalTransport, routing.DefaultLocalTransport)
	def(&c.DefaultTransport, "smtp")
	def(&c.SmtpdForbidBareNewline, "normalize")
	def(&c.QueueDirectory, "/var/spool/mxfront")
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	if c.MyDestination == nil {
		c.MyDestination = ptrList("$myhostname", "localhost.$mydomain", "localhost")
	}
	if c.MyNetworks == nil {
		// mynetworks_style = host (Postfix 3 default): only ourselves.
		c.MyNetworks = ptrList("127.0.0.0/8", "[::1]/128")
	}
	if c.SmtpdForbidBareNewlineExclusions == nil {
		c.SmtpdForbidBareNewlineExclusions = ptrList("$mynetworks")
	}
	if c.PropagateUnmatchedExtensions == nil {
		c.PropagateUnmatchedExtensions = ptrList("canonical", "virtual")
	}
	if c.ParentDomainMatchesSubdomains == nil {
		c.ParentDomainMatchesSubdomains = ptrList("debug_peer_list", "fast_flush_domains", "mynetworks",
			"permit_mx_backup_networks", "qmqpd_authorized_clients", "relay_domains", "smtpd_access_maps")
	}
	if c.SmtpdPeernameLookup == nil {
		t := true
		c.SmtpdPeernameLookup = &t
	}
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if c.MessageSizeLimit == 0 && c.lineOf("message_size_limit") == 0 {
		c.MessageSizeLimit = 10240000
	}
	defInt(&c.SmtpdRecipientLimit, 1000)
	defInt(&c.HopcountLimit, 50)
	defInt(&c.VirtualAliasRecursionLimit, 1000)
	defInt(&c.VirtualAliasExpansionLimit, 1000)
	defInt(&c.DefaultDestinationRecipientLimit, 50)
	defInt(&c.DefaultDestinationConcurrencyLimit, 20)
	defInt(&c.DefaultProcessLimit, 100)
	defInt(&c.BounceSizeLimit, 50000)
	defDur := func(p *Duration, v time.Duration) {
		if *p == 0 {
			*p = Duration(v)
		}
	}
	defDur(&c.SmtpdTimeout, 300*time.Second)
	defDur(&c.MinimalBackoffTime, 300*time.Second)
	defDur(&c.MaximalBackoffTime, 4000*time.Second)
	defDur(&c.MaximalQueueLifetime, 5*24*time.Hour)
	defDur(&c.BounceQueueLifetime, 5*24*time.Hour)
	defDur(&c.QueueRunDelay, 300*time.Second)
	defDur(&c.SmtpConnectTimeout, 30*time.Second)
	defDur(&c.SmtpHeloTimeout, 300*time.Second)
	defDur(&c.SmtpMailTimeout, 300*time.Second)
	defDur(&c.SmtpRcptTimeout, 300*time.Second)
	defDur(&c.SmtpDataInitTimeout, 120*time.Second)
	defDur(&c.SmtpDataDoneTimeout, 600*time.Second)
	defDur(&c.SmtpConnectionCacheTimeLimit, 2*time.Second)
	defDur(&c.SmtpConnectionReuseTimeLimit, 300*time.Second)
	c.dnsblDefaults()
	c.queueDefaults()
	c.policyDefaults()
	if len(c.Listen) == 0 {
		c.Listen = []Listener{{Address: "0.0.0.0:25"}}
	}
	for i := range c.Listen {
		defInt(&c.Listen[i].MaxProc, 100)
	}
	return nil
}

var varRe = regexp.MustCompile(`\$(\{[a-z0-9_]+\}|[a-z0-9_]+)`)

// expand substitutes $name and ${name} in string and list values with the
// values of other parameters, like Postfix main.cf. Lists expand to their
// items.
func (c *Config) expand() error {
	vars := map[string]func() []string{
		"myhostname": func() []string { return []string{c.MyHostname} },
		"mydomain":   func() []string { return []string{c.MyDomain} },
		"myorigin":   func() []string { return []string{c.MyOrigin} },
		"mail_name":  func() []string { return []string{c.MailName} },
		"mynetworks": func() []string { return *c.MyNetworks },
		"relay_domains": func() []string {
			return c.RelayDomains
		},
		"mydestination": func() []string { return *c.MyDestination },
		"queue_directory": func() []string {
			return []string{c.QueueDirectory}
		},
	}
	var firstErr error
	var depth int
	var expStr func(key, s string) string
	expStr = func(key, s string) string {
		depth++
		defer func() { depth-- }()
		if depth > 10 {
			if firstErr == nil {
				firstErr = c.errorf(key, "recursive $parameter reference")
			}
			return s
		}
		return varRe.ReplaceAllStringFunc(s, func(m string) string {
			name := strings.Trim(m[1:], "{}")
			f, ok := vars[name]
			if !ok {
				if firstErr == nil {
					firstErr = c.errorf(key, "unknown parameter $%s", name)
				}
				return m
			}
			return expStr(key, strings.Join(f(), " "))
		})
	}
	str := func(key string, p *string) { *p = expStr(key, *p) }
	list := func(key string, l *List) {
		if l == nil {
			return
		}
		var out List
		for _, it := range *l {
			if strings.Contains(it, "$") {
				out = append(out, table.SplitList(expStr(key, it))...)
			} else {
				out = append(out, it)
			}
		}
		*l = out
	}
	str("myorigin", &c.MyOrigin)
	str("smtpd_banner", &c.SmtpdBanner)
	str("relayhost", &c.RelayHost)
	str("local_transport", &c.LocalTransport)
	str("queue_directory", &c.QueueDirectory)
	list("mynetworks", c.MyNetworks)
	list("mydestination", c.MyDestination)
	list("relay_domains", &c.RelayDomains)
	list("smtpd_forbid_bare_newline_exclusions", c.SmtpdForbidBareNewlineExclusions)
	list("relay_recipient_maps", &c.RelayRecipientMaps)
	list("virtual_alias_maps", &c.VirtualAliasMaps)
	list("transport_maps", &c.TransportMaps)
	list("rbl_reply_maps", &c.RBLReplyMaps)
	str("dnsbl_reply_map", &c.DNSBLReplyMap)
	list("smtpd_relay_restrictions", c.SmtpdRelayRestrictions)
	list("smtpd_recipient_restrictions", &c.SmtpdRecipientRestrictions)
	for _, l := range []struct {
		key string
		l   *List
	}{{"smtpd_client_restrictions", &c.SmtpdClientRestrictions}, {"smtpd_helo_restrictions", &c.SmtpdHeloRestrictions},
		{"smtpd_sender_restrictions", &c.SmtpdSenderRestrictions}, {"smtpd_data_restrictions", &c.SmtpdDataRestrictions},
		{"smtpd_end_of_data_restrictions", &c.SmtpdEndOfDataRestrictions}, {"header_checks", &c.HeaderChecks},
		{"body_checks", &c.BodyChecks}, {"smtpd_forbidden_commands", c.SmtpdForbiddenCommands},
		{"smtpd_client_event_limit_exceptions", c.SmtpdClientEventLimitExceptions}} {
		list(l.key, l.l)
	}
	for name, cl := range c.SmtpdRestrictionClasses {
		list("smtpd_restriction_classes."+name, &cl)
		c.SmtpdRestrictionClasses[name] = cl
	}
	return firstErr
}

func (c *Config) validate() error {
	switch c.SmtpdForbidBareNewline {
	case "normalize", "no":
		c.SmtpdForbidBareNewline = "normalize"
	case "reject", "yes":
		c.SmtpdForbidBareNewline = "reject"
	default:
		return c.errorf("smtpd_forbid_bare_newline", "want normalize or reject (Postfix: normalize, yes), not %q", c.SmtpdForbidBareNewline)
	}
	if (c.SmtpdTLSCertFile == "") != (c.SmtpdTLSKeyFile == "") {
		return c.errorf("smtpd_tls_cert_file", "smtpd_tls_cert_file and smtpd_tls_key_file must be set together")
	}
	if c.MessageSizeLimit < 0 {
		return c.errorf("message_size_limit", "must not be negative (0 means no limit)")
	}
	if c.MinimalBackoffTime > c.MaximalBackoffTime {
		return c.errorf("minimal_backoff_time", "is larger than maximal_backoff_time")
	}
	if c.RecipientDelimiter != "" && strings.ContainsAny(c.RecipientDelimiter, "@ \t") {
		return c.errorf("recipient_delimiter", "must not contain '@' or white space")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return c.errorf("log.format", "want text or json, not %q", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return c.errorf("log.level", "want debug, info, warn or error, not %q", c.Log.Level)
	}
	if err := c.validateDNSBL(); err != nil {
		return err
	}
	if err := c.validateQueue(); err != nil {
		return err
	}
	if err := c.validatePolicy(); err != nil {
		return err
	}
	if err := c.validateNetworkTables(); err != nil {
		return err
	}
	for i, l := range c.Listen {
		if l.Address == "" {
			return c.errorf("listen.address", "listener %d has no address", i+1)
		}
		if l.MaxProc < 0 {
			return c.errorf("listen.maxproc", "must be positive")
		}
	}
	return nil
}

// matchesSubdomains reports whether parent_domain_matches_subdomains names
// the parameter.
func (c *Config) matchesSubdomains(param string) bool {
	for _, p := range *c.ParentDomainMatchesSubdomains {
		if p == param {
			return true
		}
	}
	return false
}

// Effective renders the effective configuration for `mxfront check`.
func (c *Config) Effective() string {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = "  "
	if err := enc.Encode(c); err != nil {
		return "# cannot render: " + err.Error()
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	// Keep TOML order (tables last); only sort the top-level scalars.
	i := 0
	for i < len(lines) && !strings.HasPrefix(lines[i], "[") {
		i++
	}
	top := lines[:i]
	sort.Strings(top)
	return strings.Join(append(top, lines[i:]...), "\n") + "\n"
}
