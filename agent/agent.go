package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"

	"github.com/gbc-farm/gbc/agent/backend"
	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/protocol"
)

// Version is reported in hello.
const Version = "gbc-agent/0.1"

// Config is everything the agent needs; cmd/gbc fills it from flags.
type Config struct {
	Dialer            *Dialer
	Backend           backend.Backend
	Name              string
	Systems           []string
	Features          []string
	RequireTags       []string // "K=V": only builds carrying these tags
	MaxParallelBuilds int      // 1 if zero
	WorkDir           string   // spool for logs and NAR files
	Compression       string   // "zstd" if empty
	// SubstituteURLs are binary caches tried after the coordinator's when
	// fetching a derivation and its inputs. Their keys must be trusted by
	// the store (nix.conf, or --nix-config "extra-trusted-public-keys = …").
	SubstituteURLs []string

	// Reconnect backoff: doubles from MinBackoff to MaxBackoff, with
	// jitter. Defaults 1s and 30s.
	MinBackoff, MaxBackoff time.Duration
	// SSH keepalive interval (default 15s); a keepalive unanswered for
	// as long drops the connection.
	KeepaliveInterval time.Duration
	// WelcomeTimeout bounds the wait for welcome after hello (30s).
	WelcomeTimeout time.Duration
	// UploadAttempts is how often an upload may fail on a live connection
	// before the build is reported as a setup failure (3).
	UploadAttempts int
	// DirectUpload asks the coordinator for a presigned URL per output
	// and PUTs the file straight into the cache's object store, uploading
	// over SFTP when the coordinator gives none or the PUT fails.
	DirectUpload bool

	Log *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Dialer == nil || c.Backend == nil {
		return errors.New("agent config: Dialer and Backend are required")
	}
	if len(c.Systems) == 0 {
		return errors.New("agent config: at least one system is required")
	}
	if c.WorkDir == "" {
		return errors.New("agent config: WorkDir is required")
	}
	if c.MaxParallelBuilds <= 0 {
		c.MaxParallelBuilds = 1
	}
	if c.Compression == "" {
		c.Compression = "zstd"
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(30*time.Second, c.MinBackoff)
	}
	if c.KeepaliveInterval <= 0 {
		c.KeepaliveInterval = 15 * time.Second
	}
	if c.WelcomeTimeout <= 0 {
		c.WelcomeTimeout = 30 * time.Second
	}
	if c.UploadAttempts <= 0 {
		c.UploadAttempts = 3
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Agent holds the state that outlives one connection.
type Agent struct {
	cfg            Config
	log            *slog.Logger
	backendVersion string

	mu      sync.Mutex
	runs    map[string]*run // every build not yet settled, by build id
	pending []*pending      // results awaiting ack, oldest first
	nextID  uint64
	conn    *conn         // nil while disconnected
	connGen chan struct{} // closed (and replaced) whenever conn changes
	agentID string

	maxLine atomic.Int64 // the coordinator's line limit, from welcome

	// fwd is the local end of the cache tunnel.
	fwd *cacheForward

	// waiting are the requests (other than results) whose answer a
	// goroutine waits for, by message id; guarded by mu.
	waiting map[uint64]chan protocol.Message
	// http PUTs direct uploads.
	http *http.Client
	// directOff: this session's coordinator gives no direct upload URLs
	// (cleared at each welcome).
	directOff atomic.Bool

	wg sync.WaitGroup // build goroutines
}

// conn is one live session.
type conn struct {
	w    *protocol.Writer
	sftp *sftp.Client
}

// pending is a result message waiting for the coordinator's ack.
type pending struct {
	id    uint64
	build string
	run   *run
	msg   protocol.Message
}

// New checks cfg and prepares the work dir.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, "builds"), 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	return &Agent{
		cfg:     cfg,
		log:     cfg.Log,
		runs:    map[string]*run{},
		nextID:  1, // hello is 1; nextMsgID hands out 2, 3, …
		connGen: make(chan struct{}),
		waiting: map[uint64]chan protocol.Message{},
		http:    upload.HTTPClient(),
	}, nil
}

// Run connects and serves until ctx ends (returns nil), the host key is
// refused (returns the *HostKeyError) or the coordinator refuses the
// agent's key (returns the *AuthRefusedError). Every other failure (the
// network, the coordinator restarting) is retried with backoff. Running builds are stopped when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	v, err := a.cfg.Backend.Version(ctx)
	if err != nil {
		return fmt.Errorf("backend %s: %w", a.cfg.Backend.Name(), err)
	}
	a.backendVersion = v
	defer a.cfg.Backend.Close()
	if a.fwd, err = newCacheForward(ctx, a); err != nil {
		return err
	}
	a.log.Info("agent starting", "coordinator", a.cfg.Dialer.Address, "backend", v,
		"systems", a.cfg.Systems, "max_parallel_builds", a.cfg.MaxParallelBuilds, "work_dir", a.cfg.WorkDir)

	// Builds run under bctx, which ends before Run waits for them:
	// whatever makes Run return (ctx, a refused host key, the agent's key
	// refused at a reconnect) stops the builds at once, and closing their
	// daemon connections makes the daemon kill the builders.
	bctx, stopBuilds := context.WithCancel(ctx)
	defer a.wg.Wait()
	defer stopBuilds()
	a.recoverUploads(bctx)
	backoff := a.cfg.MinBackoff
	for {
		welcomed, err := a.session(bctx)
		if ctx.Err() != nil {
			a.log.Info("agent stopping", "running_builds", len(a.runningIDs()))
			return nil
		}
		var hk *HostKeyError
		var ar *AuthRefusedError
		if errors.As(err, &hk) || errors.As(err, &ar) {
			if ids := a.runningIDs(); len(ids) > 0 {
				a.log.Error("stopping: canceling the running builds", "builds", ids, "err", err)
			}
			return err
		}
		if welcomed {
			backoff = a.cfg.MinBackoff
		}
		wait := jitter(backoff)
		a.log.Warn("disconnected from coordinator; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// jitter spreads reconnects of many agents over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func (a *Agent) nextMsgID() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextID++
	return a.nextID
}

// send writes m on the current connection.
func (a *Agent) send(m protocol.Message) error {
	a.mu.Lock()
	c := a.conn
	a.mu.Unlock()
	if c == nil {
		return errNotConnected
	}
	return c.w.Write(m)
}

var errNotConnected = errors.New("not connected to the coordinator")

// setConn installs (c != nil) or clears the live session and wakes
// everything waiting for a connection change.
func (a *Agent) setConn(c *conn) {
	a.mu.Lock()
	a.conn = c
	close(a.connGen)
	a.connGen = make(chan struct{})
	a.mu.Unlock()
}

// currentSFTP returns the live SFTP client, or nil, and a channel closed
// at the next connection change.
func (a *Agent) currentSFTP() (*sftp.Client, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return nil, a.connGen
	}
	return a.conn.sftp, a.connGen
}

// runningIDs are the builds still being built (not those only waiting
// for an ack, nor canceled ones still stopping), sorted for stable
// messages.
func (a *Agent) runningIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id, r := range a.runs {
		if !r.finished && !r.canceled {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// resultIDs are the builds whose result waits for an ack, sorted.
func (a *Agent) resultIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.pending))
	for _, p := range a.pending {
		ids = append(ids, p.build)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// queueResult records a final result and sends it if connected; it is
// resent after every reconnect until acked.
func (a *Agent) queueResult(r *run, m protocol.Message) {
	id := a.nextMsgID()
	switch m := m.(type) {
	case *protocol.Succeeded:
		m.ID = id
	case *protocol.Failed:
		m.ID = id
	case *protocol.SetupFailure:
		m.ID = id
	}
	a.mu.Lock()
	if r.canceled {
		a.mu.Unlock()
		a.settle(r)
		return
	}
	r.finished = true
	a.pending = append(a.pending, &pending{id: id, build: r.id, run: r, msg: m})
	a.mu.Unlock()
	if err := a.send(m); err != nil {
		a.log.Info("result queued until reconnect", "build", r.id, "type", m.MessageType(), "err", err)
	}
}

// resendPending sends every unacked result on a fresh session.
func (a *Agent) resendPending() {
	a.mu.Lock()
	ps := slices.Clone(a.pending)
	a.mu.Unlock()
	for _, p := range ps {
		if err := a.send(p.msg); err != nil {
			return
		}
		a.log.Info("resent result", "build", p.build, "type", p.msg.MessageType(), "id", p.id)
	}
}

// request sends m (whose id is id) and waits for the answer: the reply
// message, or an Error. It gives up when ctx ends, after timeout, or when
// the connection changes (the answer would not come).
func (a *Agent) request(ctx context.Context, id uint64, m protocol.Message, timeout time.Duration) (protocol.Message, error) {
	ch := make(chan protocol.Message, 1)
	a.mu.Lock()
	if a.conn == nil {
		a.mu.Unlock()
		return nil, errNotConnected
	}
	c, changed := a.conn, a.connGen
	a.waiting[id] = ch
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.waiting, id)
		a.mu.Unlock()
	}()
	if err := c.w.Write(m); err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-changed:
		return nil, errNotConnected
	case <-t.C:
		return nil, fmt.Errorf("no answer to %s within %s", m.MessageType(), timeout)
	}
}

// deliver hands an answer to the request waiting for its id; false when
// none waits.
func (a *Agent) deliver(id uint64, m protocol.Message) bool {
	a.mu.Lock()
	ch, ok := a.waiting[id]
	delete(a.waiting, id)
	a.mu.Unlock()
	if ok {
		ch <- m
	}
	return ok
}

// answered handles an ack (refusal == "") or error reply to one of our
// messages. Only results are tracked; other ids are ignored.
func (a *Agent) answered(id uint64, refusal string) {
	a.mu.Lock()
	i := slices.IndexFunc(a.pending, func(p *pending) bool { return p.id == id })
	if i < 0 {
		a.mu.Unlock()
		if refusal != "" {
			a.log.Warn("coordinator refused a message", "id", id, "error", refusal)
		}
		return
	}
	p := a.pending[i]
	a.pending = slices.Delete(a.pending, i, i+1)
	a.mu.Unlock()
	if refusal != "" {
		a.log.Error("coordinator refused result", "build", p.build, "type", p.msg.MessageType(), "error", refusal)
	} else {
		a.log.Info("result acknowledged", "build", p.build, "type", p.msg.MessageType())
	}
	a.settle(p.run)
}

// settle forgets a run and removes its directory. A run that a newer
// run of the same build superseded leaves the directory to that one
// (which clears it before it starts).
//
// The directory goes under the lock: once the run is forgotten, the same
// build given again starts at once in the same directory, which a removal
// after unlocking could take from under it.
func (a *Agent) settle(r *run) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.runs[r.id] != r {
		return
	}
	delete(a.runs, r.id)
	if err := os.RemoveAll(r.dir); err != nil {
		a.log.Warn("remove build directory", "build", r.id, "err", err)
	}
}
