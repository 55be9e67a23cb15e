// Command mxfront is an inbound SMTP gateway (MX frontend): it accepts mail
// from the internet, verifies recipients at RCPT time, queues durably, and
// relays to the backend unit that holds each mailbox.
//
//	mxfront serve -config FILE     run the daemon
//	mxfront check -config FILE     validate and print the effective config
//	mxfront query [-config FILE] TABLE KEY   look a key up, like postmap -q
//	mxfront demo [-listen ADDR] [-dir DIR]   MX and two demo units, for swaks
//	mxfront explain -config FILE --client IP --to ADDR ...   how a message is decided
//	mxfront queue list|show|delete|hold|release|flush|requeue|shape ...
//	mxfront version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/mxfront/mxfront/table"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: mxfront <command> [flags]

commands:
  serve -config FILE          run the MX daemon
  check -config FILE          validate the configuration and print it
  query [-config FILE] TABLE KEY
                              look KEY up in TABLE (type:name), like postmap -q;
                              exit 0 found, 1 not found, 2 error
  demo [-listen ADDR] [-dir DIR]
                              run the MX with a built-in configuration and two
                              demo units that store mail in Maildirs
  explain -config FILE --client IP [--helo NAME] [--from ADDR] --to ADDR
          [--rdns NAME] [--data FILE] [--json]
                              show how a message would be decided: each stage,
                              restriction, table lookup, alias and route
  queue [-config FILE] list|show|delete|hold|release|flush|requeue|shape ...
                              the queue tools (mailq, postcat, postsuper,
                              qshape); "mxfront queue help" explains them
  version                     print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(args, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "query":
		return cmdQuery(args, stdout, stderr)
	case "demo":
		return cmdDemo(args, stdout, stderr)
	case "explain":
		return cmdExplain(args, stdout, stderr)
	case "queue":
		return cmdQueue(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mxfront: unknown command %q\n%s", cmd, usage)
	return 2
}

func versionString() string {
	s := "mxfront " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " (" + bi.GoVersion
		for _, d := range bi.Deps {
			if d.Path == "github.com/emersion/go-smtp" {
				s += ", go-smtp " + d.Version
			}
		}
		s += ")"
	}
	return s
}

func cmdServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/mxfront/mxfront.toml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 1
	}
	logger := newLogger(cfg, stderr)
	if os.Getenv("GOGC") == "" {
		// The heap is small (envelopes, buffers) and the garbage rate high
		// (per-connection and per-message objects): trade a little memory
		// for fewer collections.
		debug.SetGCPercent(400)
	}
	if p := os.Getenv("MXFRONT_CPUPROFILE"); p != "" {
		// A CPU profile of the whole run, for `go tool pprof`.
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintf(stderr, "mxfront: %v\n", err)
			return 1
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := newApp(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 1
	}
	lns, err := a.listen()
	if err != nil {
		a.close()
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 1
	}
	if err := a.run(ctx, lns); err != nil {
		logger.Error("fatal", "err", err)
		return 1
	}
	return 0
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/mxfront/mxfront.toml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 1
	}
	// Open every table and build every component, as serve would, so that a
	// broken table file or restriction is found now.
	a, err := newApp(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 1
	}
	defer a.close()
	for _, w := range a.warnings() {
		fmt.Fprintf(stderr, "mxfront: warning: %s\n", w)
	}
	fmt.Fprint(stdout, cfg.Effective())
	return 0
}

func cmdQuery(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (for table types configured there)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: mxfront query [-config FILE] TYPE:NAME KEY")
		return 2
	}
	var cfg *Config
	if *cfgPath != "" {
		c, err := LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "mxfront: %v\n", err)
			return 2
		}
		cfg = c
	}
	// ldap:, tcp: and socketmap: too, so that "mxfront query
	// ldap:/etc/mxfront/ldap-virtual.cf foo.bar@example.com" asks the live
	// server, like postmap -q.
	opts := tableOptions(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t, err := table.Open(fs.Arg(0), opts)
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %v\n", err)
		return 2
	}
	if c, ok := t.(io.Closer); ok {
		defer c.Close()
	}
	v, ok, err := t.Lookup(context.Background(), fs.Arg(1))
	if err != nil {
		fmt.Fprintf(stderr, "mxfront: %s: lookup error: %v\n", fs.Arg(0), err)
		return 2
	}
	if !ok {
		return 1
	}
	fmt.Fprintln(stdout, v)
	return 0
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(cfg.Log.Level))); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

var errNoListeners = errors.New("no listeners configured")
