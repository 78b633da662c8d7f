package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
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

func TestUUIDIDs(t *testing.T) {
	for _, tc := range []struct {
		id   string
		uuid bool
	}{
		{"0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{"00000000-0000-0000-0000-000000000000", true},
		{"ffffffff-ffff-ffff-ffff-ffffffffffff", true},
		{"0F8FAD5B-D9CB-469F-A165-70867728950E", false}, // not canonical: kept as given
		{"{0f8fad5b-d9cb-469f-a165-70867728950e}", false},
		{"urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", false},
		{"0f8fad5bd9cb469fa16570867728950e", false},
		{"0f8fad5b-d9cb-469f-a165-70867728950", false},
		{"0f8fad5b-d9cb-469f-a165+70867728950e", false},
		{"0f8fad5b-d9cb-469f-a165-70867728950g", false},
		{"b1", false},
		{"", false},
	} {
		u, ok := parseUUID(tc.id)
		if ok != tc.uuid {
			t.Errorf("parseUUID(%q) ok = %v", tc.id, ok)
			continue
		}
		if ok {
			if got := string(appendUUID(nil, u)); got != tc.id {
				t.Errorf("parseUUID(%q) formats back as %q", tc.id, got)
			}
		}
	}
}

// TestIDForms: UUID and other ids are found, returned as given, ordered as
// strings, and forgotten when their build ends.
func TestIDForms(t *testing.T) {
	s := New(DerivationOrdered, clock.NewFake(time.Unix(1_000_000, 0)))
	ids := []string{"b", "0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E",
		"a0000000-0000-4000-8000-000000000000", "a", "ffffffff-ffff-ffff-ffff-ffffffffffff"}
	at := time.Unix(1_000_000, 0)
	for i, id := range ids {
		if err := s.Add(Build{ID: id, Derivation: fmt.Sprintf("/nix/store/%02d-d.drv", i), System: "x86_64-linux", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if err := s.Add(Build{ID: id, Derivation: "/nix/store/dup-d.drv", System: "x86_64-linux"}); err == nil {
			t.Errorf("duplicate id %q accepted", id)
		}
		if b, ok := s.Lookup(id); !ok || b.ID != id {
			t.Errorf("Lookup(%q) = %q, %v", id, b.ID, ok)
		}
	}
	if _, ok := s.Lookup("0f8fad5b-d9cb-469f-a165-70867728950f"); ok {
		t.Error("found an unknown UUID")
	}
	want := slices.Clone(ids)
	slices.Sort(want) // same priority, dependents and age: id order
	for _, w := range want {
		b, ok := s.Allocate(Agent{ID: "a1", Systems: []string{"x86_64-linux"}})
		if !ok || b.ID != w {
			t.Fatalf("Allocate = %q, %v; want %q", b.ID, ok, w)
		}
		s.Succeeded(b.ID)
		if _, ok := s.Lookup(w); ok {
			t.Errorf("%q still known after it succeeded", w)
		}
	}
	if len(s.oddIDs) != 0 {
		t.Errorf("odd ids left: %v", s.oddIDs)
	}
}

func TestStrArena(t *testing.T) {
	var a strArena
	var in, out []string
	for i := range 5000 { // several blocks
		s := fmt.Sprintf("/nix/store/%032d-pkg-%d.drv", i, i)
		in, out = append(in, s), append(out, a.clone(s))
	}
	long := string(make([]byte, arenaChunk))
	in, out = append(in, long, ""), append(out, a.clone(long), a.clone(""))
	for i := range in {
		if in[i] != out[i] {
			t.Fatalf("clone %d: %q, want %q", i, out[i], in[i])
		}
	}
}
