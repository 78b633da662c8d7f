package coordinator

import (
	"testing"
	"time"
)

func TestActivityRing(t *testing.T) {
	var a activity
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a.ended(t0.Add(time.Minute), outcomeSucceeded)
	a.ended(t0.Add(2*time.Minute), outcomeSucceeded)
	a.ended(t0.Add(3*time.Minute), outcomeFailed)
	a.ended(t0.Add(4*time.Minute), outcomeCanceled) // not charted
	a.sample(t0, 10, 2)
	a.sample(t0.Add(time.Minute), 7, 3)
	a.sample(t0.Add(ActivitySlot), 5, 1)

	ps := a.points(t0.Add(ActivitySlot + time.Minute))
	if len(ps) != activitySlots {
		t.Fatalf("%d points, want %d", len(ps), activitySlots)
	}
	last, prev := ps[len(ps)-1], ps[len(ps)-2]
	if !last.Start.Equal(t0.Add(ActivitySlot)) || !prev.Start.Equal(t0) {
		t.Fatalf("last slots start at %v and %v", prev.Start, last.Start)
	}
	if prev.Succeeded != 2 || prev.Failed != 1 || prev.Queued != 10 || prev.Running != 3 || !prev.Sampled {
		t.Errorf("slot at %v: %+v", t0, prev)
	}
	if last.Succeeded != 0 || last.Queued != 5 || last.Running != 1 {
		t.Errorf("current slot: %+v", last)
	}
	if ps[0].Sampled || !ps[0].Start.Equal(t0.Add(2*ActivitySlot-ActivitySpan)) {
		t.Errorf("first slot: %+v", ps[0])
	}
	// A day later the same ring positions hold the new day; the old
	// counts are gone, not added to.
	day := t0.Add(ActivitySpan)
	a.ended(day, outcomeSucceeded)
	ps = a.points(day)
	if p := ps[len(ps)-1]; p.Succeeded != 1 || p.Sampled {
		t.Errorf("slot a day later: %+v", p)
	}
	// The window now starts with the slot after t0's, which it keeps.
	if p := ps[0]; !p.Start.Equal(t0.Add(ActivitySlot)) || p.Queued != 5 {
		t.Errorf("first slot a day later: %+v", p)
	}
	for _, p := range ps[1 : len(ps)-1] {
		if p.Succeeded != 0 || p.Sampled {
			t.Errorf("slot %v kept %+v from the day before", p.Start, p)
		}
	}
}
