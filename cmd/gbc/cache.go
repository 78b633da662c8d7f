package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/cache"
)

const cacheUsage = `usage: gbc cache migrate --from URL --to URL [--credentials FILE] [--spool-dir DIR]

Copies a cache from one store to another, e.g. from a directory to a bucket:

  gbc cache migrate --from file:/var/lib/gbc/cache \
    --to 's3://nix-cache/farm?endpoint=127.0.0.1:8333&scheme=http'

NARs first (each checked to hash to its name), then logs, then narinfos,
each only once its NAR is in the destination, so the destination is a valid
cache at every moment. Objects already there are skipped: run it again
after an interruption, and once more with the coordinator stopped to copy
what it published meanwhile. s3:// credentials come from AWS_ACCESS_KEY_ID
and AWS_SECRET_ACCESS_KEY, or --credentials (an AWS shared credentials
file). It prints what it copied and exits 1 if an object was left behind.
`

func runCache(ctx context.Context, e env, args []string) error {
	_, rest, done, err := subcommand(e, args, cacheUsage, "migrate")
	if done {
		return err
	}
	fs := pflag.NewFlagSet("gbc cache migrate", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "source store `URL` (file:DIR or s3://…)")
	to := fs.String("to", "", "destination store `URL` (file:DIR or s3://…)")
	credsFile := fs.String("credentials", "", "AWS shared credentials `FILE` for s3:// stores")
	spool := fs.String("spool-dir", "", "where uploads to an s3:// destination are spooled (default: the system temp dir)")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, cacheUsage)
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s", err, cacheUsage)}
	}
	switch {
	case fs.NArg() != 0:
		return usageError{fmt.Sprintf("unexpected arguments %q\n%s", fs.Args(), cacheUsage)}
	case *from == "" || *to == "":
		return usageError{"--from and --to are required\n" + cacheUsage}
	case *from == *to:
		return usageError{"--from and --to are the same store"}
	}
	creds := cache.Credentials{
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"), File: *credsFile,
	}
	src, err := cache.OpenStoreURL(ctx, *from, creds, *spool, e.log)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	dst, err := cache.OpenStoreURL(ctx, *to, creds, *spool, e.log)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	st, err := cache.Migrate(ctx, src, dst, e.log)
	fmt.Fprintf(e.stdout, "copied %d objects (%d bytes), skipped %d already there\n", st.Copied, st.Bytes, st.Skipped)
	if len(st.Bad) > 0 {
		fmt.Fprintf(e.stdout, "left behind %d: %s\n", len(st.Bad), strings.Join(st.Bad, " "))
	}
	if err != nil {
		return err
	}
	if len(st.Bad) > 0 {
		return fmt.Errorf("%d objects were not copied", len(st.Bad))
	}
	return nil
}
