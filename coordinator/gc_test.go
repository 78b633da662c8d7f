package coordinator

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/cache/retention"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// ageCache makes every file of the cache look written at t (the harness's
// clock is fake; file times are the kernel's).
func ageCache(t *testing.T, dir string, at time.Time) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			err = os.Chtimes(p, at, at)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCollectCache runs the policy over a real cache the coordinator
// filled: a feature build past its rule goes (output, .drv, NAR, log),
// a master build stays with what its output refers to, a pin and a
// fetched path stay, a queued build's input stays; the dry run and the
// real run agree; deletions are events; an orphan NAR is reaped; and
// prune leaves builds whose outputs are kept.
func TestCollectCache(t *testing.T) {
	h := newHarness(t)
	cc, _, _ := withCache(t, h)
	ctx := context.Background()
	h.c.cfg.CachePolicy = retention.Policy{
		Rules:        []retention.Rule{{Key: "branch", Value: "master", Keep: retention.Forever}, {Key: "branch", Value: "*", Keep: 30 * 24 * time.Hour}},
		KeepDefault:  7 * 24 * time.Hour,
		KeepAccessed: 14 * 24 * time.Hour,
	}
	dep, feat, master := h.realDrv("dep"), h.realDrv("feat"), ""
	pinned, fetched, input := h.realDrv("pinned"), h.realDrv("fetched"), h.realDrv("input")
	master = h.realDrv("master", dep)
	ag, _ := h.connect(h.newAgentID("x"), protocol.Hello{})
	built := map[string]string{}
	for _, d := range []string{dep, feat, master, pinned, fetched, input} {
		tag := "feature"
		if d == master {
			tag = "master"
		}
		if _, err := h.c.Submit(ctx, Submission{Derivations: []string{d}, Tags: []db.Tag{{Key: "branch", Value: tag}}}); err != nil {
			t.Fatal(err)
		}
		bm := ag.next()
		content := "output of " + d
		if d == master {
			content += " using " + h.output(dep)
		}
		out := ag.upload(bm, content)
		if d == master {
			out.References = []string{h.output(dep)}
		}
		if err := ag.succeed(bm, out); err != nil {
			t.Fatal(err)
		}
		built[d] = bm.Outputs[0].Path
	}
	queued := h.realDrv("queued", input)
	ag.s.Close() // the queued build stays queued
	if _, err := h.c.Submit(ctx, Submission{Derivations: []string{queued}}); err != nil {
		t.Fatal(err)
	}
	if err := h.c.PinPaths(ctx, []string{built[pinned]}, "release 1", "SHA256:op"); err != nil {
		t.Fatal(err)
	}
	if err := h.c.PinPaths(ctx, []string{h.storePath("absent")}, "", ""); err == nil {
		t.Errorf("pinned a path not in the cache")
	}
	// Sixty days later; one path was fetched over HTTP yesterday.
	h.clk.Advance(59 * 24 * time.Hour)
	ageCache(t, cc.Dir(), h.clk.Now().Add(-59*24*time.Hour))
	srv := httptest.NewServer(cc.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/" + hashPart(t, built[fetched]) + ".narinfo")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("fetch: %v %v", res, err)
	}
	res.Body.Close()
	h.clk.Advance(24 * time.Hour)
	orphan := filepath.Join(cc.Dir(), "nar", strings.Repeat("1", 52)+".nar.zst")
	if err := os.WriteFile(orphan, []byte("left by a crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(orphan, past, past)

	dry, err := h.c.CollectCache(ctx, GCOptions{DryRun: true, Why: []string{h.output(dep), built[pinned], built[feat], input}})
	if err != nil {
		t.Fatal(err)
	}
	var planned []string
	for _, p := range dry.Delete {
		planned = append(planned, p.Path)
	}
	slices.Sort(planned)
	want := []string{built[feat], feat}
	slices.Sort(want)
	if !slices.Equal(planned, want) {
		t.Errorf("dry run deletes %v, want %v", planned, want)
	}
	if w := dry.Why[h.output(dep)]; len(w) != 2 || !strings.Contains(w[0], "referenced by") || !strings.Contains(w[1], "branch=master:forever") {
		t.Errorf("why dep: %q", w)
	}
	if w := dry.Why[built[pinned]]; len(w) != 1 || !strings.Contains(w[0], "release 1") {
		t.Errorf("why pinned: %q", w)
	}
	if w := dry.Why[input]; len(w) == 0 || !strings.Contains(strings.Join(w, " "), "queued or running build") {
		t.Errorf("why input: %q", w)
	}
	if !cc.Has(built[feat]) {
		t.Fatal("the dry run deleted")
	}

	rep, err := h.c.CollectCache(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted != 2 || rep.Orphans != 1 {
		t.Errorf("deleted %d, orphans %d: %+v", rep.Deleted, rep.Orphans, rep)
	}
	for _, p := range want {
		if _, err := cc.Lookup(p); !errors.Is(err, cache.ErrNotFound) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	for _, p := range []string{built[master], h.output(dep), dep, master, built[pinned], built[fetched], input, built[input], queued} {
		if !cc.Has(p) {
			t.Errorf("kept path %s deleted", p)
		}
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan NAR: %v", err)
	}
	nars, _ := os.ReadDir(filepath.Join(cc.Dir(), "nar"))
	narinfos, _ := filepath.Glob(filepath.Join(cc.Dir(), "*.narinfo"))
	n := 0
	for _, e := range nars {
		if !strings.HasPrefix(e.Name(), ".tmp") {
			n++
		}
	}
	if n != len(narinfos) {
		t.Errorf("%d NARs for %d narinfos", n, len(narinfos))
	}
	es, err := h.store.Events(ctx, db.EventFilter{Types: []db.EventType{db.EventCacheDeleted}})
	if err != nil || len(es) != 1 || len(es[0].Paths) != 2 || es[0].Bytes <= 0 {
		t.Errorf("cache-deleted events %+v %v", es, err)
	}
	// Nothing more to do.
	if again, err := h.c.CollectCache(ctx, GCOptions{}); err != nil || again.Deleted != 0 || again.Orphans != 0 {
		t.Errorf("second run: %+v %v", again, err)
	}

	// builds prune: the feature builds go, the master build (rule) and
	// the pinned one stay; the queued one is not finished.
	pr, err := h.c.PruneBuilds(ctx, PruneOptions{FinishedBefore: h.clk.Now(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Pruned) != 4 || len(pr.Kept) != 2 {
		t.Errorf("prune dry run: %+v", pr)
	}
	pr, err = h.c.PruneBuilds(ctx, PruneOptions{FinishedBefore: h.clk.Now()})
	if err != nil || len(pr.Pruned) != 4 {
		t.Fatalf("prune: %+v %v", pr, err)
	}
	left, _ := h.store.Builds(ctx, db.BuildFilter{})
	if len(left) != 3 {
		t.Errorf("builds left: %d", len(left))
	}
	pr, err = h.c.PruneBuilds(ctx, PruneOptions{FinishedBefore: h.clk.Now(), Force: true})
	if err != nil || len(pr.Pruned) != 2 {
		t.Errorf("prune --force: %+v %v", pr, err)
	}
}
