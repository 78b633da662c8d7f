// Package backend runs builds through the local store daemon's command-line
// tools. The agent only ever talks to a Backend, so the session loop and its
// tests do not care whether Nix or Guix sits underneath.
package backend

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Options are the per-build limits the coordinator sends.
type Options struct {
	Timeout       time.Duration // 0: no limit
	MaxSilentTime time.Duration // 0: no limit
	// GCRoot, if set, is a path for an indirect GC root to the outputs, so
	// they survive a garbage collection until they are uploaded.
	GCRoot string
	// NoSubstitute turns substitution off, so the derivation's outputs are
	// built here even if a configured cache has them.
	NoSubstitute bool
}

// Outcome classifies how a realisation ended.
type Outcome int

const (
	// Succeeded: every output is valid in the local store.
	Succeeded Outcome = iota
	// BuildFailed: the builder ran and failed; the derivation is at fault.
	BuildFailed
	// TimedOut: the build exceeded Options.Timeout.
	TimedOut
	// SilentTimedOut: the build printed nothing for Options.MaxSilentTime.
	SilentTimedOut
	// SetupFailed: the build could not run here (missing derivation or
	// inputs, daemon unreachable, …); another agent may succeed.
	SetupFailed
)

func (o Outcome) String() string {
	switch o {
	case Succeeded:
		return "succeeded"
	case BuildFailed:
		return "build-failed"
	case TimedOut:
		return "timeout"
	case SilentTimedOut:
		return "silent-timeout"
	case SetupFailed:
		return "setup-failed"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Result is what Realise found out.
type Result struct {
	Outcome  Outcome
	ExitCode int      // of the backend command; -1 if it did not exit normally
	Message  string   // the backend's last error line, for humans
	Missing  []string // for SetupFailed: store paths that are not available
}

// Backend is one store implementation's command-line interface.
type Backend interface {
	// Name is "nix" or "guix", as sent in hello.
	Name() string
	// StoreDir is the store directory, e.g. /nix/store.
	StoreDir() string
	// Version is the backend's version string, e.g. "nix-store (Nix) 2.8.0".
	Version(ctx context.Context) (string, error)
	// Missing lists the derivations other than drv that would have to be
	// built before drv; the agent refuses to build those behind the
	// coordinator's back and reports them instead.
	Missing(ctx context.Context, drv string) ([]string, error)
	// Realise builds drv, streaming the build log to log. The error is only
	// for a context cancellation; every backend failure is a Result.
	Realise(ctx context.Context, drv string, opts Options, log io.Writer) (Result, error)
	// References lists the store paths path refers to (full paths).
	References(ctx context.Context, path string) ([]string, error)
}
