package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
)

// received is one message as the test server saw it.
type received struct {
	From     string
	Opts     smtp.MailOptions
	Rcpts    []string
	RcptOpts []smtp.RcptOptions
	Data     string
	TLS      bool
}

// script scripts the test server's replies. Maps are keyed by the address
// as go-smtp's server hands it to the backend (quotes removed).
type script struct {
	mail    *smtp.SMTPError
	rcpt    map[string]*smtp.SMTPError
	data    *smtp.SMTPError            // SMTP: reply to the end of DATA
	lmtp    map[string]*smtp.SMTPError // LMTP: per-recipient reply after DATA
	dataHit chan struct{}              // if set, Data blocks until it is closed
}

// testServer is a real go-smtp server (SMTP or LMTP) on a loopback
// listener or a UNIX socket, with scripted replies.
type testServer struct {
	t      *testing.T
	srv    *smtp.Server
	ln     net.Listener
	addr   string // host:port or socket path
	port   int
	script script

	accepted atomic.Int32 // connections accepted
	logouts  atomic.Int32 // sessions ended

	mu    sync.Mutex
	msgs  []received
	conns []net.Conn
	debug bytes.Buffer
}

type serverOpt func(*smtp.Server)

func startServer(t *testing.T, lmtp bool, sc script, opts ...serverOpt) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, lmtp, sc, opts...)
}

func serveOn(t *testing.T, ln net.Listener, lmtp bool, sc script, opts ...serverOpt) *testServer {
	t.Helper()
	ts := &testServer{t: t, script: sc, addr: ln.Addr().String()}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		ts.port = ta.Port
	}
	ts.ln = &countingListener{Listener: ln, ts: ts}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &testSession{ts: ts, tls: isTLS}, nil
	}))
	s.Domain = "unit.example.test"
	s.LMTP = lmtp
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.Debug = lockedWriter{mu: &ts.mu, w: &ts.debug}
	s.ErrorLog = nopLogger{}
	for _, o := range opts {
		o(s)
	}
	ts.srv = s
	go s.Serve(ts.ln)
	t.Cleanup(func() { s.Close() })
	return ts
}

func (ts *testServer) messages() []received {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]received(nil), ts.msgs...)
}

func (ts *testServer) transcript() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.debug.String()
}

// killConns closes the server side of every connection accepted so far.
func (ts *testServer) killConns() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.conns {
		c.Close()
	}
}

type countingListener struct {
	net.Listener
	ts *testServer
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.ts.accepted.Add(1)
		l.ts.mu.Lock()
		l.ts.conns = append(l.ts.conns, c)
		l.ts.mu.Unlock()
	}
	return c, err
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

type testSession struct {
	ts  *testServer
	tls bool
	msg received
}

func (s *testSession) Reset()        { s.msg = received{} }
func (s *testSession) Logout() error { s.ts.logouts.Add(1); return nil }

func (s *testSession) Mail(from string, opts *smtp.MailOptions) error {
	if e := s.ts.script.mail; e != nil {
		return e
	}
	s.msg = received{From: from, TLS: s.tls}
	if opts != nil {
		s.msg.Opts = *opts
	}
	return nil
}

func (s *testSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if e := s.ts.script.rcpt[to]; e != nil {
		return e
	}
	s.msg.Rcpts = append(s.msg.Rcpts, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	s.msg.RcptOpts = append(s.msg.RcptOpts, o)
	return nil
}

func (s *testSession) read(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if ch := s.ts.script.dataHit; ch != nil {
		<-ch
	}
	s.msg.Data = string(b)
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	if err := s.read(r); err != nil {
		return err
	}
	if e := s.ts.script.data; e != nil {
		return e
	}
	s.ts.mu.Lock()
	s.ts.msgs = append(s.ts.msgs, s.msg)
	s.ts.mu.Unlock()
	return nil
}

func (s *testSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if err := s.read(r); err != nil {
		return err
	}
	var ok []string
	for _, rc := range s.msg.Rcpts {
		if s.ts.script.lmtp[rc] == nil {
			ok = append(ok, rc)
		}
	}
	m := s.msg
	m.Rcpts = ok
	// Recorded before the replies go out (SetStatus writes at once), so
	// that a client that has its 250 finds the message here.
	s.ts.mu.Lock()
	s.ts.msgs = append(s.ts.msgs, m)
	s.ts.mu.Unlock()
	for _, rc := range s.msg.Rcpts {
		if e := s.ts.script.lmtp[rc]; e != nil {
			status.SetStatus(rc, e)
		} else {
			status.SetStatus(rc, nil)
		}
	}
	return nil
}

// newRelay builds a Relay for tests; its log goes to t until the test ends.
func newRelay(t *testing.T, cfg Config) *Relay {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "mx1.example.test"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	tw := &testWriter{t: t}
	t.Cleanup(tw.stop)
	r, err := New(cfg, slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

const testBody = "Received: from client.example.test by mx1.example.test\r\n" +
	"Subject: test\r\n" +
	"\r\n" +
	"Hello.\r\n" +
	".leading dot\r\n" +
	"..two dots\r\n" +
	"end\r\n"

// delivery builds a Delivery of body from sender to rcpts over route.
func delivery(route envelope.Route, body, from string, rcpts ...string) *queue.Delivery {
	env := &envelope.Envelope{
		ID:   "4ABCDEF",
		From: envelope.MustParse(from),
		Size: int64(len(body)),
	}
	for _, r := range rcpts {
		a := envelope.MustParse(r)
		env.Rcpts = append(env.Rcpts, envelope.Recipient{Addr: a, Orig: a})
	}
	return &queue.Delivery{
		Env:   env,
		Route: route,
		Rcpts: env.Rcpts,
		Body:  func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}

// tcpRoute routes to loopback servers, in failover order.
func tcpRoute(transport string, addrs ...string) envelope.Route {
	rt := envelope.Route{Transport: transport}
	var hops []string
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			panic(err)
		}
		p, _ := strconv.Atoi(port)
		rt.Hosts = append(rt.Hosts, envelope.Host{Network: "tcp", Name: host, Port: p})
		hops = append(hops, "inet:["+host+"]:"+port)
	}
	rt.Nexthop = strings.Join(hops, ",")
	return rt
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// rawServer accepts connections and hands each to handle; it stops at
// test end.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	return ln.Addr().String()
}

// relayName is the Result.Relay of a loopback TCP server.
func relayName(addr string) string {
	h, p, _ := net.SplitHostPort(addr)
	return h + "[" + h + "]:" + p
}

// checkResult compares one result with an expected code, enhanced code
// and text fragment.
func checkResult(t *testing.T, r queue.Result, code int, enh string, text string) {
	t.Helper()
	if r.Reply.Code != code || r.Reply.Enhanced.String() != enh || !strings.Contains(r.Reply.Text, text) {
		t.Errorf("%s: got %q (err %v), want %d %s ...%s...", r.Rcpt, r.Reply.String(), r.Err, code, enh, text)
	}
}

// selfSigned makes a TLS certificate for 127.0.0.1 and unit.example.test.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "unit.example.test"},
		DNSNames:     []string{"unit.example.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeResolver answers MX and address lookups from maps; names absent
// from both are NXDOMAIN, names in fail are SERVFAIL.
type fakeResolver struct {
	mx    map[string][]*net.MX
	hosts map[string][]string
	fail  map[string]bool

	mu      sync.Mutex
	queries []string
}

func (f *fakeResolver) note(q string) {
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
}

func (f *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	f.note("MX " + name)
	if f.fail[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if mx, ok := f.mx[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeResolver) LookupHost(_ context.Context, name string) ([]string, error) {
	f.note("A " + name)
	if f.fail[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if a, ok := f.hosts[name]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// fakeDialer records dial attempts and sends them to real loopback
// listeners: to maps "ip:port" to a listener address, refuse lists
// addresses that get ECONNREFUSED.
type fakeDialer struct {
	to     map[string]string
	refuse map[string]bool

	mu     sync.Mutex
	dialed []string
}

func (f *fakeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	f.dialed = append(f.dialed, addr)
	f.mu.Unlock()
	if f.refuse[addr] {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	real, ok := f.to[addr]
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("no route to %s in test", addr)}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", real)
}

func (f *fakeDialer) attempts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dialed...)
}

// scriptedServer runs a hand-written SMTP/LMTP peer: it sends greeting,
// then answers each command line (and "." at the end of DATA content)
// with reply(line); an empty answer hangs up, and so does one ending in
// hangUp, after it is written.
const hangUp = "\x00"

func scriptedServer(t *testing.T, greeting string, reply func(line string) string) string {
	t.Helper()
	return rawServer(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		io.WriteString(c, greeting)
		inData := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if inData && line != "." {
				continue
			}
			inData = false
			ans := reply(line)
			if ans == "" {
				return
			}
			io.WriteString(c, strings.TrimSuffix(ans, hangUp))
			if strings.HasSuffix(ans, hangUp) {
				return
			}
			if strings.EqualFold(line, "DATA") && strings.HasPrefix(ans, "354") {
				inData = true
			}
		}
	})
}
