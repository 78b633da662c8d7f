package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/storedaemon"
)

// prepare makes the .drv closure and the inputs valid, fetching what is
// missing from the coordinator's cache (then, if allowed, the daemon's
// upstream substituters), keeps them alive with temporary roots, and
// deletes outputs already present where nothing keeps them alive. It
// returns the outputs to build, or a Result when the build cannot run.
// alive reports that the Result is for an output that could not be
// deleted.
func (d *Daemon) prepare(ctx context.Context, c *storedaemon.Conn, req Request, log io.Writer) (outs []Output, res *Result, alive bool) {
	fail := func(r Result) ([]Output, *Result, bool) { return nil, &r, false }
	var f *fetcher
	if req.Sources.CacheURL != "" {
		var err error
		if f, err = newFetcher(req.Sources, d.cfg.HTTP, d.cfg.StoreDir); err != nil {
			return fail(setup(err.Error()))
		}
	}
	missing, fetched, err := d.ensure(ctx, c, f, []string{req.Derivation})
	if err != nil {
		return fail(setup(fmt.Sprintf("fetch derivation: %v", err), req.Derivation))
	}
	if leaves := outputPaths(missing); len(leaves) > 0 && len(req.Sources.Upstream) > 0 {
		// Sources of the .drv's closure the coordinator's cache lacks may
		// come from upstream; .drv files come from the coordinator only.
		if _, err := d.substitute(ctx, c, req.Sources.Upstream, leaves, log); err != nil {
			return fail(setup(fmt.Sprintf("substitute the derivation's sources: %v", err)))
		}
		var n int
		if missing, n, err = d.ensure(ctx, c, f, []string{req.Derivation}); err != nil {
			return fail(setup(fmt.Sprintf("fetch derivation: %v", err), req.Derivation))
		}
		fetched += n
	}
	if len(missing) > 0 {
		return fail(setup("the derivation or its closure is not in the coordinator's cache", missing...))
	}
	drv, err := derivation.ReadFile(req.Derivation)
	if err != nil {
		return fail(setup(fmt.Sprintf("read %s: %v", req.Derivation, err)))
	}
	inputs, err := InputPaths(drv)
	if err != nil {
		return fail(setup(err.Error()))
	}
	n, err := 0, error(nil)
	if missing, n, err = d.ensure(ctx, c, f, inputs); err != nil {
		return fail(setup(fmt.Sprintf("fetch inputs: %v", err)))
	}
	fetched += n
	if len(missing) > 0 && len(req.Sources.Upstream) > 0 {
		if missing, err = d.substitute(ctx, c, req.Sources.Upstream, missing, log); err != nil {
			return fail(setup(fmt.Sprintf("substitute inputs: %v", err)))
		}
	}
	if len(missing) > 0 {
		return fail(setup("inputs could not be substituted from the coordinator's cache or the upstream caches", missing...))
	}
	if fetched > 0 {
		d.cfg.Log.Info("inputs substituted", "derivation", req.Derivation, "fetched", fetched)
	}
	outputs := req.Outputs
	if len(outputs) == 0 {
		for _, o := range drv.Outputs {
			outputs = append(outputs, Output{Name: o.Name, Path: o.Path})
		}
	}
	paths := make([]string, len(outputs))
	for i, o := range outputs {
		paths[i] = o.Path
	}
	present, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return fail(setup(fmt.Sprintf("check outputs: %v", err)))
	}
	for _, p := range present {
		err := c.DeletePath(ctx, p)
		var de *storedaemon.Error
		switch {
		case errors.As(err, &de):
			// Alive (a GC root, or a valid path that refers to it): the
			// daemon would return it at once as already valid, and the
			// agent would upload an output it did not build. Not the
			// derivation's fault: another agent may build it.
			r := setup(fmt.Sprintf("output %s is valid in this agent's store before the build and cannot be deleted (%s): "+
				"it would be uploaded without being built here", p, de.Message))
			return nil, &r, true
		case err != nil:
			return fail(setup(fmt.Sprintf("delete output present before the build: %v", err)))
		}
	}
	return outputs, nil, false
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

// ensure makes paths and their closures valid from f, importing in
// reference order, and holds them with temporary roots. It returns the
// paths that stay invalid because the cache does not have them (or a
// path they refer to), followed by the paths of their closures the cache
// lacks; other failures are errors.
func (d *Daemon) ensure(ctx context.Context, c *storedaemon.Conn, f *fetcher, paths []string) ([]string, int, error) {
	valid, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range valid {
		if err := c.AddTempRoot(ctx, p); err != nil {
			return nil, 0, err
		}
	}
	todo := without(paths, valid)
	if len(todo) == 0 {
		return nil, 0, nil
	}
	if f == nil {
		return todo, 0, nil
	}
	// Depth-first over references: a path is imported after everything
	// it refers to.
	infos := map[string]*narinfo.NarInfo{}
	state := map[string]int{} // 1 visiting, 2 done
	unavailable := map[string]bool{}
	var order []string
	var visit func(p string) error
	visit = func(p string) error {
		if state[p] != 0 {
			return nil
		}
		if len(state) >= maxClosure {
			return fmt.Errorf("the closure has more than %d paths", maxClosure)
		}
		state[p] = 1
		ni, err := f.narinfo(ctx, p)
		if errors.Is(err, errNotInCache) {
			unavailable[p] = true
			state[p] = 2
			return nil
		}
		if err != nil {
			return err
		}
		infos[p] = ni
		refs := make([]string, 0, len(ni.References))
		for _, r := range ni.References {
			if full := d.cfg.StoreDir + "/" + r; full != p {
				refs = append(refs, full)
			}
		}
		if len(refs) > 0 {
			ok, err := c.QueryValidPaths(ctx, refs)
			if err != nil {
				return err
			}
			for _, r := range without(refs, ok) {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}
	for _, p := range todo {
		if err := visit(p); err != nil {
			return nil, 0, err
		}
	}
	imported := 0
	for _, p := range order {
		ni := infos[p]
		if slices.ContainsFunc(ni.References, func(r string) bool { return unavailable[d.cfg.StoreDir+"/"+r] }) {
			unavailable[p] = true
			continue
		}
		if err := d.importPath(ctx, c, f, ni); err != nil {
			return nil, 0, err
		}
		imported++
	}
	// What stays invalid: the requested paths, then the paths the cache
	// lacks that they need.
	var missing []string
	for _, p := range todo {
		if unavailable[p] {
			missing = append(missing, p)
		}
	}
	for p := range unavailable {
		if infos[p] == nil && !slices.Contains(missing, p) {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing[min(len(missing), len(todo)):])
	return missing, imported, nil
}

// importPath imports one verified path: AddToStoreNar on Nix (the
// signatures go along, for a daemon that checks them itself), a signed
// ImportPaths on guix-daemon.
func (d *Daemon) importPath(ctx context.Context, c *storedaemon.Conn, f *fetcher, ni *narinfo.NarInfo) error {
	refs := make([]string, len(ni.References))
	for i, r := range ni.References {
		refs[i] = d.cfg.StoreDir + "/" + r
	}
	deriver := ""
	if ni.Deriver != "" {
		deriver = d.cfg.StoreDir + "/" + ni.Deriver
	}
	nar, err := f.nar(ctx, ni)
	if err != nil {
		return err
	}
	defer nar.Close()
	if c.Dialect() == storedaemon.Nix {
		info := &storedaemon.PathInfo{Path: ni.StorePath, Deriver: deriver, NarHash: ni.NarHash, References: refs,
			NarSize: ni.NarSize, Sigs: ni.Sigs, CA: ni.CA}
		// dontCheckSigs: the agent checked the cache's signature itself;
		// a daemon ignores it for untrusted clients and checks Sigs.
		if err := c.AddToStoreNar(ctx, info, nar, true); err != nil {
			return fmt.Errorf("import %s: %w", ni.StorePath, err)
		}
		return nil
	}
	var sign storedaemon.ExportSigner
	if k := d.cfg.GuixKey; k != nil {
		sign = func(sum [32]byte) ([]byte, error) { return k.SignGuixHash(sum).Bytes(), nil }
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(storedaemon.WriteExport(pw, []storedaemon.ExportRecord{{Path: ni.StorePath, References: refs, Deriver: deriver, NAR: nar}}, sign))
	}()
	_, err = c.ImportPaths(ctx, pr)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return fmt.Errorf("import %s: %w", ni.StorePath, err)
	}
	return nil
}

// substitute lets the daemon fetch paths from the upstream caches (the
// daemon checks their signatures with its own trusted keys) and returns
// those still invalid.
func (d *Daemon) substitute(ctx context.Context, c *storedaemon.Conn, upstream, paths []string, log io.Writer) ([]string, error) {
	setting := "substituters"
	if c.Dialect() == storedaemon.Guix {
		setting = "substitute-urls"
	}
	if err := c.SetOptions(ctx, storedaemon.Options{UseSubstitutes: true, KeepGoing: true,
		Settings: [][2]string{{setting, strings.Join(upstream, " ")}}}); err != nil {
		return nil, err
	}
	err := c.Substitute(ctx, paths, log)
	var de *storedaemon.Error
	if err != nil && !errors.As(err, &de) {
		return nil, err
	}
	valid, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return nil, err
	}
	for _, p := range valid {
		if err := c.AddTempRoot(ctx, p); err != nil {
			return nil, err
		}
	}
	return without(paths, valid), nil
}

// outputPaths are those of paths that are not .drv files.
func outputPaths(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !strings.HasSuffix(p, ".drv") {
			out = append(out, p)
		}
	}
	return out
}

func without(all, drop []string) []string {
	var out []string
	for _, p := range all {
		if !slices.Contains(drop, p) {
			out = append(out, p)
		}
	}
	return out
}
