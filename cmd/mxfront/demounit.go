package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// demoUnit is a tiny backend "unit" for `mxfront demo`: an SMTP or LMTP
// server that stores each accepted message in the recipient's Maildir
// (maildir(5): write in tmp/, rename into new/). It knows its users; others
// get 550 5.1.1 like a real unit.
type demoUnit struct {
	name  string
	dir   string
	users map[string]bool
	lmtp  bool
	srv   *smtp.Server
	ln    net.Listener
	seq   atomic.Int64
	log   *slog.Logger
}

func startDemoUnit(name, dir string, lmtp bool, users []string, logger *slog.Logger) (*demoUnit, error) {
	u := &demoUnit{name: name, dir: dir, lmtp: lmtp, users: map[string]bool{}, log: logger.With("unit", name)}
	for _, x := range users {
		u.users[strings.ToLower(x)] = true
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(u.maildir(x), sub), 0o755); err != nil {
				return nil, err
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u.ln = ln
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &demoSession{u: u}, nil
	}))
	s.Domain = name
	s.LMTP = lmtp
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	s.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	u.srv = s
	go s.Serve(ln)
	return u, nil
}

func (u *demoUnit) addr() string { return u.ln.Addr().String() }

func (u *demoUnit) host() string { h, _, _ := net.SplitHostPort(u.addr()); return h }

func (u *demoUnit) port() string { _, p, _ := net.SplitHostPort(u.addr()); return p }

func (u *demoUnit) maildir(user string) string {
	return filepath.Join(u.dir, strings.ToLower(user), "Maildir")
}

func (u *demoUnit) close() { u.srv.Close() }

// store writes one message to a user's Maildir.
func (u *demoUnit) store(user string, data []byte) error {
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("%d.M%dR%s.%s", time.Now().Unix(), u.seq.Add(1), hex.EncodeToString(rnd[:]), u.name)
	tmp := filepath.Join(u.maildir(user), "tmp", name)
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(u.maildir(user), "new", name))
}

type demoSession struct {
	u     *demoUnit
	from  string
	rcpts []string
}

func (s *demoSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *demoSession) Logout() error { return nil }
func (s *demoSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *demoSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.u.users[strings.ToLower(to)] {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *demoSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	for _, rc := range s.rcpts {
		hdr := fmt.Sprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", s.from, rc)
		if err := s.u.store(rc, append([]byte(hdr), data...)); err != nil {
			s.u.log.Error("store failed", "to", rc, "err", err)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: cannot store message"}
		}
		s.u.log.Info("stored", "to", rc, "maildir", s.u.maildir(rc))
	}
	return nil
}
