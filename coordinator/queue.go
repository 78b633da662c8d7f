package coordinator

import (
	"slices"
	"sort"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// entry is a scheduled build waiting for an agent.
type entry struct {
	build db.NewBuild
	// avoid holds agents on which the build had a setup failure; another
	// agent is preferred when one could take it.
	avoid map[string]bool
}

// before orders the ready queue: priority descending, then age, then id so
// that the order is total and deterministic.
func (e *entry) before(o *entry) bool {
	if e.build.Priority != o.build.Priority {
		return e.build.Priority > o.build.Priority
	}
	if !e.build.CreatedAt.Equal(o.build.CreatedAt) {
		return e.build.CreatedAt.Before(o.build.CreatedAt)
	}
	return e.build.ID < o.build.ID
}

// readyQueue is the ordered list of scheduled builds of one system. A sorted
// slice keeps in-order scans (needed for feature matching) cheap; insertion
// is a binary search plus a memmove.
type readyQueue struct {
	entries []*entry
}

func (q *readyQueue) insert(e *entry) {
	i := sort.Search(len(q.entries), func(i int) bool { return e.before(q.entries[i]) })
	q.entries = slices.Insert(q.entries, i, e)
}

func (q *readyQueue) remove(id string) bool {
	for i, e := range q.entries {
		if e.build.ID == id {
			q.entries = slices.Delete(q.entries, i, i+1)
			return true
		}
	}
	return false
}

func (q *readyQueue) len() int { return len(q.entries) }

// oldest reports the creation time of the oldest entry (zero if empty).
func (q *readyQueue) oldest() time.Time {
	var t time.Time
	for _, e := range q.entries {
		if t.IsZero() || e.build.CreatedAt.Before(t) {
			t = e.build.CreatedAt
		}
	}
	return t
}
