package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mxfront/mxfront/queue"
)

// Listen creates the control socket at path (normally Dir/control), mode
// 0600. A socket file left by a daemon that was killed is removed first;
// the caller must hold the spool lock, so no live daemon owns it.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: %w", err)
	}
	return ln, nil
}

// Server answers requests on a control socket.
type Server struct {
	b   Backend
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	ln net.Listener
}

// NewServer returns a Server for b. A nil logger discards.
func NewServer(b Backend, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{b: b, log: logger, ctx: ctx, cancel: cancel}
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("control: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

// Close stops accepting, cancels requests in progress, and waits for them.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	c.SetReadDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReaderSize(c, 64<<10)
	var line []byte
	for {
		part, isPrefix, err := br.ReadLine()
		if err != nil {
			if len(line) == 0 {
				return // nothing sent: a probe
			}
			break
		}
		line = append(line, part...)
		if len(line) > maxRequest {
			s.write(c, errorOf(errors.New("control: request too long")))
			return
		}
		if !isPrefix {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		s.write(c, errorOf(fmt.Errorf("control: bad request: %v", err)))
		return
	}
	s.log.Debug("control request", "op", req.Op)
	w := &lineWriter{c: c, bw: bufio.NewWriterSize(c, 64<<10)}
	w.write(s.handle(ctx, w, &req))
	w.flush()
}

// lineWriter writes response lines through a buffer, each write under
// writeTimeout.
type lineWriter struct {
	c   net.Conn
	bw  *bufio.Writer
	err error
}

func (w *lineWriter) write(r *response) error {
	if w.err != nil {
		return w.err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := w.bw.Write(append(b, '\n')); err != nil {
		w.err = err
	}
	return w.err
}

func (w *lineWriter) flush() {
	if w.err == nil {
		w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
		w.err = w.bw.Flush()
	}
}

// handle runs one request; list items are written as they come, the
// returned response is the final line.
func (s *Server) handle(ctx context.Context, w *lineWriter, req *request) *response {
	done := &response{Done: true}
	var err error
	switch req.Op {
	case opPing:
	case opList:
		err = s.b.List(ctx, req.Filter, func(it *queue.Item) error {
			return w.write(&response{Item: it})
		})
	case opShow:
		done.ShowItem, done.Content, err = s.b.Show(ctx, req.ID)
		if err != nil && done.ShowItem != nil {
			// A damaged message is still shown, with the error.
			r := errorOf(err)
			r.ShowItem, r.Content = done.ShowItem, done.Content
			return r
		}
	case opApply:
		done.Results, err = s.b.Apply(ctx, req.Action, req.Sel)
	case opShape:
		done.Shape, err = s.b.Shape(ctx, req.Filter, req.By)
	case opFlushAll:
		done.Count, err = s.b.FlushAll(ctx)
	case opFlushUnit:
		done.Count, err = s.b.FlushUnit(req.Unit)
	case opHoldUnit:
		err = s.b.HoldUnit(req.Unit, req.Reason)
	case opReleaseUnit:
		done.Count, err = s.b.ReleaseUnit(req.Unit)
	case opUnitHolds:
		done.Holds = s.b.UnitHolds()
	default:
		err = fmt.Errorf("control: unknown operation %q", req.Op)
	}
	if err != nil {
		s.log.Debug("control request failed", "op", req.Op, "err", err)
		return errorOf(err)
	}
	return done
}

func (s *Server) write(c net.Conn, r *response) {
	w := &lineWriter{c: c, bw: bufio.NewWriter(c)}
	w.write(r)
	w.flush()
}

// SocketPath is the control socket of the queue in dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }
