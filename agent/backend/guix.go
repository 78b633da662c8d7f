package backend

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Guix drives a Guix store through the guix command.
//
// Guix cannot be installed on the machines this was written on, so only
// the command lines and the parsing of Guix's output are tested (unit
// tests with recorded output); nothing here has run against a real
// guix-daemon yet.
type Guix struct {
	GuixCmd string // guix command; "guix" when empty
	Store   string // store directory; "/gnu/store" when empty
}

var _ Backend = (*Guix)(nil)

func (g *Guix) Name() string { return "guix" }

func (g *Guix) StoreDir() string {
	if g.Store == "" {
		return "/gnu/store"
	}
	return g.Store
}

func (g *Guix) cmd() string {
	if g.GuixCmd == "" {
		return "guix"
	}
	return g.GuixCmd
}

func (g *Guix) env() []string { return os.Environ() }

func (g *Guix) Version(ctx context.Context) (string, error) {
	res, err := runCmd(ctx, g.env(), nil, g.cmd(), "--version")
	if err != nil {
		return "", err
	}
	if res.exitCode != 0 {
		return "", fmt.Errorf("%s --version: exit %d: %s", g.cmd(), res.exitCode, lastErrorLine(res.tail))
	}
	return ParseGuixVersion(res.stdout), nil
}

// ParseGuixVersion returns the first line of `guix --version`,
// e.g. "guix (GNU Guix) 1.4.0".
func ParseGuixVersion(stdout []byte) string {
	if ls := lines(stdout); len(ls) > 0 {
		return ls[0]
	}
	return ""
}

// GuixBuildArgs is the guix command line for one build. Verbosity 2 makes
// guix build print the builder's log rather than a progress line.
func GuixBuildArgs(drv string, opts Options) []string {
	args := []string{"build", "--verbosity=2"}
	if opts.Timeout > 0 {
		args = append(args, "--timeout="+seconds(opts.Timeout))
	}
	if opts.MaxSilentTime > 0 {
		args = append(args, "--max-silent-time="+seconds(opts.MaxSilentTime))
	}
	if opts.GCRoot != "" {
		args = append(args, "--root="+opts.GCRoot)
	}
	return append(args, drv)
}

func (g *Guix) Realise(ctx context.Context, drv string, opts Options, log io.Writer) (Result, error) {
	res, err := runCmd(ctx, g.env(), log, g.cmd(), GuixBuildArgs(drv, opts)...)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, err
		}
		return Result{Outcome: SetupFailed, ExitCode: -1, Message: err.Error()}, nil
	}
	return ClassifyGuix(res.exitCode, res.tail), nil
}

var guixBuildFailedRe = regexp.MustCompile("(build of|builder for) [`'‘][^'’]+['’] failed")

// ClassifyGuix turns a guix build exit status and the tail of its stderr
// into a Result. guix build exits 1 for every kind of failure, so the
// messages decide: the daemon's "timed out after N seconds [of silence]",
// then "build of `…' failed"; anything else is a setup failure.
func ClassifyGuix(exit int, tail string) Result {
	r := Result{ExitCode: exit, Message: lastErrorLine(tail)}
	switch {
	case exit == 0:
		r.Outcome = Succeeded
		r.Message = ""
	case silentRe.MatchString(tail):
		r.Outcome = SilentTimedOut
	case timeoutRe.MatchString(tail):
		r.Outcome = TimedOut
	case guixBuildFailedRe.MatchString(tail):
		r.Outcome = BuildFailed
	default:
		r.Outcome = SetupFailed
	}
	return r
}

// Missing runs guix build --dry-run, which prints what would be built.
func (g *Guix) Missing(ctx context.Context, drv string) ([]string, error) {
	res, err := runCmd(ctx, g.env(), nil, g.cmd(), "build", "--dry-run", drv)
	if err != nil {
		return nil, err
	}
	if res.exitCode != 0 {
		return nil, fmt.Errorf("%s build --dry-run %s: exit %d: %s", g.cmd(), drv, res.exitCode, lastErrorLine(res.tail))
	}
	return ParseGuixDryRun(drv, res.tail), nil
}

// ParseGuixDryRun returns the derivations other than drv that
// "guix build --dry-run" says would be built.
func ParseGuixDryRun(drv, stderr string) []string {
	var out []string
	for _, p := range indentedList(stderr, func(l string) bool {
		return l == "The following derivation would be built:" ||
			l == "The following derivations would be built:" ||
			(strings.HasPrefix(l, "The following ") && strings.HasSuffix(l, " derivations would be built:"))
	}) {
		if p != drv {
			out = append(out, p)
		}
	}
	return out
}

func (g *Guix) References(ctx context.Context, path string) ([]string, error) {
	res, err := runCmd(ctx, g.env(), nil, g.cmd(), "gc", "--references", path)
	if err != nil {
		return nil, err
	}
	if res.exitCode != 0 {
		return nil, fmt.Errorf("%s gc --references %s: exit %d: %s", g.cmd(), path, res.exitCode, lastErrorLine(res.tail))
	}
	refs := lines(res.stdout)
	if refs == nil {
		refs = []string{}
	}
	return refs, nil
}
