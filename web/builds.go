package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/coordinator"
)

// buildStates are the states the builds page filters by, in lifecycle order.
var buildStates = []coordinator.BuildState{
	coordinator.StateScheduled, coordinator.StateAllocated, coordinator.StateStarted, coordinator.StateSucceeded,
	coordinator.StateFailed, coordinator.StateFailedDependency, coordinator.StateCanceled,
}

type buildsData struct {
	State, System, Name, Tag, Agent string
	States                          []coordinator.BuildState
	Builds                          []coordinator.Build
	// Older is the query of the next page; Filtered: some filter is set.
	Older    url.Values
	Newest   url.Values
	First    bool
	Filtered bool
	Limit    int
}

// maxFilterBytes bounds a filter value from the query string.
const maxFilterBytes = 1024

func (h *Handler) builds(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := buildsData{State: q.Get("state"), System: q.Get("system"), Name: q.Get("name"), Tag: q.Get("tag"), Agent: q.Get("agent"), States: buildStates}
	for _, v := range []string{d.State, d.System, d.Name, d.Tag, d.Agent} {
		if len(v) > maxFilterBytes {
			badRequest(w, "a filter is longer than %d bytes", maxFilterBytes)
			return
		}
	}
	bq := coordinator.BuildQuery{State: coordinator.BuildState(d.State), System: d.System, Name: d.Name, AgentID: d.Agent}
	if d.State != "" && !coordinator.ValidBuildState(bq.State) {
		badRequest(w, "state=%q is not a build state", truncate(d.State, 40))
		return
	}
	if d.Tag != "" {
		k, v, ok := strings.Cut(d.Tag, "=")
		if !ok || k == "" {
			badRequest(w, "tag=%q is not KEY=VALUE", truncate(d.Tag, 40))
			return
		}
		bq.Tag = coordinator.Tag{Key: k, Value: v}
	}
	before, err := intParam(r, "before")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	limit, err := intParam(r, "limit")
	if err != nil || limit > coordinator.MaxPageLimit {
		badRequest(w, "limit must be a number from 1 to %d", coordinator.MaxPageLimit)
		return
	}
	bq.Before, bq.Limit = before, int(limit)
	p, err := h.coord.BuildsPage(r.Context(), bq)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Builds, d.First, d.Limit = p.Builds, before == 0, int(limit)
	d.Filtered = d.State != "" || d.System != "" || d.Name != "" || d.Tag != "" || d.Agent != ""
	filters := func() url.Values {
		v := url.Values{}
		for k, s := range map[string]string{"state": d.State, "system": d.System, "name": d.Name, "tag": d.Tag, "agent": d.Agent} {
			if s != "" {
				v.Set(k, s)
			}
		}
		if limit > 0 {
			v.Set("limit", itoa(limit))
		}
		return v
	}
	d.Newest = filters()
	if p.Next != 0 {
		d.Older = filters()
		d.Older.Set("before", itoa(p.Next))
	}
	h.render(w, r, http.StatusOK, "builds", "Builds", "builds", d)
}

// buildData is the build page.
type buildData struct {
	B        coordinator.Build
	Name     string
	Queue    *queueInfo
	Timeline timeline
	Outputs  []outputRow
	Running  bool
	Fix      string
}

type queueInfo struct {
	State           string
	DerivedPriority int
	Dependents      int
	Blockage        coordinator.Blockage
	HasBlockage     bool
	// NoAgent is why no agent takes it, when that keeps it from running
	// (not when it only waits for a free slot).
	NoAgent *coordinator.NoAgent
}

// outputRow is a declared output and, once built, its verified result.
type outputRow struct {
	Name, Path string
	Result     *coordinator.OutputResult
	Narinfo    string // link to the narinfo in the cache
	NAR        string // link to the compressed NAR
}

func (h *Handler) build(w http.ResponseWriter, r *http.Request) {
	b, err := h.coord.Build(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := buildData{B: b, Name: drvName(b.Derivation), Fix: coordinator.FixUnbuildable,
		Running: b.State == coordinator.StateAllocated || b.State == coordinator.StateStarted}
	if st, p, n, ok := h.coord.QueueOrder(b.ID); ok {
		d.Queue = &queueInfo{State: st, DerivedPriority: p, Dependents: n}
		d.Queue.Blockage, d.Queue.HasBlockage = h.coord.Blockage(b.ID)
		if na := d.Queue.Blockage.NoAgent; d.Queue.HasBlockage && na != nil && !na.Kind.Passing() {
			d.Queue.NoAgent = na
		}
	}
	results := map[string]*coordinator.OutputResult{}
	for i := range b.Results {
		results[b.Results[i].Name] = &b.Results[i]
	}
	for _, o := range b.Outputs {
		row := outputRow{Name: o.Name, Path: o.Path, Result: results[o.Name]}
		if row.Result != nil {
			row.Narinfo, row.NAR = cacheLinks(*row.Result)
		}
		d.Outputs = append(d.Outputs, row)
	}
	d.Timeline = newTimeline(b.Attempts, h.clk.Now())
	h.render(w, r, http.StatusOK, "build", "Build "+b.ID, "builds", d)
}

// cacheLinks are an output's narinfo and NAR under /cache/.
func cacheLinks(o coordinator.OutputResult) (narinfo, nar string) {
	base := o.Path[strings.LastIndexByte(o.Path, '/')+1:]
	if len(base) >= 32 {
		narinfo = "/cache/" + base[:32] + ".narinfo"
	}
	if f, ok := strings.CutPrefix(o.File, "cache/"); ok {
		nar = "/cache/" + f
	}
	return narinfo, nar
}

// timeline is the attempts drawn on one time axis, each as its phases
// (allocated until the agent's first report, then preparing, building,
// uploading, verifying, publishing).
type timeline struct {
	Rows               []timelineRow
	Start, End         time.Time
	Left, Right, VW, H float64
	AxisY              float64
	Phases             []string
}

type timelineRow struct {
	Number   int
	Agent    string
	Segments []segment
	Y        float64
}

type segment struct {
	Phase string
	X, W  float64
	RY    float64
	Title string
}

func newTimeline(as []coordinator.Attempt, now time.Time) timeline {
	t := timeline{Left: 40, Right: 900, VW: 920}
	if len(as) == 0 {
		return t
	}
	t.Start = as[0].AllocatedAt
	for _, a := range as {
		end := a.EndedAt
		if end.IsZero() {
			end = now
		}
		if end.After(t.End) {
			t.End = end
		}
	}
	span := t.End.Sub(t.Start)
	if span <= 0 {
		span = time.Millisecond
	}
	x := func(at time.Time) float64 { return t.Left + (t.Right-t.Left)*float64(at.Sub(t.Start))/float64(span) }
	for i, a := range as {
		row := timelineRow{Number: a.Number, Agent: a.AgentID, Y: float64(i) * 22}
		end := a.EndedAt
		if end.IsZero() {
			end = now
		}
		add := func(phase string, from, to time.Time) {
			if from.IsZero() || to.Before(from) {
				return
			}
			if !slices.Contains(t.Phases, phase) {
				t.Phases = append(t.Phases, phase)
			}
			row.Segments = append(row.Segments, segment{Phase: phase, X: x(from), W: max(x(to)-x(from), 2), RY: row.Y + 3,
				Title: phase + " " + duration(from, to) + " (" + timestamp(from) + " – " + timestamp(to) + ")"})
		}
		switch {
		case len(a.Phases) > 0:
			// From allocation to the first phase the agent reported: the
			// build on its way to the agent.
			if first := a.Phases[0].At; first.After(a.AllocatedAt) {
				add("allocated", a.AllocatedAt, first)
			}
			for _, sp := range a.Spans() {
				to := sp.Ended
				if to.IsZero() {
					to = end
				}
				add(string(sp.Phase), sp.Started, to)
			}
		case a.StartedAt.IsZero():
			add("preparing", a.AllocatedAt, end)
		default:
			// Recorded before phases were: allocation to start, then the
			// build to its end.
			add("preparing", a.AllocatedAt, a.StartedAt)
			add("building", a.StartedAt, end)
		}
		t.Rows = append(t.Rows, row)
	}
	t.AxisY = float64(len(as))*22 + 4
	t.H = t.AxisY + 20
	return t
}
