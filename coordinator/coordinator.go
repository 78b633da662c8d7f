// Package coordinator is the service that owns the build invariants:
// submission, the ready queues, matching builds to connected agents,
// results and their verification, cancellation. It knows nothing of SSH;
// the sshd package adapts protocol messages and commands onto it.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/cache/retention"
	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/scheduler"
)

var (
	// ErrNotYourBuild: an agent reported on a build it does not hold.
	ErrNotYourBuild = errors.New("build is not allocated to this agent")
	// ErrVerification: an uploaded output did not match its report.
	ErrVerification = errors.New("upload verification failed")
	// ErrSessionClosed: the agent session has ended.
	ErrSessionClosed = errors.New("agent session closed")
	// ErrBadSubmission: a derivation could not be read or is not acceptable.
	ErrBadSubmission = errors.New("bad submission")
	// ErrUnknownAgent: no active agent with that id.
	ErrUnknownAgent = errors.New("unknown or inactive agent")
	// ErrUnavailable: the store could not record an agent's result now
	// (e.g. the database is unreachable beyond the store's own retries).
	// The result is neither acknowledged nor refused: the session ends and
	// the agent resends it after reconnecting.
	ErrUnavailable = errors.New("state store unavailable; resend later")
)

// unavailable marks a store error that is not a verdict on the request
// (not found, conflict, exists) as ErrUnavailable.
func unavailable(err error) error {
	if err == nil || errors.Is(err, db.ErrNotFound) || errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrExists) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Defaults for Config fields left zero.
const (
	DefaultDisconnectGrace  = 30 * time.Second
	DefaultHeartbeat        = 10 * time.Second
	DefaultMaxAttempts      = 3
	DefaultMaxSetupFailures = 3
	DefaultMaxLogBytes      = 64 << 20
)

// Config wires a Coordinator.
type Config struct {
	// StateDir holds uploads/ and cache/ (and the database, opened by the caller).
	StateDir string
	Store    db.Store
	Clock    clock.Clock
	Logger   *slog.Logger
	// StoreDirs are the directories submitted .drv files may live in.
	// Default: /nix/store and /gnu/store.
	StoreDirs []string
	// DisconnectGrace is how long builds stay with an absent agent before
	// they go back to the queue.
	DisconnectGrace time.Duration
	// Heartbeat is the interval agents are told to use; three missed
	// intervals end the session.
	Heartbeat time.Duration
	// MaxAttempts bounds infrastructure failures (bad uploads) per build.
	MaxAttempts int
	// MaxSetupFailures bounds setup failures per build. A setup failure
	// after which the build waits for an input build here does not count
	// (see SetupFailure).
	MaxSetupFailures int
	// SubmitMissingInputs makes a setup failure submit builds for the
	// missing input derivations the agent reported (those without a live
	// or succeeded build here), tagged needed-by=<build>, before the build
	// is requeued, so that it waits for them instead of failing again.
	SubmitMissingInputs bool
	// MaxLogBytes bounds a stored build log.
	MaxLogBytes int64
	// Cache receives every verified output (signed narinfo + NAR) and, on
	// submission, the derivation closure. Nil only in tests that do not
	// look at the cache: verified files are then just moved under
	// StateDir/cache/nar.
	Cache *cache.Cache
	// StreamUploads streams agents' output uploads through verification
	// straight into Cache's store instead of writing them under
	// StateDir/uploads first (ingest.go). Needs Cache; a check side's
	// uploads still go to disk.
	StreamUploads bool
	// DirectUploads, when set (an s3:// Cache only), gives agents
	// presigned URLs to PUT their outputs straight into the cache's
	// bucket (direct.go); nil: every upload goes over SFTP.
	DirectUploads *cache.DirectUploads
	// CacheAddress is the reserved host:port agents reach the cache at
	// through their SSH connection; sent in welcome when Cache is set.
	CacheAddress string
	// Strategy decides whether inputs without a build here block their
	// dependents (scheduler.DerivationOrdered, the zero value) or are
	// assumed substitutable (scheduler.Permissive).
	Strategy scheduler.Strategy
	// BuildTimeout and MaxSilentTime are the defaults sent with a build
	// that has none of its own; zero means no limit.
	BuildTimeout  time.Duration
	MaxSilentTime time.Duration
	// LogCache receives the log of every build that ended (succeeded or
	// failed), for `nix log` against the cache. Default: Cache.
	LogCache LogCache

	// MinFreeSpace is the reserve of free bytes in StateDir: under it
	// the coordinator allocates nothing and refuses upload writes (see
	// space.go). Zero: only a write failing with ENOSPC pauses it.
	MinFreeSpace uint64
	// SpaceCheckInterval is how often free space is read
	// (DefaultSpaceCheckInterval); FreeSpace reads it (StatfsFree).
	SpaceCheckInterval time.Duration
	FreeSpace          FreeSpaceFunc

	// CachePolicy is what cache collections keep (CollectCache).
	CachePolicy retention.Policy
	// AccessFlushInterval is how often narinfo fetches are written to the
	// store (DefaultAccessFlush).
	AccessFlushInterval time.Duration

	// restorePage is the queue rebuild's page size (0: defaultRestorePage);
	// tests make it small to cross pages with a few builds.
	restorePage int
}

// Coordinator is safe for concurrent use.
type Coordinator struct {
	cfg   Config
	store db.Store
	clk   clock.Clock
	log   *slog.Logger

	mu       sync.Mutex
	sched    *scheduler.Scheduler
	sessions map[string]*Session // by agent id
	// departed is the last session of each agent that disconnected
	// since the start and has not come back: what it builds, for
	// explaining why no agent takes a build (noagent.go).
	departed  map[string]*Session
	waiters   map[string][]chan struct{}
	verifying map[string]bool
	// ing holds the streamed uploads (ingest.go); its own lock.
	ing ingests
	// avoid remembers, per build, agents where setup failed.
	avoid map[string]map[string]bool
	space spaceState
	// activity is the overview's recent history (activity.go).
	activity activity
	// live is the attempt and phase of every build held by an agent;
	// phases holds the phase marks not yet committed (phases.go).
	live   map[string]*livePhase
	phases phaseLog
	closed bool
	// life is the coordinator's lifetime: background work runs under it,
	// and Close cancels it (stop) and then waits for that work (wg).
	// done is life.Done().
	life context.Context
	stop context.CancelFunc
	done <-chan struct{}
	wg   sync.WaitGroup
	// logMu orders log chunk writes against compressing finished logs.
	logMu sync.Mutex
	// revokers are told of removed keys and deactivated agents.
	revokeMu sync.Mutex
	revokers []func(Revocation)

	// metrics are observed as things happen (metrics.go); known is every
	// registered agent, for the gauges of agents not connected (c.mu).
	metrics *metrics
	known   map[string]agentMeta
	// checks are the pending reproducibility checks (checks.go).
	checks checkState
	// direct tracks the direct upload URLs handed out (direct.go).
	direct directState
}

// New loads the ready queue from the store and returns a running coordinator.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if cfg.Store == nil {
		return nil, errors.New("coordinator: no store")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("coordinator: no state directory")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.StoreDirs) == 0 {
		cfg.StoreDirs = []string{"/nix/store", "/gnu/store"}
	}
	if cfg.DisconnectGrace <= 0 {
		cfg.DisconnectGrace = DefaultDisconnectGrace
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxSetupFailures <= 0 {
		cfg.MaxSetupFailures = DefaultMaxSetupFailures
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = DefaultMaxLogBytes
	}
	if cfg.SpaceCheckInterval <= 0 {
		cfg.SpaceCheckInterval = DefaultSpaceCheckInterval
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = StatfsFree
	}
	if cfg.AccessFlushInterval <= 0 {
		cfg.AccessFlushInterval = DefaultAccessFlush
	}
	if cfg.restorePage <= 0 {
		cfg.restorePage = defaultRestorePage
	}
	if cfg.LogCache == nil && cfg.Cache != nil {
		cfg.LogCache = cfg.Cache
	}
	if cfg.DirectUploads != nil && cfg.Cache == nil {
		return nil, errors.New("coordinator: direct uploads need a cache in an object store")
	}
	dirs := []string{"uploads", "log", "checks"}
	if cfg.Cache == nil {
		// Without a Cache, verified outputs are moved to cache/nar here;
		// a Cache keeps its objects in its own store (a bucket, maybe).
		dirs = append(dirs, "cache/nar")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("coordinator: create %s: %w", d, err)
		}
	}
	c := &Coordinator{
		cfg:       cfg,
		store:     cfg.Store,
		clk:       cfg.Clock,
		log:       cfg.Logger,
		sched:     scheduler.New(cfg.Strategy, cfg.Clock),
		sessions:  map[string]*Session{},
		departed:  map[string]*Session{},
		waiters:   map[string][]chan struct{}{},
		verifying: map[string]bool{},
		ing:       ingests{m: map[ingestKey]map[string]*Ingest{}, kick: make(chan struct{}, 1)},
		avoid:     map[string]map[string]bool{},
		space:     spaceState{refused: map[string]string{}},
		live:      map[string]*livePhase{},
		phases:    phaseLog{wake: make(chan struct{}, 1)},
		metrics:   newMetrics(),
		known:     map[string]agentMeta{},
		checks:    newCheckState(),
		direct:    newDirectState(),
	}
	// Not ctx, which may be New's alone: the lifetime ends with Close.
	c.life, c.stop = context.WithCancel(context.Background())
	c.done = c.life.Done()
	if err := c.loadAgents(ctx); err != nil {
		c.stop()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	c.checkSpace(ctx)
	held, err := c.restore(ctx)
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	if err := c.restoreChecks(ctx); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	// The rebuild's transient heap (rows, parsed .drv files, AddBatch's
	// indexes) is several times what the queue keeps; without this the
	// runtime keeps those pages and RSS stays near the rebuild's peak.
	debug.FreeOSMemory()
	// Builds held by agents when the coordinator stopped stay with them for
	// one grace period, so reconnecting agents can continue them.
	for agentID := range held {
		c.reconcileAfterGrace(agentID)
	}
	if c.spawn() {
		go c.wakeDeferred()
	}
	if c.spawn() {
		go c.watchSpace()
	}
	if c.spawn() {
		go c.sampleActivity()
	}
	if c.spawn() {
		go c.writePhases()
	}
	if cfg.Cache != nil && c.spawn() {
		go c.watchAccesses()
	}
	if c.spawn() {
		go c.settleChecks()
	}
	if cfg.StreamUploads && cfg.Cache != nil && c.spawn() {
		go c.dropper()
	}
	if cfg.DirectUploads != nil && c.spawn() {
		go c.dropDirect()
	}
	c.sweepLogs(ctx)
	st := c.sched.Stats()
	c.log.Info("coordinator ready", "strategy", cfg.Strategy.String(), "ready", st.Ready, "waiting", st.Waiting,
		"deferred", st.Deferred, "allocated", st.Allocated, "agents_holding_builds", len(held))
	return c, nil
}

// wakeDeferred releases deferred builds when they fall due. It polls once
// a second (Allocate also releases due builds itself, so a build is never
// held back more than that once an agent asks).
func (c *Coordinator) wakeDeferred() {
	defer c.wg.Done()
	for {
		select {
		case <-c.clk.After(time.Second):
		case <-c.done:
			return
		}
		c.mu.Lock()
		if next, ok := c.sched.NextWakeup(); ok && !next.After(c.clk.Now()) {
			if len(c.sched.Wake()) > 0 {
				c.dispatchLocked(c.life)
			}
		}
		c.mu.Unlock()
	}
}

// Close ends every agent session and stops background work: it cancels
// the coordinator's lifetime context, which every background goroutine
// and its store writes run under, and waits for them to return. Work cut
// short is left as a crash would leave it, which the next start repairs
// (the queue is rebuilt from the store, logs are swept). Builds held by
// agents stay allocated in the store; the next start gives them a grace
// period.
func (c *Coordinator) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.stop()
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, s := range sessions {
		s.closeOutbox()
	}
	c.wg.Wait()
	c.finalPhases()
}

func (c *Coordinator) uploadDir(agentID, buildID string) string {
	return filepath.Join(c.cfg.StateDir, "uploads", agentID, buildID)
}

// ScratchDir is a directory on the uploads' filesystem for short-lived
// files (the probe command), so they land where uploads do.
func (c *Coordinator) ScratchDir() string { return filepath.Join(c.cfg.StateDir, "uploads") }

// UploadDir is where an agent's files for a build live on disk.
func (c *Coordinator) UploadDir(agentID, buildID string) string { return c.uploadDir(agentID, buildID) }

// Holds reports whether the build is currently allocated to the agent (in
// the allocated or started state), which is what grants upload access.
func (c *Coordinator) Holds(ctx context.Context, agentID, buildID string) bool {
	b, err := c.store.Build(ctx, buildID)
	if err != nil {
		return false
	}
	return b.AgentID == agentID && (b.State == db.StateAllocated || b.State == db.StateStarted)
}

// HeldBuilds lists the builds currently allocated to the agent.
func (c *Coordinator) HeldBuilds(ctx context.Context, agentID string) ([]string, error) {
	bs, err := c.store.BuildsOnAgent(ctx, agentID)
	if err != nil {
		return nil, fmt.Errorf("builds on agent %s: %w", agentID, err)
	}
	ids := make([]string, 0, len(bs))
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// Status is a snapshot for `status`.
type Status struct {
	Queued    map[string]int // ready builds by system
	Blocked   int            // waiting for input derivations
	Deferred  int
	Allocated int
	// Stuck: queued builds that wait for an input nothing here will
	// build (see Blockage); they never run unless an operator acts.
	Stuck int
	// Unmatched: ready builds that no connected active agent can take.
	Unmatched int
	Connected []AgentStatus
	Space     SpaceStatus
}

// AgentStatus describes one connected agent.
type AgentStatus struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Systems     []string  `json:"systems"`
	Features    []string  `json:"features"`
	MaxParallel int       `json:"max_parallel_builds"`
	Running     []string  `json:"running"`
	Active      bool      `json:"active"`
	ConnectedAt time.Time `json:"connected_at"`
	LastSeen    time.Time `json:"last_seen_at"` // the name agents --json uses
}

// Status returns queue lengths and connected agents.
func (c *Coordinator) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss := c.sched.Stats()
	st := Status{Queued: ss.ReadyBySystem, Blocked: ss.Waiting, Deferred: ss.Deferred, Allocated: ss.Allocated, Space: c.spaceStatusLocked()}
	st.Stuck, st.Unmatched = c.blockedLocked()
	for _, s := range c.sessions {
		st.Connected = append(st.Connected, s.statusLocked())
	}
	sort.Slice(st.Connected, func(i, j int) bool { return st.Connected[i].ID < st.Connected[j].ID })
	return st
}

// Connected reports whether the agent has a live session.
func (c *Coordinator) Connected(agentID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.sessions[agentID]
	return ok
}
