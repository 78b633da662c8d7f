package coordinator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storepath"
)

// withCache restarts the harness's coordinator with a cache (Nix key, and a
// Guix key so both flavours are checked), mods applied to its Config, and
// returns it.
func withCache(t *testing.T, h *harness, mods ...func(*Config)) (*cache.Cache, signing.NixSecretKey, signing.GuixSecretKey) {
	t.Helper()
	nk, err := signing.GenerateNixKey("test-farm-1")
	if err != nil {
		t.Fatal(err)
	}
	gk, err := signing.GenerateGuixKey()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cache.Open(context.Background(), filepath.Join(h.dir, "state", "cache"), cache.Options{
		StoreDir: h.storeDir, NixKey: nk, GuixKey: &gk, GuixHostname: "gbc.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	h.c.Close()
	cfg := Config{
		StateDir: filepath.Join(h.dir, "state"), Store: h.store, Clock: h.clk,
		StoreDirs: []string{h.storeDir}, DisconnectGrace: grace, Heartbeat: h.c.cfg.Heartbeat,
		Cache: cc, CacheAddress: protocol.CacheAddress,
		// Inputs without a build here are assumed substitutable, which is
		// what these tests exercise.
		Strategy: scheduler.Permissive,
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	return cc, nk, gk
}

// realDrv writes a derivation at the path its contents hash to (the cache
// checks that), with the given input derivations.
func (h *harness) realDrv(name string, inputs ...string) string {
	h.t.Helper()
	p, err := testagent.Derivation(h.storePath(name), inputs...)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func TestCachePublishesDerivationsAndOutputs(t *testing.T) {
	h := newHarness(t)
	cc, nk, gk := withCache(t, h)

	a := h.realDrv("a")
	b := h.realDrv("b", a)
	ids := h.submit(0, b)
	// The submitted .drv and its input .drv are substitutes now.
	for _, p := range []string{a, b} {
		if !cc.Has(p) {
			t.Fatalf("%s not in the cache after submission", p)
		}
	}

	ag, w := h.connect(h.newAgentID("x"), protocol.Hello{})
	if w.CacheAddress != protocol.CacheAddress || w.CachePublicKey != nk.Public().String() {
		t.Fatalf("welcome cache fields %q %q", w.CacheAddress, w.CachePublicKey)
	}
	// a is not submitted, so in the permissive strategy b is runnable (the
	// agent substitutes or reports a missing input).
	bm := ag.next()
	if bm.Build != ids[0] {
		t.Fatalf("got build %s", bm.Build)
	}
	// The output refers to its input's output, which it names.
	aOut := h.output(a)
	out := ag.upload(bm, "built by x with "+aOut)
	out.References = []string{aOut}
	if err := ag.succeed(bm, out); err != nil {
		t.Fatal(err)
	}
	ni, err := cc.Lookup(bm.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if ni.NarHash.String() != out.NarHash || ni.Deriver != filepath.Base(b) || len(ni.References) != 1 {
		t.Fatalf("narinfo %+v", ni)
	}
	if err := ni.VerifyNix([]signing.NixPublicKey{nk.Public()}); err != nil {
		t.Fatalf("Nix signature: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(cc.Dir(), hashPart(t, bm.Outputs[0].Path)+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	// The Guix flavour: the same checks guix uses, as exercised against
	// the real Guix narinfos in narinfo/testdata (no Guix here).
	if err := narinfo.VerifyGuix(raw, signing.NewACL(gk.Public())); err != nil {
		t.Fatalf("Guix signature: %v", err)
	}
	other, _ := signing.GenerateGuixKey()
	if err := narinfo.VerifyGuix(raw, signing.NewACL(other.Public())); err == nil {
		t.Fatal("Guix signature accepted with another key")
	}
	if _, err := os.Stat(filepath.Join(cc.Dir(), filepath.FromSlash(ni.URL))); err != nil {
		t.Fatalf("NAR of the narinfo: %v", err)
	}
	if res := h.build(ids[0]).Results; len(res) != 1 || "cache/"+ni.URL != filepath.ToSlash(res[0].File) {
		t.Fatalf("recorded file %+v, narinfo URL %s", res, ni.URL)
	}
}

// A derivation only in the cache (imported from another machine) can be
// submitted; one whose closure is incomplete there is refused.
func TestSubmitFromCacheOnly(t *testing.T) {
	h := newHarness(t)
	cc, _, _ := withCache(t, h)
	ctx := context.Background()

	a := h.realDrv("a")
	b := h.realDrv("b", a)
	if _, err := cc.PublishDerivationClosure(ctx, b, ""); err != nil {
		t.Fatal(err)
	}
	c := h.realDrv("c", a)
	if _, err := cc.PublishLocal(ctx, c, "", nil); err != nil {
		t.Fatal(err)
	}
	// Every .drv leaves the host store: the cache is all there is.
	for _, p := range []string{a, b, c} {
		os.Remove(p)
	}
	if _, err := h.c.Submit(ctx, Submission{Derivations: []string{b}}); err != nil {
		t.Fatalf("submit from cache: %v", err)
	}
	os.Remove(filepath.Join(cc.Dir(), hashPart(t, a)+".narinfo"))
	_, err := h.c.Submit(ctx, Submission{Derivations: []string{c}})
	if !errors.Is(err, ErrBadSubmission) || !strings.Contains(err.Error(), a) {
		t.Fatalf("incomplete closure: %v", err)
	}
	_, err = h.c.Submit(ctx, Submission{Derivations: []string{h.storePath("nowhere.drv")}})
	if !errors.Is(err, ErrBadSubmission) || !strings.Contains(err.Error(), "import") {
		t.Fatalf("unknown derivation: %v", err)
	}
}

func hashPart(t *testing.T, p string) string {
	t.Helper()
	sp, err := storepath.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	return sp.HashPart
}
