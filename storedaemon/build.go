package storedaemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/derivation"
)

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
