package sshd

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

// maxPinArgs bounds the paths one pin or unpin names.
const maxPinArgs = 10000

func setupCachePin(fs *pflag.FlagSet) func(x *call) error {
	reason := fs.String("reason", "", "why the paths are kept (shown by cache pins and cache why)")
	return func(x *call) error {
		if len(x.args) == 0 || len(x.args) > maxPinArgs {
			return usageErr("want 1 to %d store paths, got %d", maxPinArgs, len(x.args))
		}
		if err := x.s.coord.PinPaths(x.ctx, x.args, *reason, x.who.Fingerprint); err != nil {
			return err
		}
		fmt.Fprintf(x.errOut, "pinned %d path(s)\n", len(x.args))
		return nil
	}
}

func setupCacheUnpin(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if len(x.args) == 0 || len(x.args) > maxPinArgs {
			return usageErr("want 1 to %d store paths, got %d", maxPinArgs, len(x.args))
		}
		n, err := x.s.coord.UnpinPaths(x.ctx, x.args)
		if err != nil {
			return err
		}
		fmt.Fprintf(x.errOut, "unpinned %d path(s) of %d named\n", n, len(x.args))
		return nil
	}
}

type pinJSON struct {
	Path      string `json:"path"`
	Reason    string `json:"reason"`
	CreatedAt string `json:"created_at"`
	By        string `json:"by"`
}

func setupCachePins(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		ps, err := x.s.coord.Pins(x.ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]pinJSON, 0, len(ps))
			for _, p := range ps {
				list = append(list, pinJSON{p.Path, p.Reason, jsonTime(p.CreatedAt), p.By})
			}
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "PATH\tPINNED\tBY\tREASON")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", text.Escape(p.Path), textTime(p.CreatedAt), text.Escape(p.By), text.Escape(p.Reason))
		}
		return tw.Flush()
	}
}

func setupCacheWhy(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if len(x.args) == 0 {
			return usageErr("want at least one store path")
		}
		rep, err := x.s.coord.CollectCache(x.ctx, coordinator.GCOptions{DryRun: true, Why: x.args})
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(x.out, rep.Why)
		}
		for _, p := range x.args {
			fmt.Fprintf(x.out, "%s\n", text.Escape(p))
			for _, line := range rep.Why[p] {
				fmt.Fprintf(x.out, "  %s\n", text.Escape(line))
			}
		}
		return nil
	}
}

func setupCacheGC(fs *pflag.FlagSet) func(x *call) error {
	dry := fs.Bool("dry-run", false, "print what would be deleted, delete nothing")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		rep, err := x.s.coord.CollectCache(x.ctx, coordinator.GCOptions{DryRun: *dry})
		if err != nil {
			return err
		}
		rep.Delete = nonNil(rep.Delete)
		if *asJSON {
			return writeJSON(x.out, rep)
		}
		verb := "deleted"
		if *dry {
			verb = "would delete"
		}
		for _, p := range rep.Delete {
			fmt.Fprintf(x.out, "%s\t%d\n", text.Escape(p.Path), p.Bytes)
		}
		fmt.Fprintf(x.out, "%s %d of %d paths (%s); kept %d (%s)", verb, len(rep.Delete), rep.Paths,
			humanBytes(uint64(rep.DeleteBytes)), rep.Kept, humanBytes(uint64(rep.KeptBytes)))
		if !*dry {
			fmt.Fprintf(x.out, "; %d kept as published or fetched during the run; %d orphan files (%s) and %d logs removed",
				rep.Protected, rep.Orphans, humanBytes(uint64(rep.OrphanBytes)), rep.Logs)
		}
		fmt.Fprintf(x.out, "; %d ms\n", rep.Millis)
		if rep.Missing > 0 {
			fmt.Fprintf(x.out, "note: kept paths refer to %d paths the cache does not hold\n", rep.Missing)
		}
		if rep.Skipped > 0 {
			fmt.Fprintf(x.out, "note: %d narinfos did not parse and were left alone (see the coordinator's log)\n", rep.Skipped)
		}
		return nil
	}
}
