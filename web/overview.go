package web

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/coordinator"
)

// agentRow is one agent as the overview and the agents page list it.
type agentRow struct {
	coordinator.Agent
	State       string // connected, absent, deactivated, never connected
	Connected   *coordinator.AgentStatus
	Running     int
	Slots       int
	Systems     string
	LastSeenAgo time.Time
}

// agentRows joins the registered agents with the connected ones.
func agentRows(agents []coordinator.Agent, st coordinator.Status) []agentRow {
	conn := map[string]*coordinator.AgentStatus{}
	for i := range st.Connected {
		conn[st.Connected[i].ID] = &st.Connected[i]
	}
	rows := make([]agentRow, 0, len(agents))
	for _, a := range agents {
		r := agentRow{Agent: a, Connected: conn[a.ID], LastSeenAgo: a.LastSeenAt}
		switch {
		case !a.Active:
			r.State = "deactivated"
		case r.Connected != nil:
			r.State = "connected"
		case a.LastSeenAt.IsZero():
			r.State = "never connected"
		default:
			r.State = "absent"
		}
		if c := r.Connected; c != nil {
			r.Running, r.Slots, r.Systems = len(c.Running), c.MaxParallel, strings.Join(c.Systems, ", ")
			if c.LastSeen.After(r.LastSeenAgo) {
				r.LastSeenAgo = c.LastSeen
			}
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		return rank(rows[i].State) < rank(rows[j].State) || rank(rows[i].State) == rank(rows[j].State) && rows[i].Name < rows[j].Name
	})
	return rows
}

func rank(state string) int {
	switch state {
	case "connected":
		return 0
	case "absent":
		return 1
	case "never connected":
		return 2
	}
	return 3
}

type systemRow struct {
	System string
	Ready  int
}

type overviewData struct {
	Status      coordinator.Status
	Ready       int
	Queued      int // ready, waiting and deferred
	Systems     []systemRow
	Agents      []agentRow
	Connected   int
	Slots       int
	Busy        int
	LastHour    hourCounts
	Day         hourCounts
	Hours       []hourCounts // the last 24 hours, newest first
	Chart       chart
	SlotMinutes int
}

type hourCounts struct {
	Start     time.Time
	Succeeded int
	Failed    int
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	st := h.coord.Status()
	agents, err := h.coord.Agents(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := overviewData{Status: st, Agents: agentRows(agents, st), SlotMinutes: int(coordinator.ActivitySlot / time.Minute)}
	for sys, n := range st.Queued {
		d.Systems = append(d.Systems, systemRow{sys, n})
		d.Ready += n
	}
	sort.Slice(d.Systems, func(i, j int) bool { return d.Systems[i].System < d.Systems[j].System })
	d.Queued = d.Ready + st.Blocked + st.Deferred
	for _, a := range st.Connected {
		d.Connected++
		d.Slots += a.MaxParallel
		d.Busy += len(a.Running)
	}
	points := h.coord.Activity()
	d.Hours = hours(points)
	if len(d.Hours) > 0 {
		d.LastHour = d.Hours[0]
	}
	for _, hc := range d.Hours {
		d.Day.Succeeded += hc.Succeeded
		d.Day.Failed += hc.Failed
	}
	d.Chart = newChart(points)
	h.render(w, r, http.StatusOK, "overview", "Overview", "overview", d)
}

// hours sums the activity slots by hour, newest hour first.
func hours(points []coordinator.ActivityPoint) []hourCounts {
	var out []hourCounts
	for i := len(points) - 1; i >= 0; i-- {
		p := points[i]
		start := p.Start.Truncate(time.Hour)
		if len(out) == 0 || !out[len(out)-1].Start.Equal(start) {
			out = append(out, hourCounts{Start: start})
		}
		out[len(out)-1].Succeeded += p.Succeeded
		out[len(out)-1].Failed += p.Failed
	}
	return out
}

// chart is the overview's SVG: bars of builds ended per slot (succeeded
// under failed) against the left axis, the queue's depth as a line
// against the right one. Coordinates are computed here; the template only
// writes elements.
type chart struct {
	W, H, Top, Bottom, Left, Right float64
	Bars                           []chartBar
	Line                           string // polyline points of the queue depth
	Dots                           []chartDot
	MaxDone, MaxQueue              int
	Ticks                          []chartTick
}

type chartBar struct {
	X, W            float64
	OkY, OkH        float64
	BadY, BadH      float64
	Title           string
	Succeeded, Fail int
}

type chartDot struct{ X, Y float64 }

type chartTick struct {
	X     float64
	Label string
}

func newChart(points []coordinator.ActivityPoint) chart {
	c := chart{W: 960, H: 220, Top: 16, Bottom: 190, Left: 44, Right: 916}
	c.MaxDone, c.MaxQueue = 1, 1
	for _, p := range points {
		c.MaxDone = max(c.MaxDone, p.Succeeded+p.Failed)
		c.MaxQueue = max(c.MaxQueue, p.Queued)
	}
	c.MaxDone, c.MaxQueue = niceCeil(c.MaxDone), niceCeil(c.MaxQueue)
	n := float64(len(points))
	if n == 0 {
		return c
	}
	step := (c.Right - c.Left) / n
	height := c.Bottom - c.Top
	var line []string
	for i, p := range points {
		x := c.Left + float64(i)*step
		okH := height * float64(p.Succeeded) / float64(c.MaxDone)
		badH := height * float64(p.Failed) / float64(c.MaxDone)
		b := chartBar{X: x + 1, W: max(step-2, 1), OkY: c.Bottom - okH, OkH: okH, BadY: c.Bottom - okH - badH, BadH: badH,
			Succeeded: p.Succeeded, Fail: p.Failed,
			Title: fmt.Sprintf("%s–%s UTC: %d succeeded, %d failed, queue %d, running %d",
				p.Start.UTC().Format("15:04"), p.Start.Add(coordinator.ActivitySlot).UTC().Format("15:04"), p.Succeeded, p.Failed, p.Queued, p.Running)}
		c.Bars = append(c.Bars, b)
		if p.Sampled {
			y := c.Bottom - height*float64(p.Queued)/float64(c.MaxQueue)
			line = append(line, fmt.Sprintf("%.1f,%.1f", x+step/2, y))
			c.Dots = append(c.Dots, chartDot{x + step/2, y})
		}
		if p.Start.Minute() == 0 && p.Start.UTC().Hour()%3 == 0 {
			c.Ticks = append(c.Ticks, chartTick{X: x, Label: p.Start.UTC().Format("15:04")})
		}
	}
	c.Line = strings.Join(line, " ")
	if len(c.Dots) > 1 {
		c.Dots = nil // the line says it; dots only mark a lone sample
	}
	return c
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten.
func niceCeil(n int) int {
	p := 1
	for {
		for _, m := range []int{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
		p *= 10
	}
}
