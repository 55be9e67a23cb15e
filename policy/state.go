package policy

import (
	"slices"
	"sync"

	"github.com/mxfront/mxfront/envelope"
)

// State is what restrictions leave behind for later commands of one SMTP
// session: the side effects of access(5) and header/body_checks actions
// for the current transaction (HOLD, DISCARD, REDIRECT, PREPEND), and, when
// smtpd_delay_reject = no, the defer_if_permit results of the connect,
// HELO and MAIL stages that RCPT must still honour. The zero value is
// ready to use; it is safe for concurrent use.
type State struct {
	mu       sync.Mutex
	hold     string
	discard  string
	discards bool
	redirect string
	prepend  []string
	defers   [stSender + 1]*envelope.Reply
}

// ResetTransaction forgets the transaction's side effects (RSET, a new
// MAIL, the end of DATA), as Postfix's mail_reset does. Stage deferrals of
// the connect and HELO stages stay.
func (s *State) ResetTransaction() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.discard, s.discards, s.redirect, s.prepend = "", "", false, "", nil
	s.defers[stSender] = nil
}

// ResetHelo forgets the HELO stage result (a new HELO/EHLO, STARTTLS).
func (s *State) ResetHelo() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defers[stHelo] = nil
	s.defers[stSender] = nil
}

// Hold returns the reason to put the message on hold, or "".
func (s *State) Hold() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hold
}

// Discard reports whether the message is to be accepted and dropped, and
// why.
func (s *State) Discard() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discards, s.discard
}

// Redirect returns the REDIRECT address, or "".
func (s *State) Redirect() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redirect
}

// Prepend returns the header lines to add on top of the message (access(5)
// PREPEND), without CRLF.
func (s *State) Prepend() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.prepend)
}

func (s *State) setHold(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == "" {
		s.hold = text
	}
}

func (s *State) setDiscard(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.discards {
		s.discards, s.discard = true, text
	}
}

func (s *State) discarding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discards
}

func (s *State) setRedirect(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirect = addr // the last one wins, as in Postfix
}

// addPrepend adds a header once: with smtpd_delay_reject = yes the client
// and sender restrictions run again for every recipient, and the same
// PREPEND must not be repeated.
func (s *State) addPrepend(h string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.prepend, h) {
		s.prepend = append(s.prepend, h)
	}
}

func (s *State) deferral(st stage) *envelope.Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.defers[st]
}

func (s *State) setDeferral(st stage, r *envelope.Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defers[st] = r
}
