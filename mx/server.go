// Package mx is mxfront's SMTP server: ESMTP on go-smtp with Postfix's
// limits, replies and logging, recipient checks through package policy, and
// durable queueing through a Spool before every 250.
package mx

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
)

// Bare newline handling (Postfix smtpd_forbid_bare_newline).
const (
	// BareNewlineNormalize accepts lines ending in bare LF or bare CR and
	// queues them with CRLF (Postfix "normalize", our default).
	BareNewlineNormalize = "normalize"
	// BareNewlineReject refuses such content with 550 5.5.2 (Postfix "yes"
	// / "reject").
	BareNewlineReject = "reject"
)

// Config configures a Server. Zero values are documented per field; package
// cmd fills in Postfix's defaults.
type Config struct {
	// Hostname is myhostname: banner, Received: header. Required.
	Hostname string
	// Banner is smtpd_banner without the "220 "; empty means
	// "Hostname ESMTP mxfront".
	Banner string
	// MyOrigin qualifies "RCPT TO:<postmaster>"; empty = Hostname.
	MyOrigin string
	// MessageSizeLimit is message_size_limit in bytes; 0 = no limit.
	MessageSizeLimit int64
	// RecipientLimit is smtpd_recipient_limit; 0 = no limit.
	RecipientLimit int
	// Timeout is smtpd_timeout, the limit for each read and write; 0 = none.
	Timeout time.Duration
	// TLSConfig enables STARTTLS when non-nil.
	TLSConfig *tls.Config
	// BareNewline is BareNewlineNormalize (also for "") or BareNewlineReject.
	BareNewline string
	// BareNewlineExclusions is smtpd_forbid_bare_newline_exclusions: when it
	// returns true for a client, BareNewlineReject is relaxed to normalize.
	// Nil: no exclusions.
	BareNewlineExclusions func(ctx context.Context, ip netip.Addr) bool
	// HopcountLimit is hopcount_limit (Received: headers); 0 = no limit.
	HopcountLimit int
	// MaxSessions bounds concurrent sessions; further connections wait in
	// the listen backlog, as with Postfix's process limit. 0 = 1000.
	MaxSessions int
	// PeernameLookup is smtpd_peername_lookup: look up the client's name
	// (forward-confirmed). False: every client is "unknown".
	PeernameLookup bool
	// Resolver is used for the client name lookups; nil = net.DefaultResolver.
	Resolver NameResolver
	// ShutdownGrace bounds how long Shutdown waits for sessions in DATA;
	// the ctx given to Shutdown bounds it too.
	ShutdownGrace time.Duration
	// DNSLists starts each client's DNS list lookups at accept time
	// (mx/rbl.go); nil: none.
	DNSLists DNSListStarter
	// Hygiene holds the session hygiene knobs (error limits, junk
	// commands, VRFY, pipelining, reject footer, per-client limits); its
	// zero value switches them all off (see hygiene.go).
	Hygiene Hygiene
}

// NameResolver is what the server needs for client name lookups.
type NameResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Spool is where accepted mail goes (package queue, adapted by cmd).
type Spool interface {
	Create(ctx context.Context) (Incoming, error)
}

// Admitter is an optional Spool method: asked at MAIL FROM with the SIZE
// the client announced (0 if none), it refuses new mail while the queue is
// short of space (452 4.3.1, Postfix queue_minfree), before any data is
// sent.
type Admitter interface {
	Admit(ctx context.Context, size int64) error
}

// Incoming is one message being received. Commit makes it durable; only
// then is 250 sent.
type Incoming interface {
	ID() string
	io.Writer
	Commit(ctx context.Context, env *envelope.Envelope) error
	Abort()
}

// Checker is what the server needs from package policy: the restriction
// stages, content checks and REDIRECT expansion. *policy.Policy implements
// it; `mxfront explain` calls the same methods.
type Checker interface {
	// DelayReject is smtpd_delay_reject: when true, CheckConnect,
	// CheckHelo and CheckMail do nothing and CheckRcpt runs their lists.
	DelayReject() bool
	CheckConnect(ctx context.Context, req *policy.Request) error
	CheckHelo(ctx context.Context, req *policy.Request) error
	CheckMail(ctx context.Context, req *policy.Request) error
	CheckRcpt(ctx context.Context, req *policy.Request) (*policy.RcptVerdict, error)
	CheckData(ctx context.Context, req *policy.Request) error
	CheckEOD(ctx context.Context, req *policy.Request) error
	// NewContentFilter returns header_checks/body_checks for one message,
	// or nil when there are none.
	NewContentFilter(ctx context.Context, w io.Writer, req *policy.Request) *policy.ContentFilter
	// Redirect expands a REDIRECT target through virtual_alias_maps.
	Redirect(ctx context.Context, to string) ([]envelope.Address, error)
}

// Server is an SMTP server. Create it with New, run it with Serve, stop it
// with Shutdown.
type Server struct {
	cfg    Config
	spool  Spool
	policy Checker
	log    *slog.Logger
	smtp   *smtp.Server
	sem    chan struct{}

	ctx    context.Context // cancelled by Shutdown's end: aborts sessions
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool

	anvil *anvil // per-client connection/rate limits; nil: none
}

// New returns a Server.
func New(cfg Config, spool Spool, checker Checker, logger *slog.Logger) (*Server, error) {
	if cfg.Hostname == "" {
		return nil, errors.New("mx: Hostname (myhostname) is required")
	}
	if spool == nil || checker == nil {
		return nil, errors.New("mx: Spool and Checker are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MyOrigin == "" {
		cfg.MyOrigin = cfg.Hostname
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.BareNewline == "" {
		cfg.BareNewline = BareNewlineNormalize
	}
	if cfg.BareNewline != BareNewlineNormalize && cfg.BareNewline != BareNewlineReject {
		return nil, errors.New("mx: BareNewline must be normalize or reject")
	}
	s := &Server{
		cfg:    cfg,
		spool:  spool,
		policy: checker,
		log:    logger,
		sem:    make(chan struct{}, cfg.MaxSessions),
		conns:  map[*conn]struct{}{},
	}
	if err := cfg.Hygiene.check(); err != nil {
		return nil, err
	}
	s.cfg.Hygiene = cfg.Hygiene
	s.anvil = newAnvil(cfg.Hygiene)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ss := smtp.NewServer(smtp.BackendFunc(s.newSession))
	ss.Domain = cfg.Hostname
	// Lines of any length are accepted in content (Postfix keeps long
	// lines intact); conn bounds command lines itself.
	ss.MaxLineLength = 0
	ss.MaxMessageBytes = cfg.MessageSizeLimit
	ss.MaxRecipients = 0 // counted by the session, with Postfix's reply
	ss.EnableSMTPUTF8 = true
	ss.EnableDSN = true // RFC 3461: NOTIFY, ORCPT, RET, ENVID go into the envelope
	ss.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	// Timeouts are per read/write in conn, not per command (go-smtp #196).
	ss.ReadTimeout, ss.WriteTimeout = 0, 0
	s.smtp = ss
	return s, nil
}

func (s *Server) timeout() time.Duration { return s.cfg.Timeout }

func (s *Server) banner() string {
	b := s.cfg.Banner
	if b == "" {
		b = s.cfg.Hostname + " ESMTP mxfront"
	}
	return "220 " + b
}

// Serve accepts connections on l until Shutdown. It returns
// smtp.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.smtp.Serve(&listener{Listener: l, srv: s})
}

// Shutdown stops accepting, answers idle clients 421 4.3.2, lets sessions
// in DATA finish until ctx ends, then closes what is left. Accepted mail is
// in the queue: nothing is lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.interruptIdle()
	}
	if s.cfg.ShutdownGrace > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ShutdownGrace)
		defer cancel()
	}
	err := s.smtp.Shutdown(ctx)
	s.cancel()
	if err != nil {
		s.smtp.Close()
	}
	return err
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	_, ok := s.conns[c]
	if ok {
		delete(s.conns, c)
		<-s.sem
	}
	s.mu.Unlock()
	if ok {
		if c.info.anvilKey.IsValid() {
			s.anvil.disconnect(c.info.anvilKey)
		}
		s.log.Info("disconnect", "conn", c.info.id, "client", c.info.clientString(), "summary", c.info.summary())
	}
}

type listener struct {
	net.Listener
	srv *Server
}

// Accept waits for a session slot, then wraps the connection and starts the
// client name lookup in the background.
func (l *listener) Accept() (net.Conn, error) {
	s := l.srv
	select {
	case s.sem <- struct{}{}:
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
	nc, err := l.Listener.Accept()
	if err != nil {
		<-s.sem
		return nil, err
	}
	ap := netip.MustParseAddrPort("0.0.0.0:0")
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	ci := &connInfo{id: newConnID(), remote: ap, start: time.Now(), name: make(chan struct{}), pstate: &policy.State{}}
	c := &conn{raw: nc, srv: s, info: ci}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		<-s.sem
		nc.Close()
		return nil, net.ErrClosed
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.startDNSLists(ci)
	go s.lookupName(ci)
	return c, nil
}

// lookupName finds the client's forward-confirmed name (Postfix: reverse
// lookup, then the name must resolve back to the address), else "unknown".
func (s *Server) lookupName(ci *connInfo) {
	defer func() {
		close(ci.name)
		s.log.Info("connect", "conn", ci.id, "client", ci.clientString())
	}()
	ci.hostname = "unknown"
	ci.peer = policy.Peer{Name: "unknown", ReverseName: "unknown"}
	ip := ci.remote.Addr().Unmap()
	if !s.cfg.PeernameLookup || !ip.IsValid() {
		return
	}
	ci.peer = policy.LookupPeer(s.ctx, s.cfg.Resolver, ip)
	ci.hostname = ci.peer.Name
}

func newConnID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
