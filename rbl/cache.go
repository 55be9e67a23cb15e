package rbl

import (
	"strings"
	"sync"
	"time"
)

// cache holds answers by query name until they expire. It is bounded:
// when full, expired entries go first, then arbitrary ones.
type cache struct {
	mu  sync.Mutex
	max int
	m   map[string]cacheEntry
}

type cacheEntry struct {
	a   Answer
	exp time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, m: make(map[string]cacheEntry)}
}

func (c *cache) get(q string, now time.Time) (Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[q]
	if !ok {
		return Answer{}, false
	}
	if !now.Before(e.exp) {
		delete(c.m, q)
		return Answer{}, false
	}
	return e.a, true
}

func (c *cache) put(q string, a Answer, now, exp time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[q]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.exp) {
				delete(c.m, k)
			}
		}
		// Still full: drop a tenth (Go's map order is random enough).
		for k := range c.m {
			if len(c.m) < c.max-c.max/10 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[q] = cacheEntry{a, exp}
}

// purge forgets every answer whose name ends in suffix.
func (c *cache) purge(suffix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if strings.HasSuffix(k, suffix) {
			delete(c.m, k)
		}
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
