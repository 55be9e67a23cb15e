// Package ldaptable implements Postfix ldap: lookup tables (ldap_table(5)):
// "ldap:/etc/mxfront/ldap-virtual.cf" names a file in main.cf syntax with
// server_host, search_base, query_filter, result_attribute and the other
// ldap_table(5) parameters. Register it with
//
//	table.Options{Openers: map[string]func(string, table.Options) (table.Table, error){"ldap": ldaptable.Open}}
//
// # Lookups
//
// The key is folded to lower case (Postfix DICT_FLAG_FOLD_FIX) and
// expanded into search_base and query_filter (%s %u %d %S %U %D %1..%9 %%,
// db_common.c semantics), every piece of it escaped: RFC 4515 in the
// filter (so "*", "(", ")", "\" and NUL in a recipient match themselves
// and cannot widen the query), RFC 4514 in the DN. A key that cannot fill
// the templates (%d without a domain, too few labels for %3, a domain not
// in "domain") finds nothing without a query, as in Postfix.
//
// The values of result_attribute of every entry found, each passed through
// result_format, are joined with commas. Three outcomes:
//
//   - entries with result values: found;
//   - no entry, or entries without result values: not found (550 5.1.1 at
//     RCPT upstream);
//   - anything else: an error, which callers turn into 451 4.3.0, never a
//     5xx. That includes every server, network, TLS or bind failure, a
//     timeout, a search base that does not exist (unless it depends on the
//     key), more entries than size_limit and more values than
//     expansion_limit. size_limit = 1 makes "several entries where one is
//     expected" such an error; it is logged with the entries' DNs.
//
// # Speed and resilience (mxfront additions)
//
// Results are cached: found for cache_ttl (60 s), not found for
// negative_cache_ttl (10 s); errors never. Identical lookups in flight are
// merged into one search. Each lookup waits at most until its caller's
// context ends (the SMTP session's deadline) and the search itself at most
// timeout. pool_size (2) connections are kept open and carry concurrent
// searches; a broken one is replaced in the background, a search that
// failed on a broken connection is retried once on a new one. A server
// that refuses connections or times out is skipped for a backoff (1 s
// doubling to 10 s) during which lookups go to the next server_host or,
// with none left, fail at once. Connections to a later server_host are
// retired after a minute when an earlier one may be back (with pool_size
// 2 or more, one at a time, so lookups never wait for that). SIGHUP
// (Reload) re-reads the file, reconnects if it changed, and empties the
// cache.
//
// # Differences from Postfix
//
// Unknown parameters are errors. Not supported, and refused when set:
// special_result_attribute, terminal_result_attribute,
// leaf_result_attribute (DN/URL recursion), bind = sasl, chase_referrals =
// yes. LDAPv3 is always used (version is accepted and ignored). The
// obsolete cache, cache_expiry and cache_size are ignored with a warning,
// as in Postfix; tls_random_file and tls_cipher_suite are ignored with a
// warning. bind_pw_file (the password in a file, first line) is an
// mxfront addition, as are cache_ttl, negative_cache_ttl,
// cache_max_entries and pool_size. A query_filter that does not use the key
// is an error (Postfix warns that it is "probably useless"). The main.cf
// form "ldap:name" with name_server_host parameters is not supported.
package ldaptable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/table/internal/remote"
)

// Table is an ldap: table. Its methods are safe for concurrent use.
type Table struct {
	spec string
	log  *slog.Logger
	opts table.Options

	mu sync.Mutex // serializes Reload and Close
	st atomic.Pointer[state]
}

// state is everything a reload replaces.
type state struct {
	cfg     *Config
	src     []byte // the file, to detect changes on Reload
	tm      *templates
	pool    *pool
	cache   *remote.Lookup
	domains *table.DomainList
	dset    *table.Set
}

// ErrTooManyEntries is wrapped by lookup errors when a search returned more
// entries than size_limit.
var ErrTooManyEntries = errors.New("more entries than size_limit")

// ErrTooManyValues is wrapped by lookup errors when a lookup gave more
// values than expansion_limit.
var ErrTooManyValues = errors.New("more values than expansion_limit")

// Open opens "ldap:name": name is the configuration file. It has the
// signature of table.Options.Openers. No connection is made before the
// first lookup, so an unreachable server does not stop a start (lookups
// then fail temporarily).
func Open(name string, opts table.Options) (table.Table, error) {
	t, err := New(name, opts)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// New is Open with the concrete type.
func New(file string, opts table.Options) (*Table, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Table{spec: "ldap:" + file, log: log, opts: opts}
	st, err := t.load(file)
	if err != nil {
		return nil, err
	}
	t.st.Store(st)
	return t, nil
}

// load reads and compiles the configuration file.
func (t *Table) load(file string) (*state, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(file, src)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		t.log.Warn("ldap table: "+w, "table", t.spec)
	}
	tm, err := compileTemplates(cfg)
	if err != nil {
		return nil, err
	}
	st := &state{cfg: cfg, src: src, tm: tm}
	if len(cfg.Domain) > 0 {
		st.dset = table.NewSet(t.opts)
		if st.domains, err = table.NewDomainList(cfg.Domain, st.dset, false); err != nil {
			st.dset.Close()
			return nil, &ConfigError{File: file, Key: "domain", Msg: err.Error()}
		}
	}
	st.pool = newPool(cfg, t.spec, t.log)
	st.cache = remote.New(remote.Config{
		TTL:         cfg.CacheTTL,
		NegativeTTL: cfg.NegativeCacheTTL,
		MaxEntries:  cfg.CacheMaxEntries,
		Timeout:     cfg.Timeout,
	})
	return st, nil
}

// Spec returns "ldap:FILE".
func (t *Table) Spec() string { return t.spec }

// Config returns the configuration in use.
func (t *Table) Config() *Config { return t.st.Load().cfg }

// Lookup implements table.Table.
func (t *Table) Lookup(ctx context.Context, key string) (string, bool, error) {
	st := t.st.Load()
	if key == "" || !utf8.ValidString(key) || strings.IndexByte(key, 0) >= 0 {
		// Postfix: "empty query string -- ignored"; non-UTF-8 keys are
		// skipped (dict_ldap_lookup()). A NUL cannot occur in a Postfix
		// key (C strings); slapd ignores a trailing escaped NUL in some
		// matching rules, so such a key is not asked at all.
		return "", false, nil
	}
	key = strings.ToLower(key)
	if st.domains != nil {
		i := strings.LastIndexByte(key, '@')
		if i <= 0 || i == len(key)-1 {
			return "", false, nil
		}
		ok, err := st.domains.Match(ctx, key[i+1:])
		if err != nil {
			return "", false, fmt.Errorf("%s: domain: %w", t.spec, err)
		}
		if !ok {
			return "", false, nil
		}
	}
	kp, ok := st.tm.splitKey(key)
	if !ok {
		return "", false, nil
	}
	res, _, err := st.cache.Do(ctx, key, func(ctx context.Context) (remote.Result, error) {
		return t.search(ctx, st, kp)
	})
	if err != nil {
		return "", false, fmt.Errorf("%s: lookup %q: %w", t.spec, key, err)
	}
	return res.Value, res.Found, nil
}

// search runs the query for one key and collects the result values.
func (t *Table) search(ctx context.Context, st *state, kp keyParts) (remote.Result, error) {
	cfg := st.cfg
	base := st.tm.expandQuery(st.tm.base, kp, ldap.EscapeDN)
	filter := st.tm.expandQuery(st.tm.filter, kp, ldap.EscapeFilter)
	timeLimit := int(math.Ceil(cfg.Timeout.Seconds()))
	req := ldap.NewSearchRequest(base, cfg.Scope, cfg.Dereference, cfg.SizeLimit, timeLimit, false,
		filter, cfg.ResultAttributes, nil)
	res, err := st.pool.search(ctx, req)
	switch {
	case err == nil:
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		if st.tm.dynamicBase {
			// The base depends on the key: no base, no entry
			// (dict_ldap.c).
			return remote.Result{}, nil
		}
		t.log.Warn("ldap table: search base not found", "table", t.spec, "search_base", base, "err", err)
		return remote.Result{}, fmt.Errorf("search base %q not found: %w", base, err)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		n := 0
		if res != nil {
			n = len(res.Entries)
		}
		return remote.Result{}, t.tooMany(kp.key, filter, cfg.SizeLimit, n, res, true)
	default:
		return remote.Result{}, err
	}
	if cfg.SizeLimit > 0 && len(res.Entries) > cfg.SizeLimit {
		// "LDAP should not, but may produce more than the requested
		// maximum number of entries" (dict_ldap.c).
		return remote.Result{}, t.tooMany(kp.key, filter, cfg.SizeLimit, len(res.Entries), res, false)
	}
	var values []string
	for _, e := range res.Entries {
		for _, want := range cfg.ResultAttributes {
			for _, a := range e.Attributes {
				if !attrMatches(want, a.Name) {
					continue
				}
				for _, v := range a.Values {
					if v == "" {
						t.log.Warn("ldap table: empty result value ignored", "table", t.spec, "key", kp.key, "dn", e.DN, "attribute", a.Name)
						continue
					}
					out, ok := st.tm.expandResult(v, kp)
					if !ok {
						continue
					}
					values = append(values, out)
					if cfg.ExpansionLimit > 0 && len(values) > cfg.ExpansionLimit {
						t.log.Warn("ldap table: lookup gave more values than expansion_limit; temporary failure",
							"table", t.spec, "key", kp.key, "expansion_limit", cfg.ExpansionLimit, "dn", e.DN)
						return remote.Result{}, fmt.Errorf("%w (%d)", ErrTooManyValues, cfg.ExpansionLimit)
					}
				}
			}
		}
	}
	if len(values) == 0 {
		return remote.Result{}, nil
	}
	return remote.Result{Value: strings.Join(values, ","), Found: true}, nil
}

// tooMany logs and returns the error for a search with more entries than
// size_limit: the directory has several entries where one is expected, and
// picking one could deliver to the wrong mailbox.
func (t *Table) tooMany(key, filter string, limit, n int, res *ldap.SearchResult, byServer bool) error {
	var dns []string
	if res != nil {
		for _, e := range res.Entries {
			dns = append(dns, e.DN)
		}
	}
	more := fmt.Sprintf("%d", n)
	if byServer {
		more = fmt.Sprintf("more than %d", limit)
	}
	t.log.Warn("ldap table: query matched more entries than size_limit; temporary failure until the directory is fixed",
		"table", t.spec, "key", key, "filter", filter, "size_limit", limit, "entries", more, "dns", strings.Join(dns, "; "))
	return fmt.Errorf("%w: %s entries for %s (size_limit = %d)", ErrTooManyEntries, more, filter, limit)
}

// attrMatches reports whether attribute description got is want or a
// subtype of it (want;option), case-insensitively (RFC 4512 §2.5,
// dict_ldap.c attrdesc_subtype()).
func attrMatches(want, got string) bool {
	if len(got) < len(want) || !strings.EqualFold(got[:len(want)], want) {
		return false
	}
	return len(got) == len(want) || got[len(want)] == ';'
}

// Reload re-reads the configuration file (SIGHUP). On error the table
// keeps its configuration. A changed file gets new connections (old ones
// are closed once their searches had time to finish); the cache is
// emptied in any case, so directory changes are seen at once.
func (t *Table) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.st.Load()
	src, err := os.ReadFile(old.cfg.File)
	if err != nil {
		return fmt.Errorf("%s: %w", t.spec, err)
	}
	pwChanged := false
	if old.cfg.BindPWFile != "" {
		pw, err := readSecret(old.cfg.BindPWFile)
		if err != nil {
			return fmt.Errorf("%s: bind_pw_file: %w", t.spec, err)
		}
		pwChanged = pw != old.cfg.BindPW
	}
	if bytes.Equal(src, old.src) && !pwChanged {
		if old.dset != nil {
			if err := old.dset.Reload(); err != nil {
				return fmt.Errorf("%s: domain: %w", t.spec, err)
			}
		}
		old.cache.Flush()
		return nil
	}
	st, err := t.load(old.cfg.File)
	if err != nil {
		return err
	}
	t.st.Store(st)
	grace := old.cfg.Timeout
	time.AfterFunc(grace, func() { old.close() })
	return nil
}

func (st *state) close() {
	st.pool.close()
	if st.dset != nil {
		st.dset.Close()
	}
}

// Close closes the connections. Lookups after Close fail.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.Load().close()
	return nil
}

// Stats reports the cache size and the servers currently skipped as down.
func (t *Table) Stats() (cached int, down []string) {
	st := t.st.Load()
	for i, h := range st.pool.health {
		if d, _ := h.Down(); d {
			down = append(down, st.cfg.Servers[i])
		}
	}
	return st.cache.Len(), down
}
