package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/storepath"
)

const drvUsage = `usage: gbc drv <subcommand> [flags] [args]

subcommands:
  show FILE.drv...   print derivations as JSON, shaped like 'nix show-derivation'
`

const drvShowUsage = `usage: gbc drv show [flags] FILE.drv...

Prints a JSON object keyed by .drv store path with outputs, inputSrcs,
inputDrvs, system, builder, args and env, as 'nix show-derivation' does.
Files may live outside the store: a file not at a valid store path is keyed
by the store path computed from its contents.

flags:
`

func runDrv(ctx context.Context, e env, args []string) error {
	_, rest, done, err := subcommand(e, args, drvUsage, "show")
	if done {
		return err
	}
	return runDrvShow(ctx, e, rest)
}

func runDrvShow(ctx context.Context, e env, args []string) error {
	fs := pflag.NewFlagSet("gbc drv show", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	recursive := fs.BoolP("recursive", "r", false, "also show every input derivation, recursively")
	root := fs.String("root", "", "with --recursive, read store paths under this directory (chroot store)")
	help := func(w io.Writer) {
		fmt.Fprint(w, drvShowUsage)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			help(e.stdout)
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s", err, drvShowUsage)}
	}
	if fs.NArg() == 0 {
		return usageError{"no .drv files given\n" + drvShowUsage}
	}
	out := map[string]*derivation.Derivation{}
	for _, file := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := derivation.ReadFile(file)
		if err != nil {
			return err
		}
		key, err := drvKey(file, d)
		if err != nil {
			return err
		}
		out[key] = d
		if !*recursive {
			continue
		}
		for _, in := range d.InputDrvs {
			if _, done := out[in.Path]; done {
				continue
			}
			closure, err := derivation.ReadClosure(*root, in.Path)
			if err != nil {
				return fmt.Errorf("inputs of %s: %w", file, err)
			}
			for p, dd := range closure {
				out[p] = dd
			}
		}
	}
	_, err := e.stdout.Write(derivation.ShowJSON(out))
	return err
}

// drvKey is the store path a .drv is shown under: the file's own path when
// it is a store path, otherwise the text path its contents hash to (which is
// where Nix would put it).
func drvKey(file string, d *derivation.Derivation) (string, error) {
	if abs, err := filepath.Abs(file); err == nil {
		if sp, err := storepath.Parse(abs); err == nil && sp.IsDerivation() && sp.StoreDir == d.StoreDir() {
			return abs, nil
		}
	}
	p, err := d.DrvPath()
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}
