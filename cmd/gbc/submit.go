package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/sshd"
)

const submitUsage = `usage: gbc submit --coordinator HOST:PORT --identity KEYFILE --known-hosts FILE [flags] DRV...

Sends the closure of each derivation from the local store to the
coordinator's cache (nix-store --export of nix-store -qR DRV, read by the
coordinator's import command) and submits the derivations (its build
command), over one SSH connection. The same as

  nix-store --export $(nix-store -qR DRV...) | ssh COORDINATOR import
  ssh COORDINATOR build DRV...

flags:
`

func runSubmit(ctx context.Context, e env, args []string) error {
	fs := pflag.NewFlagSet("gbc submit", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	conn := addConnFlags(fs, "operator")
	build := addBuildFlags(fs)
	nixStore := fs.String("nix-store", "nix-store", "nix-store `COMMAND` used for the query and export")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, submitUsage+fs.FlagUsages())
			return nil
		}
		return usageError{fmt.Sprintf("%v\n%s%s", err, submitUsage, fs.FlagUsages())}
	}
	if f := conn.missing(); f != "" {
		return usageError{fmt.Sprintf("%s is required\n%s%s", f, submitUsage, fs.FlagUsages())}
	}
	drvs := fs.Args()
	if *build.stdin {
		data, err := io.ReadAll(io.LimitReader(e.stdin, 64<<20+1))
		if err != nil {
			return fmt.Errorf("--stdin: %w", err)
		}
		if len(data) > 64<<20 {
			return usageError{"--stdin: more than 64 MiB of paths"}
		}
		drvs = append(drvs, strings.Fields(string(data))...)
	}
	if len(drvs) == 0 {
		return usageError{"want at least one .drv path\n" + submitUsage + fs.FlagUsages()}
	}
	for _, d := range drvs {
		if !strings.HasSuffix(d, ".drv") || !strings.HasPrefix(d, "/") {
			return usageError{fmt.Sprintf("%q is not an absolute .drv path", d)}
		}
	}
	for _, t := range *build.tags {
		if k, _, ok := strings.Cut(t, "="); !ok || k == "" {
			return usageError{fmt.Sprintf("--tag %q is not K=V", t)}
		}
	}

	// The closure first: a typo fails here, before anything is sent.
	var qerr bytes.Buffer
	q := exec.CommandContext(ctx, *nixStore, append([]string{"--query", "--requisites"}, drvs...)...)
	q.Stderr = &qerr
	out, err := q.Output()
	if err != nil {
		return fmt.Errorf("%s --query --requisites: %w: %s", *nixStore, err, strings.TrimSpace(qerr.String()))
	}
	closure := strings.Fields(string(out))

	d, err := conn.dialer()
	if err != nil {
		return err
	}
	client, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()

	if err := importClosure(ctx, client, *nixStore, closure, e); err != nil {
		return err
	}
	e.log.Info("closure imported", "paths", len(closure))

	cmd := append([]string{"build"}, build.args(fs)...)
	// Paths that would make the command line long go on stdin: the SSH
	// layer drops a request over 256 KiB without a word.
	if n := len(strings.Join(drvs, " ")); n > sshd.MaxCommandBytes/2 {
		cmd = append(cmd, "--stdin")
		return remote(ctx, client, cmd, strings.NewReader(strings.Join(drvs, "\n")+"\n"), e.stdout, e.stderr)
	}
	cmd = append(cmd, drvs...)
	return remote(ctx, client, cmd, nil, e.stdout, e.stderr)
}

// buildFlags are the coordinator's build flags, which gbc submit takes too
// and passes on as given (the coordinator checks their values).
type buildFlags struct {
	tags  *[]string
	stdin *bool    // read more paths from stdin; sent on the command's stdin when long
	names []string // every flag but --tag, passed on as --NAME=VALUE when set
}

func addBuildFlags(fs *pflag.FlagSet) buildFlags {
	b := buildFlags{tags: fs.StringArray("tag", nil, "`K=V` label for the builds, repeatable")}
	fs.Int("priority", 0, "build priority (higher runs first)")
	fs.Bool("wait", false, "wait for the builds and print their results; exit 0 only if all succeeded")
	fs.String("defer-until", "", "hold the builds back until `TIME` (RFC 3339, or +DURATION from now, e.g. +10m)")
	fs.Bool("ignore-if-build-for-outputs-exists", false, "reuse a queued, running or succeeded build of the same derivation instead of adding one")
	fs.Bool("ensure-all-related-derivation-outputs-have-successful-builds", false,
		"also submit every derivation in the input closure whose outputs have no successful build and are not in the cache")
	fs.Duration("timeout", 0, "stop a build running longer than this (default: the coordinator's)")
	fs.Duration("max-silent-time", 0, "stop a build silent for longer than this (default: the coordinator's)")
	fs.Bool("json", false, "print JSON: the builds (with what each waits for), and with --wait their results")
	b.stdin = fs.Bool("stdin", false, "also read .drv paths from stdin, separated by white space")
	b.names = []string{"priority", "wait", "defer-until", "ignore-if-build-for-outputs-exists",
		"ensure-all-related-derivation-outputs-have-successful-builds", "timeout", "max-silent-time", "json"}
	return b
}

// args are the build command's flags as the operator set them.
func (b buildFlags) args(fs *pflag.FlagSet) []string {
	var out []string
	for _, n := range b.names {
		if f := fs.Lookup(n); f != nil && f.Changed {
			out = append(out, "--"+n+"="+f.Value.String())
		}
	}
	for _, t := range *b.tags {
		out = append(out, "--tag="+t)
	}
	return out
}

// importClosure streams nix-store --export of paths into the coordinator's
// import command.
func importClosure(ctx context.Context, client *ssh.Client, nixStore string, paths []string, e env) error {
	var xerr bytes.Buffer
	x := exec.CommandContext(ctx, nixStore, append([]string{"--export"}, paths...)...)
	x.Stderr = &xerr
	stream, err := x.StdoutPipe()
	if err != nil {
		return err
	}
	if err := x.Start(); err != nil {
		return fmt.Errorf("%s --export: %w", nixStore, err)
	}
	rerr := remote(ctx, client, []string{"import"}, stream, io.Discard, e.stderr)
	if rerr != nil {
		x.Process.Kill()
	}
	werr := x.Wait()
	if rerr != nil {
		return fmt.Errorf("import on the coordinator: %w", rerr)
	}
	if werr != nil {
		return fmt.Errorf("%s --export: %w: %s", nixStore, werr, strings.TrimSpace(xerr.String()))
	}
	return nil
}

// remote runs one coordinator command; a non-zero exit is an error. When
// ctx ends first (SIGINT, SIGTERM: the connection is closed under it) the
// error says so and that what was submitted stays on the coordinator.
func remote(ctx context.Context, client *ssh.Client, words []string, stdin io.Reader, stdout, stderr io.Writer) error {
	s, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = shellQuote(w)
	}
	if err := s.Run(strings.Join(quoted, " ")); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stopped (%v) before the coordinator's %s command finished; builds it accepted stay queued there ('ssh COORDINATOR builds', 'build cancel ID')",
				context.Cause(ctx), words[0])
		}
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("coordinator command %q exited %d", words[0], ee.ExitStatus())
		}
		return fmt.Errorf("coordinator command %q: %w", words[0], err)
	}
	return nil
}

// shellQuote quotes w for the coordinator's POSIX-style command splitting.
func shellQuote(w string) string {
	if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:+,@") == "" {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}
