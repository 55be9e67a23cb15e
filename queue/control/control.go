// Package control is the daemon's local control socket: the queue tools
// (`mxfront queue ...`) send their requests there while the daemon runs,
// so that listing, holding, deleting or flushing mail acts on the live
// schedule instead of on files under it (Postfix's showq and qmgr fifo,
// made one small protocol).
//
// The socket is a UNIX-domain stream socket in the queue directory
// (Dir/control, mode 0600: only the spool's owner may use it). A client
// sends one request, a JSON object on one line, and reads JSON response
// lines: zero or more {"item": ...} lines (list), then one final line with
// "done": true carrying the result or "error". The connection then closes.
package control

import (
	"context"
	"errors"
	"time"

	"github.com/mxfront/mxfront/queue"
)

// SocketName is the socket's name in the queue directory.
const SocketName = "control"

// Backend is what the control socket serves: *queue.Queue, running in the
// daemon or opened with queue.OpenOffline. *Client implements it too, so
// the tools work the same way with and without a daemon.
type Backend interface {
	List(ctx context.Context, f queue.Filter, fn func(*queue.Item) error) error
	Show(ctx context.Context, id string) (*queue.Item, []byte, error)
	Apply(ctx context.Context, op queue.Op, sel queue.Selection) ([]queue.OpResult, error)
	Shape(ctx context.Context, f queue.Filter, by string) (*queue.Shape, error)
	FlushAll(ctx context.Context) (int, error)
	FlushUnit(unit string) (int, error)
	HoldUnit(unit, reason string) error
	ReleaseUnit(unit string) (int, error)
	UnitHolds() []queue.UnitHold
}

var _ Backend = (*queue.Queue)(nil)
var _ Backend = (*Client)(nil)

// Request operations.
const (
	opPing        = "ping"
	opList        = "list"
	opShow        = "show"
	opApply       = "apply"
	opShape       = "shape"
	opFlushAll    = "flush"
	opFlushUnit   = "flush-unit"
	opHoldUnit    = "hold-unit"
	opReleaseUnit = "release-unit"
	opUnitHolds   = "unit-holds"
)

// request is one client request.
type request struct {
	Op     string          `json:"op"`
	Filter queue.Filter    `json:"filter,omitzero"`
	ID     string          `json:"id,omitempty"`
	Action queue.Op        `json:"action,omitempty"`
	Sel    queue.Selection `json:"selection,omitzero"`
	Unit   string          `json:"unit,omitempty"`
	Reason string          `json:"reason,omitempty"`
	By     string          `json:"by,omitempty"`
}

// response is one line of a reply.
type response struct {
	Item *queue.Item `json:"item,omitempty"` // list: one per line
	Done bool        `json:"done,omitempty"` // the last line

	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"` // Error wraps queue.ErrNotFound
	Corrupt  bool   `json:"corrupt,omitempty"`   // Error wraps queue.ErrCorrupt

	ShowItem *queue.Item      `json:"show,omitempty"`
	Content  []byte           `json:"content,omitempty"`
	Results  []queue.OpResult `json:"results,omitempty"`
	Shape    *queue.Shape     `json:"shape,omitempty"`
	Holds    []queue.UnitHold `json:"holds,omitempty"`
	Count    int              `json:"count,omitempty"`
}

// Timeouts of the protocol.
const (
	// requestTimeout bounds the wait for a client's request line.
	requestTimeout = 10 * time.Second
	// writeTimeout bounds each response write: a client that stops
	// reading does not hold a listing open forever.
	writeTimeout = 30 * time.Second
	// maxRequest bounds a request line (a selection of many IDs fits).
	maxRequest = 16 << 20
)

// errorOf is the response for err.
func errorOf(err error) *response {
	return &response{Done: true, Error: err.Error(),
		NotFound: errors.Is(err, queue.ErrNotFound), Corrupt: errors.Is(err, queue.ErrCorrupt)}
}
