package web

import (
	"net/http"
	"strconv"

	"github.com/gbc-farm/gbc/coordinator"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func (h *Handler) agents(w http.ResponseWriter, r *http.Request) {
	agents, err := h.coord.Agents(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "agents", "Agents", "agents", agentRows(agents, h.coord.Status()))
}

type agentData struct {
	A       agentRow
	Recent  []coordinator.Build
	More    bool
	Counts  []coordinator.AttemptCount
	Total   int
	Failed  int // attempts that failed the build
	Setup   int // setup failures
	Infra   int // requeued for the agent's or its link's trouble
	Running []string
}

// recentOnAgent is how many of an agent's builds its page lists.
const recentOnAgent = 25

func (h *Handler) agent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	a, err := h.coord.Agent(ctx, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rows := agentRows([]coordinator.Agent{a}, h.coord.Status())
	d := agentData{A: rows[0]}
	if c := d.A.Connected; c != nil {
		d.Running = c.Running
	}
	p, err := h.coord.BuildsPage(ctx, coordinator.BuildQuery{AgentID: a.ID, Limit: recentOnAgent})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Recent, d.More = p.Builds, p.Next != 0
	if d.Counts, err = h.coord.AgentAttemptCounts(ctx, a.ID); err != nil {
		h.fail(w, r, err)
		return
	}
	for _, c := range d.Counts {
		d.Total += c.Count
		switch c.Kind {
		case coordinator.KindBuild:
			d.Failed += c.Count
		case coordinator.KindSetup:
			d.Setup += c.Count
		case coordinator.KindInfrastructure, coordinator.KindVerification:
			d.Infra += c.Count
		}
	}
	h.render(w, r, http.StatusOK, "agent", "Agent "+a.Name, "agents", d)
}
