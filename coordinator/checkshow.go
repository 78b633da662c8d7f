package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/nar/nardiff"
)

// CheckReport is what `check show` prints: per output, per side, the NAR
// hash and size and who built it; for an unreproducible output, the
// file-level differences between its NARs.
type CheckReport struct {
	ID           string         `json:"id"`
	Derivation   string         `json:"derivation"`
	System       string         `json:"system"`
	Agents       int            `json:"agents"`
	AgainstCache bool           `json:"against_cache"`
	Priority     int            `json:"priority"`
	State        db.CheckState  `json:"state"`
	CreatedAt    time.Time      `json:"created_at"`
	EndedAt      *time.Time     `json:"ended_at,omitempty"`
	Waiting      string         `json:"waiting,omitempty"` // why a pending check's sides do not run
	Sides        []CheckSideRow `json:"sides"`
	Outputs      []CheckOutRow  `json:"outputs"`
}

// CheckSideRow is one side: a build on an agent, or the cache.
type CheckSideRow struct {
	Side       int           `json:"side"` // 0: the cache
	Build      string        `json:"build,omitempty"`
	BuildState db.BuildState `json:"build_state,omitempty"`
	Agent      string        `json:"agent,omitempty"`
	AgentName  string        `json:"agent_name,omitempty"`
	Hardware   *db.Hardware  `json:"hardware,omitempty"`
	Failure    string        `json:"failure,omitempty"`
}

// CheckOutRow is one output of the derivation across the sides.
type CheckOutRow struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Verdict string `json:"verdict"` // pending, reproducible, unreproducible, failed
	Sides   []struct {
		Side    int    `json:"side"`
		NarHash string `json:"nar_hash"`
		NarSize int64  `json:"nar_size"`
	} `json:"sides"`
	// Differences compare the first side with each side whose NAR
	// differs from it.
	Differences []CheckDiff `json:"differences,omitempty"`
}

// CheckDiff is the comparison of one output's NARs on two sides.
type CheckDiff struct {
	Left   int             `json:"left_side"`
	Right  int             `json:"right_side"`
	Report *nardiff.Report `json:"report,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// ShowCheck reports a check; with diff, the differences of every
// unreproducible output are computed from the kept NARs.
func (c *Coordinator) ShowCheck(ctx context.Context, id string, diff bool) (CheckReport, error) {
	ck, err := c.store.Check(ctx, id)
	if err != nil {
		return CheckReport{}, c.checkNotFound(id, err)
	}
	builds, err := c.checkBuilds(ctx, ck)
	if err != nil {
		return CheckReport{}, err
	}
	r := CheckReport{ID: ck.ID, Derivation: ck.Derivation, System: ck.System, Agents: ck.Agents, AgainstCache: ck.AgainstCache,
		Priority: ck.Priority, State: ck.State, CreatedAt: ck.CreatedAt, Sides: []CheckSideRow{}, Outputs: []CheckOutRow{}}
	if !ck.EndedAt.IsZero() {
		t := ck.EndedAt
		r.EndedAt = &t
	}
	if ck.State == db.CheckPending {
		r.Waiting = c.CheckWaiting(ck)
	}
	names := c.agentNames()
	var declared []db.DerivationOutput
	for _, sd := range ck.Sides {
		row := CheckSideRow{Side: sd.Side, Build: sd.BuildID, Agent: sd.AgentID}
		if b, ok := builds[sd.BuildID]; ok {
			row.BuildState = b.State
			if row.Agent == "" {
				row.Agent = b.AgentID
			}
			row.Failure = b.FailureReason
			for i := len(b.Attempts) - 1; i >= 0; i-- {
				if !b.Attempts[i].Hardware.IsZero() {
					hw := b.Attempts[i].Hardware
					row.Hardware = &hw
					break
				}
			}
			if declared == nil {
				declared = b.Outputs
			}
		} else if sd.BuildID != "" {
			row.Failure = "the build is no longer recorded"
		}
		row.AgentName = names[row.Agent]
		r.Sides = append(r.Sides, row)
	}
	// Outputs: as the derivation declares them (from a side's build),
	// else as recorded by the sides.
	seen := map[string]bool{}
	for _, o := range declared {
		seen[o.Name] = true
		r.Outputs = append(r.Outputs, CheckOutRow{Name: o.Name, Path: o.Path})
	}
	for _, sd := range ck.Sides {
		for _, o := range sd.Outputs {
			if !seen[o.Name] {
				seen[o.Name] = true
				r.Outputs = append(r.Outputs, CheckOutRow{Name: o.Name, Path: o.Path})
			}
		}
	}
	sort.Slice(r.Outputs, func(i, j int) bool { return r.Outputs[i].Name < r.Outputs[j].Name })
	for i := range r.Outputs {
		out := &r.Outputs[i]
		var kept []db.CheckOutput
		var sides []int
		for _, sd := range ck.Sides {
			for _, o := range sd.Outputs {
				if o.Name == out.Name {
					out.Sides = append(out.Sides, struct {
						Side    int    `json:"side"`
						NarHash string `json:"nar_hash"`
						NarSize int64  `json:"nar_size"`
					}{sd.Side, o.NarHash, o.NarSize})
					kept = append(kept, o)
					sides = append(sides, sd.Side)
				}
			}
		}
		out.Verdict = outputVerdict(ck, builds, kept)
		if diff && out.Verdict == string(db.CheckUnreproducible) {
			for j := 1; j < len(kept); j++ {
				if kept[j].NarHash == kept[0].NarHash {
					continue
				}
				d := CheckDiff{Left: sides[0], Right: sides[j]}
				rep, err := c.compareKept(kept[0], kept[j])
				if err != nil {
					d.Error = err.Error()
				} else {
					d.Report = rep
				}
				out.Differences = append(out.Differences, d)
			}
		}
	}
	return r, nil
}

// outputVerdict is one output's verdict: failed or pending as the check,
// else whether the sides' NAR hashes agree.
func outputVerdict(ck db.Check, builds map[string]db.Build, kept []db.CheckOutput) string {
	switch ck.State {
	case db.CheckFailed:
		return string(db.CheckFailed)
	case db.CheckPending:
		if st, _, done := verdict(ck, builds); !done || st == db.CheckFailed {
			return string(db.CheckPending)
		}
	}
	for _, o := range kept[min(1, len(kept)):] {
		if o.NarHash != kept[0].NarHash {
			return string(db.CheckUnreproducible)
		}
	}
	return string(db.CheckReproducible)
}

func (c *Coordinator) compareKept(a, b db.CheckOutput) (*nardiff.Report, error) {
	ra, err := c.openCheckNar(a)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	rb, err := c.openCheckNar(b)
	if err != nil {
		return nil, err
	}
	defer rb.Close()
	return nardiff.Compare(ra, rb, nardiff.Options{})
}

// agentNames maps agent ids to their names (what the coordinator knows).
func (c *Coordinator) agentNames() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.known))
	for id, a := range c.known {
		out[id] = a.name
	}
	return out
}

// checkOutput finds the kept NAR of one output on the side named by who:
// a side number, an agent id or name, or "cache".
func (c *Coordinator) checkOutput(ctx context.Context, id, output, who string) (db.CheckOutput, error) {
	ck, err := c.store.Check(ctx, id)
	if err != nil {
		return db.CheckOutput{}, c.checkNotFound(id, err)
	}
	names := c.agentNames()
	for _, sd := range ck.Sides {
		match := who == strconv.Itoa(sd.Side) || (sd.AgentID != "" && (who == sd.AgentID || who == names[sd.AgentID])) ||
			(who == "cache" && sd.Side == db.CheckSideCache)
		if !match {
			continue
		}
		for _, o := range sd.Outputs {
			if o.Name == output {
				return o, nil
			}
		}
		return db.CheckOutput{}, &plainError{fmt.Sprintf("check %s: side %d has no NAR of output %q (it did not build, or the output is not declared)", id, sd.Side, output), db.ErrNotFound}
	}
	return db.CheckOutput{}, &plainError{fmt.Sprintf("check %s: no side %q (give a side number, an agent id or name, or cache; 'check show %s' lists them)", id, who, id), db.ErrNotFound}
}

// FetchCheckNar writes one side's NAR of one output to w, uncompressed.
func (c *Coordinator) FetchCheckNar(ctx context.Context, id, output, who string, w io.Writer) error {
	o, err := c.checkOutput(ctx, id, output, who)
	if err != nil {
		return err
	}
	r, err := c.openCheckNar(o)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("stream the kept NAR of %s: %w", o.Path, err)
	}
	return nil
}

// ErrNoDiffoscope: diffoscope is not installed on the coordinator.
var ErrNoDiffoscope = errors.New("diffoscope is not installed on the coordinator (Debian package diffoscope)")

// Diffoscope bounds.
const (
	DiffoscopeTimeout   = 2 * time.Minute
	MaxDiffoscopeOutput = 4 << 20
)

// Diffoscope restores two sides' NARs of an unreproducible output into a
// scratch directory and runs diffoscope on the two trees, within
// DiffoscopeTimeout, writing at most MaxDiffoscopeOutput bytes of its
// text report to w.
func (c *Coordinator) Diffoscope(ctx context.Context, id, output string, left, right int, w io.Writer) error {
	bin, err := exec.LookPath("diffoscope")
	if err != nil {
		return ErrNoDiffoscope
	}
	a, err := c.checkOutput(ctx, id, output, strconv.Itoa(left))
	if err != nil {
		return err
	}
	b, err := c.checkOutput(ctx, id, output, strconv.Itoa(right))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(c.ScratchDir(), "diffoscope-")
	if err != nil {
		return fmt.Errorf("diffoscope scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	trees := []string{filepath.Join(dir, "side"+strconv.Itoa(left)), filepath.Join(dir, "side"+strconv.Itoa(right))}
	for i, o := range []db.CheckOutput{a, b} {
		r, err := c.openCheckNar(o)
		if err != nil {
			return err
		}
		err = nar.Restore(r, trees[i])
		r.Close()
		if err != nil {
			return fmt.Errorf("restore the NAR of %s for diffoscope: %w", o.Path, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, DiffoscopeTimeout)
	defer cancel()
	// Relative names, so the report shows side1/… and side2/…, and no
	// metadata of the restored files (their times are the restore's).
	cmd := exec.CommandContext(ctx, bin, "--no-progress", "--exclude-directory-metadata", "recursive", "--text", "-",
		filepath.Base(trees[0]), filepath.Base(trees[1]))
	cmd.Dir = dir
	lw := &limitWriter{w: w, n: MaxDiffoscopeOutput}
	var stderr bytes.Buffer
	cmd.Stdout = lw
	cmd.Stderr = &limitWriter{w: &stderr, n: 64 << 10}
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("diffoscope did not finish within %s", DiffoscopeTimeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil // 1: the trees differ, which is the point
	}
	if err != nil {
		return fmt.Errorf("diffoscope: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// limitWriter passes on at most n bytes and drops the rest.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if int64(len(q)) > l.n {
		q = q[:l.n]
	}
	n, err := l.w.Write(q)
	l.n -= int64(n)
	if err != nil {
		return n, err
	}
	return len(p), nil
}
