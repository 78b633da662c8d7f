package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/pkg/sftp"

	"github.com/gbc-farm/gbc/coordinator"
)

// handleSFTP serves an agent's virtual upload tree:
//
//	/                       directory with "uploads"
//	/uploads                one directory per build allocated to the agent
//	/uploads/<build>/<file> DIR/uploads/<agent-id>/<build>/<file> on disk
//
// Nothing else exists. Writes (at offsets), stat, list and remove of the
// agent's own files are allowed; reads, renames, links and the rest are
// refused.
func (s *Server) handleSFTP(sess ssh.Session) {
	ctx := sess.Context()
	who, err := s.whoami(ctx, sess)
	if err != nil || !subsystemAllowed(who, "sftp") {
		s.log.Warn("sftp refused", "role", who.Role, "err", err)
		fmt.Fprintln(sess.Stderr(), "permission denied: sftp is for agent keys")
		sess.Exit(1)
		return
	}
	t := &uploadTree{s: s, ctx: ctx, agentID: who.AgentID, max: s.cfg.MaxUploadBytes}
	h := sftp.Handlers{FileGet: t, FilePut: t, FileCmd: t, FileList: t}
	// The allocator reuses packet buffers: fewer allocations per 32 KiB write.
	srv := sftp.NewRequestServer(sess, h, sftp.WithRSAllocator())
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		s.log.Info("sftp session ended", "agent", who.AgentID, "err", err)
	}
	srv.Close()
}

type uploadTree struct {
	s       *Server
	ctx     context.Context
	agentID string
	max     int64
}

// vpath is a resolved virtual path.
type vpath struct {
	depth int    // 0 "/", 1 "/uploads", 2 "/uploads/<build>", 3 a file
	build string // depth >= 2
	file  string // depth 3
}

// resolve cleans a client path and maps it onto the virtual tree. Cleaning
// happens on the slash-separated virtual path before any disk path is
// built, and a file name can never be ".", ".." or contain a separator, so
// nothing can climb out of the agent's area.
func resolve(p string) (vpath, error) {
	if strings.ContainsRune(p, 0) || strings.Contains(p, `\`) {
		return vpath{}, sftp.ErrSSHFxPermissionDenied
	}
	clean := path.Clean("/" + p)
	if clean == "/" {
		return vpath{depth: 0}, nil
	}
	parts := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	if parts[0] != "uploads" || len(parts) > 3 {
		return vpath{}, os.ErrNotExist
	}
	v := vpath{depth: len(parts)}
	if len(parts) >= 2 {
		v.build = parts[1]
	}
	if len(parts) == 3 {
		v.file = parts[2]
	}
	for _, part := range parts {
		if part == "" || part == "." || part == ".." || len(part) > 255 {
			return vpath{}, sftp.ErrSSHFxPermissionDenied
		}
	}
	return v, nil
}

// held resolves a path and checks that its build is allocated to this
// agent. A build that is not the agent's does not exist, as far as it can see.
func (t *uploadTree) held(p string, wantDepth int) (vpath, string, error) {
	v, err := resolve(p)
	if err != nil {
		return v, "", err
	}
	if v.depth < 2 {
		return v, "", sftp.ErrSSHFxPermissionDenied
	}
	if !t.s.coord.Holds(t.ctx, t.agentID, v.build) {
		return v, "", os.ErrNotExist
	}
	if wantDepth != 0 && v.depth != wantDepth {
		return v, "", sftp.ErrSSHFxPermissionDenied
	}
	dir := t.s.coord.UploadDir(t.agentID, v.build)
	if v.depth == 2 {
		return v, dir, nil
	}
	return v, filepath.Join(dir, v.file), nil
}

func (t *uploadTree) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return nil, sftp.ErrSSHFxPermissionDenied
}

func (t *uploadTree) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	v, real, err := t.held(r.Filepath, 3)
	if err != nil {
		return nil, err
	}
	if err := t.checkName(v, filepath.Dir(real)); err != nil {
		return nil, err
	}
	if err := t.s.coord.UploadSpace(t.agentID, v.build); err != nil {
		return nil, refusal{err}
	}
	pf := r.Pflags()
	if t.s.coord.Streams(v.build) {
		g, err := t.s.coord.OpenIngest(t.ctx, t.agentID, v.build, v.file, pf.Trunc)
		if errors.Is(err, coordinator.ErrNotYourBuild) {
			return nil, os.ErrNotExist
		}
		if err != nil {
			return nil, refusal{fmt.Errorf("upload refused: %w", err)}
		}
		if pf.Excl && g.Size() > 0 {
			return nil, os.ErrExist
		}
		return &streamFile{g: g, max: t.max, t: t, build: v.build}, nil
	}
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		return nil, fmt.Errorf("create upload dir: %w", err)
	}
	flags := os.O_WRONLY | os.O_CREATE | syscall.O_NOFOLLOW
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(real, flags, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, sftp.ErrSSHFxPermissionDenied
	}
	bud := t.s.budget(t.agentID, filepath.Dir(filepath.Dir(real)))
	bud.opened(real)
	return &boundedFile{f: f, max: t.max, t: t, build: v.build, budget: bud, path: real}, nil
}

// checkName accepts only a file one of the build's outputs can produce
// (coordinator.UploadOutput), and one file per output: a second name for
// an output that already has one (another compression) is refused.
func (t *uploadTree) checkName(v vpath, dir string) error {
	out, err := t.s.coord.UploadOutput(t.ctx, t.agentID, v.build, v.file)
	if errors.Is(err, coordinator.ErrNotYourBuild) {
		return os.ErrNotExist
	}
	if err != nil {
		return refusal{fmt.Errorf("upload refused: %w", err)}
	}
	have, err := t.files(v.build, dir)
	if err != nil {
		return err
	}
	for name := range have {
		if name == v.file {
			continue
		}
		if other, err := t.s.coord.UploadOutput(t.ctx, t.agentID, v.build, name); err == nil && other == out {
			return refusal{fmt.Errorf("upload refused: output %q already has %s; remove it first", out, name)}
		}
	}
	return nil
}

// files are the names and sizes of the agent's files of a held build:
// its streamed uploads, or the regular files in its upload dir.
func (t *uploadTree) files(build, dir string) (map[string]int64, error) {
	if t.s.coord.Streams(build) {
		return t.s.coord.IngestSizes(t.agentID, build), nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			out[e.Name()] = fi.Size()
		}
	}
	return out, nil
}

// streamFile is a handle on a streamed upload (coordinator.Ingest): the
// bytes go through verification into the cache's store, not to disk
// here, so the agent's on-disk budget does not count them; the size limit
// and the coordinator's space check still apply.
type streamFile struct {
	g     *coordinator.Ingest
	max   int64
	t     *uploadTree
	build string
}

func (f *streamFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.t.admit(f.build, f.max, off, len(p)); err != nil {
		return 0, err
	}
	n, err := f.g.WriteAt(p, off)
	f.t.s.uploaded.WithLabelValues(f.t.agentID).Add(float64(n))
	if err != nil {
		return n, refusal{err}
	}
	return n, nil
}

// Close ends the handle; the upload stays for more writes (a resume) or
// the agent's report.
func (f *streamFile) Close() error { return nil }

// boundedFile refuses writes past the upload size limit and the agent's
// in-flight budget, and while the coordinator is short of disk space.
// pkg/sftp closes it (io.Closer) when the client closes the handle.
type boundedFile struct {
	f      *os.File
	max    int64
	t      *uploadTree
	build  string
	budget *uploadBudget
	path   string
}

func (b *boundedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := b.t.admit(b.build, b.max, off, len(p)); err != nil {
		return 0, err
	}
	if err := b.budget.reserve(b.path, off+int64(len(p))); err != nil {
		return 0, err
	}
	n, err := b.f.WriteAt(p, off)
	b.t.s.uploaded.WithLabelValues(b.t.agentID).Add(float64(n))
	if err != nil {
		var low *coordinator.LowSpaceError
		if err := b.t.s.coord.UploadFailed(b.t.agentID, b.build, err); errors.As(err, &low) {
			return n, refusal{err}
		}
	}
	return n, err
}

// admit checks a write of n bytes at off against the upload size limit
// and the coordinator's disk space.
func (t *uploadTree) admit(build string, max, off int64, n int) error {
	if off < 0 || off+int64(n) > max {
		return fmt.Errorf("write at %d+%d is over the %d-byte upload limit: %w", off, n, max, sftp.ErrSSHFxFailure)
	}
	if err := t.s.coord.UploadSpace(t.agentID, build); err != nil {
		return refusal{err}
	}
	return nil
}

// refusal carries a coordinator's refusal to the SFTP client as a failure
// status whose message is the refusal's own text.
type refusal struct{ err error }

func (r refusal) Error() string   { return r.err.Error() }
func (r refusal) Unwrap() []error { return []error{r.err, sftp.ErrSSHFxFailure} }

func (b *boundedFile) Close() error {
	b.budget.closed(b.path)
	return b.f.Close()
}

func (t *uploadTree) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Remove":
		v, real, err := t.held(r.Filepath, 3)
		if err != nil {
			return err
		}
		if t.s.coord.Streams(v.build) {
			return t.s.coord.RemoveIngest(t.agentID, v.build, v.file)
		}
		st, err := os.Lstat(real)
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return sftp.ErrSSHFxPermissionDenied
		}
		return os.Remove(real)
	case "Mkdir":
		// The build directories exist while the build is held; creating
		// one is a harmless no-op so "mkdir -p" style clients work.
		_, real, err := t.held(r.Filepath, 2)
		if err != nil {
			return err
		}
		return os.MkdirAll(real, 0o755)
	case "Setstat":
		// Accept only truncation of own files; mode and time changes are
		// ignored rather than applied.
		v, real, err := t.held(r.Filepath, 3)
		if err != nil {
			return err
		}
		if r.AttrFlags().Size {
			size := int64(r.Attributes().Size)
			if size < 0 || size > t.max {
				return sftp.ErrSSHFxPermissionDenied
			}
			if t.s.coord.Streams(v.build) {
				g := t.s.coord.Ingest(t.agentID, v.build, v.file)
				if g == nil {
					return os.ErrNotExist
				}
				if err := g.Truncate(size); err != nil {
					return refusal{err}
				}
				return nil
			}
			// Growing a file by truncation counts against the budget
			// as writing would.
			bud := t.s.budget(t.agentID, filepath.Dir(filepath.Dir(real)))
			bud.opened(real)
			defer bud.closed(real)
			if err := bud.reserve(real, size); err != nil {
				return err
			}
			return os.Truncate(real, size)
		}
		return nil
	}
	return sftp.ErrSSHFxPermissionDenied
}

func (t *uploadTree) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		return t.list(r.Filepath)
	case "Stat", "Lstat":
		fi, err := t.stat(r.Filepath)
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxPermissionDenied
}

func (t *uploadTree) stat(p string) (os.FileInfo, error) {
	v, err := resolve(p)
	if err != nil {
		return nil, err
	}
	switch v.depth {
	case 0:
		return dirInfo("/"), nil
	case 1:
		return dirInfo("uploads"), nil
	case 2:
		if _, _, err := t.held(p, 2); err != nil {
			return nil, err
		}
		return dirInfo(v.build), nil
	}
	_, real, err := t.held(p, 3)
	if err != nil {
		return nil, err
	}
	if t.s.coord.Streams(v.build) {
		g := t.s.coord.Ingest(t.agentID, v.build, v.file)
		if g == nil {
			return nil, os.ErrNotExist
		}
		return fileInfo{name: v.file, size: g.Size()}, nil
	}
	st, err := os.Lstat(real)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, os.ErrNotExist
	}
	return st, nil
}

func (t *uploadTree) list(p string) (sftp.ListerAt, error) {
	v, err := resolve(p)
	if err != nil {
		return nil, err
	}
	switch v.depth {
	case 0:
		return listerAt{dirInfo("uploads")}, nil
	case 1:
		ids, err := t.s.coord.HeldBuilds(t.ctx, t.agentID)
		if err != nil {
			return nil, err
		}
		l := make(listerAt, 0, len(ids))
		for _, id := range ids {
			l = append(l, dirInfo(id))
		}
		return l, nil
	case 2:
		_, real, err := t.held(p, 2)
		if err != nil {
			return nil, err
		}
		have, err := t.files(v.build, real)
		if err != nil {
			return nil, err
		}
		l := make(listerAt, 0, len(have))
		for name, size := range have {
			l = append(l, fileInfo{name: name, size: size})
		}
		slices.SortFunc(l, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
		return l, nil
	}
	return nil, sftp.ErrSSHFxPermissionDenied
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(dst []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if off+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}

// fileInfo describes an upload file by name and size.
type fileInfo struct {
	name string
	size int64
}

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return f.size }
func (f fileInfo) Mode() os.FileMode  { return 0o644 }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return false }
func (f fileInfo) Sys() any           { return nil }

// dirInfo describes a virtual directory.
type dirInfo string

func (d dirInfo) Name() string       { return path.Base(string(d)) }
func (d dirInfo) Size() int64        { return 0 }
func (d dirInfo) Mode() os.FileMode  { return os.ModeDir | 0o755 }
func (d dirInfo) ModTime() time.Time { return time.Time{} }
func (d dirInfo) IsDir() bool        { return true }
func (d dirInfo) Sys() any           { return nil }
