package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyError says why the coordinator's host key was refused. It is
// permanent: retrying cannot help until an operator fixes known_hosts (or
// finds out who is impersonating the coordinator), so the agent stops.
type HostKeyError struct {
	Host       string
	KnownHosts string
	Changed    bool   // the file has a different key for Host
	Revoked    bool   // the key is marked @revoked
	Presented  string // fingerprint of the key the server showed
	Known      string // for Changed: "file:line" of the expected key(s)
}

func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("host key for %s is revoked in %s (server presented %s)", e.Host, e.KnownHosts, e.Presented)
	case e.Changed:
		return fmt.Sprintf("host key for %s changed: server presented %s, %s expects another key (%s); refusing to connect",
			e.Host, e.Presented, e.KnownHosts, e.Known)
	}
	return fmt.Sprintf("host key for %s is not in %s (server presented %s); add the coordinator's host key there",
		e.Host, e.KnownHosts, e.Presented)
}

// AuthRefusedError says the coordinator refused the agent's key. Like a
// refused host key it is permanent: the key is not registered (or was
// revoked) until an operator runs `agent new` for it, so the agent stops.
type AuthRefusedError struct {
	Address     string
	Fingerprint string // of the agent's public key
}

func (e *AuthRefusedError) Error() string {
	return fmt.Sprintf("coordinator %s refused the key %s: it is not registered (or was revoked); "+
		"an agent's key is registered with `ssh coord agent new --name NAME --key \"'$(cat KEY.pub)'\"`", e.Address, e.Fingerprint)
}

// transportFailed reports whether err is the connection failing (closed,
// reset, timed out) rather than an answer from the server.
func transportFailed(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, &ne)
}

// LoadIdentity reads an OpenSSH (or PEM) private key file without a
// passphrase.
func LoadIdentity(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse identity %s: %w", path, err)
	}
	return s, nil
}

// Dialer opens SSH connections to the coordinator.
type Dialer struct {
	Address    string // host:port
	Identity   ssh.Signer
	KnownHosts string // OpenSSH known_hosts file
	// HandshakeTimeout bounds TCP connect plus SSH handshake; 20s if zero.
	HandshakeTimeout time.Duration
}

// hostKeyCallback reads known_hosts afresh, so an operator can fix the file
// while the agent keeps retrying other errors.
func (d *Dialer) hostKeyCallback() (ssh.HostKeyCallback, []string, error) {
	cb, err := knownhosts.New(d.KnownHosts)
	if err != nil {
		return nil, nil, fmt.Errorf("read known_hosts %s: %w", d.KnownHosts, err)
	}
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(host, remote, key)
		if err == nil {
			return nil
		}
		he := &HostKeyError{Host: knownhosts.Normalize(host), KnownHosts: d.KnownHosts, Presented: ssh.FingerprintSHA256(key)}
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &re):
			he.Revoked = true
		case errors.As(err, &ke):
			if len(ke.Want) > 0 {
				he.Changed = true
				var at []string
				for _, w := range ke.Want {
					at = append(at, fmt.Sprintf("%s:%d %s", w.Filename, w.Line, w.Key.Type()))
				}
				he.Known = strings.Join(at, ", ")
			}
		default:
			return fmt.Errorf("check host key of %s: %w", host, err)
		}
		return he
	}
	return check, hostKeyAlgorithms(cb, d.Address), nil
}

// hostKeyAlgorithms asks known_hosts which key types it has for addr, so
// the server is asked for a key we can check instead of, say, its RSA key
// when the file holds its Ed25519 one (which would look like a change).
func hostKeyAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	// A throwaway key never matches; the error lists the wanted keys.
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil
	}
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	var remote net.Addr = &net.TCPAddr{}
	if tcp != nil {
		remote = tcp
	}
	var ke *knownhosts.KeyError
	if err := cb(addr, remote, probe); !errors.As(err, &ke) {
		return nil
	}
	seen := map[string]bool{}
	var algos []string
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algos = append(algos, a)
		}
	}
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
			add(t)
		default:
			add(t)
		}
	}
	return algos
}

// Dial connects and authenticates. A *HostKeyError (wrapped) means the
// host key was refused.
func (d *Dialer) Dial(ctx context.Context) (*ssh.Client, error) {
	check, algos, err := d.hostKeyCallback()
	if err != nil {
		return nil, err
	}
	timeout := d.HandshakeTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	// keyTried: the server answered the publickey attempt (the callback
	// runs after each attempt, with the methods tried so far).
	keyTried := false
	cfg := &ssh.ClientConfig{
		User:              "gbc-agent", // ignored by the coordinator: the key decides
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(d.Identity)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: algos,
		Timeout:           timeout,
		AuthCallback: func(ac *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
			if slices.Contains(ac.TriedMethods, "publickey") {
				keyTried = true
			}
			return nil, nil
		},
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(dctx, "tcp", d.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to coordinator %s: %w", d.Address, err)
	}
	// The handshake has no context; a deadline plus closing on ctx bound it.
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, d.Address, cfg)
	if !stop() && err == nil {
		c.Close()
		err = dctx.Err()
	}
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk // already names the host and the file
		}
		if keyTried && dctx.Err() == nil && !transportFailed(err) {
			return nil, &AuthRefusedError{Address: d.Address, Fingerprint: ssh.FingerprintSHA256(d.Identity.PublicKey())}
		}
		return nil, fmt.Errorf("ssh handshake with coordinator %s: %w", d.Address, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
