package db

import "time"

// Phase is a stage of an attempt after allocation. An attempt goes
// through them in this order, skipping those nobody reported (an agent
// that reports no phases has only building, from its start report): the
// agent prepares, builds and uploads; the coordinator verifies and
// publishes. A phase is stored as text; a new one is a constant here, a
// case in Rank and a column (sqlstore).
type Phase string

const (
	// PhasePreparing: the agent fetches and imports the .drv closure and
	// the inputs.
	PhasePreparing Phase = "preparing"
	// PhaseBuilding: the store daemon builds (from the agent's started).
	PhaseBuilding Phase = "building"
	// PhaseUploading: the agent packs and uploads the outputs.
	PhaseUploading Phase = "uploading"
	// PhaseVerifying: the coordinator checks the uploads against the
	// report and the derivation.
	PhaseVerifying Phase = "verifying"
	// PhasePublishing: the coordinator moves the verified outputs into
	// the cache and signs them, then records the success.
	PhasePublishing Phase = "publishing"
)

// Phases lists every phase in order.
func Phases() []Phase {
	return []Phase{PhasePreparing, PhaseBuilding, PhaseUploading, PhaseVerifying, PhasePublishing}
}

// Rank is the phase's place in the order (1 for preparing), 0 for a
// string that is not a phase.
func (p Phase) Rank() int {
	switch p {
	case PhasePreparing:
		return 1
	case PhaseBuilding:
		return 2
	case PhaseUploading:
		return 3
	case PhaseVerifying:
		return 4
	case PhasePublishing:
		return 5
	}
	return 0
}

// PhaseTime is when an attempt entered a phase.
type PhaseTime struct {
	Phase Phase
	At    time.Time
}

// PhaseSpan is one phase of an attempt: from when it began to when the
// next recorded phase began or the attempt ended; Ended is zero while
// the attempt is still in it.
type PhaseSpan struct {
	Phase   Phase
	Started time.Time
	Ended   time.Time
}

// Spans returns the attempt's phases with their ends. A phase whose
// successor was recorded with an earlier time (clock steps) ends where it
// began rather than before.
func (a Attempt) Spans() []PhaseSpan {
	spans := make([]PhaseSpan, 0, len(a.Phases))
	for i, p := range a.Phases {
		sp := PhaseSpan{Phase: p.Phase, Started: p.At}
		switch {
		case i+1 < len(a.Phases):
			sp.Ended = a.Phases[i+1].At
		case !a.EndedAt.IsZero():
			sp.Ended = a.EndedAt
		}
		if !sp.Ended.IsZero() && sp.Ended.Before(sp.Started) {
			sp.Ended = sp.Started
		}
		spans = append(spans, sp)
	}
	return spans
}

// PhaseMark says that attempt Attempt of build Build entered Phase at At.
type PhaseMark struct {
	Build   string
	Attempt int
	Phase   Phase
	At      time.Time
}
