package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/signing"
)

const keyUsage = `usage: gbc key generate --nix NAME --secret FILE --public FILE
       gbc key generate --guix --secret FILE --public FILE

Writes a new signing key pair. Nix keys use nix-store
--generate-binary-cache-key's format; Guix keys are libgcrypt
s-expressions like /etc/guix/signing-key.{sec,pub}. Existing files are never
overwritten; the secret file is created with mode 0600.
`

func runKey(ctx context.Context, e env, args []string) error {
	_, rest, done, err := subcommand(e, args, keyUsage, "generate")
	if done {
		return err
	}
	fs := pflag.NewFlagSet("gbc key generate", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	nixName := fs.String("nix", "", "generate a Nix key with this name (e.g. cache.example.org-1)")
	guix := fs.Bool("guix", false, "generate a Guix key")
	secret := fs.String("secret", "", "secret key file to create")
	public := fs.String("public", "", "public key file to create")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, keyUsage)
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s", err, keyUsage)}
	}
	switch {
	case fs.NArg() != 0:
		return usageError{fmt.Sprintf("unexpected arguments %q\n%s", fs.Args(), keyUsage)}
	case (*nixName == "") == !*guix:
		return usageError{"give exactly one of --nix NAME and --guix\n" + keyUsage}
	case *secret == "" || *public == "":
		return usageError{"--secret and --public are required\n" + keyUsage}
	case *secret == *public:
		return usageError{"--secret and --public must be different files"}
	}
	var secText, pubText []byte
	if *guix {
		k, err := signing.GenerateGuixKey()
		if err != nil {
			return err
		}
		secText, pubText = k.Bytes(), k.Public().Bytes()
	} else {
		k, err := signing.GenerateNixKey(*nixName)
		if err != nil {
			return usageError{err.Error()}
		}
		secText, pubText = []byte(k.String()), []byte(k.Public().String())
	}
	for _, p := range []string{*secret, *public} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("refusing to overwrite existing %s", p)
		}
	}
	if err := writeNew(*secret, secText, 0o600); err != nil {
		return err
	}
	if err := writeNew(*public, pubText, 0o644); err != nil {
		// Don't leave half a key pair behind.
		os.Remove(*secret)
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s and %s\n", *secret, *public)
	return nil
}

// writeNew creates path exclusively (O_EXCL also guards against a file
// appearing between the check and the write) and syncs it.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	// Chmod so the mode does not depend on the umask.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		return nil
	}
	os.Remove(path)
	return fmt.Errorf("write key file %s: %w", path, err)
}
