package ldaptable

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testCert makes a self-signed certificate for name and 127.0.0.1 and
// returns it in PEM (to trust it) and a server TLS configuration.
func testCert(t *testing.T, name string) ([]byte, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// tlsFront accepts TLS on 127.0.0.1 and relays each connection to backend
// in clear text (an ldaps:// front for slapd). It returns its address.
func tlsFront(t *testing.T, cfg *tls.Config, backend string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer b.Close()
				done := make(chan struct{})
				go func() { io.Copy(b, c); b.Close(); close(done) }()
				io.Copy(c, b)
				c.Close()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

func TestSplitURL(t *testing.T) {
	for _, c := range []struct{ in, network, addr, host string }{
		{"ldap://h:1389", "tcp", "h:1389", "h"},
		{"ldaps://h", "tcp", "h:636", "h"},
		{"ldap://[::1]:389", "tcp", "[::1]:389", "::1"},
		{"ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi", "unix", "/var/run/slapd/ldapi", ""},
		{"ldapi://", "unix", "/var/run/slapd/ldapi", ""},
	} {
		n, a, h, _, err := splitURL(c.in)
		if err != nil || n != c.network || a != c.addr || h != c.host {
			t.Errorf("splitURL(%q) = %q %q %q %v", c.in, n, a, h, err)
		}
	}
}
