package backend

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Nix drives a Nix store through nix-store (tested with Nix 2.8).
//
// Config holds extra nix.conf lines ("key = value", one per line). They
// are appended to the NIX_CONFIG the agent inherited and passed to every
// nix-store command, so an operator can say e.g. "sandbox = false" or
// "substituters =" without editing /etc/nix/nix.conf.
//
// A derivation whose outputs are already valid in the local store (built
// earlier, or on a store shared with the coordinator) is not rebuilt:
// nix-store --realise succeeds at once and the agent uploads what is there.
type Nix struct {
	Config   string // extra NIX_CONFIG lines
	NixStore string // nix-store command; "nix-store" when empty
	Store    string // store directory; "/nix/store" when empty
	NixCmd   string // nix command (for nix copy); "nix" when empty
}

var _ Backend = (*Nix)(nil)

func (n *Nix) Name() string { return "nix" }

func (n *Nix) StoreDir() string {
	if n.Store == "" {
		return "/nix/store"
	}
	return n.Store
}

func (n *Nix) cmd() string {
	if n.NixStore == "" {
		return "nix-store"
	}
	return n.NixStore
}

func (n *Nix) env() []string { return environ("NIX_CONFIG", n.Config) }

func (n *Nix) Version(ctx context.Context) (string, error) {
	res, err := runCmd(ctx, n.env(), nil, n.cmd(), "--version")
	if err != nil {
		return "", err
	}
	if res.exitCode != 0 {
		return "", fmt.Errorf("%s --version: exit %d: %s", n.cmd(), res.exitCode, lastErrorLine(res.tail))
	}
	return strings.TrimSpace(string(res.stdout)), nil
}

// NixRealiseArgs is the nix-store command line for one build.
func NixRealiseArgs(drv string, opts Options) []string {
	args := []string{"--realise", drv}
	if opts.Timeout > 0 {
		args = append(args, "--timeout", seconds(opts.Timeout))
	}
	if opts.MaxSilentTime > 0 {
		args = append(args, "--max-silent-time", seconds(opts.MaxSilentTime))
	}
	if opts.GCRoot != "" {
		args = append(args, "--add-root", opts.GCRoot)
	}
	if opts.NoSubstitute {
		args = append(args, "--option", "substitute", "false")
	}
	return args
}

func (n *Nix) Realise(ctx context.Context, drv string, opts Options, log io.Writer) (Result, error) {
	res, err := runCmd(ctx, n.env(), log, n.cmd(), NixRealiseArgs(drv, opts)...)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, err
		}
		return Result{Outcome: SetupFailed, ExitCode: -1, Message: err.Error()}, nil
	}
	return ClassifyNix(drv, res.exitCode, res.tail), nil
}

var (
	// Both daemons (guix-daemon is a Nix fork) word timeouts like this.
	silentRe     = regexp.MustCompile(`timed out after \d+ seconds of silence`)
	timeoutRe    = regexp.MustCompile(`timed out after \d+ seconds`)
	nixMissingRe = regexp.MustCompile(`cannot build missing derivation '([^']+)'`)
)

// ClassifyNix turns a nix-store --realise exit status and the tail of its
// stderr into a Result. Nix's status is 0x60|mask for build problems
// (100 build failed, 101 timed out, 102 hash mismatch, 104 not
// deterministic); anything else (1) means Nix could not even try, which is
// a setup failure. Both timeouts exit 101; only the message tells
// --max-silent-time ("… seconds of silence") from --timeout.
func ClassifyNix(drv string, exit int, tail string) Result {
	r := Result{ExitCode: exit, Message: lastErrorLine(tail)}
	switch {
	case exit == 0:
		r.Outcome = Succeeded
		r.Message = ""
	case exit >= 0x60 && exit <= 0x6f && exit&0x01 != 0:
		// The status says timeout; only the wording says which one.
		r.Outcome = TimedOut
		if silentRe.MatchString(tail) {
			r.Outcome = SilentTimedOut
		}
	case exit >= 0x60 && exit <= 0x6f:
		r.Outcome = BuildFailed
	default:
		r.Outcome = SetupFailed
		r.Missing = nixMissing(tail)
	}
	return r
}

// nixMissing extracts the paths Nix said it cannot build or find.
func nixMissing(text string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range indentedList(text, func(l string) bool {
		return l == "don't know how to build these paths:"
	}) {
		add(p)
	}
	for _, m := range nixMissingRe.FindAllStringSubmatch(text, -1) {
		add(m[1])
	}
	return out
}

// Missing runs nix-store --realise --dry-run, which lists what would be
// built and fetched without doing it.
func (n *Nix) Missing(ctx context.Context, drv string) ([]string, error) {
	res, err := runCmd(ctx, n.env(), nil, n.cmd(), "--realise", "--dry-run", drv)
	if err != nil {
		return nil, err
	}
	missing := ParseNixDryRun(drv, res.tail)
	if res.exitCode != 0 && len(missing) == 0 {
		return nil, fmt.Errorf("%s --realise --dry-run %s: exit %d: %s", n.cmd(), drv, res.exitCode, lastErrorLine(res.tail))
	}
	return missing, nil
}

// ParseNixDryRun returns the derivations other than drv that a dry run
// says would be built, plus anything Nix does not know how to build.
func ParseNixDryRun(drv, stderr string) []string {
	var out []string
	for _, p := range indentedList(stderr, func(l string) bool {
		return l == "this derivation will be built:" ||
			(strings.HasPrefix(l, "these ") && strings.HasSuffix(l, " derivations will be built:"))
	}) {
		if p != drv {
			out = append(out, p)
		}
	}
	return append(out, nixMissing(stderr)...)
}

func (n *Nix) References(ctx context.Context, path string) ([]string, error) {
	res, err := runCmd(ctx, n.env(), nil, n.cmd(), "--query", "--references", path)
	if err != nil {
		return nil, err
	}
	if res.exitCode != 0 {
		return nil, fmt.Errorf("%s --query --references %s: exit %d: %s", n.cmd(), path, res.exitCode, lastErrorLine(res.tail))
	}
	refs := lines(res.stdout)
	if refs == nil {
		refs = []string{}
	}
	return refs, nil
}
