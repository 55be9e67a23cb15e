// Command rblbench measures what a dead DNS list costs mxfront: the same
// load with three healthy lists (a), then with one list that never answers
// (b), each against a fresh mxfront process. Every session comes from a
// new client address (127.100.0.0/16), so every session looks every list
// up. It prints throughput and session times for both, and checks the
// goals: after the first dnsbl_timeout window, (b) keeps at least 90% of
// (a)'s throughput, and (b)'s p99 session time exceeds (a)'s by at most one
// dnsbl_timeout.
//
// Run by scripts/bench.sh:
//
//	go run ./scripts/rblbench -mxfront bin/mxfront -sink 127.0.0.1:PORT -work DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

func main() {
	var (
		bin      = flag.String("mxfront", "bin/mxfront", "mxfront binary")
		sink     = flag.String("sink", "", "host:port of the SMTP sink mxfront relays to (required)")
		work     = flag.String("work", "", "work directory (default: a temporary one)")
		measure  = flag.Duration("measure", 10*time.Second, "how long each phase is measured after its first timeout window")
		conc     = flag.Int("c", 20, "parallel sessions")
		timeout  = flag.Duration("timeout", 3*time.Second, "dnsbl_timeout")
		latency  = flag.Duration("latency", time.Millisecond, "answer latency of the healthy lists")
		maxPhase = flag.Duration("phase-timeout", 300*time.Second, "bound for one phase")
	)
	flag.Parse()
	if *sink == "" {
		fail(errors.New("-sink is required"))
	}
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "rblbench")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	srv, err := startDNS(*latency)
	if err != nil {
		fail(err)
	}
	defer srv.close()
	fmt.Printf("rblbench: %d parallel sessions, one message each, each from a new address; dnsbl_timeout %v; %v measured after the first 1.5 x dnsbl_timeout; DNS latency %v\n",
		*conc, *timeout, *measure, *latency)
	var res [2]result
	for i, zones := range [][]string{{"bl1.bench", "bl2.bench", "bl3.bench"}, {"bl1.bench", "bl2.bench", "dead.bench"}} {
		name := []string{"a: 3 healthy lists", "b: 1 list never answers"}[i]
		ctx, cancel := context.WithTimeout(context.Background(), *maxPhase)
		r, err := phase(ctx, *bin, filepath.Join(dir, fmt.Sprintf("phase%d", i)), srv.addr, *sink, zones, *timeout, *measure, *conc)
		cancel()
		if err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		res[i] = r
		fmt.Printf("rbl %-26s %6d sessions, %6.0f msgs/s overall, %6.0f msgs/s after the first window, session p50 %v p99 %v max %v, %d failed\n",
			name, r.sessions, r.overall, r.steady, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond), r.failed)
	}
	ratio := res[1].steady / res[0].steady
	growth := res[1].p99 - res[0].p99
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	fmt.Printf("rbl dead list: throughput after the first timeout window %.2f of healthy (goal >= 0.90: %s); p99 session time %+v (goal <= %v: %s)\n",
		ratio, verdict(ratio >= 0.9), growth.Round(time.Millisecond), *timeout, verdict(growth <= *timeout))
	if res[0].failed+res[1].failed > 0 {
		fail(fmt.Errorf("%d sessions failed", res[0].failed+res[1].failed))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rblbench:", err)
	os.Exit(1)
}

// --- DNS ------------------------------------------------------------------

type dnsServer struct {
	addr    string
	servers []*dns.Server
}

// startDNS serves the bench zones: *.bench lists nothing but the RFC 5782
// test entry 127.0.0.2 (negative answers carry a SOA, cached 60 s), after
// latency; dead.bench never answers.
func startDNS(latency time.Duration) (*dnsServer, error) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if len(r.Question) != 1 {
			return
		}
		name := strings.ToLower(r.Question[0].Name)
		if strings.HasSuffix(name, ".dead.bench.") {
			return
		}
		time.Sleep(latency)
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		zone := name[strings.Index(name, ".bl")+1:]
		if strings.HasPrefix(name, "2.0.0.127.") && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(127, 0, 0, 2)}}
		} else {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
				Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}}
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	s := &dnsServer{addr: pc.LocalAddr().String()}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		s.servers = append(s.servers, srv)
	}
	return s, nil
}

func (s *dnsServer) close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
}

// --- mxfront --------------------------------------------------------------

type result struct {
	sessions        int
	overall, steady float64 // msgs/s
	p50, p99, max   time.Duration
	failed          int
}

const config = `myhostname = "mx.bench.test"
mynetworks = []
relay_domains = ["example.test"]
relay_recipient_maps = ["inline:{ rcpt@example.test=OK }"]
transport_maps = ["inline:{ example.test=smtp:[%[2]s]:%[3]s }"]
queue_directory = "%[1]s/queue"
smtpd_peername_lookup = false
dns_servers = ["%[4]s"]
dnsbl_timeout = "%[5]s"
smtpd_recipient_restrictions = [%[6]s]

[log]
level = "warn"
`

// phase runs one mxfront with the given lists and the load against it.
func phase(ctx context.Context, bin, dir, dnsAddr, sink string, zones []string, timeout, measure time.Duration, conc int) (result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	sinkHost, sinkPort, err := net.SplitHostPort(sink)
	if err != nil {
		return result{}, err
	}
	var restr []string
	for _, z := range zones {
		restr = append(restr, fmt.Sprintf("%q", "reject_rbl_client "+z))
	}
	cfg := filepath.Join(dir, "mxfront.toml")
	body := fmt.Sprintf(config, dir, sinkHost, sinkPort, dnsAddr, fmt.Sprintf("%ds", int(timeout.Seconds())), strings.Join(restr, ", "))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return result{}, err
	}
	// The listener is passed by socket activation: no port race.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	logf, err := os.Create(filepath.Join(dir, "mxfront.log"))
	if err != nil {
		return result{}, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "-config", cfg)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	addr := l.Addr().String()
	if err := waitBanner(ctx, addr); err != nil {
		return result{}, fmt.Errorf("mxfront did not start: %w (log: %s)", err, filepath.Join(dir, "mxfront.log"))
	}
	return load(ctx, addr, conc, timeout, measure), nil
}

func waitBanner(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 64)
			k, _ := io.ReadAtLeast(c, buf, 4)
			c.Close()
			if k >= 3 && string(buf[:3]) == "220" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type sample struct {
	start, dur time.Duration
	err        error
}

// maxSessions bounds a phase (distinct client addresses in 127.100/16).
const maxSessions = 250 * 256

// load runs sessions, conc at a time, each from its own address, for
// 1.5 x window + measure.
func load(ctx context.Context, addr string, conc int, window, measure time.Duration) result {
	jobs := make(chan int)
	var mu sync.Mutex
	var samples []sample
	t0 := time.Now()
	// "After the first timeout window": sessions that start once the
	// first dnsbl_timeout (plus a margin) has passed.
	from := window + window/2
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ip := netip.AddrFrom4([4]byte{127, 100, byte(i / 250), byte(i%250 + 2)})
				start := time.Now()
				err := session(ctx, addr, ip)
				mu.Lock()
				samples = append(samples, sample{start.Sub(t0), time.Since(start), err})
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < maxSessions && time.Since(t0) < from+measure && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	total := time.Since(t0)
	r := result{sessions: len(samples)}
	var durs []time.Duration
	steadyN, steadyEnd := 0, time.Duration(0)
	for _, s := range samples {
		if s.err != nil {
			r.failed++
			if r.failed <= 3 {
				fmt.Fprintln(os.Stderr, "rblbench: session:", s.err)
			}
			continue
		}
		durs = append(durs, s.dur)
		if s.start >= from {
			steadyN++
			steadyEnd = max(steadyEnd, s.start+s.dur)
		}
	}
	slices.Sort(durs)
	if len(durs) > 0 {
		r.p50 = durs[len(durs)/2]
		r.p99 = durs[len(durs)*99/100]
		r.max = durs[len(durs)-1]
	}
	r.overall = float64(len(durs)) / total.Seconds()
	if steadyN > 0 && steadyEnd > from {
		r.steady = float64(steadyN) / (steadyEnd - from).Seconds()
	}
	return r
}

var message = []byte("From: <bench@remote.test>\r\nTo: <rcpt@example.test>\r\nSubject: rbl bench\r\n\r\n" +
	strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 16))

// session sends one message from ip.
func session(ctx context.Context, addr string, ip netip.Addr) error {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)), Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.bench.test"); err != nil {
		return err
	}
	if err := c.Mail("bench@remote.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt("rcpt@example.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(message); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
