package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxfront/mxfront/queue"
)

// discardBackend accepts everything and throws the content away.
type discardBackend struct{}

func (discardBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }

type discardSession struct{}

func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (discardSession) LMTPData(r io.Reader, s smtp.StatusCollector) error {
	return discardSession{}.Data(r)
}

func benchServer(b *testing.B, lmtp bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := smtp.NewServer(discardBackend{})
	s.LMTP = lmtp
	s.Domain = "unit.example.test"
	s.ErrorLog = nopLogger{}
	go s.Serve(ln)
	b.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// BenchmarkDeliver measures Deliver of 1 KiB messages, one recipient, to an
// in-process go-smtp server over loopback, with connection reuse.
func BenchmarkDeliver(b *testing.B) {
	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16)
	body = body[:1024]
	for _, tc := range []struct {
		name     string
		lmtp     bool
		parallel bool
	}{
		{"smtp", false, false},
		{"lmtp", true, false},
		{"smtp-parallel", false, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := benchServer(b, tc.lmtp)
			tr := "smtp"
			if tc.lmtp {
				tr = "lmtp"
			}
			r, err := New(Config{Hostname: "mx1.example.test"}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { r.Close() })
			d := delivery(tcpRoute(tr, addr), body, "s@remote.test", "a@example.test")
			one := func(d *queue.Delivery) {
				if res := r.Deliver(context.Background(), d); res[0].Reply.Code != 250 {
					b.Fatalf("delivery failed: %s", res[0].Reply)
				}
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			start := time.Now()
			if tc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					d := delivery(d.Route, body, "s@remote.test", "a@example.test")
					for pb.Next() {
						one(d)
					}
				})
			} else {
				for b.Loop() {
					one(d)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
