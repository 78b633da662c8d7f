package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/agent/backend"
	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/protocol"
)

// run is one build on this agent. Fields after mu-protected ones are set
// once at start.
type run struct {
	id     string
	msg    *protocol.Build
	dir    string
	cancel context.CancelFunc
	log    *logStream
	times  phases        // written by the build's goroutine only
	done   chan struct{} // closed when the run's goroutine has returned

	// guarded by Agent.mu
	finished bool // result queued (or nothing to report)
	canceled bool // coordinator canceled it: report nothing more
}

// startBuild accepts a build pushed by the coordinator. A build still
// running here is acknowledged again without a second run, so a
// coordinator may safely resend after a reconnect. A build given again
// after it was canceled here, or while an older result of it waits for an
// ack, is a new attempt: the old run is dropped (its result is superseded)
// and the new one starts once the old one has stopped.
func (a *Agent) startBuild(ctx context.Context, b *protocol.Build) error {
	if err := checkBuildID(b.Build); err != nil {
		return err
	}
	if !strings.HasSuffix(b.Derivation, ".drv") || !strings.HasPrefix(b.Derivation, a.cfg.Backend.StoreDir()+"/") {
		return fmt.Errorf("build %s: derivation %q is not a .drv in %s", b.Build, b.Derivation, a.cfg.Backend.StoreDir())
	}
	if b.UploadDir == "" {
		return fmt.Errorf("build %s: no upload_dir", b.Build)
	}
	for _, o := range b.Outputs {
		if err := checkOutputName(o.Name); err != nil {
			return fmt.Errorf("build %s: %w", b.Build, err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.runs[b.Build]
	if old != nil && !old.finished && !old.canceled {
		return nil
	}
	busy := 0
	for _, r := range a.runs {
		if !r.finished && !r.canceled {
			busy++
		}
	}
	if busy >= a.cfg.MaxParallelBuilds {
		return fmt.Errorf("build %s: all %d build slots are busy", b.Build, a.cfg.MaxParallelBuilds)
	}
	if old != nil {
		old.canceled = true
		a.dropPendingLocked(old)
		old.cancel()
		a.log.Info("build given again; the earlier run is dropped", "build", b.Build)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &run{id: b.Build, msg: b, dir: filepath.Join(a.cfg.WorkDir, "builds", b.Build), cancel: cancel, times: phases{start: time.Now()}, done: make(chan struct{})}
	a.runs[b.Build] = r
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(r.done)
		defer cancel()
		if old != nil {
			// Same directory: wait until the old run stopped, then clear it.
			select {
			case <-old.done:
			case <-rctx.Done():
			}
			if err := os.RemoveAll(old.dir); err != nil {
				a.log.Warn("remove build directory", "build", b.Build, "err", err)
			}
		}
		a.runBuild(rctx, r)
	}()
	return nil
}

// dropPendingLocked forgets r's unacknowledged result. The caller holds a.mu.
func (a *Agent) dropPendingLocked(r *run) {
	a.pending = slices.DeleteFunc(a.pending, func(p *pending) bool { return p.run == r })
}

// checkBuildID keeps coordinator-chosen ids safe as directory names.
func checkBuildID(id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return fmt.Errorf("build id %q is not usable", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("build id %q has character %q", id, c)
		}
	}
	return nil
}

// checkOutputName keeps output names safe as file names (Nix output names
// are identifiers).
func checkOutputName(n string) error {
	if err := checkBuildID(n); err != nil || strings.HasPrefix(n, ".") {
		return fmt.Errorf("output name %q is not usable", n)
	}
	return nil
}

// cancelBuild stops a build and drops any result not yet acknowledged.
func (a *Agent) cancelBuild(id, why string) {
	a.mu.Lock()
	r := a.runs[id]
	if r == nil {
		a.mu.Unlock()
		return
	}
	r.canceled = true
	finished := r.finished
	a.dropPendingLocked(r)
	a.mu.Unlock()
	a.log.Info("canceling build", "build", id, "why", why)
	r.cancel()
	if finished {
		a.settle(r)
	}
}

// runBuild builds, packs and uploads one build and queues its result.
func (a *Agent) runBuild(ctx context.Context, r *run) {
	b := r.msg
	log := a.log.With("build", b.Build, "derivation", b.Derivation)
	a.conclude(ctx, r, a.buildAndUpload(ctx, r, log), log)
}

// phases is where one build's time went on the agent, logged with its
// result ("build finished") so that slow builds and benchmarks can say
// which step was slow.
type phases struct {
	start  time.Time     // the build message was accepted
	fetch  time.Duration // .drv closure and inputs from the caches, stale outputs deleted
	build  time.Duration // the store's realisation
	pack   time.Duration // NAR, hashes, compression, references
	upload time.Duration // SFTP, every output
}

// since returns the time from *t0 to now and moves *t0 to now.
func since(t0 *time.Time) time.Duration {
	now := time.Now()
	d := now.Sub(*t0)
	*t0 = now
	return d
}

// millis is d in milliseconds with microsecond resolution, for logs.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// conclude queues a run's result, or settles it when there is nothing to
// report.
func (a *Agent) conclude(ctx context.Context, r *run, res protocol.Message, log *slog.Logger) {
	if r.log != nil {
		if err := r.log.Close(); err != nil {
			log.Debug("log flush", "err", err)
		}
	}
	if res == nil || ctx.Err() != nil {
		// Canceled, or the agent is stopping: nothing to report. On a
		// stop the coordinator notices the missing agent and requeues.
		a.mu.Lock()
		r.finished = true
		a.mu.Unlock()
		a.settle(r)
		return
	}
	t := r.times
	log.Info("build finished", "result", res.MessageType(),
		"fetch_ms", millis(t.fetch), "build_ms", millis(t.build),
		"pack_ms", millis(t.pack), "upload_ms", millis(t.upload), "total_ms", millis(time.Since(t.start)))
	a.queueResult(r, res)
}

// buildAndUpload returns the result message, or nil when ctx ended.
func (a *Agent) buildAndUpload(ctx context.Context, r *run, log *slog.Logger) protocol.Message {
	b := r.msg
	setup := func(reason string, missing ...string) protocol.Message {
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("setup failure", "reason", reason, "missing", missing)
		return &protocol.SetupFailure{Build: b.Build, Reason: reason, Missing: missing}
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return setup(fmt.Sprintf("create build directory: %v", err))
	}
	ls, err := newLogStream(b.Build, filepath.Join(r.dir, "log"), a.send, func() int { return logChunkFor(int(a.maxLine.Load())) })
	if err != nil {
		return setup(err.Error())
	}
	a.mu.Lock()
	r.log = ls
	a.mu.Unlock()

	be := a.cfg.Backend
	a.reportPhase(b.Build, protocol.PhasePreparing, log)
	t0 := time.Now()
	started := false
	req := backend.Request{
		Derivation: b.Derivation,
		Options: backend.Options{
			Timeout:       time.Duration(b.TimeoutSeconds) * time.Second,
			MaxSilentTime: time.Duration(b.MaxSilentTimeSeconds) * time.Second,
			GCRoot:        filepath.Join(r.dir, "result"),
		},
		Started: func() {
			// Fetching and checking the inputs happen together.
			r.times.fetch = since(&t0)
			started = true
			if err := a.send(&protocol.Started{Header: protocol.Header{ID: a.nextMsgID()}, Build: b.Build, Hardware: hardware(a.cfg.WorkDir)}); err != nil {
				log.Info("started not sent", "err", err)
			}
			log.Info("building")
		},
	}
	for _, o := range b.Outputs {
		req.Outputs = append(req.Outputs, backend.Output{Name: o.Name, Path: o.Path})
	}
	if a.fwd != nil {
		if _, _, key := a.fwd.current(); key != "" {
			req.Sources = backend.Sources{CacheURL: a.fwd.URL(), CacheKey: key}
		}
	}
	req.Sources.Upstream = a.cfg.SubstituteURLs
	br, err := be.Build(ctx, req, ls)
	if started {
		r.times.build = since(&t0)
	} else {
		r.times.fetch = since(&t0)
	}
	if err != nil {
		return nil
	}
	switch br.Outcome {
	case backend.Succeeded:
	case backend.BuildFailed, backend.TimedOut, backend.SilentTimedOut:
		reason := map[backend.Outcome]string{
			backend.BuildFailed:    protocol.ReasonBuild,
			backend.TimedOut:       protocol.ReasonTimeout,
			backend.SilentTimedOut: protocol.ReasonSilentTimeout,
		}[br.Outcome]
		return &protocol.Failed{Build: b.Build, Reason: reason, ExitCode: br.ExitCode, Message: br.Message}
	default:
		return setup(br.Message, br.Missing...)
	}

	a.reportPhase(b.Build, protocol.PhaseUploading, log)
	outputs := b.Outputs
	if len(outputs) == 0 {
		d, err := derivation.ReadFile(b.Derivation)
		if err != nil {
			return setup(fmt.Sprintf("read outputs of %s: %v", b.Derivation, err))
		}
		for _, o := range d.Outputs {
			outputs = append(outputs, protocol.OutputRef{Name: o.Name, Path: o.Path})
		}
	}
	results := make([]protocol.OutputResult, 0, len(outputs))
	for _, o := range outputs {
		or, err := a.pack(ctx, r, o, log)
		if err != nil {
			return setup(err.Error())
		}
		results = append(results, or)
	}
	r.times.pack = since(&t0)
	// From here on the build survives an agent restart (recover.go).
	if err := saveUploadState(r.dir, b, results); err != nil {
		log.Warn("upload state not saved; a restart will not resume this upload", "err", err)
	}
	return a.uploadAll(ctx, r, results, log)
}

// reportPhase tells the coordinator where a build is; without an id, so
// nothing waits for an answer, and a report lost with a connection only
// leaves the coordinator's view a phase behind.
func (a *Agent) reportPhase(build, phase string, log *slog.Logger) {
	if err := a.send(&protocol.Phase{Build: build, Phase: phase}); err != nil {
		log.Debug("phase not sent", "phase", phase, "err", err)
	}
}

// uploadAll uploads every packed output and returns the success report, or
// a setup failure, or nil when ctx ended.
func (a *Agent) uploadAll(ctx context.Context, r *run, results []protocol.OutputResult, log *slog.Logger) protocol.Message {
	t0 := time.Now()
	defer func() { r.times.upload = since(&t0) }()
	results = slices.Clone(results)
	for i, o := range results {
		if token, ok := a.putDirect(ctx, r, o, log); ok {
			results[i].Direct = token
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		err := a.uploadWithRetry(ctx, filepath.Join(r.dir, o.Upload), path.Join(r.msg.UploadDir, o.Upload), log)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("setup failure", "reason", err)
			return &protocol.SetupFailure{Build: r.msg.Build, Reason: err.Error()}
		}
	}
	return &protocol.Succeeded{Build: r.msg.Build, Outputs: results}
}

// directAnswerTimeout bounds the wait for the coordinator's answer to an
// upload-url request.
const directAnswerTimeout = 30 * time.Second

// putDirect uploads one packed output straight into the cache's object
// store with a URL the coordinator hands out, and returns the token to
// report. false: no URL (direct uploads off, an older coordinator, a
// file too large for one PUT, not connected) or the PUT failed; the
// caller then uploads over SFTP.
func (a *Agent) putDirect(ctx context.Context, r *run, o protocol.OutputResult, log *slog.Logger) (string, bool) {
	if !a.cfg.DirectUpload || a.directOff.Load() || o.FileSize <= 0 || o.FileSize > protocol.MaxDirectUpload {
		return "", false
	}
	id := a.nextMsgID()
	ans, err := a.request(ctx, id, &protocol.UploadURL{Header: protocol.Header{ID: id}, Build: r.msg.Build, Upload: o.Upload, Size: o.FileSize}, directAnswerTimeout)
	if err != nil {
		log.Info("no direct upload URL; uploading over SFTP", "upload", o.Upload, "err", err)
		return "", false
	}
	t, ok := ans.(*protocol.UploadTarget)
	if !ok {
		// This coordinator gives no URLs (off, or it does not know the
		// request): no more asking until the next session, so a farm
		// without direct uploads pays one round trip per connection, not
		// one per output.
		msg := ""
		if e, isErr := ans.(*protocol.Error); isErr {
			msg = e.Message
		}
		a.directOff.Store(true)
		log.Info("the coordinator gives no direct upload URLs; uploading over SFTP until the next connection", "coordinator", msg)
		return "", false
	}
	if t.Refused != "" {
		log.Info("no direct upload URL for this output; uploading over SFTP", "upload", o.Upload, "coordinator", t.Refused)
		return "", false
	}
	if t.Direct == "" || t.Upload != o.Upload || !(strings.HasPrefix(t.URL, "http://") || strings.HasPrefix(t.URL, "https://")) {
		log.Warn("unusable direct upload target; uploading over SFTP", "upload", o.Upload, "target_upload", t.Upload)
		return "", false
	}
	start := time.Now()
	n, err := upload.Put(ctx, a.http, t.URL, filepath.Join(r.dir, o.Upload))
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("direct upload failed; uploading over SFTP", "upload", o.Upload, "err", err)
		}
		return "", false
	}
	log.Info("uploaded output directly", "upload", o.Upload, "size", n, "ms", millis(time.Since(start)))
	return t.Direct, true
}

// pack turns one output into a compressed NAR file in the build directory
// and its report.
func (a *Agent) pack(ctx context.Context, r *run, o protocol.OutputRef, log *slog.Logger) (protocol.OutputResult, error) {
	be := a.cfg.Backend
	if _, err := os.Lstat(o.Path); err != nil {
		return protocol.OutputResult{}, fmt.Errorf("output %s (%s) missing after the build: %w", o.Name, o.Path, err)
	}
	refs, err := be.References(ctx, o.Path)
	if err != nil {
		return protocol.OutputResult{}, fmt.Errorf("output %s: %w", o.Name, err)
	}
	name := o.Name + ".nar" + compression.Suffix(a.cfg.Compression)
	p, err := upload.Pack(ctx, o.Path, filepath.Join(r.dir, name), a.cfg.Compression)
	if err != nil {
		return protocol.OutputResult{}, err
	}
	log.Info("packed output", "output", o.Name, "nar_size", p.NarSize, "file_size", p.FileSize, "nar_hash", p.NarHash.String())
	return protocol.OutputResult{
		Name:        o.Name,
		Path:        o.Path,
		NarHash:     p.NarHash.String(),
		NarSize:     p.NarSize,
		FileHash:    p.FileHash.String(),
		FileSize:    p.FileSize,
		Compression: a.cfg.Compression,
		References:  refs,
		Upload:      name,
	}, nil
}

// uploadWithRetry uploads over whatever connection is live, resuming after
// drops. Failures on a connection that stays up (e.g. the coordinator
// refusing the path) count against UploadAttempts.
func (a *Agent) uploadWithRetry(ctx context.Context, local, remote string, log *slog.Logger) error {
	failures := 0
	for {
		c, changed := a.currentSFTP()
		if c == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
				continue
			}
		}
		st, err := upload.Upload(ctx, c, local, remote, nil)
		if err == nil {
			log.Info("uploaded output", "remote", remote, "size", st.Size, "sent", st.Sent, "skipped", st.Skipped)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("upload failed", "remote", remote, "sent", st.Sent, "skipped", st.Skipped, "err", err)
		select {
		case <-changed:
			continue // the connection dropped; resume on the next one
		case <-time.After(time.Second):
		}
		select {
		case <-changed:
			continue
		default:
		}
		if failures++; failures >= a.cfg.UploadAttempts {
			return fmt.Errorf("upload %s: %w", remote, err)
		}
	}
}
