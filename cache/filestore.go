package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
)

// FileStore is a Store in a directory (`file:DIR`): every key is a file
// under DIR, so nginx or file:// can serve the directory as it is. An
// upload is a temp file in one of nar/'s spool directories, synced with
// fsync (or one syncfs(2) for many), placed by rename and a sync of the
// directory it lands in.
type FileStore struct {
	dir string
	log *slog.Logger
	// spoolDirs are where Create makes its temp files, taken in turn.
	// Creating a file locks its directory: the parallel spools of one
	// `build` command all creating in nar/ spent more CPU waiting on that
	// lock than on compressing and signing (bench/dispatch profile).
	spoolDirs []string
	spoolNext atomic.Uint32
	// trace observes each durability step (see batch_test.go); nil
	// outside tests.
	trace func(op, path string)
}

// spoolDirCount is how many directories Create spreads its temp files
// over; more than the spooling goroutines of one batch (2 per CPU) rarely
// collide.
const spoolDirCount = 8

// fewFiles is the most files Sync fsyncs one by one; above it one syncfs
// is cheaper than a journal commit per file.
const fewFiles = 2

// NewFileStore prepares dir (and nar/, log/) as a file store.
func NewFileStore(dir string, log *slog.Logger) (*FileStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &FileStore{dir: dir, log: log}
	for _, d := range []string{dir, filepath.Join(dir, "nar"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("file store %s: %w", dir, err)
		}
	}
	for i := range spoolDirCount {
		s.spoolDirs = append(s.spoolDirs, filepath.Join(dir, "nar", fmt.Sprintf("%sspool-%d", tmpPrefix, i)))
	}
	return s, nil
}

// Dir is the store's directory.
func (s *FileStore) Dir() string { return s.dir }

func (s *FileStore) String() string { return "file:" + s.dir }

func (s *FileStore) step(op, p string) {
	if s.trace != nil {
		s.trace(op, p)
	}
}

// path maps a key onto the directory. Keys come from the cache itself and
// from the HTTP handler's strict patterns; this refuses anything that
// could leave the directory or reach a temp file anyway.
func (s *FileStore) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || path.Clean(key) != key || strings.Contains(key, `\`) {
		return "", fmt.Errorf("file store: bad key %q: %w", key, fs.ErrNotExist)
	}
	for part := range strings.SplitSeq(key, "/") {
		if part == ".." || strings.HasPrefix(part, tmpPrefix) {
			return "", fmt.Errorf("file store: bad key %q: %w", key, fs.ErrNotExist)
		}
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

func (s *FileStore) Create(ctx context.Context) (Upload, error) {
	dir := s.spoolDirs[s.spoolNext.Add(1)%uint32(len(s.spoolDirs))]
	return createSpooled(s, "file store", dir, tmpPrefix, true)
}

func (s *FileStore) Adopt(ctx context.Context, p string) (Upload, error) {
	return adoptSpooled(s, "file store", p)
}

// upload is u as this store's own, still to be placed.
func (s *FileStore) upload(u Upload) (*spoolFile, error) { return ownSpooled(s, "file store", u) }

func (s *FileStore) Sync(ctx context.Context, ups ...Upload) error {
	names := make([]string, 0, len(ups))
	for _, u := range ups {
		fu, err := s.upload(u)
		if err != nil {
			return err
		}
		if fu.f != nil {
			return fmt.Errorf("file store: sync %s: upload not closed", fu.name)
		}
		names = append(names, fu.name)
	}
	if len(names) > fewFiles {
		if err := syncFS(s.dir); err == nil {
			s.step("syncfs", "")
			return nil
		} else if !errors.Is(err, errNoSyncfs) {
			return err
		}
	}
	if len(names) == 2 {
		// A NAR and its narinfo (Publish): both syncs at once, one
		// journal commit on most filesystems instead of two in turn.
		other := make(chan error, 1)
		go func() { other <- fsyncFile(names[1]) }()
		err := errors.Join(fsyncFile(names[0]), <-other)
		if err != nil {
			return err
		}
		s.step("fsync", names[0])
		s.step("fsync", names[1])
		return nil
	}
	for _, n := range names {
		if err := fsyncFile(n); err != nil {
			return err
		}
		s.step("fsync", n)
	}
	return nil
}

func (s *FileStore) Place(ctx context.Context, ps ...Placement) error {
	var errs []error
	var dirs []string
	for _, p := range ps {
		dst, err := s.place(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.step(traceOp(p.Key), dst)
		if d := filepath.Dir(dst); !containsString(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			errs = append(errs, err)
			continue
		}
		s.step(traceDirOp(s.dir, d), "")
	}
	return errors.Join(errs...)
}

func (s *FileStore) place(p Placement) (string, error) {
	fu, err := s.upload(p.Upload)
	if err != nil {
		return "", err
	}
	dst, err := s.path(p.Key)
	if err != nil {
		fu.Discard()
		return "", err
	}
	if fu.f != nil {
		fu.Discard()
		return "", fmt.Errorf("file store: place %s: upload not closed", p.Key)
	}
	if p.Keep {
		if _, err := os.Stat(dst); err == nil {
			// Content-named: the existing file holds these bytes.
			fu.done = true
			return dst, os.Remove(fu.name)
		}
	}
	err = os.Rename(fu.name, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = copyAcross(fu.name, dst)
	}
	if err != nil {
		fu.Discard()
		return "", fmt.Errorf("move %s to %s: %w", fu.name, dst, err)
	}
	fu.done = true
	return dst, nil
}

// traceOp and traceDirOp name the steps batch_test.go checks.
func traceOp(key string) string {
	switch {
	case strings.HasPrefix(key, "nar/"):
		return "nar"
	case strings.HasSuffix(key, ".narinfo"):
		return "narinfo"
	case strings.HasPrefix(key, "log/"):
		return "log"
	}
	return "file"
}

func traceDirOp(root, d string) string {
	switch d {
	case root:
		return "sync-dir"
	case filepath.Join(root, "nar"):
		return "sync-nar-dir"
	}
	return "sync-" + filepath.Base(d) + "-dir"
}

func containsString(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

type fileObject struct {
	*os.File
	info ObjectInfo
}

func (o *fileObject) Info() ObjectInfo { return o.info }

func (s *FileStore) Open(ctx context.Context, key string) (Object, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	// Never through a symlink, and never blocking on a FIFO or device
	// someone placed under the cache: those are not objects.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("file store: %s is a symlink: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("file store: %s is a %s: %w", key, st.Mode().Type(), fs.ErrNotExist)
	}
	return &fileObject{File: f, info: ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime()}}, nil
}

func (s *FileStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("file store: %s is a %s: %w", key, st.Mode().Type(), fs.ErrNotExist)
	}
	return ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

func (s *FileStore) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

// List reads the directory of prefix's last slash in chunks, so a
// directory of millions of NARs is never held in memory at once.
func (s *FileStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	dirKey, namePrefix := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirKey, namePrefix = prefix[:i], prefix[i+1:]
	}
	dir := s.dir
	if dirKey != "" {
		var err error
		if dir, err = s.path(dirKey); err != nil {
			return err
		}
	}
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("file store: list %s: %w", prefix, err)
	}
	defer d.Close()
	for {
		ents, rerr := d.ReadDir(4096)
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, tmpPrefix) || !e.Type().IsRegular() || !strings.HasPrefix(name, namePrefix) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			st, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the directory was read
			}
			if err != nil {
				return fmt.Errorf("file store: list %s: %w", prefix, err)
			}
			key := name
			if dirKey != "" {
				key = dirKey + "/" + name
			}
			if err := fn(ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
				if errors.Is(err, ErrStopList) {
					return nil
				}
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || (rerr == nil && len(ents) == 0) {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("file store: list %s: %w", prefix, rerr)
		}
	}
}

// Clean removes temp files a crash left behind (never referenced by a
// narinfo) and empties spool's directories, making any that are missing.
func (s *FileStore) Clean(ctx context.Context) error {
	for _, sub := range []string{"", "nar", "log"} {
		ents, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				p := filepath.Join(s.dir, sub, e.Name())
				if e.IsDir() {
					s.emptyTempDir(ctx, p)
					continue
				}
				if err := os.Remove(p); err == nil {
					s.log.DebugContext(ctx, "removed stale temp file", "path", p)
				}
			}
		}
	}
	for _, d := range s.spoolDirs {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("file store %s: %w", s.dir, err)
		}
	}
	return nil
}

func (s *FileStore) emptyTempDir(ctx context.Context, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err == nil {
			s.log.DebugContext(ctx, "removed stale temp file", "path", p)
		}
	}
}

func fsyncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return nil
}

// copyAcross copies src into a temp file beside dst, syncs and renames it,
// then removes src: rename cannot cross filesystems.
func copyAcross(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), tmpPrefix+"nar-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := finishTemp(tmp, dst); err != nil {
		return err
	}
	ok = true
	return os.Remove(src)
}
