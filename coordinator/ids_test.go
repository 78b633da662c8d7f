package coordinator

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"
)

// Build ids are time-ordered UUIDs: the ids of one submission, and of a
// later one, sort in the order they were made, so the database's id
// indexes grow at their end.
func TestBuildIDsAreTimeOrdered(t *testing.T) {
	h := newHarness(t)
	var drvs []string
	for i := range 200 {
		drvs = append(drvs, h.drv(fmt.Sprintf("ids-%d", i), "x86_64-linux"))
	}
	ids := h.submit(0, drvs[:100]...)
	ids = append(ids, h.submit(0, drvs[100:]...)...)
	for _, id := range ids {
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 || u.String() != id {
			t.Fatalf("build id %q: version %d, %v; want a canonical version 7 UUID", id, u.Version(), err)
		}
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids not in creation order: %q", ids)
	}
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Fatal("repeated build id")
	}
}
