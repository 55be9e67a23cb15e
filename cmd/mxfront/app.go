package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/mx"
	"github.com/mxfront/mxfront/policy"
	"github.com/mxfront/mxfront/queue"
	"github.com/mxfront/mxfront/queue/relay"
	"github.com/mxfront/mxfront/rbl"
	"github.com/mxfront/mxfront/routing"
	"github.com/mxfront/mxfront/table"
)

// app is the wired daemon: tables, routing, policy, queue, relay, server.
type app struct {
	cfg    *Config
	log    *slog.Logger
	tables *table.Set
	router *routing.Resolver
	policy *policy.Policy
	relay  *relay.Relay
	queue  *queue.Queue
	server *mx.Server
	myNets *table.NetList
	rbl    *rbl.Client // DNS lists; nil without resolvers
}

// newApp builds every component from the configuration. Errors name the
// configuration key they come from.
func newApp(cfg *Config, logger *slog.Logger) (*app, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &app{cfg: cfg, log: logger}
	a.tables = table.NewSet(tableOptions(cfg, logger))
	ok := false
	defer func() {
		if !ok {
			a.close()
		}
	}()
	maps := func(key string, l List) ([]table.Table, error) {
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
	var err error
	if a.myNets, err = table.NewNetList(*cfg.MyNetworks, a.tables); err != nil {
		return nil, cfg.errorf("mynetworks", "%v", err)
	}
	myDest, err := table.NewDomainList(*cfg.MyDestination, a.tables, false)
	if err != nil {
		return nil, cfg.errorf("mydestination", "%v", err)
	}
	relayDomains, err := table.NewDomainList(cfg.RelayDomains, a.tables, cfg.matchesSubdomains("relay_domains"))
	if err != nil {
		return nil, cfg.errorf("relay_domains", "%v", err)
	}
	bareExcl, err := table.NewNetList(*cfg.SmtpdForbidBareNewlineExclusions, a.tables)
	if err != nil {
		return nil, cfg.errorf("smtpd_forbid_bare_newline_exclusions", "%v", err)
	}
	rcptMaps, err := maps("relay_recipient_maps", cfg.RelayRecipientMaps)
	if err != nil {
		return nil, err
	}
	aliasMaps, err := maps("virtual_alias_maps", cfg.VirtualAliasMaps)
	if err != nil {
		return nil, err
	}
	if spec := postmasterFallback(cfg); spec != "" {
		t, err := a.tables.Open(spec)
		if err != nil {
			return nil, cfg.errorf("mydestination", "postmaster fallback: %v", err)
		}
		aliasMaps = append(aliasMaps, t)
	}
	transportMaps, err := maps("transport_maps", cfg.TransportMaps)
	if err != nil {
		return nil, err
	}
	propagate := false
	for _, p := range *cfg.PropagateUnmatchedExtensions {
		if p == "virtual" {
			propagate = true
		}
	}
	a.router, err = routing.New(routing.Config{
		TransportMaps:         transportMaps,
		VirtualAliasMaps:      aliasMaps,
		RecipientDelimiter:    cfg.RecipientDelimiter,
		NoPropagateExtensions: !propagate,
		RelayDomains:          relayDomains,
		LocalDomains:          myDest,
		LocalTransport:        cfg.LocalTransport,
		RelayTransport:        cfg.RelayTransport,
		DefaultTransport:      cfg.DefaultTransport,
		RelayHost:             cfg.RelayHost,
		MyOrigin:              cfg.MyOrigin,
		RecursionLimit:        cfg.VirtualAliasRecursionLimit,
		ExpansionLimit:        cfg.VirtualAliasExpansionLimit,
	}, logger)
	if err != nil {
		return nil, cfg.errorf("transport_maps", "%v", err)
	}
	dnsbl, err := a.newDNSBL(logger)
	if err != nil {
		return nil, err
	}
	resolver, err := newNetResolver(cfg.DNSServers) // policyconfig.go
	if err != nil {
		return nil, cfg.errorf("dns_servers", "%v", err)
	}
	pcfg, err := a.policyConfig(myDest, relayDomains, rcptMaps, dnsbl, resolver)
	if err != nil {
		return nil, err
	}
	a.policy, err = policy.New(pcfg, logger)
	if err != nil {
		return nil, cfg.policyError(err)
	}
	hygiene, err := a.hygiene()
	if err != nil {
		return nil, err
	}
	a.relay, err = relay.New(relay.Config{
		Hostname:                  cfg.MyHostname,
		ConnectTimeout:            time.Duration(cfg.SmtpConnectTimeout),
		HeloTimeout:               time.Duration(cfg.SmtpHeloTimeout),
		MailTimeout:               time.Duration(cfg.SmtpMailTimeout),
		RcptTimeout:               time.Duration(cfg.SmtpRcptTimeout),
		DataInitTimeout:           time.Duration(cfg.SmtpDataInitTimeout),
		DataDoneTimeout:           time.Duration(cfg.SmtpDataDoneTimeout),
		ConnectionCacheTimeLimit:  time.Duration(cfg.SmtpConnectionCacheTimeLimit),
		ConnectionReuseTimeLimit:  time.Duration(cfg.SmtpConnectionReuseTimeLimit),
		ConnectionReuseCountLimit: cfg.SmtpConnectionReuseCountLimit,
		HostDownTime:              time.Duration(cfg.SmtpHostDownTime),
	}, logger)
	if err != nil {
		return nil, err
	}
	a.queue, err = queue.Open(cfg.queueConfig(), a.router, a.relay, logger)
	if err != nil {
		return nil, cfg.errorf("queue_directory", "%v", err)
	}
	var tlsCfg *tls.Config
	if cfg.SmtpdTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SmtpdTLSCertFile, cfg.SmtpdTLSKeyFile)
		if err != nil {
			return nil, cfg.errorf("smtpd_tls_cert_file", "%v", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	maxProc := 0
	for _, l := range cfg.Listen {
		maxProc += l.MaxProc
	}
	a.server, err = mx.New(mx.Config{
		Hostname:         cfg.MyHostname,
		Banner:           cfg.SmtpdBanner,
		MyOrigin:         cfg.MyOrigin,
		MessageSizeLimit: cfg.MessageSizeLimit,
		RecipientLimit:   cfg.SmtpdRecipientLimit,
		Timeout:          time.Duration(cfg.SmtpdTimeout),
		TLSConfig:        tlsCfg,
		BareNewline:      cfg.SmtpdForbidBareNewline,
		BareNewlineExclusions: func(ctx context.Context, ip netip.Addr) bool {
			ok, err := bareExcl.Match(ctx, ip)
			return err == nil && ok
		},
		HopcountLimit:  cfg.HopcountLimit,
		MaxSessions:    maxProc,
		PeernameLookup: *cfg.SmtpdPeernameLookup,
		Resolver:       resolver,
		Hygiene:        hygiene,
		DNSLists:       a.policy,
		ShutdownGrace:  10 * time.Second,
	}, spool{a.queue}, a.policy, logger)
	if err != nil {
		return nil, err
	}
	ok = true
	return a, nil
}

// postmasterFallback returns an inline table, searched after
// virtual_alias_maps, that sends postmaster@ each literal mydestination
// domain to postmaster@$mydomain. RFC 5321 §4.5.1 requires accepting mail
// for the postmaster, and Postfix delivers it with aliases(5); an MX has no
// local delivery, so without an alias of the admin's own it would be
// refused. The admin's virtual_alias_maps entries come first and win. ""
// when there is nothing to add.
func postmasterFallback(cfg *Config) string {
	if cfg.MyDomain == "" || cfg.MyDomain == "localdomain" {
		return ""
	}
	var entries []string
	for _, d := range *cfg.MyDestination {
		if strings.ContainsAny(d, ":/!") || strings.HasPrefix(d, ".") || strings.EqualFold(d, cfg.MyDomain) {
			continue // tables, files, negations, patterns, and mydomain itself
		}
		for _, x := range *cfg.MyDestination {
			if strings.EqualFold(x, cfg.MyDomain) {
				return "" // postmaster@$mydomain is local too: nowhere to send it
			}
		}
		entries = append(entries, "postmaster@"+strings.ToLower(d)+"=postmaster@"+cfg.MyDomain)
	}
	if len(entries) == 0 {
		return ""
	}
	return "inline:{ " + strings.Join(entries, ", ") + " }"
}

// spool adapts *queue.Queue to mx.Spool.
type spool struct{ q *queue.Queue }

func (s spool) Create(ctx context.Context) (mx.Incoming, error) {
	in, err := s.q.Create(ctx)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// Admit implements mx.Admitter: queue_minfree and queue_message_limit at
// MAIL FROM.
func (s spool) Admit(ctx context.Context, size int64) error { return s.q.Admit(ctx, size) }

// warnings lists configuration smells that are not errors.
func (a *app) warnings() []string {
	var w []string
	pm := envelope.Address{Local: "postmaster", Domain: a.cfg.MyOrigin}
	ctx := context.Background()
	if targets, _, err := a.router.Expand(ctx, pm); err == nil {
		for _, t := range targets {
			if rt, err := a.router.Route(ctx, t); err == nil && rt.Transport == envelope.TransportError {
				w = append(w, fmt.Sprintf("mail to <postmaster> (qualified as %s, delivered to %s) resolves to %s: alias it in virtual_alias_maps (RFC 5321 §4.5.1)", pm, t, rt))
			}
		}
	}
	if len(a.cfg.RelayDomains) == 0 {
		w = append(w, "relay_domains is empty: this MX accepts mail only from mynetworks")
	}
	return w
}

// listen returns the sockets passed by socket activation, or else opens the
// configured listeners.
func (a *app) listen() ([]net.Listener, error) {
	lns, err := activationListeners()
	if err != nil || len(lns) > 0 {
		return lns, err
	}
	for _, l := range a.cfg.Listen {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, x := range lns {
				x.Close()
			}
			return nil, a.cfg.errorf("listen.address", "%v", err)
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, errNoListeners
	}
	return lns, nil
}

// run serves until ctx is cancelled (SIGTERM), then shuts down: listeners
// close, sessions finish or get 421, the queue stops with everything on
// disk. SIGHUP reloads tables, SIGUSR1 flushes the deferred queue.
func (a *app) run(ctx context.Context, lns []net.Listener) error {
	defer a.close()
	qctx, qcancel := context.WithCancel(context.Background())
	defer qcancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.queue.Run(qctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("queue stopped", "err", err)
		}
	}()
	if stop := a.startControl(); stop != nil {
		defer stop()
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		a.log.Info("listening", "addr", ln.Addr().String())
		go func(ln net.Listener) { errc <- a.server.Serve(ln) }(ln)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sig)
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case s := <-sig:
			if s == syscall.SIGHUP {
				if err := a.tables.Reload(); err != nil {
					a.log.Error("reload: kept the old contents of a table", "err", err)
				} else {
					a.log.Info("reload: tables reloaded")
				}
			} else {
				a.log.Info("flush: retrying deferred mail now")
				a.queue.Flush()
			}
		case err := <-errc:
			serveErr = err
			break loop
		}
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	a.server.Shutdown(sctx)
	qcancel()
	wg.Wait()
	a.log.Info("stopped")
	return serveErr
}

func (a *app) close() {
	if a.queue != nil {
		a.queue.Close()
	}
	if a.relay != nil {
		a.relay.Close()
	}
	if a.rbl != nil {
		a.rbl.Close()
	}
	if a.tables != nil {
		a.tables.Close()
	}
}
