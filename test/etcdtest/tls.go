package etcdtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are PEM files: a certificate, its key, and the CA to trust.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// certs are what a TLS cluster uses: the members' files and a client's.
type certs struct {
	server, client TLSFiles
}

// makeCerts writes a CA, a server certificate valid for serverNames (the
// members' socket base names, which is what the etcd client verifies a
// unix socket against) and a client certificate into dir.
func makeCerts(dir string, serverNames []string) (*certs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caFile := filepath.Join(dir, "ca.crt")
	caKey, caCert, err := newCA(caFile)
	if err != nil {
		return nil, fmt.Errorf("make CA: %w", err)
	}
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "cnm-testetcd server"},
		DNSNames:    append([]string{"localhost"}, serverNames...),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		// Client auth too, as etcd uses its server certificate when it
		// dials itself.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "cnm-testetcd client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	c := &certs{
		server: TLSFiles{CAFile: caFile, CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")},
		client: TLSFiles{CAFile: caFile, CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")},
	}
	if err := issue(server, caCert, caKey, c.server); err != nil {
		return nil, fmt.Errorf("make server certificate: %w", err)
	}
	if err := issue(client, caCert, caKey, c.client); err != nil {
		return nil, fmt.Errorf("make client certificate: %w", err)
	}
	return c, nil
}

func newCA(certFile string) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "cnm-testetcd CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if err := setValidity(tmpl); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, writePEM(certFile, "CERTIFICATE", der, 0o644)
}

// issue signs tmpl with the CA and writes it and its new key to files.
func issue(tmpl, ca *x509.Certificate, caKey crypto.Signer, files TLSFiles) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := setValidity(tmpl); err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(files.KeyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(files.CertFile, "CERTIFICATE", der, 0o644)
}

// setValidity gives tmpl a random serial and a week's validity, starting
// an hour ago to absorb clock skew.
func setValidity(tmpl *x509.Certificate) error {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	return nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
