package test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxfront/mxfront/test/harness"
)

// lmtpQuotaWithDSN extends TestLMTPPerRecipientQuota with RFC 3461: the
// EHLO offers DSN; ENVID, RET=HDRS, ORCPT and NOTIFY reach the
// notification about the recipient Dovecot refused over quota (with
// Dovecot's text); the other recipient is delivered once and, with
// NOTIFY=SUCCESS, reported delivered unless Dovecot announces DSN itself;
// and the refusal does not make the unit a dead destination.
func lmtpQuotaWithDSN(t *testing.T, m *mxProc, dove *harness.Dovecot, senderSink *harness.Sink) {
	t.Helper()
	before := len(senderSink.Messages())
	c, err := smtp.Dial(m.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.remote.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("DSN"); !ok {
		t.Fatal("EHLO does not offer DSN")
	}
	if err := c.Mail("sender@remote.test", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "QUOTA-42"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@example.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure},
		OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "robert@example.com"}); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: quota with DSN\r\n\r\n%s", strings.Repeat("this body is bigger than bob's quota\r\n", 20))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	dove.WaitCount(t, "alice@example.com", 2, 20*time.Second)

	// Does Dovecot announce DSN? Then success notices are its job.
	doveDSN := false
	if conn, err := net.Dial("tcp", dove.Addr()); err == nil {
		lc := smtp.NewClientLMTP(conn)
		if lc.Hello("probe.example.com") == nil {
			doveDSN, _ = lc.Extension("DSN")
		}
		lc.Close()
	}
	t.Logf("Dovecot LMTP announces DSN: %v", doveDSN)
	want := before + 1
	if !doveDSN {
		want++
	}
	senderSink.WaitCount(t, want, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	msgs := senderSink.Messages()[before:]
	if len(msgs) != want-before {
		t.Fatalf("%d notifications, want %d (Dovecot DSN %v)", len(msgs), want-before, doveDSN)
	}
	var failure, success string
	for _, msg := range msgs {
		text := string(msg.Data)
		switch msg.Header("Subject") {
		case "Undelivered Mail Returned to Sender":
			failure = text
		case "Successful Mail Delivery Report":
			success = text
		}
	}
	mustContain(t, "failure DSN", failure,
		"Original-Envelope-Id: QUOTA-42", "Final-Recipient: rfc822; bob@example.com",
		"Original-Recipient: rfc822; robert@example.com", "Action: failed", "Status: 5.2.2",
		"Quota exceeded", "Content-Type: text/rfc822-headers", "Subject: quota with DSN")
	if strings.Contains(failure, "bigger than bob's quota") || strings.Contains(failure, "alice@example.com") {
		t.Errorf("RET=HDRS notification has the body or names alice:\n%s", failure)
	}
	if !doveDSN {
		mustContain(t, "success DSN", success, "Original-Envelope-Id: QUOTA-42",
			"Final-Recipient: rfc822; alice@example.com", "Action: delivered", "Status: 2.0.0")
	}
	if n := len(dove.Maildir("alice@example.com")); n != 2 {
		t.Errorf("alice has %d messages, want 2", n)
	}
	if strings.Contains(m.log.String(), "destination dead") {
		t.Error("a per-recipient refusal made the unit dead")
	}
}
