// Package keys handles the coordinator's SSH identities: its host key and
// the public keys that operators and agents authenticate with.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// HostKeyFile is the host key's file name inside the state directory.
const HostKeyFile = "ssh_host_ed25519_key"

// LoadOrCreateHostKey returns the Ed25519 host key in dir, creating it
// (OpenSSH private key format, mode 0600, plus a .pub) on first use, so that
// agents that pinned the key keep trusting the coordinator across restarts.
func LoadOrCreateHostKey(dir string) (ssh.Signer, error) {
	path := filepath.Join(dir, HostKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("parse host key %s: %w", path, err)
		}
		if err := writePub(path+".pub", s.PublicKey()); err != nil {
			return nil, err
		}
		return s, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read host key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "gbc coordinator")
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	// Write to a temporary name and rename, so a crash never leaves a
	// half-written key that would fail to parse on the next start.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("write host key %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("install host key %s: %w", path, err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("host key signer: %w", err)
	}
	if err := writePub(path+".pub", s.PublicKey()); err != nil {
		return nil, err
	}
	return s, nil
}

func writePub(path string, pub ssh.PublicKey) error {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " gbc coordinator\n"
	if old, err := os.ReadFile(path); err == nil && string(old) == line {
		return nil
	}
	if err := os.WriteFile(path, []byte(line), 0o644); err != nil {
		return fmt.Errorf("write host public key %s: %w", path, err)
	}
	return nil
}

// Fingerprint renders a key's fingerprint as `ssh-keygen -l` prints it
// ("SHA256:" + unpadded base64).
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }

// MaxAuthorizedKeyLine bounds a key line taken from a user; real keys are
// well under it (an RSA-16384 key is about 2.8 KiB).
const MaxAuthorizedKeyLine = 16 * 1024

// AuthorizedKey is one parsed authorized_keys line.
type AuthorizedKey struct {
	Key         ssh.PublicKey
	Comment     string
	Fingerprint string
	// Line is the canonical "type base64 [comment]" form, without options.
	Line string
}

// ParseAuthorizedKey parses one public key line ("ssh-ed25519 AAAA… comment").
// Options before the key type are refused: the coordinator gives meaning to
// a key through its role, never through options a user pasted in.
func ParseAuthorizedKey(line string) (AuthorizedKey, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return AuthorizedKey{}, errors.New("empty public key line")
	}
	if len(line) > MaxAuthorizedKeyLine {
		return AuthorizedKey{}, fmt.Errorf("public key line is %d bytes, over the %d limit", len(line), MaxAuthorizedKeyLine)
	}
	if strings.ContainsAny(line, "\r\n") {
		return AuthorizedKey{}, errors.New("public key line must be a single line")
	}
	pub, comment, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return AuthorizedKey{}, fmt.Errorf("parse public key line %q: %w", abbreviate(line), err)
	}
	if len(opts) > 0 {
		return AuthorizedKey{}, fmt.Errorf("public key line %q: options (%s) are not accepted", abbreviate(line), strings.Join(opts, ","))
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return AuthorizedKey{}, errors.New("more than one public key given")
	}
	canon := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		canon += " " + comment
	}
	return AuthorizedKey{Key: pub, Comment: comment, Fingerprint: Fingerprint(pub), Line: canon}, nil
}

// ParseAuthorizedKeyFile reads a .pub file holding exactly one key.
func ParseAuthorizedKeyFile(path string) (AuthorizedKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return AuthorizedKey{}, fmt.Errorf("read public key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxAuthorizedKeyLine+1))
	if err != nil {
		return AuthorizedKey{}, fmt.Errorf("read public key %s: %w", path, err)
	}
	n := len(b)
	if n > MaxAuthorizedKeyLine {
		return AuthorizedKey{}, fmt.Errorf("public key file %s is over %d bytes", path, MaxAuthorizedKeyLine)
	}
	k, err := ParseAuthorizedKey(string(b[:n]))
	if err != nil {
		return AuthorizedKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
