package coordinator

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// TestReferencesChecked: a result may claim only references to its own
// outputs and to its input closure (here a, reached through b's narinfo),
// and exactly those whose hash parts its NAR contains. Anything else is
// refused as a verification failure (requeued, then failed as
// infrastructure) and never reaches the cache; a faithful report with a
// transitive reference and a self-reference is accepted.
func TestReferencesChecked(t *testing.T) {
	h := newHarness(t)
	cc, _, _ := withCache(t, h)
	ag := h.agent("x", protocol.Hello{})
	build := func(drv, content string, refs ...string) {
		t.Helper()
		bm := ag.next()
		out := ag.upload(bm, content)
		out.References = refs
		if err := ag.succeed(bm, out); err != nil {
			t.Fatalf("%s: %v", drv, err)
		}
	}
	a := h.realDrv("a")
	h.submit(0, a)
	aOut := h.output(a)
	build(a, "a")
	b := h.realDrv("b", a)
	h.submit(0, b)
	build(b, "b uses "+aOut, aOut)

	c := h.realDrv("c", b)
	id := h.submit(0, c)[0]
	cOut := h.output(c)
	nowhere := h.storePath("does-not-exist")
	for i, tt := range []struct {
		name, content string
		refs          []string
		want          string
	}{
		{"a path that does not exist", "c uses " + nowhere, []string{nowhere}, "neither an output of this build nor in its input closure"},
		{"claimed but not in the NAR", "c", []string{aOut}, "do not occur in the NAR"},
		{"in the NAR but not claimed", "c uses " + aOut, nil, "does not claim: " + aOut},
	} {
		bm := ag.next()
		out := ag.upload(bm, tt.content)
		out.References = tt.refs
		err := ag.succeed(bm, out)
		if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: %v, want ErrVerification saying %q", tt.name, err, tt.want)
		}
		if cc.Has(cOut) {
			t.Fatalf("%s: the output was published", tt.name)
		}
		got := h.build(id)
		if i < 2 {
			if got.State != db.StateScheduled && got.State != db.StateAllocated {
				t.Fatalf("%s: state %s, want requeued", tt.name, got.State)
			}
			continue
		}
		if got.State != db.StateFailed || !strings.HasPrefix(got.FailureReason, "infrastructure: verification") {
			t.Fatalf("after 3 refused results: %s %q", got.State, got.FailureReason)
		}
	}

	d := h.realDrv("d", b)
	h.submit(0, d)
	dOut := h.output(d)
	build(d, "d uses "+aOut+" and itself, "+dOut, aOut, dOut)
	ni, err := cc.Lookup(dOut)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Base(aOut), filepath.Base(dOut)}
	slices.Sort(want)
	if got := slices.Sorted(slices.Values(ni.References)); !slices.Equal(got, want) {
		t.Fatalf("narinfo references %v, want %v", got, want)
	}
}
