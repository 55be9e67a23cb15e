package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mxfront/mxfront/queue"
)

// ErrNoDaemon means nothing answers on the control socket: the daemon is
// not running (the tools then work on the spool directly).
var ErrNoDaemon = errors.New("control: the daemon is not running")

// dialTimeout bounds connecting to the socket.
const dialTimeout = 5 * time.Second

// Client talks to a daemon's control socket. Each call uses a connection
// of its own. It implements Backend.
type Client struct {
	path string
}

// Dial checks that a daemon answers on the socket at path and returns a
// Client for it. When no socket exists or nobody listens on it, the error
// wraps ErrNoDaemon.
func Dial(ctx context.Context, path string) (*Client, error) {
	c := &Client{path: path}
	if err := c.do(ctx, &request{Op: opPing}, nil, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// do sends req and reads the reply; item lines go to onItem, the final line
// to final.
func (c *Client) do(ctx context.Context, req *request, onItem func(*queue.Item) error, final func(*response)) error {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		var se interface{ Timeout() bool }
		if errors.As(err, &se) && se.Timeout() {
			return fmt.Errorf("control: %s: %w", c.path, err)
		}
		return fmt.Errorf("%w (%v)", ErrNoDaemon, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control: send request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 256<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("control: the daemon closed the connection before answering: %w", err)
		}
		var r response
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("control: bad response: %w", err)
		}
		if r.Item != nil && onItem != nil {
			if err := onItem(r.Item); err != nil {
				return err
			}
		}
		if !r.Done {
			continue
		}
		if final != nil {
			final(&r)
		}
		if r.Error != "" {
			return remoteError(&r)
		}
		return nil
	}
}

// remoteError rebuilds the daemon's error so that errors.Is works for
// queue.ErrNotFound and queue.ErrCorrupt.
func remoteError(r *response) error {
	switch {
	case r.NotFound:
		return &wrapped{msg: r.Error, is: queue.ErrNotFound}
	case r.Corrupt:
		return &wrapped{msg: r.Error, is: queue.ErrCorrupt}
	}
	return errors.New(r.Error)
}

type wrapped struct {
	msg string
	is  error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.is }

// List implements Backend.
func (c *Client) List(ctx context.Context, f queue.Filter, fn func(*queue.Item) error) error {
	return c.do(ctx, &request{Op: opList, Filter: f}, fn, nil)
}

// Show implements Backend.
func (c *Client) Show(ctx context.Context, id string) (*queue.Item, []byte, error) {
	var it *queue.Item
	var content []byte
	err := c.do(ctx, &request{Op: opShow, ID: id}, nil, func(r *response) { it, content = r.ShowItem, r.Content })
	return it, content, err
}

// Apply implements Backend.
func (c *Client) Apply(ctx context.Context, op queue.Op, sel queue.Selection) ([]queue.OpResult, error) {
	var res []queue.OpResult
	err := c.do(ctx, &request{Op: opApply, Action: op, Sel: sel}, nil, func(r *response) { res = r.Results })
	return res, err
}

// Shape implements Backend.
func (c *Client) Shape(ctx context.Context, f queue.Filter, by string) (*queue.Shape, error) {
	var s *queue.Shape
	err := c.do(ctx, &request{Op: opShape, Filter: f, By: by}, nil, func(r *response) { s = r.Shape })
	return s, err
}

// FlushAll implements Backend.
func (c *Client) FlushAll(ctx context.Context) (int, error) {
	return c.count(ctx, &request{Op: opFlushAll})
}

// FlushUnit implements Backend.
func (c *Client) FlushUnit(unit string) (int, error) {
	return c.count(context.Background(), &request{Op: opFlushUnit, Unit: unit})
}

// HoldUnit implements Backend.
func (c *Client) HoldUnit(unit, reason string) error {
	return c.do(context.Background(), &request{Op: opHoldUnit, Unit: unit, Reason: reason}, nil, nil)
}

// ReleaseUnit implements Backend.
func (c *Client) ReleaseUnit(unit string) (int, error) {
	return c.count(context.Background(), &request{Op: opReleaseUnit, Unit: unit})
}

// UnitHolds implements Backend; a failure to ask gives nil.
func (c *Client) UnitHolds() []queue.UnitHold {
	var h []queue.UnitHold
	c.do(context.Background(), &request{Op: opUnitHolds}, nil, func(r *response) { h = r.Holds })
	return h
}

func (c *Client) count(ctx context.Context, req *request) (int, error) {
	n := 0
	err := c.do(ctx, req, nil, func(r *response) { n = r.Count })
	return n, err
}
