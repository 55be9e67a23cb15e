package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mxfront/mxfront/envelope"
	"github.com/mxfront/mxfront/queue"
	"github.com/mxfront/mxfront/queue/control"
)

// queueDefaults fills the defaults of the queue scheduling, notification
// and backpressure keys (postconf -d).
func (c *Config) queueDefaults() {
	if c.InitialDestinationConcurrency == 0 {
		c.InitialDestinationConcurrency = queue.DefaultInitialConcurrency
	}
	if c.DestinationConcurrencyFailedCohort == 0 {
		c.DestinationConcurrencyFailedCohort = queue.DefaultFailedCohortLimit
	}
	if c.QmgrMessageActiveLimit == 0 {
		c.QmgrMessageActiveLimit = queue.DefaultActiveLimit
	}
	if c.TwoBounceNoticeRecipient == "" {
		c.TwoBounceNoticeRecipient = "postmaster"
	}
	if c.DoubleBounceSender == "" {
		c.DoubleBounceSender = "double-bounce"
	}
	if c.SmtpHostDownTime == 0 {
		c.SmtpHostDownTime = Duration(60 * time.Second)
	}
}

func (c *Config) validateQueue() error {
	for _, k := range []struct {
		key string
		v   int64
	}{
		{"initial_destination_concurrency", int64(c.InitialDestinationConcurrency)},
		{"default_destination_concurrency_failed_cohort_limit", int64(c.DestinationConcurrencyFailedCohort)},
		{"qmgr_message_active_limit", int64(c.QmgrMessageActiveLimit)},
		{"queue_minfree", c.QueueMinfree},
		{"queue_message_limit", int64(c.QueueMessageLimit)},
		{"default_destination_concurrency_limit", int64(c.DefaultDestinationConcurrencyLimit)},
		{"default_destination_recipient_limit", int64(c.DefaultDestinationRecipientLimit)},
		{"default_process_limit", int64(c.DefaultProcessLimit)},
		{"bounce_size_limit", int64(c.BounceSizeLimit)},
	} {
		if k.v < 0 {
			return c.errorf(k.key, "must not be negative")
		}
	}
	for _, t := range c.DeferTransports {
		if t != envelope.TransportSMTP && t != envelope.TransportLMTP {
			return c.errorf("defer_transports", "unknown transport %q (mail is delivered by smtp or lmtp)", t)
		}
	}
	if _, err := c.noticeAddress(c.TwoBounceNoticeRecipient); err != nil {
		return c.errorf("2bounce_notice_recipient", "%v", err)
	}
	if _, err := c.noticeAddress(c.DoubleBounceSender); err != nil {
		return c.errorf("double_bounce_sender", "%v", err)
	}
	return nil
}

// noticeAddress parses 2bounce_notice_recipient or double_bounce_sender;
// a bare local part is qualified with myorigin, as Postfix does.
func (c *Config) noticeAddress(s string) (envelope.Address, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "@") {
		s += "@" + c.MyOrigin
	}
	a, err := envelope.ParseAddress(s, true)
	if err == nil && a.IsNull() {
		err = fmt.Errorf("empty address")
	}
	return a, err
}

// queueMinFree is the free space the queue file system must keep for new
// mail: queue_minfree, but at least 1.5 × message_size_limit, as Postfix
// smtpd requires (postconf(5) queue_minfree).
func (c *Config) queueMinFree() int64 {
	return max(c.QueueMinfree, c.MessageSizeLimit*3/2)
}

// queueConfig is the queue's configuration.
func (c *Config) queueConfig() queue.Config {
	twoBounce, _ := c.noticeAddress(c.TwoBounceNoticeRecipient) // validated
	doubleBounce, _ := c.noticeAddress(c.DoubleBounceSender)
	return queue.Config{
		Dir:                c.QueueDirectory,
		MinimalBackoff:     time.Duration(c.MinimalBackoffTime),
		MaximalBackoff:     time.Duration(c.MaximalBackoffTime),
		MaxLifetime:        time.Duration(c.MaximalQueueLifetime),
		BounceLifetime:     time.Duration(c.BounceQueueLifetime),
		QueueRunDelay:      time.Duration(c.QueueRunDelay),
		RecipientLimit:     c.DefaultDestinationRecipientLimit,
		ConcurrencyLimit:   c.DefaultDestinationConcurrencyLimit,
		ProcessLimit:       c.DefaultProcessLimit,
		ActiveLimit:        c.QmgrMessageActiveLimit,
		Hostname:           c.MyHostname,
		BounceSizeLimit:    c.BounceSizeLimit,
		InitialConcurrency: c.InitialDestinationConcurrency,
		FailedCohortLimit:  c.DestinationConcurrencyFailedCohort,
		RateDelay:          time.Duration(c.DefaultDestinationRateDelay),
		DeferTransports:    slices.Clone([]string(c.DeferTransports)),
		DelayWarning:       time.Duration(c.DelayWarningTime),
		TwoBounceRecipient: twoBounce,
		DoubleBounceSender: doubleBounce,
		MinFree:            c.queueMinFree(),
		MessageLimit:       c.QueueMessageLimit,
	}
}

// startControl opens the control socket that `mxfront queue` talks to
// while the daemon runs, and returns its stop function; nil when the
// socket cannot be opened (logged: the tools then cannot reach the queue
// until a restart).
func (a *app) startControl() func() {
	path := control.SocketPath(a.cfg.QueueDirectory)
	ln, err := control.Listen(path)
	if err != nil {
		a.log.Error("control socket unavailable: mxfront queue cannot reach the daemon", "err", err)
		return nil
	}
	srv := control.NewServer(a.queue, a.log)
	go srv.Serve(ln)
	a.log.Debug("control socket", "path", path)
	return func() { srv.Close() }
}
