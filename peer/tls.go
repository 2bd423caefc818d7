package peer

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/netsody/superpeer/identity"
)

// ALPN names the device-to-device protocol inside the end-to-end QUIC
// connection.
const ALPN = "netsody-peer/1"

// certificate makes a self-signed certificate for the device's Ed25519
// key. Devices authenticate each other by this key alone: the certificate
// is only its carrier (as in RFC 7250's raw public keys), so names, dates
// and chains carry no meaning.
func certificate(id *identity.Identity) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: id.PeerID().String()},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.PrivateKey.Public(), id.PrivateKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.PrivateKey}, nil
}

// ErrWrongPeer is returned when the device at the other end holds another
// key than the peer ID it was meant to be.
var ErrWrongPeer = errors.New("peer: the other device's key is not the peer ID it was meant to be")

// peerIDOf returns the peer ID whose key signed the TLS handshake.
func peerIDOf(rawCerts [][]byte) (identity.PeerID, error) {
	if len(rawCerts) != 1 {
		return identity.PeerID{}, fmt.Errorf("peer: want exactly one certificate, got %d", len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return identity.PeerID{}, fmt.Errorf("peer: %w", err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return identity.PeerID{}, errors.New("peer: the other device's key is not Ed25519")
	}
	p, err := identity.PeerIDFromBytes(pub)
	if err != nil {
		return identity.PeerID{}, fmt.Errorf("peer: %w", err)
	}
	return p, nil
}

// tlsConfig is the dialling side's end-to-end TLS configuration: the
// other side's key must be want's.
func tlsConfig(cert tls.Certificate, want identity.PeerID) *tls.Config {
	return tlsConfigChecking(cert, func(got identity.PeerID) error {
		if got != want {
			return fmt.Errorf("%w: wanted %s, got %s", ErrWrongPeer, want.Short(), got.Short())
		}
		return nil
	})
}

// listenTLSConfig is the listener's: the other side's peer ID must pass
// admit (the accept policy), so that a stranger who knows the device's
// address cannot complete a handshake.
func listenTLSConfig(cert tls.Certificate, admit func(identity.PeerID) error) *tls.Config {
	return tlsConfigChecking(cert, admit)
}

// tlsConfigChecking is the end-to-end TLS configuration: TLS 1.3, Ed25519
// certificates both ways, and check of the peer ID of the other side's
// key.
func tlsConfigChecking(cert tls.Certificate, check func(identity.PeerID) error) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{ALPN},
		ServerName:   "netsody-peer",
		ClientAuth:   tls.RequireAnyClientCert,
		// The key is the identity; there is no chain to verify.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			got, err := peerIDOf(rawCerts)
			if err != nil {
				return err
			}
			return check(got)
		},
	}
}
