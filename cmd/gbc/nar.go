package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/nar"
)

const narUsage = `usage: gbc nar <subcommand> [args]

subcommands:
  dump PATH      write the NAR serialisation of PATH to stdout (like nix-store --dump)
  hash PATH      print sha256:<nix-base32> of the NAR of PATH (like nix-hash --type sha256 --base32)
  restore DIR    read a NAR on stdin and recreate it at DIR, which must not exist
`

func runNar(ctx context.Context, e env, args []string) error {
	sub, rest, done, err := subcommand(e, args, narUsage, "dump", "hash", "restore")
	if done {
		return err
	}

	fs := pflag.NewFlagSet("gbc nar "+sub, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	arg := "PATH"
	if sub == "restore" {
		arg = "DIR"
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(e.stdout, "usage: gbc nar %s %s\n", sub, arg)
			return nil
		}
		return usageError{fmt.Sprintf("%v\nusage: gbc nar %s %s", err, sub, arg)}
	}
	if fs.NArg() != 1 {
		return usageError{fmt.Sprintf("want exactly one %s, got %d arguments\nusage: gbc nar %s %s", arg, fs.NArg(), sub, arg)}
	}
	path := fs.Arg(0)

	switch sub {
	case "dump":
		// Dump buffers and flushes itself.
		if err := nar.Dump(e.stdout, path); err != nil {
			return err
		}
	case "hash":
		h, _, err := nar.HashPath(path)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, h.String())
	case "restore":
		if err := nar.Restore(e.stdin, path); err != nil {
			return err
		}
	}
	return nil
}
