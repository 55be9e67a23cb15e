package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/policy"
	"github.com/mxfront/mxfront/routing"
)

// explain runs the decision the live server makes for one client and
// message, without sending mail: every stage, every restriction tried with
// its result and the table lookups behind it, the alias expansion and the
// route of each recipient. It builds the server's components with newApp
// (the queue in a temporary directory) and calls the same policy methods
// the SMTP server calls, so the two cannot disagree.

const explainUsage = `usage: mxfront explain -config FILE --client IP [--helo NAME] [--from ADDR]
                       --to ADDR [--to ADDR ...] [--rdns NAME] [--data FILE] [--json]

Shows how mxfront decides about a message: each SMTP stage, each
restriction with its result and the table lookups, the virtual alias
expansion and the transport:nexthop of each recipient. --rdns gives the
client's verified name (else it is looked up when smtpd_peername_lookup is
on); --data runs header_checks and body_checks on a message file.
Exit status: 0 accepted, 1 refused or deferred, 2 usage or config error.
`

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// explainStep is one SMTP command of the explanation.
type explainStep struct {
	Stage    string              `json:"stage"`
	Command  string              `json:"command"`
	Trace    []policy.TraceEvent `json:"trace,omitempty"`
	Reply    string              `json:"reply"`
	Accepted bool                `json:"accepted"`
	Expanded []string            `json:"expanded,omitempty"`
	Routes   []explainRoute      `json:"routes,omitempty"`
	Notes    []string            `json:"notes,omitempty"`
}

type explainRoute struct {
	Address string `json:"address"`
	Route   string `json:"route"`
	Error   string `json:"error,omitempty"`
}

type explanation struct {
	Client struct {
		Addr          string `json:"addr"`
		Name          string `json:"name"`
		NameStatus    string `json:"name_status"`
		ReverseName   string `json:"reverse_name"`
		ReverseStatus string `json:"reverse_status"`
		Helo          string `json:"helo"`
	} `json:"client"`
	DelayReject bool          `json:"smtpd_delay_reject"`
	Steps       []explainStep `json:"steps"`
	// Accepted reports that the message would be queued (to at least one
	// recipient).
	Accepted bool `json:"accepted"`
	// Hold, Discard and Redirect are the transaction's access(5) and
	// content check actions.
	Hold     string   `json:"hold,omitempty"`
	Discard  string   `json:"discard,omitempty"`
	Redirect string   `json:"redirect,omitempty"`
	Prepend  []string `json:"prepend,omitempty"`
}

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, explainUsage) }
	cfgPath := fs.String("config", "/etc/mxfront/mxfront.toml", "configuration file")
	client := fs.String("client", "", "client IP address")
	helo := fs.String("helo", "", "HELO/EHLO name")
	from := fs.String("from", "", "MAIL FROM address (empty: the null sender)")
	rdns := fs.String("rdns", "", "the client's verified name (default: look it up)")
	data := fs.String("data", "", "message file for header_checks and body_checks")
	asJSON := fs.Bool("json", false, "JSON output")
	var to stringList
	fs.Var(&to, "to", "RCPT TO address (repeat for more)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ip, err := netip.ParseAddr(*client)
	if err != nil || len(to) == 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 2
	}
	// The live server's components, with the queue out of the way.
	qdir, err := os.MkdirTemp("", "mxfront-explain-")
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 2
	}
	defer os.RemoveAll(qdir)
	cfg.QueueDirectory = qdir
	a, err := newApp(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 2
	}
	defer a.close()
	var content []byte
	if *data != "" {
		if content, err = os.ReadFile(*data); err != nil {
			fmt.Fprintf(stderr, "mxfront: %v\n", err)
			return 2
		}
	}
	ex, err := a.explain(context.Background(), explainInput{client: ip.Unmap(), helo: *helo, from: *from, to: to, rdns: *rdns, data: content})
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(ex)
	} else {
		ex.writeText(stdout)
	}
	if ex.Accepted {
		return 0
	}
	return 1
}

type explainInput struct {
	client     netip.Addr
	helo, from string
	to         []string
	rdns       string
	data       []byte
}

// explain plays one SMTP session against the policy, as package mx does.
func (a *app) explain(ctx context.Context, in explainInput) (*explanation, error) {
	p := a.policy
	ex := &explanation{DelayReject: p.DelayReject()}
	peer := policy.Peer{Name: "unknown", ReverseName: "unknown"}
	switch {
	case in.rdns != "":
		name := strings.ToLower(strings.TrimSuffix(in.rdns, "."))
		if name != "unknown" {
			peer = policy.Peer{Name: name, NameStatus: policy.PeerOK, ReverseName: name, ReverseStatus: policy.PeerOK}
		}
	case *a.cfg.SmtpdPeernameLookup:
		r, err := newNetResolver(a.cfg.DNSServers)
		if err != nil {
			return nil, err
		}
		peer = policy.LookupPeer(ctx, r, in.client)
	}
	ex.Client.Addr, ex.Client.Name, ex.Client.ReverseName, ex.Client.Helo = in.client.String(), peer.Name, peer.ReverseName, in.helo
	ex.Client.NameStatus, ex.Client.ReverseStatus = peer.NameStatus.String(), peer.ReverseStatus.String()

	state := &policy.State{}
	cl := envelope.Client{Addr: in.client, Name: peer.Name, Helo: in.helo, Proto: "ESMTP"}
	var step *explainStep
	req := func() *policy.Request {
		return &policy.Request{Client: cl, Peer: peer, State: state, Log: slog.New(slog.DiscardHandler),
			Trace: func(e policy.TraceEvent) { step.Trace = append(step.Trace, e) }}
	}
	begin := func(stage, cmd string) *explainStep {
		ex.Steps = append(ex.Steps, explainStep{Stage: stage, Command: cmd})
		step = &ex.Steps[len(ex.Steps)-1]
		return step
	}
	refuse := func(s *explainStep, err error) {
		s.Reply = envelope.ReplyOf(err).String()
	}
	// Each command gets the same deadline as in the server.
	cmdCtx := func() (context.Context, context.CancelFunc) {
		c := routing.WithTrace(ctx, func(format string, args ...any) {
			step.Trace = append(step.Trace, policy.TraceEvent{Kind: "note", Text: "routing: " + fmt.Sprintf(format, args...)})
		})
		return context.WithTimeout(c, 60*time.Second)
	}

	s := begin("CONNECT", "(connect from "+peer.Name+"["+in.client.String()+"])")
	c, cancel := cmdCtx()
	err := p.CheckConnect(c, req())
	cancel()
	if err != nil {
		refuse(s, err)
		s.Notes = append(s.Notes, "smtpd_delay_reject = no: every later command gets 503 5.7.0 Error: access denied")
		return ex, nil
	}
	s.Reply, s.Accepted = "220 "+a.cfg.SmtpdBanner, true
	if p.DelayReject() {
		s.Notes = append(s.Notes, "smtpd_delay_reject = yes: the client, HELO and sender restrictions are evaluated at each RCPT")
	}

	if in.helo != "" {
		s = begin("HELO", "EHLO "+in.helo)
		c, cancel = cmdCtx()
		err = p.CheckHelo(c, req())
		cancel()
		if err != nil {
			refuse(s, err)
			return ex, nil
		}
		s.Reply, s.Accepted = "250 "+a.cfg.MyHostname, true
	}

	sender, err := envelope.ParseAddress(in.from, true)
	s = begin("MAIL", "MAIL FROM:<"+strings.Trim(in.from, "<>")+">")
	if err != nil {
		s.Reply = "501 5.1.7 Bad sender address syntax"
		return ex, nil
	}
	c, cancel = cmdCtx()
	r := req()
	r.From = &sender
	err = p.CheckMail(c, r)
	cancel()
	if err != nil {
		refuse(s, err)
		return ex, nil
	}
	s.Reply, s.Accepted = "250 2.1.0 Ok", true

	var accepted []envelope.Address
	for _, t := range in.to {
		s = begin("RCPT", "RCPT TO:<"+t+">")
		if strings.EqualFold(strings.Trim(t, "<>"), "postmaster") {
			t = "postmaster@" + a.cfg.MyOrigin // RFC 5321 §4.5.1, as the server does
		}
		rcpt, err := envelope.ParseAddress(t, true)
		if err != nil || rcpt.IsNull() {
			s.Reply = "501 5.1.3 Bad recipient address syntax"
			continue
		}
		r := req()
		r.From, r.Rcpt, r.RcptCount = &sender, rcpt, len(accepted)
		c, cancel = cmdCtx()
		v, err := p.CheckRcpt(c, r)
		if err != nil {
			cancel()
			refuse(s, err)
			continue
		}
		s.Reply, s.Accepted = "250 2.1.5 Ok", true
		accepted = append(accepted, rcpt)
		for _, e := range v.Expanded {
			s.Expanded = append(s.Expanded, e.String())
			rt, err := a.router.Route(ctx, e) // untraced: the trace has it already
			xr := explainRoute{Address: e.String(), Route: rt.String()}
			if err != nil {
				xr.Route, xr.Error = "", err.Error()
			} else if rt.Transport == envelope.TransportError || rt.Transport == envelope.TransportRetry {
				xr.Error = rt.Reply.String()
			}
			s.Routes = append(s.Routes, xr)
		}
		cancel()
	}
	if len(accepted) == 0 {
		return ex, nil
	}

	dataReq := func() *policy.Request {
		r := req()
		r.From, r.RcptCount = &sender, len(accepted)
		if len(accepted) == 1 {
			r.Rcpt = accepted[0]
		}
		return r
	}
	s = begin("DATA", "DATA")
	c, cancel = cmdCtx()
	err = p.CheckData(c, dataReq())
	cancel()
	if err != nil {
		refuse(s, err)
		return ex, nil
	}
	s.Reply, s.Accepted = "354 End data with <CR><LF>.<CR><LF>", true

	s = begin("END-OF-MESSAGE", ".")
	c, cancel = cmdCtx()
	defer cancel()
	if in.data != nil {
		r := dataReq()
		cf := p.NewContentFilter(c, io.Discard, r)
		if cf == nil {
			s.Notes = append(s.Notes, "no header_checks or body_checks")
		} else {
			_, werr := cf.Write(crlf(in.data))
			if err := cf.Close(); err != nil {
				refuse(s, err)
				return ex, nil
			}
			if werr != nil {
				refuse(s, werr)
				return ex, nil
			}
		}
	}
	if err := p.CheckEOD(c, dataReq()); err != nil {
		refuse(s, err)
		return ex, nil
	}
	ex.Accepted, s.Accepted = true, true
	s.Reply = "250 2.0.0 Ok: queued"
	ex.Hold = state.Hold()
	if d, why := state.Discard(); d {
		ex.Discard = why
		s.Notes = append(s.Notes, "DISCARD: the client is told the message was queued; it is dropped")
	}
	ex.Redirect = state.Redirect()
	ex.Prepend = state.Prepend()
	if ex.Hold != "" {
		s.Notes = append(s.Notes, "HOLD: the message stays in the hold queue until released")
	}
	if ex.Redirect != "" {
		if targets, err := p.Redirect(c, ex.Redirect); err == nil {
			var ts []string
			for _, t := range targets {
				ts = append(ts, t.String())
			}
			s.Notes = append(s.Notes, "REDIRECT: all recipients replaced by "+strings.Join(ts, ", "))
		}
	}
	return ex, nil
}

// crlf gives a message file CRLF line endings, as the server's DATA path
// does before the content checks.
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/40)
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case b[i] == '\n' || b[i] == '\r':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// writeText renders the explanation for a person.
func (ex *explanation) writeText(w io.Writer) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	c := ex.Client
	fmt.Fprintf(bw, "client %s: name %s (%s), reverse name %s (%s), helo %q\n", c.Addr, c.Name, c.NameStatus, c.ReverseName, c.ReverseStatus, c.Helo)
	for _, s := range ex.Steps {
		fmt.Fprintf(bw, "\n%s\n", s.Command)
		writeTrace(bw, s.Trace)
		for _, r := range s.Routes {
			if r.Error != "" {
				fmt.Fprintf(bw, "  route %s -> %s (%s)\n", r.Address, r.Route, r.Error)
			} else {
				fmt.Fprintf(bw, "  route %s -> %s\n", r.Address, r.Route)
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintf(bw, "  note: %s\n", n)
		}
		fmt.Fprintf(bw, "  => %s\n", s.Reply)
	}
	fmt.Fprintln(bw)
	if ex.Accepted {
		fmt.Fprintln(bw, "result: accepted")
	} else {
		fmt.Fprintln(bw, "result: not accepted")
	}
	if ex.Hold != "" {
		fmt.Fprintf(bw, "hold: %s\n", ex.Hold)
	}
	if ex.Discard != "" {
		fmt.Fprintf(bw, "discard: %s\n", ex.Discard)
	}
	if ex.Redirect != "" {
		fmt.Fprintf(bw, "redirect: %s\n", ex.Redirect)
	}
	for _, p := range ex.Prepend {
		fmt.Fprintf(bw, "prepend: %s\n", p)
	}
}

// writeTrace prints trace events: a restriction's lookups between its name
// and its result, nested lists indented.
func writeTrace(w io.Writer, tr []policy.TraceEvent) {
	var open []string // restrictions tried and not yet decided, innermost last
	for i := 0; i < len(tr); i++ {
		e := tr[i]
		ind := strings.Repeat("  ", 2+e.Depth)
		switch e.Kind {
		case "stage":
			fmt.Fprintf(w, "  %s (%s)\n", e.List, e.Text)
		case "try":
			open = append(open, e.Restriction)
			if i+1 < len(tr) && tr[i+1].Kind == "restriction" && tr[i+1].Restriction == e.Restriction {
				continue // nothing in between: one line
			}
			fmt.Fprintf(w, "%s%s:\n", ind, e.Restriction)
		case "restriction":
			line := ind + e.Restriction + " -> " + e.Result
			if n := len(open); n > 0 && open[n-1] == e.Restriction {
				open = open[:n-1]
				if tr[i-1].Kind != "try" {
					line = ind + "  -> " + e.Result // closes "name:"
				}
			}
			if e.Reply != "" {
				line += " " + e.Reply
			}
			if e.Text != "" {
				line += " (" + e.Text + ")"
			}
			fmt.Fprintln(w, line)
		case "lookup":
			res := "not found"
			if e.Found {
				res = fmt.Sprintf("found %q", e.Value)
			}
			if e.Text != "" && !e.Found {
				res = e.Text
			}
			fmt.Fprintf(w, "%s  lookup %s %q: %s\n", ind, e.Table, e.Key, res)
		case "result":
			var line string
			if e.List != "" && strings.HasSuffix(e.List, "_checks") {
				line = fmt.Sprintf("  %s %s: %q -> %s", e.List, e.Table, e.Key, e.Value)
			} else {
				line = ind + "  " + e.Result
				if e.Table != "" {
					line += fmt.Sprintf(" (%s %q = %q)", e.Table, e.Key, e.Value)
				}
			}
			if e.Reply != "" {
				line += " " + e.Reply
			}
			if e.Text != "" {
				line += ": " + e.Text
			}
			fmt.Fprintln(w, line)
		default:
			fmt.Fprintf(w, "%s  %s\n", ind, e.Text)
		}
	}
}
