package db

import (
	"encoding/json"
	"fmt"
	"time"
)

// EventType names a state change. Events are rows written in the same
// transaction as the change they record, so the event log and the build
// table never disagree, and hooks run from the rows (at least once).
type EventType string

const (
	EventSubmitted        EventType = "submitted"
	EventAllocated        EventType = "allocated"
	EventStarted          EventType = "started"
	EventSucceeded        EventType = "succeeded"
	EventFailed           EventType = "failed"
	EventFailedDependency EventType = "failed-dependency"
	EventCanceled         EventType = "canceled"
	EventRequeued         EventType = "requeued"
	EventSetupFailure     EventType = "setup-failure"
	EventMissingInputs    EventType = "missing-inputs"
	EventAgentConnected   EventType = "agent-connected"
	EventAgentAbsent      EventType = "agent-absent"
	// EventHookFailed reports a hook that kept failing for an event.
	EventHookFailed EventType = "hook-failed"
	// EventCheckFinished: a reproducibility check reached its verdict
	// (Check, Verdict; Outputs names the unreproducible outputs).
	EventCheckFinished EventType = "check-finished"
	// EventCacheDeleted lists paths a cache collection deleted (one
	// event per batch).
	EventCacheDeleted EventType = "cache-deleted"
)

// EventTypes lists every event type, for validation and help texts.
var EventTypes = []EventType{
	EventSubmitted, EventAllocated, EventStarted, EventSucceeded, EventFailed,
	EventFailedDependency, EventCanceled, EventRequeued, EventSetupFailure,
	EventMissingInputs, EventAgentConnected, EventAgentAbsent, EventHookFailed,
	EventCheckFinished, EventCacheDeleted,
}

// ValidEventType reports whether t is a known event type.
func ValidEventType(t EventType) bool {
	for _, k := range EventTypes {
		if k == t {
			return true
		}
	}
	return false
}

// EventOutput is an output named in an event; NarHash and NarSize are set
// for succeeded events.
type EventOutput struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	NarHash string `json:"nar_hash,omitempty"`
	NarSize int64  `json:"nar_size,omitempty"`
}

// Event is one row of the event log. Its JSON form is what `events`
// prints and what exec hooks read on stdin.
type Event struct {
	ID         int64         `json:"id"`
	Type       EventType     `json:"type"`
	At         time.Time     `json:"at"`
	Build      string        `json:"build,omitempty"`
	Agent      string        `json:"agent,omitempty"`
	Attempt    int           `json:"attempt,omitempty"`
	Derivation string        `json:"derivation,omitempty"`
	System     string        `json:"system,omitempty"`
	Tags       []Tag         `json:"tags,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	ExitCode   int           `json:"exit_code,omitempty"`
	Outputs    []EventOutput `json:"outputs,omitempty"`
	Missing    []string      `json:"missing,omitempty"`
	// Hook and EventID are set on hook-failed events.
	Hook    string `json:"hook,omitempty"`
	EventID int64  `json:"event_id,omitempty"`
	// Check and Verdict are set on check-finished events.
	Check   string     `json:"check,omitempty"`
	Verdict CheckState `json:"verdict,omitempty"`
	// Paths and Bytes are set on cache-deleted events: the store paths
	// whose narinfos went, and their files' bytes.
	Paths []string `json:"paths,omitempty"`
	Bytes int64    `json:"bytes,omitempty"`
}

// MarshalJSON encodes tags as "K=V" strings, as the command line shows them.
func (t Tag) MarshalJSON() ([]byte, error) { return json.Marshal(t.Key + "=" + t.Value) }

// UnmarshalJSON is the inverse of MarshalJSON.
func (t *Tag) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			t.Key, t.Value = s[:i], s[i+1:]
			return nil
		}
	}
	return fmt.Errorf("tag %q is not K=V", s)
}

// EventData is the part of an event a backend stores as one JSON column
// next to the indexed ones (id, type, at, build, agent).
func EventData(e Event) ([]byte, error) {
	d := e
	d.ID, d.Type, d.At, d.Build, d.Agent = 0, "", time.Time{}, "", ""
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode event %s data: %w", e.Type, err)
	}
	return b, nil
}

// DecodeEventData fills e from a stored data column, keeping the indexed
// fields already set.
func DecodeEventData(e *Event, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var d Event
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("event %d: decode data: %w", e.ID, err)
	}
	d.ID, d.Type, d.At, d.Build, d.Agent = e.ID, e.Type, e.At, e.Build, e.Agent
	*e = d
	return nil
}

// EventFilter selects events; zero values mean "any".
type EventFilter struct {
	AfterID int64       // only events with a larger id
	Types   []EventType // any of these
	Build   string
	Limit   int // 0: no limit
}

// Hardware is what an agent reported about its machine when an attempt
// started.
type Hardware struct {
	Cores          int     `json:"cores,omitempty"`
	MemoryBytes    uint64  `json:"memory_bytes,omitempty"`
	FreeDiskBytes  uint64  `json:"free_disk_bytes,omitempty"`
	Load1          float64 `json:"load1,omitempty"`
	Backend        string  `json:"backend,omitempty"`
	BackendVersion string  `json:"backend_version,omitempty"`
}

// IsZero reports whether nothing was recorded.
func (h Hardware) IsZero() bool { return h == Hardware{} }

// HookProgress is how far a hook got through the event log: every
// matching event with id ≤ Cursor is done, and so are the ids in Done.
type HookProgress struct {
	Cursor int64
	Done   []int64
	// Registered: MarkHookDone was called for this hook at least once
	// (a hook that never was starts at the end of the log, see hooks).
	Registered bool
}
