package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/signing"
)

const narinfoUsage = `usage: gbc narinfo verify --key PUBKEY [--key PUBKEY...] FILE.narinfo

Exit 0 when FILE (or - for stdin) carries a signature that verifies with one
of the keys. Works for Nix narinfos (Sig:) and Guix narinfos (Signature:).

PUBKEY is one of:
  name:base64            a Nix public key, or a file containing one
  FILE                   a Guix public key file ((public-key (ecc ...)))
  FILE                   a Guix ACL file (/etc/guix/acl)
`

// maxKeyFile bounds key and ACL files read from the command line.
const maxKeyFile = 1 << 20

func runNarinfo(ctx context.Context, e env, args []string) error {
	_, rest, done, err := subcommand(e, args, narinfoUsage, "verify")
	if done {
		return err
	}
	fs := pflag.NewFlagSet("gbc narinfo verify", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keyArgs := fs.StringArray("key", nil, "trusted public key, key file or Guix ACL (repeatable)")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, narinfoUsage)
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s", err, narinfoUsage)}
	}
	if len(*keyArgs) == 0 {
		return usageError{"--key is required\n" + narinfoUsage}
	}
	if fs.NArg() != 1 {
		return usageError{fmt.Sprintf("want exactly one narinfo file, got %d arguments\n%s", fs.NArg(), narinfoUsage)}
	}
	keys, err := loadVerifyKeys(*keyArgs)
	if err != nil {
		return usageError{err.Error()}
	}
	raw, err := readBounded(e.stdin, fs.Arg(0), narinfo.MaxSize)
	if err != nil {
		return err
	}
	ni, err := narinfo.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	var errs []error
	if ni.Signature != "" {
		if len(keys.acl.Entries) == 0 {
			errs = append(errs, errors.New("the narinfo has a Guix signature but no Guix key or ACL was given"))
		} else if err := ni.VerifyGuix(keys.acl); err != nil {
			errs = append(errs, err)
		} else {
			host := strings.Split(ni.Signature, ";")[1]
			fmt.Fprintf(e.stdout, "ok: %s (Guix signature, host %s)\n", ni.StorePath, host)
			return nil
		}
	}
	if len(ni.Sigs) > 0 {
		if len(keys.nix) == 0 {
			errs = append(errs, errors.New("the narinfo has Nix signatures but no Nix key was given"))
		} else if err := ni.VerifyNix(keys.nix); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(e.stdout, "ok: %s (Nix signature)\n", ni.StorePath)
			return nil
		}
	}
	if ni.Signature == "" && len(ni.Sigs) == 0 {
		errs = append(errs, errors.New("the narinfo is not signed"))
	}
	return fmt.Errorf("%s: %w", fs.Arg(0), errors.Join(errs...))
}

type verifyKeys struct {
	nix []signing.NixPublicKey
	acl *signing.ACL
}

// loadVerifyKeys accepts each argument as a file when one exists by that
// name, else as a literal Nix key.
func loadVerifyKeys(args []string) (verifyKeys, error) {
	k := verifyKeys{acl: signing.NewACL()}
	for _, a := range args {
		text := []byte(a)
		if _, err := os.Stat(a); err == nil {
			if text, err = readBounded(nil, a, maxKeyFile); err != nil {
				return k, err
			}
		}
		trimmed := bytes.TrimSpace(text)
		if !bytes.HasPrefix(trimmed, []byte("(")) {
			pk, err := signing.ParseNixPublicKey(string(trimmed))
			if err != nil {
				return k, fmt.Errorf("--key %s: %w", a, err)
			}
			k.nix = append(k.nix, pk)
			continue
		}
		s, err := signing.ParseSexp(trimmed)
		if err != nil {
			return k, fmt.Errorf("--key %s: %w", a, err)
		}
		switch s.Head() {
		case "public-key":
			pk, err := signing.ParseGuixPublicKey(trimmed)
			if err != nil {
				return k, fmt.Errorf("--key %s: %w", a, err)
			}
			k.acl.Add(pk)
		case "acl":
			acl, err := signing.ParseACL(trimmed)
			if err != nil {
				return k, fmt.Errorf("--key %s: %w", a, err)
			}
			for _, ent := range acl.Entries {
				if ent.Key != nil {
					k.acl.Add(*ent.Key)
				}
			}
		default:
			return k, fmt.Errorf("--key %s: s-expression %q is neither a public key nor an ACL", a, s.Head())
		}
	}
	return k, nil
}

// readBounded reads a file (or stdin for "-") refusing more than max bytes.
func readBounded(stdin io.Reader, name string, max int64) ([]byte, error) {
	var r io.Reader
	if name == "-" && stdin != nil {
		r = stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, max)
	}
	return b, nil
}
