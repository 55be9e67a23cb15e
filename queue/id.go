package queue

import (
	"sync"
	"time"
)

// Queue IDs play the role of Postfix's long queue IDs
// (enable_long_queue_ids): unique for the life of the spool, sortable by
// time, and safe as file names. An ID is 12 characters of base 32 (Crockford
// alphabet, in ASCII order) encoding a 60-bit count of microseconds since the
// Unix epoch. The generator never hands out the same value twice: within the
// process it counts up when the clock stalls or steps back, and Open floors it
// with the largest ID already on disk, so a clock step back across a restart
// cannot collide with a queued file either.

const (
	idLen      = 12
	idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)

type idGen struct {
	mu   sync.Mutex
	last uint64
}

func (g *idGen) next(now time.Time) string {
	t := uint64(now.UnixMicro())
	g.mu.Lock()
	if t <= g.last {
		t = g.last + 1
	}
	g.last = t
	g.mu.Unlock()
	return encodeID(t)
}

// floor makes every later ID sort after id.
func (g *idGen) floor(id string) {
	v, ok := decodeID(id)
	if !ok {
		return
	}
	g.mu.Lock()
	if v > g.last {
		g.last = v
	}
	g.mu.Unlock()
}

func encodeID(v uint64) string {
	var b [idLen]byte
	for i := idLen - 1; i >= 0; i-- {
		b[i] = idAlphabet[v&31]
		v >>= 5
	}
	return string(b[:])
}

func decodeID(s string) (uint64, bool) {
	if len(s) != idLen {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := idDigit(s[i])
		if d < 0 {
			return 0, false
		}
		v = v<<5 | uint64(d)
	}
	return v, true
}

func idDigit(c byte) int {
	for i := 0; i < len(idAlphabet); i++ {
		if idAlphabet[i] == c {
			return i
		}
	}
	return -1
}

// validID reports whether s is a queue ID; tools use it to refuse path
// tricks ("../x") before touching the spool.
func validID(s string) bool {
	_, ok := decodeID(s)
	return ok
}
