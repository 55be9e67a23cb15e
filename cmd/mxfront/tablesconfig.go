package main

import (
	"log/slog"
	"time"

	"github.com/mxfront/mxfront/table"
	"github.com/mxfront/mxfront/table/ldaptable"
	"github.com/mxfront/mxfront/table/nettable"
)

// NetworkTablesConfig tunes tcp: and socketmap: tables ([network_tables];
// Postfix has no such parameters: its clients use a fixed 100 s timeout,
// one connection per process and no cache). ldap: tables are tuned in their
// own .cf file (ldap_table(5) plus mxfront's cache_ttl, negative_cache_ttl,
// pool_size).
type NetworkTablesConfig struct {
	// Timeout bounds connecting plus one request; default 10s.
	Timeout *Duration `toml:"timeout"`
	// PoolSize is the most connections per table; default 4.
	PoolSize int `toml:"pool_size"`
	// CacheTTL and NegativeCacheTTL: how long found and not-found results
	// are reused; defaults 60s and 10s, "0s" disables.
	CacheTTL         *Duration `toml:"cache_ttl"`
	NegativeCacheTTL *Duration `toml:"negative_cache_ttl"`
}

// netTableConfig is the nettable configuration from [network_tables].
func (c *Config) netTableConfig() nettable.Config {
	nc := nettable.DefaultConfig()
	n := c.NetworkTables
	if n.Timeout != nil {
		nc.Timeout = time.Duration(*n.Timeout)
	}
	nc.PoolSize = n.PoolSize
	if n.CacheTTL != nil {
		nc.CacheTTL = time.Duration(*n.CacheTTL)
	}
	if n.NegativeCacheTTL != nil {
		nc.NegativeCacheTTL = time.Duration(*n.NegativeCacheTTL)
	}
	return nc
}

func (c *Config) validateNetworkTables() error {
	n := c.NetworkTables
	if n.Timeout != nil && *n.Timeout <= 0 {
		return c.errorf("network_tables.timeout", "must be positive")
	}
	if n.PoolSize < 0 || n.PoolSize > 1000 {
		return c.errorf("network_tables.pool_size", "want 1 to 1000 (0 or unset: 4)")
	}
	return nil
}

// tableOptions are the lookup table options of the daemon and of `mxfront
// query`: the built-in types plus ldap: (ldap_table(5)), tcp:
// (tcp_table(5)) and socketmap: (socketmap_table(5)). cfg may be nil (no
// configuration file): network tables then get their defaults.
func tableOptions(cfg *Config, logger *slog.Logger) table.Options {
	nc := nettable.DefaultConfig()
	if cfg != nil {
		nc = cfg.netTableConfig()
	}
	openers := nettable.Openers(nc)
	openers["ldap"] = ldaptable.Open
	return table.Options{Logger: logger, Openers: openers}
}
