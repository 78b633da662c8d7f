package storedaemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/nixhash"
)

// Operation numbers (worker-protocol.hh of both daemons; 36, 39 and 46 are
// Nix's only).
const (
	opIsValidPath           = 1
	opAddTextToStore        = 8
	opBuildPaths            = 9
	opAddTempRoot           = 11
	opAddIndirectRoot       = 12
	opSetOptions            = 19
	opCollectGarbage        = 20
	opQueryPathInfo         = 26
	opImportPaths           = 27
	opQueryValidPaths       = 31
	opBuildDerivation       = 36
	opAddToStoreNar         = 39
	opBuildPathsWithResults = 46
)

// gcDeleteSpecific is CollectGarbage's action for deleting given paths.
const gcDeleteSpecific = 3

// IsValidPath reports whether path is valid in the store.
func (c *Conn) IsValidPath(ctx context.Context, path string) (bool, error) {
	var valid bool
	err := c.do(ctx, "IsValidPath "+path, opIsValidPath, func(w *writer) { w.string(path) }, nil, nil,
		func(r *reader) (err error) { valid, err = r.bool("validity"); return err })
	return valid, err
}

// QueryValidPaths returns those of paths that are valid, without
// substituting any.
func (c *Conn) QueryValidPaths(ctx context.Context, paths []string) ([]string, error) {
	var valid []string
	err := c.do(ctx, "QueryValidPaths", opQueryValidPaths, func(w *writer) {
		w.strings(paths)
		if c.dialect == Nix && c.minor() >= 27 {
			w.bool(false) // do not substitute
		}
	}, nil, nil, func(r *reader) (err error) { valid, err = r.strings("valid paths"); return err })
	return valid, err
}

// PathInfo is what the daemon knows about a valid path.
type PathInfo struct {
	Path             string
	Deriver          string // "" if unknown
	NarHash          nixhash.Hash
	References       []string // full store paths
	RegistrationTime time.Time
	NarSize          uint64
	// Nix only:
	Ultimate bool     // built locally, trusted without signatures
	Sigs     []string // "keyname:base64"
	CA       string   // content address, "" for input-addressed paths
}

// QueryPathInfo returns the path's information, or nil if it is not valid.
// On guix-daemon, which answers an invalid path with an error, validity is
// asked first.
func (c *Conn) QueryPathInfo(ctx context.Context, path string) (*PathInfo, error) {
	if c.dialect == Guix {
		ok, err := c.IsValidPath(ctx, path)
		if err != nil || !ok {
			return nil, err
		}
	}
	var info *PathInfo
	err := c.do(ctx, "QueryPathInfo "+path, opQueryPathInfo, func(w *writer) { w.string(path) }, nil, nil,
		func(r *reader) error {
			if c.dialect == Nix {
				valid, err := r.bool("validity")
				if err != nil || !valid {
					return err
				}
			}
			i, err := c.readPathInfo(r, path)
			info = i
			return err
		})
	return info, err
}

func (c *Conn) readPathInfo(r *reader, path string) (*PathInfo, error) {
	i := &PathInfo{Path: path}
	var err error
	if i.Deriver, err = r.string("deriver"); err != nil {
		return nil, err
	}
	h, err := r.string("NAR hash")
	if err != nil {
		return nil, err
	}
	d, err := hex.DecodeString(h)
	if err != nil || len(d) != 32 {
		return nil, fmt.Errorf("NAR hash %q is not a hex SHA-256", text.Truncate(h, 64))
	}
	i.NarHash = nixhash.Hash{Algo: nixhash.SHA256, Digest: d}
	if i.References, err = r.strings("references"); err != nil {
		return nil, err
	}
	t, err := r.int("registration time")
	if err != nil {
		return nil, err
	}
	i.RegistrationTime = time.Unix(int64(min(t, math.MaxInt64)), 0)
	if i.NarSize, err = r.int("NAR size"); err != nil {
		return nil, err
	}
	if c.dialect == Guix {
		return i, nil
	}
	if i.Ultimate, err = r.bool("ultimate"); err != nil {
		return nil, err
	}
	if i.Sigs, err = r.strings("signatures"); err != nil {
		return nil, err
	}
	if i.CA, err = r.string("content address"); err != nil {
		return nil, err
	}
	return i, nil
}

// AddTempRoot keeps path from being garbage-collected while this
// connection is open.
func (c *Conn) AddTempRoot(ctx context.Context, path string) error {
	return c.do(ctx, "AddTempRoot "+path, opAddTempRoot, func(w *writer) { w.string(path) }, nil, nil, readAck)
}

// AddIndirectRoot registers link, a symlink to a store path outside the
// store, as a garbage collector root for as long as link exists.
func (c *Conn) AddIndirectRoot(ctx context.Context, link string) error {
	return c.do(ctx, "AddIndirectRoot "+link, opAddIndirectRoot, func(w *writer) { w.string(link) }, nil, nil, readAck)
}

func readAck(r *reader) error {
	v, err := r.int("acknowledgement")
	if err == nil && v != 1 {
		err = fmt.Errorf("acknowledgement is %d, want 1", v)
	}
	return err
}

// AddTextToStore adds a text file (e.g. a .drv) with the given references
// and returns its store path.
func (c *Conn) AddTextToStore(ctx context.Context, name string, text []byte, refs []string) (string, error) {
	var path string
	err := c.do(ctx, "AddTextToStore "+name, opAddTextToStore, func(w *writer) {
		w.string(name)
		w.bytes(text)
		w.strings(refs)
	}, nil, nil, func(r *reader) (err error) { path, err = r.string("store path"); return err })
	return path, err
}

// AddToStoreNar imports one path from its NAR (Nix only). info must
// carry the path, NAR hash and size, references, deriver and signatures;
// the daemon checks the NAR against hash and size, and the signatures
// against its trusted keys unless dontCheckSigs is set (which only a
// trusted client may do).
func (c *Conn) AddToStoreNar(ctx context.Context, info *PathInfo, nar io.Reader, dontCheckSigs bool) error {
	op := "AddToStoreNar " + info.Path
	if c.dialect != Nix {
		return fmt.Errorf("%s: %w (guix-daemon imports with ImportPaths)", op, ErrUnsupported)
	}
	if info.NarHash.Algo != nixhash.SHA256 || len(info.NarHash.Digest) != 32 {
		return fmt.Errorf("%s: NAR hash must be SHA-256", op)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return &ConnError{Op: op, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return &ConnError{Op: op, Err: err}
	}
	stop := context.AfterFunc(ctx, func() { c.fail(&ConnError{Op: op, Err: ctx.Err()}) })
	defer stop()

	w := &c.w
	w.int(opAddToStoreNar)
	w.string(info.Path)
	w.string(info.Deriver)
	w.string(hex.EncodeToString(info.NarHash.Digest))
	w.strings(info.References)
	w.int(uint64(max(info.RegistrationTime.Unix(), 0)))
	w.int(info.NarSize)
	w.bool(info.Ultimate)
	w.strings(info.Sigs)
	w.string(info.CA)
	w.bool(false) // repair
	w.bool(dontCheckSigs)
	if err := w.flush(); err != nil {
		err = &ConnError{Op: op, Err: fmt.Errorf("send request: %w", err)}
		c.fail(err)
		return err
	}
	// The NAR goes as frames while the daemon may already talk back, so
	// it is sent from another goroutine.
	sent := make(chan error, 1)
	go func() {
		err := c.sendFramed(nar)
		if err != nil {
			// The daemon waits for the rest of the NAR: only closing the
			// connection ends the operation.
			c.fail(&ConnError{Op: op, Err: err})
		}
		sent <- err
	}()
	err := c.processStderr(op, nil, nil)
	serr := <-sent
	if err == nil && serr != nil {
		err = &ConnError{Op: op, Err: serr}
	}
	if err == nil {
		return nil
	}
	var de *Error
	if ctx.Err() == nil && errors.As(err, &de) {
		if serr != nil {
			// The daemon refused before reading the whole NAR: the rest
			// of our frames are still in its input.
			c.fail(&ConnError{Op: op, Err: serr})
		}
		return err
	}
	if ctx.Err() != nil {
		err = &ConnError{Op: op, Err: ctx.Err()}
	}
	c.fail(err)
	return err
}

// sendFramed writes r as Nix's framed stream: (length, bytes)… then 0.
func (c *Conn) sendFramed(r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.w.int(uint64(n))
			if c.w.err == nil {
				_, c.w.err = c.w.w.Write(buf[:n])
			}
			if c.w.err != nil {
				return fmt.Errorf("send NAR: %w", c.w.err)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read NAR: %w", err)
		}
	}
	c.w.int(0)
	if err := c.w.flush(); err != nil {
		return fmt.Errorf("send NAR: %w", err)
	}
	return nil
}

// ImportPaths imports an export stream (docs/formats.md §5, see
// ExportWriter) and returns the imported paths. guix-daemon requires
// every record to be signed by a key in its ACL (/etc/guix/acl); Nix
// daemons accept it from trusted clients.
func (c *Conn) ImportPaths(ctx context.Context, stream io.Reader) ([]string, error) {
	var paths []string
	err := c.do(ctx, "ImportPaths", opImportPaths, nil, nil, stream,
		func(r *reader) (err error) { paths, err = r.strings("imported paths"); return err })
	return paths, err
}

// DeletePath deletes path from the store if nothing keeps it alive. The
// daemon refuses (an *Error) when it is alive, e.g. referenced or rooted.
func (c *Conn) DeletePath(ctx context.Context, path string) error {
	var deleted []string
	err := c.do(ctx, "DeletePath "+path, opCollectGarbage, func(w *writer) {
		w.int(gcDeleteSpecific)
		w.strings([]string{path})
		w.bool(false)         // ignoreLiveness
		w.int(math.MaxUint64) // maxFreed: no limit
		w.int(0)              // obsolete
		w.int(0)              // obsolete
		w.int(0)              // obsolete
	}, nil, nil, func(r *reader) error {
		var err error
		if deleted, err = r.strings("deleted paths"); err != nil {
			return err
		}
		if _, err := r.int("bytes freed"); err != nil {
			return err
		}
		_, err = r.int("obsolete")
		return err
	})
	if err != nil {
		return err
	}
	for _, p := range deleted {
		if p == path {
			return nil
		}
	}
	return &Error{Op: "DeletePath " + path, Message: "the daemon did not delete the path"}
}

// Options are a connection's build settings (SetOptions).
type Options struct {
	KeepFailed     bool
	KeepGoing      bool
	UseSubstitutes bool // let the daemon substitute missing paths
	MaxBuildJobs   uint64
	BuildCores     uint64        // 0: all
	Timeout        time.Duration // 0: no limit
	MaxSilentTime  time.Duration // 0: no limit
	// Settings are further daemon settings as name/value pairs (e.g.
	// "substituters" on Nix, "substitute-urls" on Guix). Untrusted
	// clients may only set some of them.
	Settings [][2]string
}

// SetOptions sets the build settings for the rest of the connection.
// Timeouts are whole seconds, rounded up.
func (c *Conn) SetOptions(ctx context.Context, o Options) error {
	jobs := o.MaxBuildJobs
	if jobs == 0 {
		jobs = 1
	}
	settings := append([][2]string(nil), o.Settings...)
	return c.do(ctx, "SetOptions", opSetOptions, func(w *writer) {
		w.bool(o.KeepFailed)
		w.bool(o.KeepGoing)
		w.bool(false) // tryFallback
		w.int(0)      // verbosity: errors only; build output comes anyway
		if c.dialect == Guix {
			w.bool(false) // useBuildHook
			w.int(0)      // buildVerbosity: show build output from level 0
			w.int(0)      // logType: pretty
			w.bool(false) // printBuildTrace
			w.bool(o.UseSubstitutes)
			settings = append(settings,
				[2]string{"build-max-jobs", fmt.Sprint(jobs)},
				[2]string{"build-cores", fmt.Sprint(o.BuildCores)},
				[2]string{"build-timeout", seconds(o.Timeout)},
				[2]string{"build-max-silent-time", seconds(o.MaxSilentTime)})
		} else {
			w.int(jobs)
			w.int(uint64(secondsInt(o.MaxSilentTime)))
			w.bool(true) // obsolete useBuildHook
			w.int(0)     // verboseBuild: lvlError means yes
			w.int(0)     // obsolete logType
			w.int(0)     // obsolete printBuildTrace
			w.int(o.BuildCores)
			w.bool(o.UseSubstitutes)
			settings = append(settings, [2]string{"timeout", seconds(o.Timeout)})
		}
		w.int(uint64(len(settings)))
		for _, kv := range settings {
			w.string(kv[0])
			w.string(kv[1])
		}
	}, nil, nil, nil)
}

func secondsInt(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func seconds(d time.Duration) string { return fmt.Sprint(secondsInt(d)) }

// BuildMode is how to build.
type BuildMode uint64

const (
	BuildNormal BuildMode = 0
	BuildRepair BuildMode = 1
	BuildCheck  BuildMode = 2
)

// BuildStatus is the daemon's verdict on one build (Nix's
// BuildResult::Status; guix-daemon's exit statuses are mapped onto it).
type BuildStatus uint64

const (
	Built            BuildStatus = 0
	Substituted      BuildStatus = 1
	AlreadyValid     BuildStatus = 2
	PermanentFailure BuildStatus = 3 // the builder failed
	InputRejected    BuildStatus = 4
	OutputRejected   BuildStatus = 5 // e.g. a fixed-output hash mismatch
	TransientFailure BuildStatus = 6
	CachedFailure    BuildStatus = 7
	TimedOut         BuildStatus = 8 // timeout or max-silent-time
	MiscFailure      BuildStatus = 9 // the build could not be tried
	DependencyFailed BuildStatus = 10
	LogLimitExceeded BuildStatus = 11
	NotDeterministic BuildStatus = 12
)

var statusNames = [...]string{"Built", "Substituted", "AlreadyValid", "PermanentFailure", "InputRejected",
	"OutputRejected", "TransientFailure", "CachedFailure", "TimedOut", "MiscFailure", "DependencyFailed",
	"LogLimitExceeded", "NotDeterministic"}

func (s BuildStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("BuildStatus(%d)", uint64(s))
}

// Success reports whether the outputs are valid after the build.
func (s BuildStatus) Success() bool { return s == Built || s == Substituted || s == AlreadyValid }

// BuildResult is how one build ended.
type BuildResult struct {
	Status   BuildStatus
	ErrorMsg string // for humans only
	// Start and Stop are the daemon's clock (whole seconds); zero when
	// the daemon does not report them (Guix).
	Start, Stop time.Time
	TimesBuilt  uint64
}

// Build builds drvPath's outputs (all of them when outputs is empty) and
// streams the build output to log (may be nil). A failed build is a
// BuildResult, not an error; errors are for a request the daemon refused
// outright (*Error) or a broken connection (*ConnError).
//
// Nix ≥ 1.34 uses BuildPathsWithResults; guix-daemon and older Nix use
// BuildPaths and the error status (100 + flags: 1 timeout, 2 hash
// mismatch, 8 not deterministic).
func (c *Conn) Build(ctx context.Context, drvPath string, outputs []string, mode BuildMode, log io.Writer) (BuildResult, error) {
	op := "Build " + drvPath
	target := drvPath
	if c.dialect == Nix && c.minor() >= 30 {
		if len(outputs) == 0 {
			target += "!*"
		} else {
			target += "!" + strings.Join(outputs, ",")
		}
	}
	if c.dialect == Nix && c.minor() >= 34 {
		var res BuildResult
		err := c.do(ctx, op, opBuildPathsWithResults, func(w *writer) {
			w.strings([]string{target})
			w.int(uint64(mode))
		}, log, nil, func(r *reader) error {
			n, err := r.int("result count")
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%d build results for one path", n)
			}
			if _, err := r.string("built path"); err != nil {
				return err
			}
			res, err = c.readBuildResult(r)
			return err
		})
		return res, err
	}
	err := c.do(ctx, op, opBuildPaths, func(w *writer) {
		w.strings([]string{target})
		w.int(uint64(mode))
	}, log, nil, readAck)
	var de *Error
	if errors.As(err, &de) {
		return BuildResult{Status: statusFromExit(de.Status), ErrorMsg: de.Message}, nil
	}
	if err != nil {
		return BuildResult{}, err
	}
	return BuildResult{Status: Built}, nil
}

// Substitute asks the daemon to make paths (outputs, not derivations)
// valid; with substitution allowed in SetOptions it fetches them from its
// substituters, and it never builds anything for that. Paths it could not
// substitute make it fail (an *Error); which ones, validity tells.
func (c *Conn) Substitute(ctx context.Context, paths []string, log io.Writer) error {
	for _, p := range paths {
		if strings.HasSuffix(p, ".drv") || strings.Contains(p, "!") {
			return fmt.Errorf("substitute %s: only output paths can be substituted", p)
		}
	}
	return c.do(ctx, "Substitute", opBuildPaths, func(w *writer) {
		w.strings(paths)
		w.int(uint64(BuildNormal))
	}, log, nil, readAck)
}

// statusFromExit maps a Nix 1.x / guix-daemon exit status to a
// BuildStatus: 0x60 | mask, mask 4 build failure, 1 timeout, 2 output
// hash mismatch, 8 not deterministic; anything else (1) means the build
// could not be tried.
func statusFromExit(s uint64) BuildStatus {
	if s < 0x60 || s > 0x6f {
		return MiscFailure
	}
	switch {
	case s&0x01 != 0:
		return TimedOut
	case s&0x02 != 0:
		return OutputRejected
	case s&0x08 != 0:
		return NotDeterministic
	}
	return PermanentFailure
}

// BuildDerivation builds d, whose store path is drvPath, from the
// derivation itself (Nix only, trusted clients only for input-addressed
// derivations). As in a BasicDerivation, d.InputSrcs must list every
// input path (sources and the used outputs of input derivations; its
// InputDrvs are not sent). The inputs must be valid: the daemon builds
// nothing else.
func (c *Conn) BuildDerivation(ctx context.Context, drvPath string, d *derivation.Derivation, mode BuildMode, log io.Writer) (BuildResult, error) {
	op := "BuildDerivation " + drvPath
	if c.dialect != Nix {
		return BuildResult{}, fmt.Errorf("%s: %w", op, ErrUnsupported)
	}
	var res BuildResult
	err := c.do(ctx, op, opBuildDerivation, func(w *writer) {
		w.string(drvPath)
		w.int(uint64(len(d.Outputs)))
		for _, o := range d.Outputs {
			w.string(o.Name)
			w.string(o.Path)
			w.string(o.HashAlgo)
			w.string(o.Hash)
		}
		w.strings(d.InputSrcs)
		w.string(d.System)
		w.string(d.Builder)
		w.strings(d.Args)
		w.int(uint64(len(d.Env)))
		for _, e := range d.Env {
			w.string(e.Key)
			w.string(e.Value)
		}
		w.int(uint64(mode))
	}, log, nil, func(r *reader) (err error) { res, err = c.readBuildResult(r); return err })
	return res, err
}

func (c *Conn) readBuildResult(r *reader) (BuildResult, error) {
	var res BuildResult
	s, err := r.int("build status")
	if err != nil {
		return res, err
	}
	if s > uint64(NotDeterministic) {
		return res, fmt.Errorf("build status %d is unknown", s)
	}
	res.Status = BuildStatus(s)
	if res.ErrorMsg, err = r.string("build error message"); err != nil {
		return res, err
	}
	res.ErrorMsg = plain(res.ErrorMsg)
	if c.minor() >= 29 {
		if res.TimesBuilt, err = r.int("times built"); err != nil {
			return res, err
		}
		if _, err = r.bool("non-deterministic"); err != nil {
			return res, err
		}
		start, err := r.int("start time")
		if err != nil {
			return res, err
		}
		stop, err := r.int("stop time")
		if err != nil {
			return res, err
		}
		res.Start = time.Unix(int64(min(start, math.MaxInt64)), 0)
		res.Stop = time.Unix(int64(min(stop, math.MaxInt64)), 0)
	}
	if c.minor() >= 28 {
		n, err := r.int("built output count")
		if err != nil {
			return res, err
		}
		if n > MaxList {
			return res, fmt.Errorf("%d built outputs exceed the limit of %d", n, MaxList)
		}
		for i := uint64(0); i < n; i++ {
			if _, err := r.string("output id"); err != nil {
				return res, err
			}
			if _, err := r.string("realisation"); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}
