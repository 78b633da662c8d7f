package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/nar"
	"github.com/gbc-farm/gbc/narinfo"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storedaemon"
	"github.com/gbc-farm/gbc/storepath"
)

// scratchDaemon is a Daemon on an empty store of its own, served by a real
// nix-daemon --stdio (as root, so the agent is a trusted client).
func scratchDaemon(t *testing.T, nixConf ...string) (*Daemon, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: nix-daemon --stdio opens a scratch store itself")
	}
	if _, err := exec.LookPath("nix-daemon"); err != nil {
		t.Fatalf("nix-daemon not found (scripts/install-deps.sh installs Nix): %v", err)
	}
	root := t.TempDir()
	store := filepath.Join(root, "store")
	env := []string{
		"NIX_STORE_DIR=" + store,
		"NIX_STATE_DIR=" + filepath.Join(root, "state"),
		"NIX_LOG_DIR=" + filepath.Join(root, "log"),
		"NIX_CONFIG=" + strings.Join(append([]string{"build-users-group =", "substituters =", "sandbox = false"}, nixConf...), "\n"),
	}
	d := NewDaemon(DaemonConfig{Kind: "nix", StoreDir: store,
		Address: storedaemon.Address{Command: []string{"nix-daemon", "--stdio"}, Env: env},
		Log:     slog.New(slog.NewTextHandler(tlog{t}, nil))})
	t.Cleanup(func() { d.Close() })
	return d, store
}

// fakeCache is a binary cache in the coordinator's layout, signed with
// its own key, serving paths made by the test.
type fakeCache struct {
	t    *testing.T
	key  signing.NixSecretKey
	dir  string // store dir
	srv  *httptest.Server
	mu   sync.Mutex
	file map[string][]byte // URL path → body
}

func newFakeCache(t *testing.T, storeDir string) *fakeCache {
	key, err := signing.GenerateNixKey("test-cache-1")
	if err != nil {
		t.Fatal(err)
	}
	return newFakeCacheWithKey(t, storeDir, key)
}

func newFakeCacheWithKey(t *testing.T, storeDir string, key signing.NixSecretKey) *fakeCache {
	c := &fakeCache{t: t, key: key, dir: storeDir, file: map[string][]byte{
		"/nix-cache-info": []byte("StoreDir: " + storeDir + "\n"),
	}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		b, ok := c.file[r.URL.Path]
		c.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCache) sources() Sources {
	return Sources{CacheURL: c.srv.URL, CacheKey: c.key.Public().String()}
}

// add publishes the tree at dir (a NAR of it) as store path p.
func (c *fakeCache) add(p string, narBytes []byte, refs []string, tamper func(ni *narinfo.NarInfo)) {
	c.t.Helper()
	sum := sha256.Sum256(narBytes)
	ni := &narinfo.NarInfo{StorePath: p, URL: "nar/" + nixhash.Base32(sum[:]) + ".nar", Compression: "none",
		NarHash: nixhash.NewSHA256(sum), NarSize: uint64(len(narBytes))}
	for _, r := range refs {
		ni.References = append(ni.References, filepath.Base(r))
	}
	if err := ni.SignNix(c.key); err != nil {
		c.t.Fatal(err)
	}
	if tamper != nil {
		tamper(ni)
	}
	sp, _ := storepath.Parse(p)
	c.mu.Lock()
	c.file["/"+sp.HashPart+".narinfo"] = ni.Bytes()
	c.file["/"+ni.URL] = narBytes
	c.mu.Unlock()
}

func narOf(t *testing.T, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := nar.Dump(&b, path); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// source makes a source path (as nix-store --add would) holding file
// "data" with contents, and returns its path and NAR.
func source(t *testing.T, storeDir, name, contents string) (string, []byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
	b := narOf(t, dir)
	sum := sha256.Sum256(b)
	return storepath.MakeFixedOutputPath(storeDir, name, true, nixhash.NewSHA256(sum), nil), b
}

// drvUsing makes a derivation running script with the given sources, and
// returns it with its .drv path and the .drv file's NAR.
func drvUsing(t *testing.T, name, script string, srcs ...string) (*derivation.Derivation, string, []byte) {
	t.Helper()
	d := &derivation.Derivation{
		Outputs:   []derivation.Output{{Name: "out"}},
		InputSrcs: srcs,
		System:    "x86_64-linux",
		Builder:   "/bin/sh",
		Args:      []string{"-c", script},
		Env: []derivation.EnvVar{{Key: "builder", Value: "/bin/sh"}, {Key: "name", Value: name},
			{Key: "out", Value: ""}, {Key: "system", Value: "x86_64-linux"}},
	}
	masked, err := derivation.HashModulo(d, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Dir(srcs[0])
	out := storepath.MakeOutputPath(storeDir, "out", name, masked)
	d.Outputs[0].Path = out
	d.Env[2].Value = out
	drvPath, err := d.DrvPath()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "drv")
	if err := os.WriteFile(f, d.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return d, drvPath, narOf(t, f)
}

// TestDaemonBuildFromCache: an empty store gets the .drv and its input
// from the coordinator's cache, verified, and builds.
func TestDaemonBuildFromCache(t *testing.T) {
	d, store := scratchDaemon(t)
	cache := newFakeCache(t, store)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	src, srcNAR := source(t, store, "input-"+nonce, "from-the-cache-"+nonce)
	drv, drvPath, drvNAR := drvUsing(t, "uses-input-"+nonce, "echo building; /bin/cat "+src+"/data > $out", src)
	cache.add(src, srcNAR, nil, nil)
	cache.add(drvPath, drvNAR, []string{src}, nil)

	root := filepath.Join(t.TempDir(), "result")
	started := false
	var log bytes.Buffer
	res, err := d.Build(context.Background(), Request{Derivation: drvPath, Sources: cache.sources(),
		Options: Options{GCRoot: root}, Started: func() { started = true }}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Succeeded || !started {
		t.Fatalf("Build = %+v (started %v)\nlog:\n%s", res, started, log.String())
	}
	out := drv.Outputs[0].Path
	if b, err := os.ReadFile(out); err != nil || string(b) != "from-the-cache-"+nonce {
		t.Fatalf("output %s: %q, %v", out, b, err)
	}
	if l, err := os.Readlink(root); err != nil || l != out {
		t.Errorf("GC root %s → %q, %v", root, l, err)
	}
	if !strings.Contains(log.String(), "building\n") {
		t.Errorf("log %q", log.String())
	}
	refs, err := d.References(context.Background(), out)
	if err != nil || len(refs) != 0 {
		t.Errorf("References(%s) = %v, %v", out, refs, err)
	}
	v, err := d.Version(context.Background())
	if err != nil || !strings.HasPrefix(v, "nix-daemon 2.") {
		t.Errorf("Version = %q, %v", v, err)
	}
}

// TestDaemonRefusesBadCache: a narinfo signed by another key, a NAR that
// does not match its narinfo, and a path the cache lacks all end the
// build as a setup failure, and nothing unverified becomes valid.
func TestDaemonRefusesBadCache(t *testing.T) {
	d, store := scratchDaemon(t)
	other, err := signing.GenerateNixKey("someone-else-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(ni *narinfo.NarInfo)
		nar    func(b []byte) []byte
		absent bool
	}{
		{name: "foreign signature", tamper: func(ni *narinfo.NarInfo) { ni.Sigs = nil; ni.SignNix(other) }},
		{name: "wrong NAR", nar: func(b []byte) []byte { return bytes.Replace(b, []byte("payload"), []byte("PAYLOAD"), 1) }},
		{name: "short NAR", nar: func(b []byte) []byte { return b[:len(b)-8] }},
		{name: "absent", absent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := newFakeCache(t, store)
			nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
			src, srcNAR := source(t, store, "input-"+nonce, "payload")
			_, drvPath, drvNAR := drvUsing(t, "bad-"+nonce, "/bin/cat "+src+"/data > $out", src)
			cache.add(drvPath, drvNAR, []string{src}, nil)
			if !tc.absent {
				served := srcNAR
				if tc.nar != nil {
					served = tc.nar(srcNAR)
				}
				sum := sha256.Sum256(srcNAR)
				cache.add(src, srcNAR, nil, tc.tamper)
				cache.mu.Lock()
				cache.file["/nar/"+nixhash.Base32(sum[:])+".nar"] = served
				cache.mu.Unlock()
			}
			res, err := d.Build(context.Background(), Request{Derivation: drvPath, Sources: cache.sources()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != SetupFailed {
				t.Fatalf("Build = %+v; want a setup failure", res)
			}
			t.Log(res.Message)
			if tc.absent && !slices.Contains(res.Missing, src) {
				t.Errorf("missing %v; want [%s]", res.Missing, src)
			}
			if _, err := os.Lstat(src); err == nil {
				t.Errorf("%s exists after a refused fetch", src)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		s       storedaemon.BuildStatus
		o       Options
		elapsed time.Duration
		want    Outcome
		exit    int
	}{
		{storedaemon.Built, Options{}, 0, Succeeded, 0},
		{storedaemon.AlreadyValid, Options{}, 0, Succeeded, 0},
		{storedaemon.PermanentFailure, Options{}, 0, BuildFailed, 100},
		{storedaemon.OutputRejected, Options{}, 0, BuildFailed, 102},
		{storedaemon.TimedOut, Options{Timeout: time.Minute}, time.Minute, TimedOut, 101},
		{storedaemon.TimedOut, Options{MaxSilentTime: time.Second}, 5 * time.Second, SilentTimedOut, 101},
		{storedaemon.TimedOut, Options{Timeout: time.Minute, MaxSilentTime: time.Second}, 3 * time.Second, SilentTimedOut, 101},
		{storedaemon.TimedOut, Options{Timeout: time.Minute, MaxSilentTime: time.Second}, time.Minute + time.Second, TimedOut, 101},
		{storedaemon.MiscFailure, Options{}, 0, SetupFailed, 1},
		{storedaemon.DependencyFailed, Options{}, 0, SetupFailed, 1},
		{storedaemon.TransientFailure, Options{}, 0, SetupFailed, 1},
	} {
		if got := outcome(tc.s, tc.o, tc.elapsed); got != tc.want {
			t.Errorf("outcome(%v, %+v, %v) = %v; want %v", tc.s, tc.o, tc.elapsed, got, tc.want)
		}
		if got := exitCode(tc.s); got != tc.exit {
			t.Errorf("exitCode(%v) = %d; want %d", tc.s, got, tc.exit)
		}
	}
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestDaemonDiesMidBuild: a daemon killed during a build is a setup
// failure (the infrastructure failed, not the derivation), and the next
// build connects to a new daemon.
func TestDaemonDiesMidBuild(t *testing.T) {
	d, store := scratchDaemon(t)
	cache := newFakeCache(t, store)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	pids := filepath.Join(t.TempDir(), "pids")
	src, srcNAR := source(t, store, "input-"+nonce, "x")
	cache.add(src, srcNAR, nil, nil)
	_, hang, hangNAR := drvUsing(t, "hang-"+nonce, "echo $PPID $$ > "+pids+"; while :; do /bin/sleep 1; done", src)
	cache.add(hang, hangNAR, []string{src}, nil)
	_, ok, okNAR := drvUsing(t, "after-"+nonce, "echo fine > $out", src)
	cache.add(ok, okNAR, []string{src}, nil)

	done := make(chan Result, 1)
	go func() {
		res, err := d.Build(context.Background(), Request{Derivation: hang, Sources: cache.sources()}, nil)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	var daemon, builder int
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(pids)
		if _, serr := fmt.Sscan(string(b), &daemon, &builder); err == nil && serr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the builder never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The builder runs in its own session; a SIGKILLed daemon leaves it.
	t.Cleanup(func() { syscall.Kill(builder, syscall.SIGKILL) })
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.Outcome != SetupFailed || res.ExitCode != -1 {
		t.Fatalf("Build with a dying daemon = %+v; want a setup failure", res)
	}
	t.Log(res.Message)
	res2, err := d.Build(context.Background(), Request{Derivation: ok, Sources: cache.sources()}, nil)
	if err != nil || res2.Outcome != Succeeded {
		t.Fatalf("Build after the daemon died = %+v, %v", res2, err)
	}
}

// TestDaemonSubstitutesUpstream: a path the coordinator's cache lacks
// (here a source in the .drv's closure, which is also the build's input)
// is substituted by the daemon from an upstream cache whose key the
// daemon trusts; without upstream caches it is a setup failure naming it.
func TestDaemonSubstitutesUpstream(t *testing.T) {
	upKey, err := signing.GenerateNixKey("upstream-1")
	if err != nil {
		t.Fatal(err)
	}
	d, store := scratchDaemon(t, "trusted-public-keys = "+upKey.Public().String())
	coord := newFakeCache(t, store)
	upstream := newFakeCacheWithKey(t, store, upKey)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	src, srcNAR := source(t, store, "upstream-input-"+nonce, "from-upstream")
	drv, drvPath, drvNAR := drvUsing(t, "uses-upstream-"+nonce, "/bin/cat "+src+"/data > $out", src)
	coord.add(drvPath, drvNAR, []string{src}, nil)
	upstream.add(src, srcNAR, nil, nil)

	res, err := d.Build(context.Background(), Request{Derivation: drvPath, Sources: coord.sources()}, nil)
	if err != nil || res.Outcome != SetupFailed || !slices.Contains(res.Missing, src) {
		t.Fatalf("Build without upstream = %+v, %v; want a setup failure missing %s", res, err, src)
	}
	srcs := coord.sources()
	srcs.Upstream = []string{upstream.srv.URL}
	var log bytes.Buffer
	res, err = d.Build(context.Background(), Request{Derivation: drvPath, Sources: srcs}, &log)
	if err != nil || res.Outcome != Succeeded {
		t.Fatalf("Build with upstream = %+v, %v\n%s", res, err, log.String())
	}
	if b, err := os.ReadFile(drv.Outputs[0].Path); err != nil || string(b) != "from-upstream" {
		t.Fatalf("output: %q, %v", b, err)
	}
}

// TestDaemonPresentOutputs: an output already valid before the build is
// deleted and built again; one held by the connection's own temporary
// roots (built on it before) is built again on a fresh connection; one
// held alive by something else (here the previous build's GC root) is a
// setup failure, never uploaded as it is.
func TestDaemonPresentOutputs(t *testing.T) {
	d, store := scratchDaemon(t)
	cache := newFakeCache(t, store)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	src, srcNAR := source(t, store, "input-"+nonce, "in-"+nonce)
	cache.add(src, srcNAR, nil, nil)
	mk := func(name string) (string, Request) {
		drv, drvPath, drvNAR := drvUsing(t, name+"-"+nonce, "echo builder-ran; /bin/cat "+src+"/data > $out", src)
		cache.add(drvPath, drvNAR, []string{src}, nil)
		return drv.Outputs[0].Path, Request{Derivation: drvPath, Sources: cache.sources()}
	}
	build := func(what string, req Request) (Result, string) {
		t.Helper()
		var log bytes.Buffer
		res, err := d.Build(context.Background(), req, &log)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res, log.String()
	}

	_, again := mk("again")
	if res, log := build("first build", again); res.Outcome != Succeeded || !strings.Contains(log, "builder-ran") {
		t.Fatalf("first build = %+v\n%s", res, log)
	}
	if res, log := build("the same build again", again); res.Outcome != Succeeded || !strings.Contains(log, "builder-ran") {
		t.Fatalf("build with its output held by the connection = %+v; want it built again\n%s", res, log)
	}

	_, rooted := mk("rooted")
	rooted.Options.GCRoot = filepath.Join(t.TempDir(), "result")
	if res, log := build("rooted build", rooted); res.Outcome != Succeeded {
		t.Fatalf("rooted build = %+v\n%s", res, log)
	}
	res, log := build("rooted build again", rooted)
	if res.Outcome != SetupFailed || !strings.Contains(res.Message, "cannot be deleted") || strings.Contains(log, "builder-ran") {
		t.Fatalf("build with its output alive = %+v; want a setup failure saying the output cannot be deleted\n%s", res, log)
	}
	t.Log(res.Message)
}

// TestDaemonRetiredConnectionDropsRoots: once a connection has served
// ConnBuilds builds it is retired, and nothing its builds imported stays
// held by its temporary roots: another client can delete the inputs,
// while the GC-rooted output stays.
func TestDaemonRetiredConnectionDropsRoots(t *testing.T) {
	// Without keep-derivations the live output does not keep its .drv
	// (and through it the input) alive.
	d, store := scratchDaemon(t, "keep-derivations = false")
	d.cfg.ConnBuilds = 1
	cache := newFakeCache(t, store)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	src, srcNAR := source(t, store, "input-"+nonce, "in-"+nonce)
	drv, drvPath, drvNAR := drvUsing(t, "rooted-"+nonce, "/bin/cat "+src+"/data > $out", src)
	cache.add(src, srcNAR, nil, nil)
	cache.add(drvPath, drvNAR, []string{src}, nil)
	req := Request{Derivation: drvPath, Sources: cache.sources(), Options: Options{GCRoot: filepath.Join(t.TempDir(), "result")}}
	if res, err := d.Build(context.Background(), req, nil); err != nil || res.Outcome != Succeeded {
		t.Fatalf("build = %+v, %v", res, err)
	}
	out := drv.Outputs[0].Path

	c, err := storedaemon.Dial(context.Background(), d.cfg.Address, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The retired connection closes (and its daemon exits) in the
	// background: wait for the inputs to become deletable.
	deadline := time.Now().Add(time.Minute)
	for _, p := range []string{drvPath, src} {
		for {
			err := c.DeletePath(context.Background(), p)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("input %s still alive a minute after the build: %v", p, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if valid, err := c.QueryValidPaths(context.Background(), []string{drvPath, src, out}); err != nil || !slices.Equal(valid, []string{out}) {
		t.Fatalf("valid after deleting the inputs: %v, %v; want only the output", valid, err)
	}
	var de *storedaemon.Error
	if err := c.DeletePath(context.Background(), out); !errors.As(err, &de) {
		t.Fatalf("deleting the GC-rooted output: %v, want the daemon's refusal", err)
	}
}

// BenchmarkDialExecDaemon is what a build would wait for if its
// connection were not dialed in the background: starting nix-daemon
// --stdio on a scratch store and the handshake, then closing it.
func BenchmarkDialExecDaemon(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: nix-daemon --stdio opens a scratch store itself")
	}
	root := b.TempDir()
	addr := storedaemon.Address{Command: []string{"nix-daemon", "--stdio"}, Env: []string{
		"NIX_STORE_DIR=" + filepath.Join(root, "store"),
		"NIX_STATE_DIR=" + filepath.Join(root, "state"),
		"NIX_LOG_DIR=" + filepath.Join(root, "log"),
		"NIX_CONFIG=build-users-group =\nsubstituters =\nsandbox = false",
	}}
	var dial, closing time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		c, err := storedaemon.Dial(context.Background(), addr, nil)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		c.Close()
		dial, closing, n = dial+t1.Sub(t0), closing+time.Since(t1), n+1
	}
	b.ReportMetric(float64(dial.Microseconds())/1000/float64(n), "dial-ms/op")
	b.ReportMetric(float64(closing.Microseconds())/1000/float64(n), "close-ms/op")
}
