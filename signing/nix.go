// Package signing holds the two signature schemes binary caches use: Nix's
// Ed25519 narinfo signatures ("name:base64") and Guix's ECDSA-over-Ed25519
// signatures carried as libgcrypt s-expressions (docs/formats.md §6, §7). It is
// pure: callers read and write the key files.
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
)

// maxKeyText bounds key strings so a hostile file cannot make us decode
// megabytes of base64 for a 32- or 64-byte key.
const maxKeyText = 4096

// NixPublicKey is a named Ed25519 public key as listed in trusted-public-keys.
type NixPublicKey struct {
	Name string
	Key  ed25519.PublicKey
}

// NixSecretKey is a named Ed25519 private key in Go's 64-byte layout
// (seed ‖ public), which is also the layout of Nix's secret key files.
type NixSecretKey struct {
	Name string
	Key  ed25519.PrivateKey
}

func splitNixKey(s, what string) (name string, raw []byte, err error) {
	if len(s) > maxKeyText {
		return "", nil, fmt.Errorf("parse nix %s key: %d bytes is too long", what, len(s))
	}
	s = strings.TrimRight(s, " \t\r\n")
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		if what == "secret" {
			// Never echo secret material into logs.
			return "", nil, fmt.Errorf("parse nix secret key: want name:base64")
		}
		return "", nil, fmt.Errorf("parse nix %s key %q: want name:base64", what, abbrev(s))
	}
	name = s[:i]
	if strings.ContainsAny(name, " \t\r\n") {
		return "", nil, fmt.Errorf("parse nix %s key: name %q contains whitespace", what, abbrev(name))
	}
	raw, err = base64.StdEncoding.DecodeString(s[i+1:])
	if err != nil {
		return "", nil, fmt.Errorf("parse nix %s key %q: base64: %w", what, name, err)
	}
	return name, raw, nil
}

// ParseNixPublicKey reads "name:base64(32 bytes)"; trailing whitespace is
// tolerated because key files are often saved with a newline.
func ParseNixPublicKey(s string) (NixPublicKey, error) {
	name, raw, err := splitNixKey(s, "public")
	if err != nil {
		return NixPublicKey{}, err
	}
	if len(raw) != ed25519.PublicKeySize {
		return NixPublicKey{}, fmt.Errorf("parse nix public key %q: %d key bytes, want %d", name, len(raw), ed25519.PublicKeySize)
	}
	return NixPublicKey{Name: name, Key: ed25519.PublicKey(raw)}, nil
}

// ParseNixSecretKey reads "name:base64(64 bytes)" and checks that the public
// half matches the seed, since ed25519.Sign trusts it blindly and a mismatch
// would silently produce signatures nobody can verify.
func ParseNixSecretKey(s string) (NixSecretKey, error) {
	name, raw, err := splitNixKey(s, "secret")
	if err != nil {
		return NixSecretKey{}, err
	}
	if len(raw) != ed25519.PrivateKeySize {
		return NixSecretKey{}, fmt.Errorf("parse nix secret key %q: %d key bytes, want %d", name, len(raw), ed25519.PrivateKeySize)
	}
	k := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
	if subtle.ConstantTimeCompare(k[32:], raw[32:]) != 1 {
		return NixSecretKey{}, fmt.Errorf("parse nix secret key %q: public half does not match the seed", name)
	}
	return NixSecretKey{Name: name, Key: k}, nil
}

// GenerateNixKey makes a fresh key pair, like nix-store --generate-binary-cache-key.
func GenerateNixKey(name string) (NixSecretKey, error) {
	if name == "" || strings.ContainsAny(name, ": \t\r\n") {
		return NixSecretKey{}, fmt.Errorf("generate nix key: invalid name %q (must be non-empty, without ':' or whitespace)", name)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return NixSecretKey{}, fmt.Errorf("generate nix key %q: %w", name, err)
	}
	return NixSecretKey{Name: name, Key: priv}, nil
}

// String is the key file content, without a trailing newline as Nix writes it.
func (k NixPublicKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// String is the secret key file content, without a trailing newline.
func (k NixSecretKey) String() string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(k.Key)
}

// Public returns the matching public key under the same name.
func (k NixSecretKey) Public() NixPublicKey {
	return NixPublicKey{Name: k.Name, Key: ed25519.PublicKey(append([]byte(nil), k.Key[32:]...))}
}

// Sign returns "name:base64(signature)" as written in a narinfo Sig: line.
func (k NixSecretKey) Sign(msg []byte) string {
	return k.Name + ":" + base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, msg))
}

// VerifyNix reports whether sig ("name:base64") is a valid signature of msg
// by one of keys with that name. Like Nix, the name selects the key; a
// signature under an unknown name never verifies.
func VerifyNix(sig string, msg []byte, keys []NixPublicKey) bool {
	if len(sig) > maxKeyText {
		return false
	}
	i := strings.IndexByte(sig, ':')
	if i <= 0 {
		return false
	}
	name := sig[:i]
	raw, err := base64.StdEncoding.DecodeString(sig[i+1:])
	if err != nil || len(raw) != ed25519.SignatureSize {
		return false
	}
	for _, k := range keys {
		if k.Name == name && len(k.Key) == ed25519.PublicKeySize && ed25519.Verify(k.Key, msg, raw) {
			return true
		}
	}
	return false
}

// abbrev keeps error messages short when the input is huge or hostile.
func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
