package queue

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Shape is the queue's distribution by destination and age, like Postfix's
// qshape(1): one row per destination, one column per age bucket (minutes
// since arrival: up to 5, 10, 20, ..., 1280, and older), counting messages
// (a message with pending recipients for two destinations counts in both
// rows, once in TOTAL).
type Shape struct {
	By      string     `json:"by"`      // unit, domain or sender
	Buckets []string   `json:"buckets"` // column titles: "T", "5", ..., "1280", "1280+"
	Rows    []ShapeRow `json:"rows"`    // TOTAL first, then by count, largest first
}

// ShapeRow is one destination.
type ShapeRow struct {
	Name   string `json:"name"`
	Total  int    `json:"total"`
	Counts []int  `json:"counts"` // per bucket, without the total
}

// Shape groupings.
const (
	ShapeByUnit   = "unit"   // Item recipients' Dest
	ShapeByDomain = "domain" // recipient domain (qshape's default)
	ShapeBySender = "sender" // sender domain (qshape -s)
)

// shapeMinutes are qshape's default bucket limits.
var shapeMinutes = []int{5, 10, 20, 40, 80, 160, 320, 640, 1280}

// ShapeBuilder accumulates items into a Shape.
type ShapeBuilder struct {
	by    string
	now   time.Time
	total []int
	rows  map[string][]int
}

// NewShapeBuilder starts a shape grouped by by (ShapeBy*) at time now.
func NewShapeBuilder(by string, now time.Time) (*ShapeBuilder, error) {
	switch by {
	case "":
		by = ShapeByUnit
	case ShapeByUnit, ShapeByDomain, ShapeBySender:
	default:
		return nil, fmt.Errorf("queue: shape: cannot group by %q (want unit, domain or sender)", by)
	}
	return &ShapeBuilder{by: by, now: now, total: make([]int, len(shapeMinutes)+1), rows: map[string][]int{}}, nil
}

// Add counts one item.
func (b *ShapeBuilder) Add(it *Item) {
	age := b.now.Sub(it.Arrival)
	bucket := len(shapeMinutes)
	for i, m := range shapeMinutes {
		if age <= time.Duration(m)*time.Minute {
			bucket = i
			break
		}
	}
	b.total[bucket]++
	var names []string
	add := func(n string) {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	switch b.by {
	case ShapeBySender:
		add(domainOf(it.Sender, "MAILER-DAEMON"))
	default:
		for _, r := range it.Rcpts {
			if !r.Pending() {
				continue
			}
			if b.by == ShapeByDomain {
				add(domainOf(r.Addr, "?"))
			} else if r.Dest != "" {
				add(r.Dest)
			} else {
				add("(not yet routed)")
			}
		}
		if len(names) == 0 {
			add("(" + it.State + ")")
		}
	}
	for _, n := range names {
		row := b.rows[n]
		if row == nil {
			row = make([]int, len(b.total))
			b.rows[n] = row
		}
		row[bucket]++
	}
}

func domainOf(addr, null string) string {
	if addr == "" {
		return null
	}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return strings.ToLower(addr)
}

// Shape returns the result.
func (b *ShapeBuilder) Shape() *Shape {
	s := &Shape{By: b.by, Buckets: []string{"T"}}
	for _, m := range shapeMinutes {
		s.Buckets = append(s.Buckets, fmt.Sprint(m))
	}
	s.Buckets = append(s.Buckets, fmt.Sprintf("%d+", shapeMinutes[len(shapeMinutes)-1]))
	row := func(name string, counts []int) ShapeRow {
		r := ShapeRow{Name: name, Counts: slices.Clone(counts)}
		for _, c := range counts {
			r.Total += c
		}
		return r
	}
	s.Rows = append(s.Rows, row("TOTAL", b.total))
	var rest []ShapeRow
	for n, c := range b.rows {
		rest = append(rest, row(n, c))
	}
	slices.SortFunc(rest, func(x, y ShapeRow) int {
		if x.Total != y.Total {
			return y.Total - x.Total
		}
		return strings.Compare(x.Name, y.Name)
	})
	s.Rows = append(s.Rows, rest...)
	return s
}

// Shape lists the messages that pass f into a Shape grouped by by.
func (q *Queue) Shape(ctx context.Context, f Filter, by string) (*Shape, error) {
	b, err := NewShapeBuilder(by, q.now())
	if err != nil {
		return nil, err
	}
	if err := q.List(ctx, f, func(it *Item) error { b.Add(it); return nil }); err != nil {
		return nil, err
	}
	return b.Shape(), nil
}
