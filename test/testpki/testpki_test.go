package testpki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"
)

// TestServingCertVerifiesAgainstCA: the serving certificate chains to the CA for an
// IP and a DNS name it was made for, and not for another IP.
func TestServingCertVerifiesAgainstCA(t *testing.T) {
	s, err := New("test-ca", []net.IP{net.ParseIP("192.0.2.10")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CA) {
		t.Fatal("CA PEM does not parse")
	}
	block, _ := pem.Decode(s.Cert)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"192.0.2.10", "kubernetes.default.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "192.0.2.11"}); err == nil {
		t.Error("the certificate verifies for an IP it was not made for")
	}
	if b, _ := pem.Decode(s.SAPublic); b == nil || b.Type != "PUBLIC KEY" {
		t.Errorf("service-account public key PEM: %v", b)
	}
}
