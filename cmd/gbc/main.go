// Command gbc is the build coordinator, its agent and the operators' helpers
// in one binary. This file only routes to subcommands; each lives in its own
// file and turns flags into calls on the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// env is what every subcommand gets instead of globals.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"coordinator", "run the coordinator (SSH server, scheduler, cache)", runCoordinator},
		{"agent", "run a build agent that dials a coordinator", runAgent},
		{"submit", "import a derivation closure from the local store and build it", runSubmit},
		{"nar", "dump, hash and restore NAR archives", runNar},
		{"drv", "show derivations as JSON", runDrv},
		{"narinfo", "verify narinfo signatures", runNarinfo},
		{"key", "generate cache signing keys", runKey},
		{"cache", "copy a binary cache between stores (file:DIR, s3://…)", runCache},
	}
}

// usageError marks errors caused by the command line; they exit with 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// subcommand splits the arguments of a command group (gbc nar, gbc key, …)
// into its subcommand, one of known, and the rest. done is true when
// nothing is left to do: help was printed, or err says what is wrong.
func subcommand(e env, args []string, usage string, known ...string) (sub string, rest []string, done bool, err error) {
	if len(args) == 0 {
		return "", nil, true, usageError{"missing subcommand\n" + usage}
	}
	switch sub = args[0]; {
	case sub == "-h" || sub == "--help" || sub == "help":
		fmt.Fprint(e.stdout, usage)
		return "", nil, true, nil
	case slices.Contains(known, sub):
		return sub, args[1:], false, nil
	}
	return "", nil, true, usageError{fmt.Sprintf("unknown subcommand %q\n%s", sub, usage)}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gbc <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'gbc <command> --help' for a command's flags.")
}

func main() {
	os.Exit(run(env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		log:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, os.Args[1:]))
}

// run runs the command line args and returns the exit status.
func run(e env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(e.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		if err == nil {
			return 0
		}
		fmt.Fprintf(e.stderr, "gbc %s: %v\n", c.name, err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if full, ok := subcommandOf()[args[0]]; ok {
		fmt.Fprintf(e.stderr, "gbc: %s is a subcommand of %s: run 'gbc %s %s'\n", args[0], full, full, strings.Join(args, " "))
		return 2
	}
	fmt.Fprintf(e.stderr, "gbc: unknown command %q\n", args[0])
	usage(e.stderr)
	return 2
}

// subcommandOf maps subcommands that people type without their command
// to that command, so the refusal can say the right command line.
func subcommandOf() map[string]string {
	return map[string]string{"migrate-data": "coordinator"}
}
