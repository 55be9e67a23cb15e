package ldaptable

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Defaults, as in Postfix ldap_table(5) unless marked as mxfront's.
const (
	DefaultServerHost  = "localhost"
	DefaultServerPort  = 389
	DefaultQueryFilter = "(mailacceptinggeneralid=%s)"
	DefaultResultAttr  = "maildrop"
	DefaultTimeout     = 10 * time.Second

	// mxfront extensions (Postfix has no LDAP result cache or pool).
	DefaultCacheTTL         = 60 * time.Second
	DefaultNegativeCacheTTL = 10 * time.Second
	DefaultCacheMaxEntries  = 100000
	DefaultPoolSize         = 2
	MaxPoolSize             = 64
)

// Config is one ldap:/path/to/file.cf table, as read by ParseFile. The
// zero value is not usable; ParseFile fills the defaults.
type Config struct {
	// File is the configuration file (the table name).
	File string
	// Servers are LDAP URLs (ldap://host:port, ldaps://host:port,
	// ldapi://%2Fpath), tried in order: the first that accepts a
	// connection serves until that connection breaks (server_host,
	// server_port).
	Servers []string
	// SearchBase and QueryFilter are templates with %s %u %d %S %U %D
	// %1..%9 %% expansions (search_base, query_filter).
	SearchBase  string
	QueryFilter string
	// Scope is ldap.ScopeWholeSubtree, ScopeSingleLevel or
	// ScopeBaseObject (scope = sub, one, base).
	Scope int
	// ResultAttributes are read from every entry found, in this order
	// (result_attribute).
	ResultAttributes []string
	// ResultFormat is applied to each value (result_format, formerly
	// result_filter).
	ResultFormat string
	// Domain, when not empty, is a Postfix match list: only user@domain
	// keys with a non-empty user and a listed domain are looked up
	// (domain).
	Domain []string
	// Bind and BindDN/BindPW: simple bind on every new connection; no bind
	// (anonymous) when Bind is false or BindDN is empty (bind, bind_dn,
	// bind_pw, bind_pw_file).
	Bind   bool
	BindDN string
	BindPW string
	// BindPWFile is where BindPW came from, if from a file (mxfront's
	// bind_pw_file).
	BindPWFile string
	// StartTLS issues STARTTLS on ldap:// connections (start_tls).
	StartTLS bool
	// TLS is used for ldaps:// and STARTTLS (tls_* parameters); nil when
	// neither is configured.
	TLS *tls.Config
	// Timeout bounds connecting (with STARTTLS and bind) and each search
	// (timeout).
	Timeout time.Duration
	// SizeLimit is the most entries one search may return; more is a
	// temporary error. 0: no limit (size_limit, default expansion_limit).
	SizeLimit int
	// ExpansionLimit is the most result values a lookup may return; more
	// is a temporary error. 0: no limit (expansion_limit).
	ExpansionLimit int
	// Dereference is the alias dereferencing policy, 0..3 (dereference).
	Dereference int

	// CacheTTL and NegativeCacheTTL are how long found and not-found
	// results are reused; 0 disables (mxfront's cache_ttl,
	// negative_cache_ttl).
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	// CacheMaxEntries bounds the cache (mxfront's cache_max_entries).
	CacheMaxEntries int
	// PoolSize is the number of connections kept open; each carries
	// concurrent searches (mxfront's pool_size).
	PoolSize int

	// Warnings are non-fatal remarks about the file (ignored obsolete
	// parameters and the like), each "FILE:LINE: key: text".
	Warnings []string
}

// ConfigError is a problem in a table configuration file.
type ConfigError struct {
	File string
	Line int // 0 when the problem is not on one line
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

// param is one "name = value" line.
type param struct {
	value string
	line  int
}

// cfFile is a parsed main.cf-format file.
type cfFile struct {
	file   string
	params map[string]*param
}

// parseCF reads main.cf syntax (postconf(5)): "name = value"; lines whose
// first non-blank character is '#' and blank lines are ignored; a line that
// starts with white space continues the previous one. Values are literal
// (no $name expansion, quotes are part of the value). A name given twice is
// an error (Postfix keeps the last one silently).
func parseCF(file string, src []byte) (*cfFile, error) {
	cf := &cfFile{file: file, params: map[string]*param{}}
	var name string
	var value strings.Builder
	start := 0
	flush := func() error {
		if name == "" {
			return nil
		}
		if p, dup := cf.params[name]; dup {
			return &ConfigError{File: file, Line: start, Key: name, Msg: fmt.Sprintf("set twice (first on line %d)", p.line)}
		}
		cf.params[name] = &param{value: strings.TrimSpace(value.String()), line: start}
		name = ""
		value.Reset()
		return nil
	}
	for i, line := range strings.Split(string(src), "\n") {
		n := i + 1
		line = strings.TrimRight(line, "\r")
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if name == "" {
				return nil, &ConfigError{File: file, Line: n, Msg: "continuation line without a parameter before it"}
			}
			value.WriteByte(' ')
			value.WriteString(t)
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		k, v, ok := strings.Cut(t, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, &ConfigError{File: file, Line: n, Msg: fmt.Sprintf("want \"name = value\", not %q", t)}
		}
		name, start = k, n
		value.WriteString(v)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return cf, nil
}

func (cf *cfFile) errorf(key, format string, args ...any) *ConfigError {
	line := 0
	if p, ok := cf.params[key]; ok {
		line = p.line
	}
	return &ConfigError{File: cf.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// get returns the value of key, or def when unset.
func (cf *cfFile) get(key, def string) string {
	if p, ok := cf.params[key]; ok {
		return p.value
	}
	return def
}

func (cf *cfFile) has(key string) bool {
	_, ok := cf.params[key]
	return ok
}

func (cf *cfFile) getBool(key string, def bool) (bool, error) {
	if !cf.has(key) {
		return def, nil
	}
	switch strings.ToLower(cf.get(key, "")) {
	case "yes", "true", "1":
		return true, nil
	case "no", "false", "0":
		return false, nil
	}
	return false, cf.errorf(key, "want yes or no, not %q", cf.get(key, ""))
}

func (cf *cfFile) getInt(key string, def, lo, hi int) (int, error) {
	if !cf.has(key) {
		return def, nil
	}
	v := cf.get(key, "")
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, cf.errorf(key, "want a number from %d to %d, not %q", lo, hi, v)
	}
	return n, nil
}

// getDuration reads a time: a bare number is seconds (as Postfix's
// "timeout = 10"); s, m, h units and Go durations such as 500ms are
// accepted too.
func (cf *cfFile) getDuration(key string, def time.Duration) (time.Duration, error) {
	if !cf.has(key) {
		return def, nil
	}
	v := cf.get(key, "")
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, cf.errorf(key, "want seconds or a time with a unit such as 10s or 500ms, not %q", v)
	}
	return d, nil
}

// splitAttrs splits like Postfix argv_split(s, " ,\t\r\n").
func splitAttrs(s string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(" ,\t\r\n", r) })
	if len(f) == 0 {
		return nil
	}
	return f
}

// knownKeys are the parameters ParseFile understands; anything else is an
// error (Postfix ignores unknown names, which hides typos).
var knownKeys = []string{
	"server_host", "server_port", "search_base", "query_filter", "result_format", "result_filter",
	"result_attribute", "special_result_attribute", "terminal_result_attribute", "leaf_result_attribute",
	"domain", "scope", "bind", "bind_dn", "bind_pw", "bind_pw_file", "timeout", "size_limit",
	"expansion_limit", "recursion_limit", "dereference", "chase_referrals", "version", "debuglevel",
	"start_tls", "tls_ca_cert_dir", "tls_ca_cert_file", "tls_cert", "tls_key", "tls_require_cert",
	"tls_random_file", "tls_cipher_suite", "sasl_mechs", "sasl_realm", "sasl_authz_id", "sasl_minssf",
	"cache", "cache_expiry", "cache_size",
	"cache_ttl", "negative_cache_ttl", "cache_max_entries", "pool_size",
}

// ParseFile reads an ldap_table(5) configuration file.
func ParseFile(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, src)
}

// Parse parses an ldap_table(5) configuration; file names it in errors and
// is the base for relative paths in bind_pw_file and tls_* parameters.
func Parse(file string, src []byte) (*Config, error) {
	cf, err := parseCF(file, src)
	if err != nil {
		return nil, err
	}
	for k, p := range cf.params {
		if !slices.Contains(knownKeys, k) {
			return nil, &ConfigError{File: file, Line: p.line, Key: k, Msg: "unknown parameter (see ldap_table(5) and mxfront's table/ldaptable documentation)"}
		}
	}
	c := &Config{File: file}
	warn := func(key, format string, args ...any) {
		c.Warnings = append(c.Warnings, cf.errorf(key, format, args...).Error())
	}

	// Unsupported features: refusing is safer than answering differently
	// from Postfix.
	for _, k := range []string{"special_result_attribute", "terminal_result_attribute", "leaf_result_attribute"} {
		if cf.get(k, "") != "" {
			return nil, cf.errorf(k, "not supported (no DN or URL recursion); flatten the directory data or use result_attribute")
		}
	}
	if ok, err := cf.getBool("chase_referrals", false); err != nil {
		return nil, err
	} else if ok {
		return nil, cf.errorf("chase_referrals", "not supported: referrals are not followed")
	}
	for _, k := range []string{"cache", "cache_expiry", "cache_size"} {
		if cf.has(k) {
			warn(k, "obsolete Postfix parameter, ignored (see cache_ttl and negative_cache_ttl)")
		}
	}
	if v := cf.get("version", "3"); v != "2" && v != "3" {
		return nil, cf.errorf("version", "want 2 or 3, not %q (LDAPv3 is always used)", v)
	}
	if _, err := cf.getInt("debuglevel", 0, 0, 1<<30); err != nil {
		return nil, err
	}
	if _, err := cf.getInt("recursion_limit", 1000, 1, 1<<30); err != nil {
		return nil, err
	}
	if cf.has("tls_random_file") {
		warn("tls_random_file", "ignored (Go's crypto/rand is used)")
	}
	if cf.get("tls_cipher_suite", "") != "" {
		warn("tls_cipher_suite", "ignored: OpenSSL cipher strings do not apply; Go's TLS defaults are used")
	}

	// server_host: URLs, or host[:port] with server_port (ldap_table(5)).
	port, err := cf.getInt("server_port", DefaultServerPort, 1, 65535)
	if err != nil {
		return nil, err
	}
	hosts := splitAttrs(cf.get("server_host", DefaultServerHost))
	if len(hosts) == 0 {
		return nil, cf.errorf("server_host", "empty")
	}
	anyTLS := false
	for _, h := range hosts {
		u, err := serverURL(h, port)
		if err != nil {
			return nil, cf.errorf("server_host", "%v", err)
		}
		anyTLS = anyTLS || strings.HasPrefix(u, "ldaps://")
		c.Servers = append(c.Servers, u)
	}

	c.SearchBase = cf.get("search_base", "")
	c.QueryFilter = cf.get("query_filter", DefaultQueryFilter)
	c.ResultFormat = cf.get("result_format", cf.get("result_filter", "%s"))
	if cf.has("result_format") && cf.has("result_filter") {
		warn("result_filter", "ignored: result_format is set")
	}
	c.ResultAttributes = splitAttrs(cf.get("result_attribute", DefaultResultAttr))
	if len(c.ResultAttributes) == 0 {
		return nil, cf.errorf("result_attribute", "empty: the table could never find anything")
	}
	c.Domain = splitAttrs(cf.get("domain", ""))

	switch s := strings.ToLower(cf.get("scope", "sub")); s {
	case "sub":
		c.Scope = ldap.ScopeWholeSubtree
	case "one":
		c.Scope = ldap.ScopeSingleLevel
	case "base":
		c.Scope = ldap.ScopeBaseObject
	default:
		return nil, cf.errorf("scope", "want sub, one or base, not %q", s)
	}

	switch b := strings.ToLower(cf.get("bind", "yes")); b {
	case "yes", "true", "1", "simple":
		c.Bind = true
	case "no", "false", "0", "none":
	case "sasl":
		return nil, cf.errorf("bind", "SASL bind is not supported; use a simple bind (bind_dn, bind_pw) over ldaps:// or start_tls")
	default:
		return nil, cf.errorf("bind", "want yes, no or sasl, not %q", b)
	}
	c.BindDN = cf.get("bind_dn", "")
	c.BindPW = cf.get("bind_pw", "")
	if f := cf.get("bind_pw_file", ""); f != "" {
		if cf.has("bind_pw") {
			return nil, cf.errorf("bind_pw_file", "set together with bind_pw; use one")
		}
		c.BindPWFile = relPath(file, f)
		pw, err := readSecret(c.BindPWFile)
		if err != nil {
			return nil, cf.errorf("bind_pw_file", "%v", err)
		}
		c.BindPW = pw
	}
	if c.Bind && c.BindDN != "" && c.BindPW == "" {
		// RFC 4513 §5.1.2: a DN with an empty password is an
		// unauthenticated bind that servers may accept as anonymous.
		return nil, cf.errorf("bind_dn", "set without bind_pw or bind_pw_file (an empty password is an unauthenticated bind)")
	}

	if c.StartTLS, err = cf.getBool("start_tls", false); err != nil {
		return nil, err
	}
	if c.StartTLS {
		for _, u := range c.Servers {
			if !strings.HasPrefix(u, "ldap://") {
				return nil, cf.errorf("start_tls", "only for ldap:// servers, not %s (ldaps:// is TLS already)", u)
			}
		}
	}
	if c.StartTLS || anyTLS {
		if c.TLS, err = tlsConfig(cf, file); err != nil {
			return nil, err
		}
	} else {
		for _, k := range []string{"tls_ca_cert_dir", "tls_ca_cert_file", "tls_cert", "tls_key", "tls_require_cert"} {
			if cf.has(k) {
				warn(k, "ignored: no ldaps:// server and start_tls = no")
			}
		}
	}
	for _, k := range []string{"sasl_mechs", "sasl_realm", "sasl_authz_id", "sasl_minssf"} {
		if cf.has(k) {
			warn(k, "ignored: bind = sasl is not supported")
		}
	}

	if c.Timeout, err = cf.getDuration("timeout", DefaultTimeout); err != nil {
		return nil, err
	}
	if c.Timeout == 0 {
		return nil, cf.errorf("timeout", "must be positive")
	}
	if c.ExpansionLimit, err = cf.getInt("expansion_limit", 0, 0, 1<<30); err != nil {
		return nil, err
	}
	if c.SizeLimit, err = cf.getInt("size_limit", c.ExpansionLimit, 0, 1<<30); err != nil {
		return nil, err
	}
	if c.Dereference, err = cf.getInt("dereference", 0, 0, 3); err != nil {
		return nil, err
	}
	if c.CacheTTL, err = cf.getDuration("cache_ttl", DefaultCacheTTL); err != nil {
		return nil, err
	}
	if c.NegativeCacheTTL, err = cf.getDuration("negative_cache_ttl", DefaultNegativeCacheTTL); err != nil {
		return nil, err
	}
	if c.CacheMaxEntries, err = cf.getInt("cache_max_entries", DefaultCacheMaxEntries, 1, 1<<30); err != nil {
		return nil, err
	}
	if c.PoolSize, err = cf.getInt("pool_size", DefaultPoolSize, 1, MaxPoolSize); err != nil {
		return nil, err
	}

	// Templates are checked now, so a broken filter is a load error and
	// not a temporary failure on every lookup.
	if _, err := compileTemplates(c); err != nil {
		var te *templateError
		if errors.As(err, &te) {
			return nil, cf.errorf(te.key, "%s", te.msg)
		}
		return nil, &ConfigError{File: file, Msg: err.Error()}
	}
	return c, nil
}

// serverURL turns a server_host item into an LDAP URL.
func serverURL(h string, port int) (string, error) {
	lower := strings.ToLower(h)
	switch {
	case strings.HasPrefix(lower, "ldap://"), strings.HasPrefix(lower, "ldaps://"):
		u, err := url.Parse(h)
		if err != nil {
			return "", fmt.Errorf("bad LDAP URL %q: %v", h, err)
		}
		if u.Host == "" {
			return "", fmt.Errorf("LDAP URL %q has no host", h)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return "", fmt.Errorf("LDAP URL %q: a DN, attributes or filter in server_host are not supported; use search_base and query_filter", h)
		}
		return strings.ToLower(u.Scheme) + "://" + u.Host, nil
	case strings.HasPrefix(lower, "ldapi://"):
		rest := h[len("ldapi://"):]
		if i := strings.IndexByte(rest, '/'); i >= 0 && rest[i:] != "/" {
			return "", fmt.Errorf("LDAP URL %q: put the socket path percent-encoded in the host part, e.g. ldapi://%%2Fvar%%2Frun%%2Fslapd%%2Fldapi", h)
		} else if i >= 0 {
			rest = rest[:i]
		}
		if _, err := url.PathUnescape(rest); err != nil {
			return "", fmt.Errorf("bad ldapi URL %q: %v", h, err)
		}
		return "ldapi://" + rest, nil
	case strings.Contains(lower, "://"):
		return "", fmt.Errorf("unsupported URL scheme in %q (want ldap://, ldaps:// or ldapi://)", h)
	}
	host, p, err := net.SplitHostPort(h)
	if err != nil {
		host, p = h, strconv.Itoa(port)
	}
	if host == "" {
		return "", fmt.Errorf("no host in %q", h)
	}
	return "ldap://" + net.JoinHostPort(host, p), nil
}

// relPath resolves p relative to the directory of file.
func relPath(file, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(file), p)
}

// readSecret reads a password file: its first line, without the line end.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimRight(s, "\r")
	if s == "" {
		return "", fmt.Errorf("%s: empty password", path)
	}
	return s, nil
}

// tlsConfig builds the TLS client configuration from the tls_*
// parameters. As in Postfix, the server certificate is verified only with
// tls_require_cert = yes.
func tlsConfig(cf *cfFile, file string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	req, err := cf.getBool("tls_require_cert", false)
	if err != nil {
		return nil, err
	}
	cfg.InsecureSkipVerify = !req
	caFile := cf.get("tls_ca_cert_file", "")
	caDir := cf.get("tls_ca_cert_dir", "")
	if caFile != "" || caDir != "" {
		pool := x509.NewCertPool()
		if caFile != "" {
			pem, err := os.ReadFile(relPath(file, caFile))
			if err != nil {
				return nil, cf.errorf("tls_ca_cert_file", "%v", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, cf.errorf("tls_ca_cert_file", "no PEM certificate in %s", caFile)
			}
		}
		if caDir != "" {
			ents, err := os.ReadDir(relPath(file, caDir))
			if err != nil {
				return nil, cf.errorf("tls_ca_cert_dir", "%v", err)
			}
			for _, e := range ents {
				if e.IsDir() {
					continue
				}
				pem, err := os.ReadFile(filepath.Join(relPath(file, caDir), e.Name()))
				if err == nil {
					pool.AppendCertsFromPEM(pem)
				}
			}
		}
		cfg.RootCAs = pool
	}
	cert, key := cf.get("tls_cert", ""), cf.get("tls_key", "")
	if (cert == "") != (key == "") {
		return nil, cf.errorf("tls_cert", "tls_cert and tls_key must be set together")
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(relPath(file, cert), relPath(file, key))
		if err != nil {
			return nil, cf.errorf("tls_cert", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}
