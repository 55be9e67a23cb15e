package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mxfront/mxfront/queue"
	"github.com/mxfront/mxfront/queue/control"
)

// `mxfront queue` is the operator's queue tool: Postfix's mailq
// (postqueue -p/-j), postcat, postsuper -d/-h/-H/-r, postqueue -f and
// qshape in one command. It talks to the running daemon over its control
// socket (Dir/control); when no daemon answers it takes the spool lock and
// works on the files directly.

const queueUsage = `usage: mxfront queue [-config FILE | -queue-directory DIR] COMMAND [flags] [args]

commands:
  list [filters] [-json]        the queue in mailq layout ('*' active, '!' hold,
                                '#' damaged), or one JSON object per line
                                (postqueue -j field names)
  show [-json] [-e|-h|-b] ID    envelope, delivery history, headers and body
                                (postcat); -e envelope, -h headers, -b body only
  delete ID...|ALL [filters]    remove messages (postsuper -d); "-" reads IDs
                                from standard input
  hold ID...|ALL [filters] [-reason TEXT]
                                put messages on hold (postsuper -h)
  hold -unit U [-reason TEXT]   put a unit on hold: no delivery attempts to it
  hold                          list the units on hold
  release ID...|ALL [filters]   release held messages (postsuper -H)
  release -unit U               release a unit and retry its mail now
  flush [-unit U] [ID...]       retry deferred mail now (postqueue -f, -i)
  requeue ID...|ALL [filters]   expand the original recipients again through
                                virtual_alias_maps and retry now (postsuper -r)
  shape [-by unit|domain|sender] [filters] [-json]
                                messages per destination and age (qshape)

filters (with ALL they select the messages; flags may follow the arguments):
  -state S[,S]      incoming, active, deferred, hold, corrupt
  -unit U           a pending recipient goes to unit U (a host name such as
                    u42a, a next hop such as [u42a]:25, or smtp:[u42a]:25)
  -sender A         sender: user@domain, @domain (and subdomains), <> for the
                    null sender, or any other text as a substring
  -recipient A      a pending recipient, matched the same way
  -older-than T     arrived at least T ago (300s, 2h, 5d)

exit status: 0 done; 1 some named message or unit was not found or not in a
state the command applies to (the others were done); 2 usage error; 3 the
queue could not be used (configuration, spool or daemon trouble).
`

// Exit codes of `mxfront queue`.
const (
	exitQueueOK          = 0
	exitQueueNotFound    = 1
	exitQueueUsage       = 2
	exitQueueUnavailable = 3
)

// queueFlags are the flags every queue command accepts.
type queueFlags struct {
	fs        *flag.FlagSet
	config    string
	dir       string
	json      bool
	states    string
	unit      string
	sender    string
	recipient string
	olderThan string
	reason    string
	by        string
	envOnly   bool
	hdrOnly   bool
	bodyOnly  bool
}

func newQueueFlags(stderr io.Writer) *queueFlags {
	f := &queueFlags{fs: flag.NewFlagSet("queue", flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, queueUsage) }
	fs.StringVar(&f.config, "config", "/etc/mxfront/mxfront.toml", "configuration file (for queue_directory)")
	fs.StringVar(&f.dir, "queue-directory", "", "the queue directory (instead of the configuration's)")
	fs.BoolVar(&f.json, "json", false, "JSON output")
	fs.StringVar(&f.states, "state", "", "states: incoming, active, deferred, hold, corrupt")
	fs.StringVar(&f.unit, "unit", "", "unit (destination)")
	fs.StringVar(&f.sender, "sender", "", "sender address pattern")
	fs.StringVar(&f.recipient, "recipient", "", "recipient address pattern")
	fs.StringVar(&f.olderThan, "older-than", "", "minimum age (300s, 2h, 5d)")
	fs.StringVar(&f.reason, "reason", "", "hold reason")
	fs.StringVar(&f.by, "by", queue.ShapeByUnit, "shape: group by unit, domain or sender")
	fs.BoolVar(&f.envOnly, "e", false, "show: the envelope only")
	fs.BoolVar(&f.hdrOnly, "h", false, "show: the headers only")
	fs.BoolVar(&f.bodyOnly, "b", false, "show: the body only")
	return f
}

// parse parses flags anywhere among the arguments and returns the
// arguments.
func (f *queueFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			return nil, err
		}
		args = f.fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (f *queueFlags) filter() (queue.Filter, error) {
	flt := queue.Filter{Unit: f.unit, Sender: f.sender, Recipient: f.recipient}
	if f.states != "" {
		for _, s := range strings.FieldsFunc(f.states, func(r rune) bool { return r == ',' || r == ' ' }) {
			s = strings.ToLower(s)
			if !slices.Contains(queue.States, s) {
				return flt, fmt.Errorf("-state: unknown state %q (want %s)", s, strings.Join(queue.States, ", "))
			}
			flt.States = append(flt.States, s)
		}
	}
	if f.olderThan != "" {
		d, err := parseDuration(f.olderThan)
		if err != nil {
			return flt, fmt.Errorf("-older-than: %v", err)
		}
		flt.OlderThan = d
	}
	return flt, nil
}

func (f *queueFlags) hasFilter() bool {
	return f.states != "" || f.unit != "" || f.sender != "" || f.recipient != "" || f.olderThan != ""
}

// queueCmd is one run of `mxfront queue`.
type queueCmd struct {
	f      *queueFlags
	stdin  io.Reader
	stdout *bufio.Writer
	stderr io.Writer
	b      control.Backend
	now    time.Time
}

func cmdQueue(args []string, stdout, stderr io.Writer) int {
	return runQueue(args, os.Stdin, stdout, stderr)
}

func runQueue(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f := newQueueFlags(stderr)
	pos, err := f.parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitQueueOK
		}
		return exitQueueUsage
	}
	if len(pos) == 0 {
		fmt.Fprint(stderr, queueUsage)
		return exitQueueUsage
	}
	sub, pos := pos[0], pos[1:]
	if sub == "help" {
		fmt.Fprint(stdout, queueUsage)
		return exitQueueOK
	}
	commands := map[string]func(*queueCmd, context.Context, []string) int{
		"list":    (*queueCmd).list,
		"show":    (*queueCmd).show,
		"delete":  (*queueCmd).deleteCmd,
		"hold":    (*queueCmd).hold,
		"release": (*queueCmd).release,
		"flush":   (*queueCmd).flush,
		"requeue": (*queueCmd).requeue,
		"shape":   (*queueCmd).shape,
	}
	fn, ok := commands[sub]
	if !ok {
		fmt.Fprintf(stderr, "mxfront queue: unknown command %q\n%s", sub, queueUsage)
		return exitQueueUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &queueCmd{f: f, stdin: stdin, stdout: bufio.NewWriterSize(stdout, 64<<10), stderr: stderr, now: time.Now()}
	defer c.stdout.Flush()
	b, closeFn, code := c.open(ctx)
	if b == nil {
		return code
	}
	defer closeFn()
	c.b = b
	return fn(c, ctx, pos)
}

func (c *queueCmd) errorf(format string, args ...any) {
	c.stdout.Flush()
	fmt.Fprintf(c.stderr, "mxfront queue: "+format+"\n", args...)
}

// open connects to the daemon, or opens the spool when none runs.
func (c *queueCmd) open(ctx context.Context) (control.Backend, func(), int) {
	qcfg := queue.Config{Dir: c.f.dir, Hostname: "localhost"}
	if c.f.dir == "" || c.configGiven() {
		cfg, err := LoadConfig(c.f.config)
		if err != nil {
			c.errorf("%v", err)
			return nil, nil, exitQueueUnavailable
		}
		qcfg = cfg.queueConfig()
		if c.f.dir != "" {
			qcfg.Dir = c.f.dir
		}
	}
	if fi, err := os.Stat(qcfg.Dir); err != nil || !fi.IsDir() {
		c.errorf("no queue directory at %s", qcfg.Dir)
		return nil, nil, exitQueueUnavailable
	}
	cl, err := control.Dial(ctx, control.SocketPath(qcfg.Dir))
	if err == nil {
		return cl, func() {}, exitQueueOK
	}
	if !errors.Is(err, control.ErrNoDaemon) {
		c.errorf("%v", err)
		return nil, nil, exitQueueUnavailable
	}
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	q, err := queue.OpenOffline(qcfg, logger)
	if err != nil {
		if strings.Contains(err.Error(), "in use") {
			c.errorf("the daemon holds %s but its control socket does not answer (%v)", qcfg.Dir, err)
		} else {
			c.errorf("%v", err)
		}
		return nil, nil, exitQueueUnavailable
	}
	return q, func() { q.Close() }, exitQueueOK
}

func (c *queueCmd) configGiven() bool {
	given := false
	c.f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "config" {
			given = true
		}
	})
	return given
}

// ---------------------------------------------------------------- list

func (c *queueCmd) list(ctx context.Context, args []string) int {
	if len(args) > 0 {
		c.errorf("list takes no arguments (use filters)")
		return exitQueueUsage
	}
	flt, err := c.f.filter()
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUsage
	}
	var n int
	var total int64
	err = c.b.List(ctx, flt, func(it *queue.Item) error {
		if c.f.json {
			return c.writeJSON(postqueueJSON(it))
		}
		if n == 0 {
			fmt.Fprintf(c.stdout, "%-13s %8s %-20s %s\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
		}
		n++
		total += it.Size
		c.mailqEntry(it)
		return nil
	})
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUnavailable
	}
	if c.f.json {
		return exitQueueOK
	}
	if n == 0 {
		fmt.Fprintln(c.stdout, "Mail queue is empty")
		return exitQueueOK
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	fmt.Fprintf(c.stdout, "-- %d Kbytes in %d Request%s.\n", (total+1023)/1024, n, plural)
	return exitQueueOK
}

// mailqEntry prints one message in Postfix's mailq layout: the queue ID
// with '*' (active), '!' (hold) or '#' (damaged), size, arrival time and
// sender; then each pending recipient, after its delay reason when that
// differs from the previous one.
func (c *queueCmd) mailqEntry(it *queue.Item) {
	mark := ' '
	switch it.State {
	case queue.StateActive:
		mark = '*'
	case queue.StateHold:
		mark = '!'
	case queue.StateCorrupt:
		mark = '#'
	}
	sender := it.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	fmt.Fprintf(c.stdout, "%-12s%c %8d %-20s %s\n", it.ID, mark, it.Size, it.Arrival.Local().Format("Mon Jan _2 15:04:05"), sender)
	indent := strings.Repeat(" ", 12+1+1+8+1+20+1)
	if it.State == queue.StateHold && it.Reason != "" {
		fmt.Fprintf(c.stdout, "(hold: %s)\n", it.Reason)
	}
	if it.State == queue.StateCorrupt {
		fmt.Fprintf(c.stdout, "(damaged queue file moved to corrupt/: %s)\n", it.Reason)
	}
	last := ""
	for _, r := range it.Rcpts {
		if !r.Pending() {
			continue
		}
		if r.Reply != "" && r.Reply != last {
			fmt.Fprintf(c.stdout, "(%s)\n", r.Reply)
			last = r.Reply
		}
		fmt.Fprintf(c.stdout, "%s%s\n", indent, r.Addr)
	}
	fmt.Fprintln(c.stdout)
}

// postqueueJSON is the --json form of an item: Postfix postqueue -j's
// field names, plus mxfront's (unit, attempts, next_attempt, reason).
func postqueueJSON(it *queue.Item) any {
	type rcpt struct {
		Address     string `json:"address"`
		OrigAddress string `json:"orig_address,omitempty"`
		DelayReason string `json:"delay_reason,omitempty"`
		Unit        string `json:"unit,omitempty"`
		Relay       string `json:"relay,omitempty"`
	}
	type msg struct {
		QueueName   string `json:"queue_name"`
		QueueID     string `json:"queue_id"`
		ArrivalTime int64  `json:"arrival_time"`
		MessageSize int64  `json:"message_size"`
		Sender      string `json:"sender"`
		Recipients  []rcpt `json:"recipients"`
		Attempts    int    `json:"attempts"`
		NextAttempt int64  `json:"next_attempt,omitempty"`
		Reason      string `json:"reason,omitempty"`
	}
	m := msg{QueueName: it.State, QueueID: it.ID, ArrivalTime: it.Arrival.Unix(), MessageSize: it.Size,
		Sender: it.Sender, Recipients: []rcpt{}, Attempts: it.Attempts, Reason: it.Reason}
	if !it.Next.IsZero() {
		m.NextAttempt = it.Next.Unix()
	}
	for _, r := range it.Rcpts {
		if r.Pending() {
			m.Recipients = append(m.Recipients, rcpt{Address: r.Addr, OrigAddress: r.Orig, DelayReason: r.Reply, Unit: r.Dest, Relay: r.Relay})
		}
	}
	return m
}

func (c *queueCmd) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.stdout.Write(append(b, '\n'))
	return nil
}

// ---------------------------------------------------------------- show

func (c *queueCmd) show(ctx context.Context, args []string) int {
	if len(args) != 1 {
		c.errorf("usage: show [-json] [-e|-h|-b] ID")
		return exitQueueUsage
	}
	it, content, err := c.b.Show(ctx, args[0])
	if it == nil {
		c.errorf("%v", err)
		if errors.Is(err, queue.ErrNotFound) {
			return exitQueueNotFound
		}
		return exitQueueUnavailable
	}
	code := exitQueueOK
	if err != nil {
		// Damaged: shown as far as it goes, and said so.
		c.errorf("%s: %v", it.ID, err)
		if !errors.Is(err, queue.ErrCorrupt) {
			code = exitQueueUnavailable
		}
	}
	if c.f.json {
		out := struct {
			*queue.Item
			Content       string `json:"content,omitempty"`
			ContentBase64 []byte `json:"content_base64,omitempty"`
		}{Item: it}
		if utf8.Valid(content) {
			out.Content = string(content)
		} else {
			out.ContentBase64 = content
		}
		c.writeJSON(out)
		return code
	}
	hdr, body := splitContent(content)
	all := !c.f.envOnly && !c.f.hdrOnly && !c.f.bodyOnly
	if all || c.f.envOnly {
		c.showEnvelope(it)
	}
	if all {
		fmt.Fprintf(c.stdout, "*** MESSAGE CONTENTS %s ***\n", it.ID)
	}
	if all || c.f.hdrOnly {
		c.stdout.Write(hdr)
	}
	if all {
		c.stdout.WriteString("\n")
	}
	if all || c.f.bodyOnly {
		c.stdout.Write(body)
	}
	if all {
		fmt.Fprintf(c.stdout, "*** MESSAGE FILE END %s ***\n", it.ID)
	}
	return code
}

// splitContent splits queued content (CRLF) at the empty line and returns
// headers and body with LF line ends, as postcat prints them.
func splitContent(content []byte) (hdr, body []byte) {
	s := strings.ReplaceAll(string(content), "\r\n", "\n")
	if i := strings.Index(s, "\n\n"); i >= 0 {
		return []byte(s[:i+1]), []byte(s[i+2:])
	}
	return []byte(s), nil
}

func (c *queueCmd) showEnvelope(it *queue.Item) {
	w := c.stdout
	fmt.Fprintf(w, "*** ENVELOPE RECORDS %s/%s ***\n", it.State, it.ID)
	fmt.Fprintf(w, "message_size: %d\n", it.Size)
	fmt.Fprintf(w, "message_arrival_time: %s\n", it.Arrival.Local().Format(time.ANSIC))
	if env := it.Env; env != nil {
		cl := env.Client
		fmt.Fprintf(w, "client: %s[%s] helo=%s proto=%s\n", orUnknown(cl.Name), cl.Addr, cl.Helo, cl.Proto)
		if cl.TLS != "" {
			fmt.Fprintf(w, "tls: %s\n", cl.TLS)
		}
		if env.EnvID != "" {
			fmt.Fprintf(w, "envelope_id: %s\n", env.EnvID)
		}
		if env.Ret != "" {
			fmt.Fprintf(w, "ret: %s\n", env.Ret)
		}
		if env.Body != "" {
			fmt.Fprintf(w, "body: %s\n", env.Body)
		}
		if env.SMTPUTF8 {
			fmt.Fprintln(w, "smtputf8: yes")
		}
	}
	sender := it.Sender
	if sender == "" {
		sender = "<>"
	}
	fmt.Fprintf(w, "sender: %s\n", sender)
	if it.Attempts > 0 {
		fmt.Fprintf(w, "attempts: %d\n", it.Attempts)
	}
	if !it.Next.IsZero() {
		fmt.Fprintf(w, "next_attempt: %s\n", it.Next.Local().Format(time.ANSIC))
	}
	if it.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", it.Reason)
	}
	for i, r := range it.Rcpts {
		fmt.Fprintf(w, "recipient: %s (%s)", r.Addr, r.Status)
		if r.Orig != "" {
			fmt.Fprintf(w, " original_recipient=%s", r.Orig)
		}
		if it.Env != nil && i < len(it.Env.Rcpts) {
			if x := it.Env.Rcpts[i]; x.ORCPT != "" {
				fmt.Fprintf(w, " orcpt=%s", x.ORCPT)
			}
			if n := it.Env.Rcpts[i].Notify.String(); n != "" {
				fmt.Fprintf(w, " notify=%s", n)
			}
		}
		if r.Dest != "" {
			fmt.Fprintf(w, " unit=%s", r.Dest)
		}
		fmt.Fprintln(w)
	}
	if len(it.History) > 0 {
		fmt.Fprintf(w, "*** DELIVERY HISTORY %s ***\n", it.ID)
		for _, e := range it.History {
			fmt.Fprintf(w, "%s %s", e.At.Local().Format(time.RFC3339), e.Type)
			if e.Rcpt != "" {
				fmt.Fprintf(w, " to=<%s>", e.Rcpt)
			}
			if e.Attempt > 0 {
				fmt.Fprintf(w, " attempt=%d", e.Attempt)
			}
			if !e.Next.IsZero() {
				fmt.Fprintf(w, " next=%s", e.Next.Local().Format(time.RFC3339))
			}
			if e.Dest != "" {
				fmt.Fprintf(w, " unit=%s", e.Dest)
			}
			if e.Relay != "" {
				fmt.Fprintf(w, " relay=%s", e.Relay)
			}
			if e.Reply != "" {
				fmt.Fprintf(w, " (%s)", e.Reply)
			}
			fmt.Fprintln(w)
		}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ---------------------------------------------------------------- changes

// selection builds the Selection of an operation from its arguments: IDs,
// "-" (IDs from standard input), or ALL with the filters.
func (c *queueCmd) selection(op string, args []string) (queue.Selection, bool) {
	flt, err := c.f.filter()
	if err != nil {
		c.errorf("%v", err)
		return queue.Selection{}, false
	}
	sel := queue.Selection{Filter: flt, Reason: c.f.reason}
	for _, a := range args {
		switch {
		case a == "ALL":
			sel.All = true
		case a == "-":
			sc := bufio.NewScanner(c.stdin)
			for sc.Scan() {
				for _, id := range strings.Fields(sc.Text()) {
					sel.IDs = append(sel.IDs, strings.TrimRight(id, "*!#"))
				}
			}
		default:
			sel.IDs = append(sel.IDs, strings.TrimRight(a, "*!#"))
		}
	}
	if sel.All && len(sel.IDs) > 0 {
		c.errorf("%s: give IDs or ALL, not both", op)
		return sel, false
	}
	if !sel.All && c.f.hasFilter() {
		c.errorf("%s: filters select messages only with ALL (%s ALL -unit ...)", op, op)
		return sel, false
	}
	if !sel.All && len(args) == 0 {
		c.errorf("%s: which messages? give queue IDs, - (read them from standard input) or ALL", op)
		return sel, false
	}
	return sel, true
}

// apply runs op on the selection and reports like postsuper: one line per
// message on standard output, problems on standard error, and a summary.
func (c *queueCmd) apply(ctx context.Context, op queue.Op, args []string) int {
	sel, ok := c.selection(string(op), args)
	if !ok {
		return exitQueueUsage
	}
	res, err := c.b.Apply(ctx, op, sel)
	done, missing := 0, 0
	for _, r := range res {
		if r.Err != "" {
			missing++
			c.errorf("%s: %s", r.ID, r.Err)
			continue
		}
		done++
		fmt.Fprintf(c.stdout, "%s: %s\n", r.ID, r.Status)
	}
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUnavailable
	}
	verb := map[queue.Op]string{queue.OpDelete: "Deleted", queue.OpHold: "Placed on hold",
		queue.OpRelease: "Released from hold", queue.OpRequeue: "Requeued", queue.OpFlush: "Flushed"}[op]
	plural := "s"
	if done == 1 {
		plural = ""
	}
	c.stdout.Flush()
	fmt.Fprintf(c.stderr, "mxfront queue: %s: %d message%s\n", verb, done, plural)
	if missing > 0 {
		return exitQueueNotFound
	}
	return exitQueueOK
}

func (c *queueCmd) deleteCmd(ctx context.Context, args []string) int {
	return c.apply(ctx, queue.OpDelete, args)
}

func (c *queueCmd) requeue(ctx context.Context, args []string) int {
	return c.apply(ctx, queue.OpRequeue, args)
}

func (c *queueCmd) hold(ctx context.Context, args []string) int {
	if len(args) == 0 && c.f.unit != "" {
		if err := c.b.HoldUnit(c.f.unit, c.f.reason); err != nil {
			c.errorf("%v", err)
			return exitQueueUnavailable
		}
		fmt.Fprintf(c.stdout, "unit %s: on hold\n", c.f.unit)
		return exitQueueOK
	}
	if len(args) == 0 && !c.f.hasFilter() {
		for _, h := range c.b.UnitHolds() {
			fmt.Fprintf(c.stdout, "%s\t%s\t%s\n", h.Unit, h.Since.Local().Format(time.RFC3339), h.Reason)
		}
		return exitQueueOK
	}
	return c.apply(ctx, queue.OpHold, args)
}

func (c *queueCmd) release(ctx context.Context, args []string) int {
	if len(args) == 0 && c.f.unit != "" {
		n, err := c.b.ReleaseUnit(c.f.unit)
		if err != nil {
			c.errorf("%v", err)
			if errors.Is(err, queue.ErrNotFound) {
				return exitQueueNotFound
			}
			return exitQueueUnavailable
		}
		fmt.Fprintf(c.stdout, "unit %s: released, %d messages retried\n", c.f.unit, n)
		return exitQueueOK
	}
	return c.apply(ctx, queue.OpRelease, args)
}

func (c *queueCmd) flush(ctx context.Context, args []string) int {
	if len(args) > 0 {
		return c.apply(ctx, queue.OpFlush, args)
	}
	var n int
	var err error
	what := "deferred"
	if c.f.unit != "" {
		n, err = c.b.FlushUnit(c.f.unit)
		what = "unit " + c.f.unit
	} else {
		if c.f.hasFilter() {
			c.errorf("flush: of the filters only -unit applies (or: flush ALL -sender ...)")
			return exitQueueUsage
		}
		n, err = c.b.FlushAll(ctx)
	}
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUnavailable
	}
	fmt.Fprintf(c.stdout, "%s: %d messages retried now\n", what, n)
	return exitQueueOK
}

// ---------------------------------------------------------------- shape

func (c *queueCmd) shape(ctx context.Context, args []string) int {
	if len(args) > 0 {
		c.errorf("shape takes no arguments (use filters)")
		return exitQueueUsage
	}
	flt, err := c.f.filter()
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUsage
	}
	if _, err := queue.NewShapeBuilder(c.f.by, c.now); err != nil {
		c.errorf("%v", err)
		return exitQueueUsage
	}
	sh, err := c.b.Shape(ctx, flt, c.f.by)
	if err != nil {
		c.errorf("%v", err)
		return exitQueueUnavailable
	}
	if c.f.json {
		c.writeJSON(sh)
		return exitQueueOK
	}
	printShape(c.stdout, sh)
	return exitQueueOK
}

// printShape prints a Shape like qshape: right-aligned columns, names
// right-aligned in the first one.
func printShape(w io.Writer, sh *queue.Shape) {
	nameW := 5
	for _, r := range sh.Rows {
		nameW = max(nameW, len(r.Name))
	}
	widths := make([]int, len(sh.Buckets))
	for i, b := range sh.Buckets {
		widths[i] = len(b)
	}
	for _, r := range sh.Rows {
		widths[0] = max(widths[0], len(fmt.Sprint(r.Total)))
		for i, n := range r.Counts {
			widths[i+1] = max(widths[i+1], len(fmt.Sprint(n)))
		}
	}
	fmt.Fprintf(w, "%*s", nameW, "")
	for i, b := range sh.Buckets {
		fmt.Fprintf(w, " %*s", widths[i], b)
	}
	fmt.Fprintln(w)
	for _, r := range sh.Rows {
		fmt.Fprintf(w, "%*s %*d", nameW, r.Name, widths[0], r.Total)
		for i, n := range r.Counts {
			fmt.Fprintf(w, " %*d", widths[i+1], n)
		}
		fmt.Fprintln(w)
	}
}
