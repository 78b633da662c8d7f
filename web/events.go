package web

import (
	"net/http"

	"github.com/gbc-farm/gbc/coordinator"
)

// eventsPerPage is how many events the events page lists.
const eventsPerPage = 100

type eventsData struct {
	Events []coordinator.Event
	Older  int64
	First  bool
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	before, err := intParam(r, "before")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	es, older, err := h.coord.RecentEvents(r.Context(), before, eventsPerPage)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "events", "Events", "events", eventsData{Events: es, Older: older, First: before == 0})
}
