// Package backend is the agent's store: it drives the local Nix or Guix
// daemon over its worker protocol (package storedaemon), one long-lived
// connection per build slot. The agent only ever talks to a Backend, so
// the session loop and its tests do not care which daemon sits
// underneath, and no nix, nix-store or guix process runs for a build.
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
	// GCRoot, if set, is a path for an indirect GC root to the outputs
	// (GCRoot for "out", GCRoot-NAME for the others), so they survive a
	// garbage collection until they are uploaded.
	GCRoot string
}

// Output is one output of the derivation being built.
type Output struct{ Name, Path string }

// Sources are where a build's missing derivations and inputs come from:
// the coordinator's binary cache (through the agent's SSH tunnel), then
// upstream caches the daemon substitutes from.
type Sources struct {
	// CacheURL is the coordinator's cache ("" if none announced).
	CacheURL string
	// CacheKey is its public key from welcome: Nix "name:base64" or a
	// Guix (public-key …) s-expression. Every narinfo fetched from
	// CacheURL must carry a valid signature by it.
	CacheKey string
	// Upstream are caches the daemon may substitute from for what the
	// coordinator's cache lacks; their keys must be trusted by the daemon.
	Upstream []string
}

// Request is one build.
type Request struct {
	Derivation string
	Outputs    []Output // empty: all outputs, read from the .drv
	Sources    Sources
	Options    Options
	// Started is called once the inputs are in place, right before the
	// daemon starts building.
	Started func()
}

// Outcome classifies how a build ended.
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
	// SetupFailed: the build could not run here (inputs that cannot be
	// fetched, outputs that cannot be removed, a daemon that refused or
	// died, …); another agent, or a later try, may succeed.
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

// Result is how a build ended.
type Result struct {
	Outcome Outcome
	// ExitCode is the build's status as nix-store's exit code would
	// give it (0x60 | 4 build failed, | 1 timed out, | 2 output hash
	// mismatch, | 8 not deterministic; 1 could not build), -1 when the
	// build did not get to the daemon's verdict.
	ExitCode int
	Message  string   // for humans only
	Missing  []string // for SetupFailed: store paths that are not available
}

// Backend is the local store.
type Backend interface {
	// Name is "nix" or "guix", as sent in hello.
	Name() string
	// StoreDir is the store directory, e.g. /nix/store.
	StoreDir() string
	// Version describes the daemon, e.g. "nix-daemon 2.8.0 (protocol 1.34)".
	Version(ctx context.Context) (string, error)
	// Build makes the derivation and its inputs valid from req.Sources
	// (never building an input), removes outputs already present where
	// the store allows it, builds, and streams the build log to log. The
	// error is only for a context cancellation; every other failure is a
	// Result.
	Build(ctx context.Context, req Request, log io.Writer) (Result, error)
	// References lists the store paths path refers to (full paths).
	References(ctx context.Context, path string) ([]string, error)
	// Close ends the backend's daemon connections.
	Close() error
}
