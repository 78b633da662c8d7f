package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/derivation"
)

// waitingForInputs prefixes, for people, the reason of a setup failure
// after which the build waits for input builds here; the attempt's kind
// (db.KindWaitingForInputs) is what keeps it from counting.
const waitingForInputs = "waiting for inputs: "

// missingDerivations returns the derivations behind what an agent
// reported missing for build b: the .drv paths among missing, and for a
// missing output path the derivation in b's input closure that declares
// it. An agent that substitutes through the coordinator's cache reports
// the input paths it could not substitute (outputs, not derivations); the
// coordinator has b's derivation and finds their derivers there, direct
// inputs first. A missing output of a deeper input (substituting a direct
// input needs its references too) also returns the direct input it was
// reached through: b then waits for that input's build, which waits for
// the next one down when it misses the same path, so the chain is built
// in order with no new kind of wait. Paths that are neither (sources,
// outputs of nothing in the closure) are left out, and the walk reads at
// most maxMissingTrace derivations.
func (c *Coordinator) missingDerivations(ctx context.Context, b db.Build, missing []string) []string {
	var drvs []string
	seen := map[string]bool{}
	outputs := map[string]bool{}
	for _, p := range missing {
		if p == b.Derivation || seen[p] {
			continue
		}
		seen[p] = true
		if strings.HasSuffix(p, ".drv") {
			drvs = append(drvs, p)
		} else {
			outputs[p] = true
		}
	}
	if len(outputs) == 0 {
		return drvs
	}
	inputs := b.InputDerivations
	if inputs == nil {
		in, err := c.inputDerivations(ctx, b.Derivation)
		if err != nil {
			c.log.Warn("missing outputs not traced to their derivations: read the build's derivation",
				"build", b.ID, "derivation", b.Derivation, "err", err)
			return drvs
		}
		inputs = in
	}
	add := func(d string) {
		if !seen[d] {
			seen[d] = true
			drvs = append(drvs, d)
		}
	}
	// Breadth first, each derivation remembering the direct input of b
	// it was reached through.
	type step struct{ drv, via string }
	queue := make([]step, 0, len(inputs))
	for _, in := range inputs {
		queue = append(queue, step{in, in})
	}
	visited := map[string]bool{b.Derivation: true}
	for read := 0; len(queue) > 0 && len(outputs) > 0; {
		st := queue[0]
		queue = queue[1:]
		if visited[st.drv] {
			continue
		}
		visited[st.drv] = true
		if read == maxMissingTrace {
			c.log.Warn("missing outputs not traced to their derivations: input closure too large",
				"build", b.ID, "derivations_read", read, "untraced", len(outputs))
			break
		}
		read++
		d, err := c.readDrv(ctx, st.drv)
		if err != nil {
			c.log.Warn("missing outputs not traced to their derivations: read an input derivation",
				"build", b.ID, "derivation", st.drv, "err", err)
			continue
		}
		for _, o := range d.Outputs {
			if outputs[o.Path] {
				delete(outputs, o.Path)
				add(st.via)
				add(st.drv)
			}
		}
		for _, in := range d.InputDrvs {
			queue = append(queue, step{in.Path, st.via})
		}
	}
	return drvs
}

// maxMissingTrace bounds the derivations read to trace missing outputs:
// a large package set's closure, a fraction of a second from the cache.
const maxMissingTrace = 20000

// readDrv reads a derivation from this host's store, else the cache.
func (c *Coordinator) readDrv(ctx context.Context, p string) (*derivation.Derivation, error) {
	d, err := derivation.ReadStoreFile("", p)
	if err != nil && c.cfg.Cache != nil {
		d, err = c.cfg.Cache.ReadDerivation(ctx, p)
	}
	return d, err
}

// SubmitMissingInputs applies the rule of submitMissing to build id's
// missing inputs: the built-in submit-missing-inputs hook calls it with
// the paths of a missing-inputs event. The setup failure already applied
// it before requeueing the build, so this finds the builds and submits
// nothing; it is the at-least-once path for a submission that failed
// there for a passing reason. A build that is gone or ended needs no
// inputs any more.
func (c *Coordinator) SubmitMissingInputs(ctx context.Context, id string, missing []string) ([]string, error) {
	b, err := c.store.Build(ctx, id)
	if errors.Is(err, db.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("submit missing inputs of build %s: %w", id, err)
	}
	if b.State.Terminal() {
		return nil, nil
	}
	return c.submitMissing(ctx, b, missing)
}

// submitMissingInputs is the setup failure's use of submitMissing: what
// could not be submitted is logged, and b is requeued as without it (the
// failure then counts, unless b waits for another input). The
// missing-inputs event written with the setup failure names the same
// derivations, so the hook (SubmitMissingInputs) retries a submission
// that failed for a passing reason.
//
// It must be called without c.mu (Submit takes it).
func (c *Coordinator) submitMissingInputs(ctx context.Context, b db.Build, drvs []string) {
	done, err := c.submitMissing(ctx, b, drvs)
	if len(done) > 0 {
		c.log.Info("submitted missing inputs", "build", b.ID, "derivations", done)
	}
	if err != nil {
		c.log.Warn("missing input not submitted; the build is requeued without waiting for it", "build", b.ID, "err", err)
	}
}

// submitMissing is the one rule for builds of a build's missing inputs,
// whoever applies it (the setup failure, the built-in hook): among
// missing, every .drv path other than b's own derivation that has no
// live or succeeded build here (a failed or canceled one is built again)
// is submitted, tagged needed-by=<b> with b's priority; at most MaxSubmit
// of them. In permissive mode a live build of an input blocks its
// dependents, so b, requeued after this, waits until those builds
// succeed. It returns the derivations it submitted.
//
// A submission is all or none, so when one derivation is refused the
// others are submitted one by one and still built. The error names each
// derivation not submitted; it is ErrBadSubmission (errors.Is) only when
// retrying cannot help, every one of them refused (not in a store
// directory, neither in this host's store nor in the cache), and a
// passing failure (a store error) otherwise.
func (c *Coordinator) submitMissing(ctx context.Context, b db.Build, missing []string) ([]string, error) {
	var drvs []string
	for _, p := range missing {
		if strings.HasSuffix(p, ".drv") && p != b.Derivation && !slices.Contains(drvs, p) {
			drvs = append(drvs, p)
		}
	}
	if len(drvs) == 0 {
		return nil, nil
	}
	if len(drvs) > MaxSubmit {
		c.log.Warn("more missing input derivations than one submission takes; submitting the first ones",
			"build", b.ID, "missing", len(drvs), "submitted_at_most", MaxSubmit)
		drvs = drvs[:MaxSubmit]
	}
	have, err := c.liveOrSucceeded(ctx, drvs)
	if err != nil {
		return nil, fmt.Errorf("missing inputs of build %s: %w", b.ID, err)
	}
	var todo []string
	for _, d := range drvs {
		if !have[d] {
			todo = append(todo, d)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	submit := func(ds []string) error {
		_, err := c.Submit(ctx, Submission{Derivations: ds, Priority: b.Priority,
			Tags: []db.Tag{{Key: db.TagNeededBy, Value: b.ID}}})
		if err != nil {
			return fmt.Errorf("submit %s, needed by build %s: %w", strings.Join(ds, " "), b.ID, err)
		}
		return nil
	}
	err = submit(todo)
	if err == nil {
		return todo, nil
	}
	if !errors.Is(err, ErrBadSubmission) || len(todo) == 1 {
		return nil, err
	}
	var done []string
	var bad, passing []error
	for _, d := range todo {
		switch err := submit([]string{d}); {
		case err == nil:
			done = append(done, d)
		case errors.Is(err, ErrBadSubmission):
			bad = append(bad, err)
		default:
			passing = append(passing, err)
		}
	}
	if len(passing) > 0 {
		// Reported, not wrapped: the error must not read as one that
		// retrying cannot help.
		if len(bad) > 0 {
			return done, fmt.Errorf("%w; refused, not retryable: %v", errors.Join(passing...), errors.Join(bad...))
		}
		return done, errors.Join(passing...)
	}
	return done, errors.Join(bad...)
}

// liveOrSucceeded reports which derivations have a build here that is
// queued, running or succeeded.
func (c *Coordinator) liveOrSucceeded(ctx context.Context, drvs []string) (map[string]bool, error) {
	bs, err := c.store.BuildsForDerivations(ctx, drvs)
	if err != nil {
		return nil, fmt.Errorf("look up builds of %d derivations: %w", len(drvs), err)
	}
	have := map[string]bool{}
	for _, b := range bs {
		switch b.State {
		case db.StateScheduled, db.StateAllocated, db.StateStarted, db.StateSucceeded:
			have[b.Derivation] = true
		}
	}
	return have, nil
}

// blockingInputsLocked returns the input derivations of a queued or
// allocated build that have a live build here that has not succeeded:
// the build waits for them once it is requeued (in permissive mode a live
// input build blocks its dependents; in derivation-ordered mode any input
// not available does).
func (c *Coordinator) blockingInputsLocked(id string) []string {
	sb, ok := c.sched.Lookup(id)
	if !ok {
		return nil
	}
	var out []string
	for _, in := range sb.InputDrvs {
		if live, avail := c.sched.Derivation(in); live && !avail {
			out = append(out, in)
		}
	}
	return out
}
