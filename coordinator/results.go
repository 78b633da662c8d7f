package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

// holding loads the build and checks that this agent holds it. It returns
// done=true when the build already ended with this agent and the same kind
// of result, so a result resent after a reconnect is acknowledged again
// instead of refused.
func (s *Session) holding(ctx context.Context, buildID string, ended db.BuildState) (db.Build, bool, error) {
	if buildID == "" {
		return db.Build{}, false, errors.New("missing build id")
	}
	b, err := s.c.store.Build(ctx, buildID)
	if err != nil {
		if errors.Is(err, db.ErrNotFound) {
			return db.Build{}, false, fmt.Errorf("build %s: %w", buildID, ErrNotYourBuild)
		}
		return db.Build{}, false, unavailable(fmt.Errorf("load build %s: %w", buildID, err))
	}
	if b.AgentID != s.agentID {
		return b, false, fmt.Errorf("build %s: %w", buildID, ErrNotYourBuild)
	}
	if ended != "" && b.State == ended {
		return b, true, nil
	}
	if b.State != db.StateAllocated && b.State != db.StateStarted {
		return b, false, fmt.Errorf("build %s is %s: %w", buildID, b.State, ErrNotYourBuild)
	}
	return b, false, nil
}

// Started records that the agent began building. The write comes first
// and the build is read only when it is refused: the store's
// compare-and-set checks the holder, and the read then tells a resend
// (already started, acknowledged again) from another agent's build.
func (s *Session) Started(ctx context.Context, m *protocol.Started) error {
	if m.Build == "" {
		return errors.New("missing build id")
	}
	release, err := s.admit()
	if err != nil {
		return err
	}
	defer release()
	hw := db.Hardware{Cores: m.Hardware.Cores, MemoryBytes: m.Hardware.MemoryBytes, FreeDiskBytes: m.Hardware.FreeDiskBytes,
		Load1: m.Hardware.Load1, Backend: s.backend, BackendVersion: s.backendVer}
	now := s.c.clk.Now()
	err = s.c.store.StartBuildWith(ctx, m.Build, s.agentID, now, hw)
	if errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrNotFound) {
		b, _, herr := s.holding(ctx, m.Build, "")
		if herr != nil {
			return herr
		}
		if b.State == db.StateStarted {
			return nil
		}
	}
	if err != nil {
		return unavailable(fmt.Errorf("start build %s: %w", m.Build, err))
	}
	// The start is the building phase's record.
	s.enterTracked(m.Build, db.PhaseBuilding, now)
	s.c.log.Info("build started", "build", m.Build, "agent", s.agentID)
	return nil
}

// Failed records a build failure: the derivation's fault, terminal.
func (s *Session) Failed(ctx context.Context, m *protocol.Failed) error {
	release, err := s.admit()
	if err != nil {
		return err
	}
	defer release()
	b, done, err := s.holding(ctx, m.Build, db.StateFailed)
	if err != nil || done {
		return err
	}
	switch m.Reason {
	case protocol.ReasonBuild, protocol.ReasonTimeout, protocol.ReasonSilentTimeout:
	default:
		return fmt.Errorf("failed: unknown reason %q", m.Reason)
	}
	reason := m.Reason
	if m.Message != "" {
		reason += ": " + text.Truncate(m.Message, 1000)
	}
	c := s.c
	// Recorded before taking the lock, as in Succeeded.
	if err := c.store.FailBuild(ctx, m.Build, s.agentID, c.clk.Now(), db.KindBuild, reason, m.ExitCode); err != nil {
		return unavailable(fmt.Errorf("fail build %s: %w", m.Build, err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log.Info("build failed", "build", m.Build, "agent", s.agentID, "reason", reason, "exit_code", m.ExitCode)
	c.observeEnd(b, db.StateFailed)
	c.releaseLocked(m.Build, s.agentID)
	c.endedLocked(ctx, m.Build, outcomeFailed)
	c.dispatchLocked(ctx)
	return nil
}

// SetupFailure sends the build back to the queue, preferring another agent
// next time; after MaxSetupFailures it fails the build.
//
// With Config.SubmitMissingInputs, the missing input derivations the agent
// reported are submitted first (submitMissingInputs), outside the lock
// (Submit takes it) and before the requeue, so the build is never back in
// the queue without the input builds it has to wait for. A setup failure
// after which the build waits for an input build here (just submitted, or
// already queued or running) does not count toward MaxSetupFailures: its
// next attempt comes only after that input was built, and it keeps no
// agent avoided (the agent was not at fault). Its attempt is recorded as
// db.KindWaitingForInputs (the reason, for people, starts "waiting for
// inputs: "). Anything else is db.KindSetup and counts.
func (s *Session) SetupFailure(ctx context.Context, m *protocol.SetupFailure) error {
	release, err := s.admit()
	if err != nil {
		return err
	}
	defer release()
	b, _, err := s.holding(ctx, m.Build, "")
	if err != nil {
		return err
	}
	reason := "setup-failure: " + text.Truncate(m.Reason, 1000)
	if len(m.Missing) > 0 {
		reason += " (missing " + text.Truncate(strings.Join(m.Missing, " "), 1000) + ")"
	}
	c := s.c
	// The event's missing list: what the agent reported, plus the input
	// derivations behind reported output paths, for the hook.
	missing := m.Missing
	if c.cfg.SubmitMissingInputs && len(m.Missing) > 0 {
		drvs := c.missingDerivations(ctx, b, m.Missing)
		for _, d := range drvs {
			if !slices.Contains(missing, d) {
				missing = append(slices.Clip(missing), d)
			}
		}
		c.submitMissingInputs(ctx, b, drvs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if why, ok := c.space.refused[b.ID]; ok {
		// The agent gave up because this coordinator refused or could not
		// take its upload: not the agent's fault, nor the build's.
		c.coordinatorTroubleLocked(ctx, b.ID, s.agentID, why+" ("+reason+")")
		c.dispatchLocked(ctx)
		return nil
	}
	if waitFor := c.blockingInputsLocked(b.ID); len(waitFor) > 0 {
		reason = waitingForInputs + reason
		if err := c.store.SetupFailBuild(ctx, b.ID, s.agentID, c.clk.Now(), db.KindWaitingForInputs, reason, missing, false); err != nil {
			c.log.Error("requeue build after setup failure", "build", b.ID, "agent", s.agentID, "reason", reason, "err", err)
			return unavailable(fmt.Errorf("record setup failure of build %s: %w", m.Build, err))
		}
		c.releaseLocked(b.ID, s.agentID)
		c.sched.Requeue(b.ID, "")
		c.log.Info("build requeued to wait for its inputs", "build", b.ID, "agent", s.agentID,
			"waiting_for", waitFor, "reason", reason)
		c.dispatchLocked(ctx)
		return nil
	}
	if err := c.infraFailureLocked(ctx, b, s.agentID, db.KindSetup, reason, missing); err != nil {
		return unavailable(fmt.Errorf("record setup failure of build %s: %w", m.Build, err))
	}
	c.dispatchLocked(ctx)
	return nil
}

// attemptLimit is how many attempts of a kind fail a build; 0: attempts
// of that kind count against nobody (they requeue without limit).
func (c *Coordinator) attemptLimit(kind db.AttemptKind) int {
	switch kind {
	case db.KindSetup:
		return c.cfg.MaxSetupFailures
	case db.KindVerification:
		return c.cfg.MaxAttempts
	}
	return 0
}

// infraFailureLocked ends an attempt that failed for reasons outside the
// derivation: requeue (preferring another agent), or fail the build once
// attemptLimit(kind) attempts of that kind (counted from the recorded
// kinds) have ended so. Setup failures go through SetupFailBuild so that
// their events (setup-failure, missing-inputs with missing) are written
// with the change.
func (c *Coordinator) infraFailureLocked(ctx context.Context, b db.Build, agentID string, kind db.AttemptKind, reason string, missing []string) error {
	n := 1 // this attempt
	for _, a := range b.Attempts {
		if a.Outcome == db.OutcomeRequeued && a.Kind == kind {
			n++
		}
	}
	setup := kind == db.KindSetup
	c.countFailureLocked(agentID, kind)
	if limit := c.attemptLimit(kind); limit == 0 || n < limit {
		// Prefer another agent next time: this one may lack something.
		if c.avoid[b.ID] == nil {
			c.avoid[b.ID] = map[string]bool{}
		}
		c.avoid[b.ID][agentID] = true
		if !setup {
			c.requeueLocked(ctx, b.ID, agentID, kind, reason, agentID)
			return nil
		}
		if err := c.store.SetupFailBuild(ctx, b.ID, agentID, c.clk.Now(), kind, reason, missing, false); err != nil {
			c.log.Error("requeue build after setup failure", "build", b.ID, "agent", agentID, "reason", reason, "err", err)
			return err
		}
		c.releaseLocked(b.ID, agentID)
		c.sched.Requeue(b.ID, agentID)
		c.log.Info("build requeued", "build", b.ID, "agent", agentID, "reason", reason)
		return nil
	}
	final := fmt.Sprintf("infrastructure: %s (%d attempts)", reason, n)
	var err error
	if setup {
		err = c.store.SetupFailBuild(ctx, b.ID, agentID, c.clk.Now(), kind, final, missing, true)
	} else {
		err = c.store.FailBuild(ctx, b.ID, agentID, c.clk.Now(), kind, final, 0)
	}
	if err != nil {
		c.log.Error("fail build after infrastructure failures", "build", b.ID, "err", err)
		return err
	}
	c.log.Warn("build failed: infrastructure", "build", b.ID, "agent", agentID, "reason", final)
	c.releaseLocked(b.ID, agentID)
	c.endedLocked(ctx, b.ID, outcomeFailed)
	return nil
}

// Succeeded verifies every uploaded output against the report, moves the
// files into the cache and records success. On a mismatch the upload is
// discarded and the attempt ends as an infrastructure failure; the error
// says what did not match.
func (s *Session) Succeeded(ctx context.Context, m *protocol.Succeeded) error {
	c := s.c
	start := time.Now()
	// Checked here to refuse early, and again before publishing, after
	// the verification (which may take long).
	release, err := s.admit()
	if err != nil {
		return err
	}
	release()
	c.mu.Lock()
	if c.verifying[m.Build] {
		c.mu.Unlock()
		return fmt.Errorf("build %s: a result is already being verified", m.Build)
	}
	c.verifying[m.Build] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.verifying, m.Build)
		c.mu.Unlock()
	}()

	b, done, err := s.holding(ctx, m.Build, db.StateSucceeded)
	if err != nil {
		return err
	}
	if done {
		// A resend: the first copy was recorded, possibly by a commit whose
		// reply was lost, so settle the in-memory side too (all idempotent).
		c.mu.Lock()
		defer c.mu.Unlock()
		c.releaseLocked(m.Build, s.agentID)
		c.endedLocked(ctx, m.Build, outcomeSucceeded)
		c.dispatchLocked(ctx)
		return nil
	}
	s.coordinatorPhase(m.Build, db.PhaseVerifying)
	dir := c.uploadDir(s.agentID, m.Build)
	allowed, err := c.allowedReferences(ctx, b)
	if err != nil {
		// The coordinator's trouble, not the agent's: the result is
		// neither acknowledged nor refused, and is resent later.
		c.log.Error("result not checked: the build's input closure cannot be read", "build", m.Build, "agent", s.agentID, "err", err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	loaded := time.Now()
	results, ups, verr := c.verify(ctx, b, s.agentID, dir, m.Outputs, allowed)
	defer discardAll(ups) // a no-op for those published
	if errors.Is(verr, ErrUnavailable) {
		// The object store failing while a direct upload is read back:
		// neither acknowledged nor refused, resent later.
		c.log.Error("result not checked: a direct upload cannot be read", "build", m.Build, "agent", s.agentID, "err", verr)
		return verr
	}
	if errors.Is(verr, errStoreTrouble) {
		// A streamed upload the cache store failed to take: the
		// coordinator's trouble, as when publishing fails below.
		c.log.Error("streamed upload lost by the cache store", "build", m.Build, "agent", s.agentID, "err", verr)
		return s.coordinatorTrouble(ctx, m.Build, "store the upload", verr)
	}
	if verr != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.log.Warn("upload verification failed", "build", m.Build, "agent", s.agentID, "err", verr)
		if cur, err := c.store.Build(ctx, m.Build); err == nil && cur.AgentID == s.agentID && !cur.State.Terminal() {
			c.infraFailureLocked(ctx, cur, s.agentID, db.KindVerification, "verification: "+verr.Error(), nil)
			c.dispatchLocked(ctx)
		}
		return fmt.Errorf("%w: %w", ErrVerification, verr)
	}
	verified := time.Now()
	s.coordinatorPhase(m.Build, db.PhasePublishing)
	// From here to the commit, a revocation waits: a result either is
	// refused or was signed before the revocation returned.
	release, err = s.admit()
	if err != nil {
		return err
	}
	defer release()
	// A check side's NARs are kept for the check first; publishing then
	// keeps the cache's first NAR of each path, as for any build.
	err = c.keepCheckSide(ctx, m.Build, s.agentID, dir, m.Outputs, results)
	if err == nil {
		err = c.publish(ctx, b, dir, m.Outputs, results, ups)
	}
	if err != nil {
		// Verified outputs the coordinator could not publish (its disk
		// full, its cache unwritable): the coordinator's trouble. The
		// build goes back to the queue charged to nobody; the agent's
		// result is refused, so it drops it.
		c.log.Error("publish verified outputs", "build", m.Build, "agent", s.agentID, "err", err)
		if errors.Is(err, syscall.ENOSPC) {
			c.noteFullLocked(true)
		}
		return s.coordinatorTrouble(ctx, m.Build, "publish the verified outputs", err)
	}
	published := time.Now()
	// Recorded before taking the coordinator lock: the store's
	// compare-and-set (this agent, allocated or started) is what makes it
	// safe, and a requeue or cancel racing with it finds the build
	// succeeded and changes nothing. Dispatch, which every report waits
	// for, is not held up by this commit.
	// A result without a prior "started" implies the start: SucceedBuild
	// records both in one commit.
	// Only a nil here lets the caller acknowledge the result. Anything
	// but a verdict (conflict, not found) leaves it unacknowledged: the
	// outputs are already published, so the agent's resend verifies
	// against the cache (see verify) and is recorded then.
	if err := c.store.SucceedBuild(ctx, m.Build, s.agentID, c.clk.Now(), results); err != nil {
		return unavailable(fmt.Errorf("record success of build %s: %w", m.Build, err))
	}
	recorded := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	locked := time.Now()
	c.observeEnd(b, db.StateSucceeded)
	c.releaseLocked(m.Build, s.agentID)
	c.endedLocked(ctx, m.Build, outcomeSucceeded)
	c.dispatchLocked(ctx)
	// Where a slow success spent its time: the database (load, record),
	// the upload's bytes (verify), the disk (publish: fsyncs), contention
	// for the coordinator lock, or dispatching what it released.
	c.log.Info("build succeeded", "build", m.Build, "agent", s.agentID, "outputs", len(results),
		"load_ms", millis(loaded.Sub(start)), "verify_ms", millis(verified.Sub(loaded)),
		"publish_ms", millis(published.Sub(verified)), "record_ms", millis(recorded.Sub(published)),
		"lock_ms", millis(locked.Sub(recorded)), "dispatch_ms", millis(time.Since(locked)))
	return nil
}

// coordinatorTrouble sends the build back to the queue, charged to nobody,
// after the coordinator failed to do what (its own trouble with a result
// it was given), and returns the refusal for the agent, which then drops
// its result.
func (s *Session) coordinatorTrouble(ctx context.Context, buildID, what string, err error) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, lerr := c.store.Build(ctx, buildID); lerr == nil && cur.AgentID == s.agentID && !cur.State.Terminal() {
		c.coordinatorTroubleLocked(ctx, buildID, s.agentID, "coordinator could not "+what+": "+err.Error())
		c.dispatchLocked(ctx)
	}
	return fmt.Errorf("build %s: the coordinator could not %s (requeued, not charged to this agent): %w", buildID, what, err)
}

// publish moves the verified files into the cache and, with a Cache, signs
// their narinfos, so each output is a substitute before the build is
// recorded as succeeded.
//
// ups holds, for a streamed output, the store upload with its bytes
// (consumed here); nil entries are files in dir.
func (c *Coordinator) publish(ctx context.Context, b db.Build, dir string, reported []protocol.OutputResult, results []db.OutputResult, ups []cache.Upload) error {
	for i := range results {
		src := filepath.Join(dir, reported[i].Upload)
		if c.cfg.Cache == nil {
			// Names are content hashes, so a file already there has the
			// same bytes and renaming over it is safe.
			dst := filepath.Join(c.cfg.StateDir, results[i].File)
			if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
				// Moved by an earlier copy of this result (see
				// publishedResult, which verified dst again).
				if _, err := os.Stat(dst); err == nil {
					continue
				}
			}
			if err := os.Rename(src, dst); err != nil {
				return fmt.Errorf("move %s into the cache: %w", reported[i].Upload, err)
			}
			continue
		}
		r := results[i]
		narHash, err1 := nixhash.Parse(r.NarHash)
		fileHash, err2 := nixhash.Parse(r.FileHash)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("publish %s: %w", r.Path, err)
		}
		e := cache.Entry{
			StorePath: r.Path, NarHash: narHash, NarSize: r.NarSize,
			FileHash: fileHash, FileSize: r.FileSize, Compression: r.Compression,
			References: r.References, Deriver: b.Derivation,
		}
		var err error
		if ups[i] != nil {
			err = c.cfg.Cache.PublishUpload(ctx, e, ups[i])
		} else {
			err = c.cfg.Cache.Publish(ctx, e, src)
		}
		var ce *cache.ConflictError
		if errors.As(err, &ce) {
			// A non-deterministic build: the first publication stays the
			// substitute; this build still succeeded.
			c.log.Warn("output differs from the one already in the cache; keeping the cached one",
				"build", b.ID, "path", r.Path, "cached", ce.Have.String(), "uploaded", ce.Got.String())
			os.Remove(src)
			continue
		}
		if err != nil {
			return fmt.Errorf("publish %s: %w", r.Path, err)
		}
	}
	return nil
}

// verify checks the reported outputs against the derivation, their
// references against allowed, and every upload against its reported
// hashes and sizes and the references it contains: a file in dir, or
// what a streamed upload of the agent's measured as it arrived, or an
// object the agent PUT into the cache's bucket (verifyDirect). It
// returns results in the order of reported, with File set to the
// cache-relative target, and for each streamed output the closed store
// upload holding its bytes (nil for the others), which the caller
// publishes or discards. On error the uploads are discarded; one matching
// errStoreTrouble is the cache store's failure, not the upload's.
func (c *Coordinator) verify(ctx context.Context, b db.Build, agentID, dir string, reported []protocol.OutputResult, allowed allowedRefs) ([]db.OutputResult, []cache.Upload, error) {
	declared := map[string]string{}
	for _, o := range b.Outputs {
		declared[o.Name] = o.Path
	}
	if len(reported) != len(declared) {
		return nil, nil, fmt.Errorf("reported %d outputs, derivation declares %d", len(reported), len(declared))
	}
	seen := map[string]bool{}
	results := make([]db.OutputResult, len(reported))
	ups := make([]cache.Upload, len(reported))
	fail := func(err error) ([]db.OutputResult, []cache.Upload, error) {
		if errors.Is(err, ErrUnavailable) {
			// Only direct uploads were read so far (they go first): their
			// taken copies stay for the agent's resend.
			return nil, nil, err
		}
		discardAll(ups)
		return nil, nil, err
	}
	// Direct uploads first: reading one back may fail for the store's
	// sake (unavailable: the result is resent), which must come before
	// any streamed upload is consumed.
	order := make([]int, 0, len(reported))
	for i, o := range reported {
		if o.Direct != "" {
			order = append(order, i)
		}
	}
	for i, o := range reported {
		if o.Direct == "" {
			order = append(order, i)
		}
	}
	for _, i := range order {
		o := reported[i]
		path, ok := declared[o.Name]
		if !ok || seen[o.Name] {
			return fail(fmt.Errorf("outputs[%d]: output %q is not declared or is reported twice", i, o.Name))
		}
		seen[o.Name] = true
		if o.Path != path {
			return fail(fmt.Errorf("outputs[%d] (%s): path %q, derivation declares %q", i, o.Name, o.Path, path))
		}
		if err := allowed.checkClaimed(o); err != nil {
			return fail(fmt.Errorf("outputs[%d] (%s): %w", i, o.Name, err))
		}
		var r db.OutputResult
		var err error
		if o.Direct != "" {
			r, ups[i], err = c.verifyDirect(ctx, agentID, b.ID, o, allowed.scanner())
			if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrUnavailable) {
				if pr, ok := c.publishedResult(o); ok {
					r, err = pr, nil
				}
			}
		} else if g := c.takeIngest(agentID, b.ID, o.Upload); g != nil {
			r, ups[i], err = verifyIngest(g, o)
			if err == nil {
				c.metrics.verifiedBytes.WithLabelValues("sftp").Add(float64(r.FileSize))
			}
		} else {
			r, err = verifyFile(dir, o, allowed.scanner())
			if err == nil {
				c.metrics.verifiedBytes.WithLabelValues("sftp").Add(float64(r.FileSize))
			}
			if errors.Is(err, fs.ErrNotExist) {
				if pr, ok := c.publishedResult(o); ok {
					r, err = pr, nil
				}
			}
		}
		if err != nil {
			return fail(fmt.Errorf("outputs[%d] (%s): %w", i, o.Name, err))
		}
		results[i] = r
	}
	return results, ups, nil
}

// verifyIngest checks a streamed upload against its report, returning
// the closed store upload with its bytes when they match.
func verifyIngest(g *Ingest, o protocol.OutputResult) (db.OutputResult, cache.Upload, error) {
	rep, err := parseReport(o)
	if err != nil {
		g.c.dropIngests([]*Ingest{g})
		return db.OutputResult{}, nil, err
	}
	m, up, scan, err := g.finish()
	if err != nil {
		return db.OutputResult{}, nil, err
	}
	r, err := rep.check(m, scan)
	if err != nil {
		up.Discard()
		return db.OutputResult{}, nil, err
	}
	return r, up, nil
}

// discardAll drops the uploads not yet consumed.
func discardAll(ups []cache.Upload) {
	for _, up := range ups {
		if up != nil {
			up.Discard()
		}
	}
}

// publishedResult accepts a reported output whose upload is gone because
// an earlier copy of the same result was verified and published before
// recording it failed (database unavailable). With a Cache, the cache must
// hold the path with exactly the reported NAR and file hashes and sizes;
// without one, the file moved into the state directory is verified again.
func (c *Coordinator) publishedResult(o protocol.OutputResult) (db.OutputResult, bool) {
	narHash, err1 := nixhash.Parse(o.NarHash)
	fileHash, err2 := nixhash.Parse(o.FileHash)
	suffix, err3 := compressionSuffix(o.Compression)
	if errors.Join(err1, err2, err3) != nil || o.NarSize < 0 || o.FileSize < 0 {
		return db.OutputResult{}, false
	}
	file := filepath.Join("cache", "nar", nixhash.Base32(fileHash.Digest)+".nar"+suffix)
	if c.cfg.Cache == nil {
		moved := o
		moved.Upload = filepath.Base(file)
		r, err := verifyFile(filepath.Join(c.cfg.StateDir, filepath.Dir(file)), moved, nil)
		return r, err == nil
	}
	ni, err := c.cfg.Cache.Lookup(o.Path)
	if err != nil || !ni.NarHash.Equal(narHash) || !ni.FileHash.Equal(fileHash) ||
		ni.NarSize != uint64(o.NarSize) || ni.FileSize != uint64(o.FileSize) {
		return db.OutputResult{}, false
	}
	return db.OutputResult{
		Name: o.Name, Path: o.Path, NarHash: narHash.String(), NarSize: o.NarSize,
		FileHash: fileHash.String(), FileSize: o.FileSize, Compression: o.Compression, References: o.References,
		File: file,
	}, true
}

// verifyFile checks an uploaded file against its report; with scan, also
// the references claimed against those the NAR contains (see
// checkScanned).
func verifyFile(dir string, o protocol.OutputResult, scan *storepath.Scanner) (db.OutputResult, error) {
	rep, err := parseReport(o)
	if err != nil {
		return db.OutputResult{}, err
	}
	f, err := os.Open(filepath.Join(dir, o.Upload))
	if err != nil {
		return db.OutputResult{}, fmt.Errorf("open upload %s: %w", o.Upload, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return db.OutputResult{}, fmt.Errorf("stat upload %s: %w", o.Upload, err)
	}
	if !st.Mode().IsRegular() {
		return db.OutputResult{}, fmt.Errorf("upload %s is not a regular file", o.Upload)
	}
	if st.Size() != o.FileSize {
		return db.OutputResult{}, fmt.Errorf("file size %d, reported %d", st.Size(), o.FileSize)
	}
	m, err := measureFrom(f, o.Compression, scan)
	if err != nil {
		return db.OutputResult{}, fmt.Errorf("read upload %s: %w", o.Upload, err)
	}
	return rep.check(m, scan)
}

// report is an output's result as the agent reported it, parsed.
type report struct {
	o        protocol.OutputResult
	narHash  nixhash.Hash
	fileHash nixhash.Hash
	suffix   string
}

// parseReport checks the form of a reported output: a plain upload name,
// well-formed hashes (a sha256 file hash), a known compression.
func parseReport(o protocol.OutputResult) (report, error) {
	if o.Upload == "" || o.Upload != filepath.Base(o.Upload) || o.Upload == "." || o.Upload == ".." || strings.ContainsAny(o.Upload, `/\`) {
		return report{}, fmt.Errorf("upload name %q is not a plain file name", o.Upload)
	}
	wantNar, err := nixhash.Parse(o.NarHash)
	if err != nil {
		return report{}, fmt.Errorf("nar_hash %q: %w", o.NarHash, err)
	}
	wantFile, err := nixhash.Parse(o.FileHash)
	if err != nil {
		return report{}, fmt.Errorf("file_hash %q: %w", o.FileHash, err)
	}
	if wantFile.Algo != nixhash.SHA256 {
		return report{}, fmt.Errorf("file_hash %q: want sha256", o.FileHash)
	}
	suffix, err := compressionSuffix(o.Compression)
	if err != nil {
		return report{}, err
	}
	return report{o: o, narHash: wantNar, fileHash: wantFile, suffix: suffix}, nil
}

// check compares what the upload's bytes are (m) with the report and,
// with scan (which saw the NAR), the claimed references with those found.
func (rep report) check(m measured, scan *storepath.Scanner) (db.OutputResult, error) {
	o := rep.o
	if m.NarErr != nil {
		return db.OutputResult{}, fmt.Errorf("uploaded NAR %s is invalid: %w", o.Upload, m.NarErr)
	}
	if m.NarSize != o.NarSize {
		return db.OutputResult{}, fmt.Errorf("NAR size %d, reported %d", m.NarSize, o.NarSize)
	}
	if !m.NarHash.Equal(rep.narHash) {
		return db.OutputResult{}, fmt.Errorf("NAR hash %s, reported %s", m.NarHash, o.NarHash)
	}
	if m.FileSize != o.FileSize {
		return db.OutputResult{}, fmt.Errorf("file size %d, reported %d", m.FileSize, o.FileSize)
	}
	if !m.FileHash.Equal(rep.fileHash) {
		return db.OutputResult{}, fmt.Errorf("file hash %s, reported %s", m.FileHash, o.FileHash)
	}
	if scan != nil {
		if err := checkScanned(o, scan); err != nil {
			return db.OutputResult{}, err
		}
	}
	return db.OutputResult{
		Name:        o.Name,
		Path:        o.Path,
		NarHash:     m.NarHash.String(),
		NarSize:     m.NarSize,
		FileHash:    m.FileHash.String(),
		FileSize:    o.FileSize,
		Compression: o.Compression,
		References:  o.References,
		File:        filepath.Join("cache", "nar", nixhash.Base32(m.FileHash.Digest)+".nar"+rep.suffix),
	}, nil
}

// millis is a duration in milliseconds with µs precision, for logs.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
