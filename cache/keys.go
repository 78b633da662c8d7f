package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gbc-farm/gbc/signing"
)

// Key file names in the coordinator's state directory.
const (
	NixSecretKeyFile  = "signing-key.sec"
	NixPublicKeyFile  = "signing-key.pub"
	GuixSecretKeyFile = "guix-signing-key.sec"
	GuixPublicKeyFile = "guix-signing-key.pub"
)

// Keys are the cache's signing keys.
type Keys struct {
	Nix  signing.NixSecretKey
	Guix *signing.GuixSecretKey // nil unless the store is /gnu/store
}

// LoadOrCreateKeys loads the cache's signing keys from stateDir, generating
// them on first start. The Nix key is stateDir/signing-key.sec (mode 0600)
// and .pub in Nix's name:base64 format, named nixKeyName when generated; a
// non-empty nixKeyFile is used instead of stateDir/signing-key.sec (and is
// never written). For storeDir /gnu/store a Guix key pair is kept the same
// way as guix-signing-key.sec/.pub in libgcrypt s-expression format.
func LoadOrCreateKeys(stateDir, nixKeyName, storeDir, nixKeyFile string) (Keys, error) {
	var k Keys
	if nixKeyFile != "" {
		b, err := os.ReadFile(nixKeyFile)
		if err != nil {
			return k, fmt.Errorf("cache keys: %w", err)
		}
		k.Nix, err = signing.ParseNixSecretKey(strings.TrimSpace(string(b)))
		if err != nil {
			return k, fmt.Errorf("cache keys: %s: %w", nixKeyFile, err)
		}
	} else {
		sec := filepath.Join(stateDir, NixSecretKeyFile)
		b, err := loadOrCreate(sec, func() ([]byte, error) {
			if nixKeyName == "" {
				return nil, errors.New("empty Nix key name")
			}
			key, err := signing.GenerateNixKey(nixKeyName)
			return []byte(key.String()), err
		})
		if err != nil {
			return k, err
		}
		k.Nix, err = signing.ParseNixSecretKey(strings.TrimSpace(string(b)))
		if err != nil {
			return k, fmt.Errorf("cache keys: %s: %w", sec, err)
		}
		if err := ensurePublic(filepath.Join(stateDir, NixPublicKeyFile), []byte(k.Nix.Public().String())); err != nil {
			return k, err
		}
	}
	if storeDir != "/gnu/store" {
		return k, nil
	}
	sec := filepath.Join(stateDir, GuixSecretKeyFile)
	b, err := loadOrCreate(sec, func() ([]byte, error) {
		key, err := signing.GenerateGuixKey()
		return key.Bytes(), err
	})
	if err != nil {
		return k, err
	}
	gk, err := signing.ParseGuixSecretKey(b)
	if err != nil {
		return k, fmt.Errorf("cache keys: %s: %w", sec, err)
	}
	k.Guix = &gk
	if err := ensurePublic(filepath.Join(stateDir, GuixPublicKeyFile), gk.Public().Bytes()); err != nil {
		return k, err
	}
	return k, nil
}

// loadOrCreate reads path, or creates it (0600) with gen's output. The new
// file is linked into place, so two starting processes cannot overwrite each
// other's key: the loser reads the winner's.
func loadOrCreate(path string, gen func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cache keys: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cache keys: %w", err)
	}
	b, err = gen()
	if err != nil {
		return nil, fmt.Errorf("cache keys: generate %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), tmpPrefix+"key-")
	if err != nil {
		return nil, fmt.Errorf("cache keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync() // CreateTemp makes 0600 files
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cache keys: write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	} else if err != nil {
		return nil, fmt.Errorf("cache keys: %w", err)
	}
	return b, syncDir(filepath.Dir(path))
}

// ensurePublic (re)writes a public key file when it is missing or stale.
func ensurePublic(path string, want []byte) error {
	if b, err := os.ReadFile(path); err == nil && string(b) == string(want) {
		return nil
	}
	if err := writeFileAtomic(path, want); err != nil {
		return fmt.Errorf("cache keys: %w", err)
	}
	return nil
}
