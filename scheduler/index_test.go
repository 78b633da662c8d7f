package scheduler

import (
	"fmt"
	"testing"
)

func TestStrIndexChurn(t *testing.T) {
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	keyOf := func(i int32) string { return keys[i] }
	x := newStrIndex()
	present := map[int32]bool{}
	// Insert, delete every other, reinsert: tombstones must not lose entries
	// or let the table fill up.
	for round := range 4 {
		for i := range keys {
			if (i+round)%2 == 0 && !present[int32(i)] {
				x.put(keys[i], int32(i), keyOf)
				present[int32(i)] = true
			}
		}
		for i := range keys {
			if (i+round)%3 == 0 && present[int32(i)] {
				x.del(keys[i], keyOf)
				delete(present, int32(i))
			}
		}
		for i := range keys {
			v, ok := x.get(keys[i], keyOf)
			if ok != present[int32(i)] || (ok && v != int32(i)) {
				t.Fatalf("round %d key %s: got %d,%v want present=%v", round, keys[i], v, ok, present[int32(i)])
			}
		}
		if x.n != len(present) {
			t.Fatalf("round %d: n=%d want %d", round, x.n, len(present))
		}
	}
	if _, ok := x.get("absent", keyOf); ok {
		t.Fatal("found an absent key")
	}
}
