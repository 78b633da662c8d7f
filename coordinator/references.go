package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

// maxReferenceClosure bounds the input closure walked to check a build's
// references: far above a large system's closure (tens of thousands).
const maxReferenceClosure = 1 << 20

// allowedRefs is what a build's outputs may refer to: its own outputs and
// its input closure (the input sources and the used outputs of its input
// derivations, and everything they refer to as recorded in the cache).
type allowedRefs struct {
	// unchecked: no cache, so no narinfo whose closure could be
	// incomplete (a Config used by tests only); nothing is checked.
	unchecked bool
	paths     map[string]bool
	// uncached are inputs the cache holds no narinfo for: what they refer
	// to is not known here, so it is not allowed.
	uncached []string
}

// allowedReferences computes b's allowedRefs. An error is the
// coordinator's trouble (its derivation or an input's cannot be read),
// never the agent's.
func (c *Coordinator) allowedReferences(ctx context.Context, b db.Build) (allowedRefs, error) {
	if c.cfg.Cache == nil {
		return allowedRefs{unchecked: true}, nil
	}
	d, err := c.readDrv(ctx, b.Derivation)
	if err != nil {
		return allowedRefs{}, fmt.Errorf("read derivation %s: %w", b.Derivation, err)
	}
	a := allowedRefs{paths: map[string]bool{}}
	for _, o := range b.Outputs {
		a.paths[o.Path] = true
	}
	queue := slices.Clone(d.InputSrcs)
	for _, in := range d.InputDrvs {
		id, err := c.readDrv(ctx, in.Path)
		if err != nil {
			return allowedRefs{}, fmt.Errorf("read input derivation %s of %s: %w", in.Path, b.Derivation, err)
		}
		for _, o := range id.Outputs {
			if o.Path != "" && slices.Contains(in.Outputs, o.Name) {
				queue = append(queue, o.Path)
			}
		}
	}
	storeDir := c.cfg.Cache.StoreDir()
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if a.paths[p] {
			continue
		}
		if len(a.paths) >= maxReferenceClosure {
			return allowedRefs{}, fmt.Errorf("input closure of %s has more than %d paths", b.Derivation, maxReferenceClosure)
		}
		a.paths[p] = true
		ni, err := c.cfg.Cache.Lookup(p)
		if err != nil {
			a.uncached = append(a.uncached, p)
			continue
		}
		for _, r := range ni.References {
			queue = append(queue, storeDir+"/"+r)
		}
	}
	return a, nil
}

// scanner searches a NAR for the allowed paths (nil when unchecked).
func (a allowedRefs) scanner() *storepath.Scanner {
	if a.unchecked {
		return nil
	}
	out := make([]string, 0, len(a.paths))
	for p := range a.paths {
		out = append(out, p)
	}
	return storepath.NewScanner(out)
}

// checkClaimed refuses a reported reference outside the allowed set.
func (a allowedRefs) checkClaimed(o protocol.OutputResult) error {
	if a.unchecked {
		return nil
	}
	for _, r := range o.References {
		if a.paths[r] {
			continue
		}
		msg := fmt.Sprintf("reference %q is neither an output of this build nor in its input closure", r)
		if len(a.uncached) > 0 {
			msg += fmt.Sprintf(" (the cache holds no narinfo for %d of its inputs, e.g. %s, so what they refer to is unknown here)",
				len(a.uncached), a.uncached[0])
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// checkScanned compares the references claimed for an output with the
// allowed paths whose hash parts the scanner found in its NAR, which is how
// Nix computes references: a claimed path that does not occur is refused,
// and so is an occurring one that was not claimed (its narinfo would leave
// it out of the closure clients fetch).
func checkScanned(o protocol.OutputResult, scan *storepath.Scanner) error {
	found := scan.Found()
	claimed := map[string]bool{}
	for _, r := range o.References {
		claimed[r] = true
	}
	var missing []string
	for _, p := range found {
		if !claimed[p] {
			missing = append(missing, p)
		} else {
			delete(claimed, p)
		}
	}
	if len(claimed) > 0 {
		var extra []string
		for p := range claimed {
			extra = append(extra, p)
		}
		slices.Sort(extra)
		return fmt.Errorf("claimed references that do not occur in the NAR: %s", listSome(extra))
	}
	if len(missing) > 0 {
		return fmt.Errorf("the NAR refers to paths of the input closure it does not claim: %s", listSome(missing))
	}
	return nil
}

// listSome joins the first few paths for an error message.
func listSome(ps []string) string {
	const n = 5
	if len(ps) <= n {
		return strings.Join(ps, " ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ps[:n], " "), len(ps)-n)
}
