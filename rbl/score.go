package rbl

import (
	"context"
	"net/netip"
	"sync"
)

// Pending holds the lookups of one client address started by Prefetch when
// the connection was accepted. A session keeps it, so all its restrictions
// see the same answers, however long the session lasts.
type Pending struct {
	c  *Client
	ip netip.Addr
	m  map[string]*pendingLookup // by zone
}

type pendingLookup struct {
	z    *zone
	done chan struct{}
	a    Answer
}

// Prefetch starts the lookups of ip in every zone, in parallel, and
// returns at once. Answers in the cache are taken now; the others arrive
// in the background, merged with identical queries of other sessions.
func (c *Client) Prefetch(ip netip.Addr, zones []string) *Pending {
	p := &Pending{c: c, ip: ip.Unmap(), m: make(map[string]*pendingLookup, len(zones))}
	now := c.cfg.Now()
	for _, zn := range zones {
		zn = canonZone(zn)
		if _, dup := p.m[zn]; dup {
			continue
		}
		z := c.zone(zn, KindIP)
		pl := &pendingLookup{z: z, done: make(chan struct{})}
		p.m[zn] = pl
		q := ipQuery(p.ip, zn)
		if a, ok := c.cache.get(q, now); ok && z.disabledErr() == nil {
			pl.a = a
			close(pl.done)
			continue
		}
		go func() {
			pl.a = c.lookup(c.ctx, z, q)
			close(pl.done)
		}()
	}
	return p
}

// IP returns the client address of the lookups.
func (p *Pending) IP() netip.Addr {
	if p == nil {
		return netip.Addr{}
	}
	return p.ip
}

// Lookup returns the answer of zone for the prefetched address, waiting
// for it if needed; a zone that was not prefetched is looked up now. A
// zone disabled since the prefetch answers ErrDisabled.
func (p *Pending) Lookup(ctx context.Context, zoneName string) Answer {
	zn := canonZone(zoneName)
	pl, ok := p.m[zn]
	if !ok {
		return p.c.LookupIP(ctx, zn, p.ip)
	}
	select {
	case <-pl.done:
	case <-ctx.Done():
		return Answer{Zone: zn, Query: ipQuery(p.ip, zn), Err: classify(ctx.Err())}
	}
	if err := pl.z.disabledErr(); err != nil {
		return Answer{Zone: zn, Query: pl.a.Query, Err: err}
	}
	return pl.a
}

// SiteResult is one site's part of a score.
type SiteResult struct {
	Site    Site
	Answer  Answer
	Matched bool // the answer matches the site's filter: Weight counts
}

// Score is a client's combined DNS list score (postscreen's DNSBL score).
type Score struct {
	Total   int
	Results []SiteResult // in the order of the sites
}

// Top returns the matching site with the highest positive weight (the
// first of equals): the list a rejection names. ok is false when no site
// with a positive weight matched.
func (s Score) Top() (r SiteResult, ok bool) {
	for _, x := range s.Results {
		if x.Matched && x.Site.Weight > 0 && (!ok || x.Site.Weight > r.Site.Weight) {
			r, ok = x, true
		}
	}
	return r, ok
}

// Score looks ip up in the zones of sites, each zone once and all in
// parallel, and adds the weights of the sites whose filter matches
// (postconf(5) postscreen_dnsbl_sites: a zone listed several times with
// different filters counts once per matching entry). p, when it holds the
// lookups of ip, is used instead of new lookups.
func (c *Client) Score(ctx context.Context, ip netip.Addr, sites []Site, p *Pending) Score {
	ip = ip.Unmap()
	if p == nil || p.ip != ip {
		p = &Pending{c: c, ip: ip}
	}
	var zones []string
	index := map[string]int{}
	for _, s := range sites {
		if _, ok := index[s.Zone]; !ok {
			index[s.Zone] = len(zones)
			zones = append(zones, s.Zone)
		}
	}
	answers := make([]Answer, len(zones))
	var wg sync.WaitGroup
	for i, zn := range zones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = p.Lookup(ctx, zn)
		}()
	}
	wg.Wait()
	var sc Score
	for _, s := range sites {
		a := answers[index[s.Zone]]
		m := a.Match(s.Filter)
		if m {
			sc.Total += s.Weight
		}
		sc.Results = append(sc.Results, SiteResult{Site: s, Answer: a, Matched: m})
	}
	return sc
}
