package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gbc-farm/gbc/db"
)

// The coordinator's Prometheus metrics (docs/metrics.md). Gauges are read
// from the coordinator's own state when scraped: the scheduler's counts
// (O(buckets), not O(builds)), the sessions and the known agents, never
// the database. Histograms and counters are observed where things happen.
// Collector hands them to a registry the process owns.

// durationBuckets are the buckets of the queue wait and build duration
// histograms: seconds, from a second to a day.
func durationBuckets() []float64 {
	return []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400}
}

// agentMeta is what the coordinator keeps of each registered agent for
// the metrics of agents that are not connected.
type agentMeta struct {
	name     string
	active   bool
	lastSeen time.Time
}

type metrics struct {
	queueWait     *prometheus.HistogramVec
	buildDuration *prometheus.HistogramVec
	phaseDuration *prometheus.HistogramVec
	setupFailures *prometheus.CounterVec
	infraFailures *prometheus.CounterVec
	// verifiedBytes counts the compressed bytes of uploads read back for
	// verification, by how they arrived (sftp, direct).
	verifiedBytes *prometheus.CounterVec
	// checksFinished counts reproducibility checks by verdict.
	checksFinished *prometheus.CounterVec
	checksPending  *prometheus.Desc

	builds, runnable, finished, agents, inPhase *prometheus.Desc
	agentConnected, agentActive, agentRunning   *prometheus.Desc
	agentSlots, agentLoad, agentDisk, agentSeen *prometheus.Desc
	spacePaused, spaceFree                      *prometheus.Desc
}

func newMetrics() *metrics {
	agent := []string{"agent", "name"}
	return &metrics{
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gbc_build_queue_wait_seconds",
			Help:    "Time from a build becoming runnable (in a ready queue) to its allocation to an agent, by system.",
			Buckets: append([]float64{0.01, 0.1}, durationBuckets()...),
		}, []string{"system"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gbc_build_duration_seconds",
			Help:    "Time from an attempt's start (its allocation if the agent never reported the start) to its result, for attempts that ended the build, by system and outcome (succeeded, failed).",
			Buckets: durationBuckets(),
		}, []string{"system", "outcome"}),
		phaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gbc_build_phase_duration_seconds",
			Help:    "Time an attempt spent in a phase (preparing, building, uploading, verifying, publishing), by system and phase, observed as the phase ends.",
			Buckets: append([]float64{0.01, 0.1}, durationBuckets()...),
		}, []string{"system", "phase"}),
		setupFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_agent_setup_failures_total",
			Help: "Attempts an agent could not set up (an input missing, its store daemon refused), counted toward the build's setup-failure limit.",
		}, agent),
		verifiedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_upload_verified_bytes_total",
			Help: "Compressed bytes of agents' uploads read back and verified, by how they reached the coordinator: sftp (uploaded to it) or direct (PUT by the agent into the cache's bucket, read back from there).",
		}, []string{"via"}),
		infraFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_agent_infrastructure_failures_total",
			Help: "Attempts on an agent that ended without a verdict on the build, by kind: infrastructure (the agent or its link went away) or verification (its upload did not verify). The coordinator's own trouble is not counted.",
		}, append(agent, "kind")),
		inPhase:        prometheus.NewDesc("gbc_builds_in_phase", "Builds held by agents by the phase their attempt is in (none: allocated, no phase reported yet).", []string{"phase"}, nil),
		builds:         prometheus.NewDesc("gbc_builds", "Builds in the queue by state: waiting (for an input), deferred, runnable (in a ready queue), allocated (to an agent, running or not).", []string{"state"}, nil),
		runnable:       prometheus.NewDesc("gbc_runnable_builds", "Runnable builds (in a ready queue) by system.", []string{"system"}, nil),
		finished:       prometheus.NewDesc("gbc_builds_finished_total", "Builds that reached a final state since the coordinator started, by state.", []string{"state"}, nil),
		agents:         prometheus.NewDesc("gbc_agents", "Registered agents by state: connected, absent (active, not connected), deactivated.", []string{"state"}, nil),
		agentConnected: prometheus.NewDesc("gbc_agent_connected", "1 while the agent has a session.", agent, nil),
		agentActive:    prometheus.NewDesc("gbc_agent_active", "1 unless the agent is deactivated.", agent, nil),
		agentRunning:   prometheus.NewDesc("gbc_agent_running_builds", "Builds allocated to a connected agent.", agent, nil),
		agentSlots:     prometheus.NewDesc("gbc_agent_slots", "Builds a connected agent runs at once (its max_parallel_builds).", agent, nil),
		agentLoad:      prometheus.NewDesc("gbc_agent_load1", "One-minute load average a connected agent last reported.", agent, nil),
		agentDisk:      prometheus.NewDesc("gbc_agent_free_disk_bytes", "Free bytes in its store a connected agent last reported.", agent, nil),
		agentSeen:      prometheus.NewDesc("gbc_agent_last_seen_timestamp_seconds", "When the coordinator last heard from the agent (Unix time); absent for an agent never seen.", agent, nil),
		spacePaused:    prometheus.NewDesc("gbc_space_paused", "1 while allocation is paused because the state directory is under its free-space reserve or full.", nil, nil),
		spaceFree:      prometheus.NewDesc("gbc_state_dir_free_bytes", "Free bytes in the state directory at the last check.", nil, nil),
		checksFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_checks_finished_total",
			Help: "Reproducibility checks that reached a verdict since the coordinator started, by verdict (reproducible, unreproducible, failed).",
		}, []string{"verdict"}),
		checksPending: prometheus.NewDesc("gbc_checks_pending", "Reproducibility checks waiting for a side to end.", nil, nil),
	}
}

// Collector returns the coordinator's metrics for a prometheus.Registry.
func (c *Coordinator) Collector() prometheus.Collector { return (*collector)(c) }

type collector Coordinator

func (k *collector) Describe(ch chan<- *prometheus.Desc) {
	m := k.metrics
	for _, d := range []*prometheus.Desc{m.builds, m.inPhase, m.runnable, m.finished, m.agents, m.agentConnected, m.agentActive,
		m.agentRunning, m.agentSlots, m.agentLoad, m.agentDisk, m.agentSeen, m.spacePaused, m.spaceFree, m.checksPending} {
		ch <- d
	}
	m.queueWait.Describe(ch)
	m.buildDuration.Describe(ch)
	m.phaseDuration.Describe(ch)
	m.setupFailures.Describe(ch)
	m.infraFailures.Describe(ch)
	m.verifiedBytes.Describe(ch)
	m.checksFinished.Describe(ch)
}

// agentSample is one agent's gauges, copied under the lock.
type agentSample struct {
	id, name          string
	connected, active bool
	running, slots    int
	load              float64
	disk              uint64
	lastSeen          time.Time
}

func (k *collector) Collect(ch chan<- prometheus.Metric) {
	c := (*Coordinator)(k)
	m := c.metrics
	c.mu.Lock()
	st := c.sched.Stats()
	space := c.spaceStatusLocked()
	pendingChecks := len(c.checks.groups)
	phases := map[db.Phase]int{db.PhasePreparing: 0, db.PhaseBuilding: 0, db.PhaseUploading: 0, db.PhaseVerifying: 0, db.PhasePublishing: 0}
	for _, lp := range c.live {
		phases[lp.phase]++
	}
	samples := make([]agentSample, 0, len(c.known))
	for id, a := range c.known {
		as := agentSample{id: id, name: a.name, active: a.active, lastSeen: a.lastSeen}
		if s := c.sessions[id]; s != nil && !s.gone {
			as.connected, as.running, as.slots = true, len(s.holds), s.maxParallel
			as.load, as.disk, as.lastSeen = s.hw.Load1, s.hw.FreeDiskBytes, s.lastSeen
		}
		samples = append(samples, as)
	}
	c.mu.Unlock()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(m.builds, float64(st.Waiting), "waiting")
	gauge(m.builds, float64(st.Deferred), "deferred")
	gauge(m.builds, float64(st.Ready), "runnable")
	gauge(m.builds, float64(st.Allocated), "allocated")
	for p, n := range phases {
		name := string(p)
		if p == "" {
			name = "none"
		}
		gauge(m.inPhase, float64(n), name)
	}
	for sys, n := range st.ReadyBySystem {
		gauge(m.runnable, float64(n), sys)
	}
	for state, n := range map[db.BuildState]uint64{db.StateSucceeded: st.Succeeded, db.StateFailed: st.Failed,
		db.StateFailedDependency: st.FailedDependency, db.StateCanceled: st.Canceled} {
		ch <- prometheus.MustNewConstMetric(m.finished, prometheus.CounterValue, float64(n), string(state))
	}
	var connected, absent, deactivated int
	for _, a := range samples {
		switch {
		case !a.active:
			deactivated++
		case a.connected:
			connected++
		default:
			absent++
		}
		gauge(m.agentConnected, b2f(a.connected), a.id, a.name)
		gauge(m.agentActive, b2f(a.active), a.id, a.name)
		if !a.lastSeen.IsZero() {
			gauge(m.agentSeen, float64(a.lastSeen.UnixMilli())/1000, a.id, a.name)
		}
		if a.connected {
			gauge(m.agentRunning, float64(a.running), a.id, a.name)
			gauge(m.agentSlots, float64(a.slots), a.id, a.name)
			gauge(m.agentLoad, a.load, a.id, a.name)
			gauge(m.agentDisk, float64(a.disk), a.id, a.name)
		}
	}
	gauge(m.agents, float64(connected), "connected")
	gauge(m.agents, float64(absent), "absent")
	gauge(m.agents, float64(deactivated), "deactivated")
	gauge(m.spacePaused, b2f(space.Paused))
	gauge(m.spaceFree, float64(space.Free))
	m.queueWait.Collect(ch)
	m.buildDuration.Collect(ch)
	m.phaseDuration.Collect(ch)
	m.setupFailures.Collect(ch)
	m.infraFailures.Collect(ch)
	m.verifiedBytes.Collect(ch)
	gauge(m.checksPending, float64(pendingChecks))
	m.checksFinished.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// loadAgents fills the known agents from the store, once at start; from
// then on the coordinator keeps them (CreateAgent, SetAgentActive, Connect).
func (c *Coordinator) loadAgents(ctx context.Context) error {
	as, err := c.store.Agents(ctx)
	if err != nil {
		return fmt.Errorf("load agents: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range as {
		c.known[a.ID] = agentMeta{name: a.Name, active: a.Active, lastSeen: a.LastSeenAt}
	}
	return nil
}

// noteAgentLocked records what the coordinator learned of an agent.
func (c *Coordinator) noteAgentLocked(id string, update func(*agentMeta)) {
	a := c.known[id]
	update(&a)
	c.known[id] = a
}

// countFailureLocked counts an attempt that ended without a verdict on
// the build against the agent it ran on; the kinds that are nobody's
// fault but the coordinator's, or that wait for inputs, are not counted.
func (c *Coordinator) countFailureLocked(agentID string, kind db.AttemptKind) {
	name := c.known[agentID].name
	switch kind {
	case db.KindSetup:
		c.metrics.setupFailures.WithLabelValues(agentID, name).Inc()
	case db.KindInfrastructure, db.KindVerification:
		c.metrics.infraFailures.WithLabelValues(agentID, name, string(kind)).Inc()
	}
}

// observeEnd records the duration of the attempt that ended build b.
func (c *Coordinator) observeEnd(b db.Build, outcome db.BuildState) {
	if len(b.Attempts) == 0 {
		return
	}
	a := b.Attempts[len(b.Attempts)-1]
	from := a.StartedAt
	if from.IsZero() {
		from = a.AllocatedAt
	}
	if from.IsZero() {
		return
	}
	c.metrics.buildDuration.WithLabelValues(b.System, string(outcome)).Observe(max(0, c.clk.Now().Sub(from).Seconds()))
}
