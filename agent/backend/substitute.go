package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/derivation"
)

// Sources are the binary caches an agent may substitute from, in order:
// the coordinator's (through the SSH tunnel) first, then any upstream ones.
type Sources struct {
	URLs       []string
	PublicKeys []string // Nix "name:base64" keys trusted in addition to nix.conf's
}

// Substituter is implemented by backends that can fetch a derivation and
// its inputs from binary caches. The agent uses it to make a build's inputs
// valid by substitution only, never by building them.
type Substituter interface {
	// FetchDerivation makes drv and its closure (input derivations and
	// sources) valid, from the first source that has it.
	FetchDerivation(ctx context.Context, drv string, src Sources, log io.Writer) error
	// SubstituteInputs makes every input of drv valid (the needed outputs
	// of its input derivations, and its sources) by substitution alone and
	// returns those that are still not valid.
	SubstituteInputs(ctx context.Context, drv string, src Sources, log io.Writer) ([]string, error)
	// DeleteOutputs removes those of paths that are valid, where the store
	// allows it (not alive), so the build really runs here. It returns the
	// paths that could not be deleted.
	DeleteOutputs(ctx context.Context, paths []string) []string
}

var _ Substituter = (*Nix)(nil)

func (n *Nix) nixCmd() string {
	if n.NixCmd == "" {
		return "nix"
	}
	return n.NixCmd
}

// substEnv is the environment for commands that substitute from src:
// signatures required, the cache's key trusted, and no negative narinfo
// caching, since the coordinator's cache gains paths all the time.
func (n *Nix) substEnv(src Sources) []string {
	lines := []string{n.Config}
	if len(src.URLs) > 0 {
		lines = append(lines, "substituters = "+strings.Join(src.URLs, " "))
	}
	if len(src.PublicKeys) > 0 {
		lines = append(lines, "extra-trusted-public-keys = "+strings.Join(src.PublicKeys, " "))
	}
	lines = append(lines, "require-sigs = true", "narinfo-cache-negative-ttl = 0", "substitute = true")
	return environ("NIX_CONFIG", strings.Join(lines, "\n"))
}

// invalid returns those of paths that are not valid in the local store.
func (n *Nix) invalid(ctx context.Context, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	res, err := runCmd(ctx, n.env(), nil, n.cmd(), append([]string{"--check-validity", "--print-invalid"}, paths...)...)
	if err != nil {
		return nil, err
	}
	if res.exitCode != 0 {
		return nil, fmt.Errorf("%s --check-validity: exit %d: %s", n.cmd(), res.exitCode, lastErrorLine(res.tail))
	}
	return lines(res.stdout), nil
}

// FetchDerivation uses nix copy --derivation, which (unlike nix-store
// --realise) fetches a missing .drv, checking the signatures.
func (n *Nix) FetchDerivation(ctx context.Context, drv string, src Sources, log io.Writer) error {
	inv, err := n.invalid(ctx, []string{drv})
	if err != nil {
		return err
	}
	if len(inv) == 0 {
		return nil
	}
	var errs []error
	for _, url := range src.URLs {
		res, err := runCmd(ctx, n.substEnv(src), log, n.nixCmd(), "--extra-experimental-features", "nix-command",
			"copy", "--derivation", "--from", url, drv)
		if err != nil {
			return err
		}
		if res.exitCode == 0 {
			return nil
		}
		errs = append(errs, fmt.Errorf("nix copy --derivation --from %s %s: exit %d: %s", url, drv, res.exitCode, lastErrorLine(res.tail)))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%s is not in the local store and no binary cache is configured", drv)
	}
	return errors.Join(errs...)
}

// InputPaths lists what building d needs valid: the wanted outputs of its
// input derivations (read from the local store) and its sources.
func InputPaths(d *derivation.Derivation) ([]string, error) {
	paths := slices.Clone(d.InputSrcs)
	for _, in := range d.InputDrvs {
		id, err := derivation.ReadFile(in.Path)
		if err != nil {
			return nil, fmt.Errorf("input derivation: %w", err)
		}
		for _, name := range in.Outputs {
			o, ok := id.Output(name)
			if !ok {
				return nil, fmt.Errorf("input derivation %s has no output %q", in.Path, name)
			}
			paths = append(paths, o.Path)
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths), nil
}

// SubstituteInputs realises the input paths themselves (not their
// derivations) with max-jobs 0: Nix can then only substitute.
func (n *Nix) SubstituteInputs(ctx context.Context, drv string, src Sources, log io.Writer) ([]string, error) {
	d, err := derivation.ReadFile(drv)
	if err != nil {
		return nil, err
	}
	inputs, err := InputPaths(d)
	if err != nil {
		return nil, err
	}
	inv, err := n.invalid(ctx, inputs)
	if err != nil || len(inv) == 0 {
		return nil, err
	}
	args := append([]string{"--realise", "--max-jobs", "0", "--keep-going"}, inv...)
	if _, err := runCmd(ctx, n.substEnv(src), log, n.cmd(), args...); err != nil {
		return nil, err
	}
	// The exit status does not say which paths failed; validity does.
	return n.invalid(ctx, inv)
}

// DeleteOutputs deletes each valid path on its own: nix-store --delete
// refuses the whole list when one path is alive.
func (n *Nix) DeleteOutputs(ctx context.Context, paths []string) []string {
	inv, err := n.invalid(ctx, paths)
	if err != nil {
		return paths
	}
	var kept []string
	for _, p := range paths {
		if slices.Contains(inv, p) {
			continue // not valid: nothing to delete
		}
		res, err := runCmd(ctx, n.env(), nil, n.cmd(), "--delete", p)
		if err != nil || res.exitCode != 0 {
			kept = append(kept, p)
		}
	}
	return kept
}
