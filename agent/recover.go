package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gbc-farm/gbc/protocol"
)

// uploadStateFile, in a build's directory, records a build whose outputs
// are packed: the build message and the reports. With it an agent that was
// restarted (or killed) mid-upload reports the build as still running in
// hello and, when the coordinator says continue, resumes the uploads from
// the size already on the coordinator instead of building again.
const uploadStateFile = "upload.json"

type uploadState struct {
	Build   *protocol.Build         `json:"build"`
	Outputs []protocol.OutputResult `json:"outputs"`
}

func saveUploadState(dir string, b *protocol.Build, outs []protocol.OutputResult) error {
	data, err := json.Marshal(uploadState{Build: b, Outputs: outs})
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, uploadStateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, uploadStateFile))
}

// recoverUploads runs at start: build directories with a saved upload state
// become runs that only upload and report; any other directory belongs to a
// build that died with the previous process and is removed (the
// coordinator requeues that build).
func (a *Agent) recoverUploads(ctx context.Context) {
	root := filepath.Join(a.cfg.WorkDir, "builds")
	ents, err := os.ReadDir(root)
	if err != nil {
		a.log.Warn("scan work dir", "err", err)
		return
	}
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		st, err := loadUploadState(dir, e.Name())
		if err != nil {
			a.log.Info("removing the directory of a build from a previous run", "dir", dir, "why", err)
			os.RemoveAll(dir)
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r := &run{id: st.Build.Build, msg: st.Build, dir: dir, cancel: cancel, times: phases{start: time.Now()}, done: make(chan struct{})}
		a.mu.Lock()
		a.runs[r.id] = r
		a.mu.Unlock()
		log := a.log.With("build", r.id, "derivation", r.msg.Derivation)
		log.Info("resuming the upload of a packed build", "outputs", len(st.Outputs))
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer close(r.done)
			defer cancel()
			a.conclude(rctx, r, a.uploadAll(rctx, r, st.Outputs, log), log)
		}()
	}
}

func loadUploadState(dir, name string) (*uploadState, error) {
	data, err := os.ReadFile(filepath.Join(dir, uploadStateFile))
	if err != nil {
		return nil, err
	}
	var st uploadState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", uploadStateFile, err)
	}
	if st.Build == nil || st.Build.Build != name || checkBuildID(name) != nil || st.Build.UploadDir == "" || len(st.Outputs) == 0 {
		return nil, fmt.Errorf("%s does not describe build %q", uploadStateFile, name)
	}
	for _, o := range st.Outputs {
		if o.Upload == "" || o.Upload != filepath.Base(o.Upload) {
			return nil, fmt.Errorf("%s: upload name %q", uploadStateFile, o.Upload)
		}
		if _, err := os.Stat(filepath.Join(dir, o.Upload)); err != nil {
			return nil, err
		}
	}
	return &st, nil
}
