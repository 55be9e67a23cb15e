package main

import (
	"log/slog"
	"time"

	"github.com/mxfront/mxfront/policy"
	"github.com/mxfront/mxfront/rbl"
)

// dnsblDefaults fills the DNS list defaults (postscreen's, for the
// dnsbl_* keys; smtpd's for the rbl ones).
func (c *Config) dnsblDefaults() {
	if c.DNSBLThreshold == 0 && c.lineOf("dnsbl_threshold") == 0 {
		c.DNSBLThreshold = 1
	}
	if c.DNSBLTimeout == 0 {
		c.DNSBLTimeout = Duration(10 * time.Second)
	}
	if c.DNSBLMinTTL == 0 {
		c.DNSBLMinTTL = Duration(60 * time.Second)
	}
	if c.DNSBLMaxTTL == 0 {
		c.DNSBLMaxTTL = Duration(time.Hour)
	}
	// "0s" written in the file turns the health test off.
	if c.DNSBLHealthInterval == 0 && c.lineOf("dnsbl_health_interval") == 0 {
		c.DNSBLHealthInterval = Duration(5 * time.Minute)
	}
	if c.DefaultRBLReply == "" {
		c.DefaultRBLReply = policy.DefaultRBLReply
	}
	if c.MapsRBLRejectCode == 0 {
		c.MapsRBLRejectCode = 554
	}
}

func (c *Config) validateDNSBL() error {
	for _, s := range c.DNSBLSites {
		if _, err := rbl.ParseSite(s); err != nil {
			return c.errorf("dnsbl_sites", "%v", err)
		}
	}
	if c.DNSBLThreshold < 1 {
		return c.errorf("dnsbl_threshold", "must be 1 or more")
	}
	if c.DNSBLAllowlistThreshold > 0 {
		return c.errorf("dnsbl_allowlist_threshold", "must be 0 (off) or negative")
	}
	if c.DNSBLMinTTL > c.DNSBLMaxTTL {
		return c.errorf("dnsbl_min_ttl", "is larger than dnsbl_max_ttl")
	}
	if c.MapsRBLRejectCode < 400 || c.MapsRBLRejectCode > 599 {
		return c.errorf("maps_rbl_reject_code", "want a 4xx or 5xx code, not %d", c.MapsRBLRejectCode)
	}
	if err := policy.ValidateRBLReply(c.DefaultRBLReply, c.MapsRBLRejectCode); err != nil {
		return c.errorf("default_rbl_reply", "%v", err)
	}
	if _, err := rbl.NewResolvers(c.DNSServers); err != nil && len(c.DNSServers) > 0 {
		return c.errorf("dns_servers", "%v", err)
	}
	return nil
}

// newDNSBL builds the DNS list client and the policy's DNS list settings.
// Without dns_servers the resolvers come from /etc/resolv.conf; if that
// fails, the client is nil and a DNS list restriction is a configuration
// error (reported by policy.New).
func (a *app) newDNSBL(logger *slog.Logger) (policy.DNSBL, error) {
	cfg := a.cfg
	d := policy.DNSBL{
		Threshold:          cfg.DNSBLThreshold,
		AllowlistThreshold: cfg.DNSBLAllowlistThreshold,
		DefaultReply:       cfg.DefaultRBLReply,
		RejectCode:         cfg.MapsRBLRejectCode,
	}
	for _, s := range cfg.DNSBLSites {
		site, err := rbl.ParseSite(s)
		if err != nil {
			return d, cfg.errorf("dnsbl_sites", "%v", err)
		}
		d.Sites = append(d.Sites, site)
	}
	for _, spec := range cfg.RBLReplyMaps {
		t, err := a.tables.Open(spec)
		if err != nil {
			return d, cfg.errorf("rbl_reply_maps", "%v", err)
		}
		d.ReplyMaps = append(d.ReplyMaps, t)
	}
	if cfg.DNSBLReplyMap != "" {
		t, err := a.tables.Open(cfg.DNSBLReplyMap)
		if err != nil {
			return d, cfg.errorf("dnsbl_reply_map", "%v", err)
		}
		d.ReplyMap = t
	}
	res, err := rbl.NewResolvers(cfg.DNSServers)
	if err != nil {
		if len(cfg.DNSServers) > 0 {
			return d, cfg.errorf("dns_servers", "%v", err)
		}
		logger.Warn("no DNS resolvers: DNS list restrictions are unavailable", "err", err)
		return d, nil
	}
	health := time.Duration(cfg.DNSBLHealthInterval)
	if health == 0 {
		health = -1 // written as 0s: off
	}
	a.rbl, err = rbl.New(rbl.Config{
		Exchanger:      res,
		Timeout:        time.Duration(cfg.DNSBLTimeout),
		MinTTL:         time.Duration(cfg.DNSBLMinTTL),
		MaxTTL:         time.Duration(cfg.DNSBLMaxTTL),
		HealthInterval: health,
	}, logger)
	if err != nil {
		return d, cfg.errorf("dnsbl_timeout", "%v", err)
	}
	d.Client = a.rbl
	return d, nil
}
