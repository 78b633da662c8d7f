package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gbc-farm/gbc/internal/promtest"
	gbcmetrics "github.com/gbc-farm/gbc/metrics"
	"github.com/gbc-farm/gbc/protocol"
)

// histogramSum is the sum of the histogram series name{labels}.
func histogramSum(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			ok := len(got) == len(labels)/2
			for i := 0; i+1 < len(labels); i += 2 {
				ok = ok && got[labels[i]] == labels[i+1]
			}
			if ok {
				return m.GetHistogram().GetSampleSum()
			}
		}
	}
	t.Fatalf("no histogram %s%v", name, labels)
	return 0
}

func wantSample(t *testing.T, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := promtest.Sample(t, reg, name, labels...)
	if !ok || got != want {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
	}
}

func TestMetricsFollowTheFarm(t *testing.T) {
	h := newHarness(t)
	reg, err := gbcmetrics.NewRegistry(h.c.Collector())
	if err != nil {
		t.Fatal(err)
	}
	in := h.drv("in", "x86_64-linux")
	h.submit(0, in, h.drv("top", "x86_64-linux", withInput(in)), h.drv("arm", "aarch64-linux"), h.drv("other", "x86_64-linux"))
	wantSample(t, reg, 3, "gbc_builds", "state", "runnable")
	wantSample(t, reg, 1, "gbc_builds", "state", "waiting")
	wantSample(t, reg, 0, "gbc_builds", "state", "allocated")
	wantSample(t, reg, 2, "gbc_runnable_builds", "system", "x86_64-linux")
	wantSample(t, reg, 1, "gbc_runnable_builds", "system", "aarch64-linux")

	// Runnable for 30 s before an agent takes one.
	h.clk.Advance(30 * time.Second)
	idle, err := h.c.CreateAgent(context.Background(), "idle", "")
	if err != nil {
		t.Fatal(err)
	}
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2, Hardware: protocol.Hardware{Load1: 1.5, FreeDiskBytes: 123456}})
	b1, b2 := a.next(), a.next()
	if err := a.s.Started(context.Background(), &protocol.Started{Build: b1.Build}); err != nil {
		t.Fatal(err)
	}
	wantSample(t, reg, 2, "gbc_builds", "state", "allocated")
	wantSample(t, reg, 1, "gbc_builds_in_phase", "phase", "building")
	wantSample(t, reg, 1, "gbc_builds_in_phase", "phase", "none")
	wantSample(t, reg, 0, "gbc_builds_in_phase", "phase", "uploading")
	wantSample(t, reg, 2, "gbc_build_queue_wait_seconds", "system", "x86_64-linux")
	if s := histogramSum(t, reg, "gbc_build_queue_wait_seconds", "system", "x86_64-linux"); s != 60 {
		t.Errorf("queue wait sum %v, want 2×30 s", s)
	}
	wantSample(t, reg, 1, "gbc_agents", "state", "connected")
	wantSample(t, reg, 1, "gbc_agents", "state", "absent")
	wantSample(t, reg, 0, "gbc_agents", "state", "deactivated")
	wantSample(t, reg, 2, "gbc_agent_running_builds", "agent", a.id, "name", "a")
	wantSample(t, reg, 2, "gbc_agent_slots", "agent", a.id, "name", "a")
	wantSample(t, reg, 1.5, "gbc_agent_load1", "agent", a.id, "name", "a")
	wantSample(t, reg, 123456, "gbc_agent_free_disk_bytes", "agent", a.id, "name", "a")
	wantSample(t, reg, float64(h.clk.Now().Unix()), "gbc_agent_last_seen_timestamp_seconds", "agent", a.id, "name", "a")
	wantSample(t, reg, 0, "gbc_agent_connected", "agent", idle, "name", "idle")
	if _, ok := promtest.Sample(t, reg, "gbc_agent_running_builds", "agent", idle, "name", "idle"); ok {
		t.Error("an agent that is not connected has running builds")
	}
	// A heartbeat updates the machine's figures.
	a.s.Heartbeat(context.Background(), &protocol.Heartbeat{Hardware: protocol.Hardware{Load1: 3, FreeDiskBytes: 99}, Running: []string{b1.Build, b2.Build}})
	wantSample(t, reg, 3, "gbc_agent_load1", "agent", a.id, "name", "a")
	wantSample(t, reg, 99, "gbc_agent_free_disk_bytes", "agent", a.id, "name", "a")

	// One succeeds 60 s after its start, the other fails 60 s later
	// (120 s after its allocation; it never reported a start).
	h.clk.Advance(time.Minute)
	if err := a.s.Succeeded(context.Background(), &protocol.Succeeded{Build: b1.Build, Outputs: []protocol.OutputResult{a.upload(b1, "one")}}); err != nil {
		t.Fatal(err)
	}
	wantSample(t, reg, 1, "gbc_build_duration_seconds", "system", "x86_64-linux", "outcome", "succeeded")
	if s := histogramSum(t, reg, "gbc_build_duration_seconds", "system", "x86_64-linux", "outcome", "succeeded"); s != 60 {
		t.Errorf("build duration sum %v, want 60 s", s)
	}
	// Its phases: building for the 60 s, then verifying and publishing
	// (no time passes on the fake clock).
	wantSample(t, reg, 1, "gbc_build_phase_duration_seconds", "system", "x86_64-linux", "phase", "building")
	if s := histogramSum(t, reg, "gbc_build_phase_duration_seconds", "system", "x86_64-linux", "phase", "building"); s != 60 {
		t.Errorf("building phase sum %v, want 60 s", s)
	}
	wantSample(t, reg, 1, "gbc_build_phase_duration_seconds", "system", "x86_64-linux", "phase", "publishing")
	wantSample(t, reg, 0, "gbc_builds_in_phase", "phase", "building")
	h.clk.Advance(time.Minute)
	a.fail(b2.Build)
	wantSample(t, reg, 1, "gbc_build_duration_seconds", "system", "x86_64-linux", "outcome", "failed")
	if s := histogramSum(t, reg, "gbc_build_duration_seconds", "system", "x86_64-linux", "outcome", "failed"); s != 120 {
		t.Errorf("failed build duration sum %v, want 120 s (allocated, never started)", s)
	}
	wantSample(t, reg, 1, "gbc_builds_finished_total", "state", "succeeded")
	wantSample(t, reg, 1, "gbc_builds_finished_total", "state", "failed")

	// A setup failure is counted against the agent it happened on.
	b3 := a.next()
	if err := a.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: b3.Build, Reason: "daemon refused"}); err != nil {
		t.Fatal(err)
	}
	wantSample(t, reg, 1, "gbc_agent_setup_failures_total", "agent", a.id, "name", "a")

	// Deactivating: the agent's build goes back (not counted against it
	// as its failure: the operator's act is infrastructure), and it is
	// counted as deactivated, not absent.
	a.next()
	if err := h.c.SetAgentActive(context.Background(), a.id, false); err != nil {
		t.Fatal(err)
	}
	wantSample(t, reg, 1, "gbc_agents", "state", "deactivated")
	wantSample(t, reg, 0, "gbc_agents", "state", "connected")
	wantSample(t, reg, 1, "gbc_agents", "state", "absent")
	wantSample(t, reg, 0, "gbc_agent_active", "agent", a.id, "name", "a")
	wantSample(t, reg, 1, "gbc_agent_infrastructure_failures_total", "agent", a.id, "name", "a", "kind", "infrastructure")

	checkWithPromtool(t, reg)
}

// checkWithPromtool runs the real promtool over what the handler serves.
func checkWithPromtool(t *testing.T, reg prometheus.Gatherer) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (scripts/install-deps.sh installs Debian's prometheus package)")
	}
	srv := httptest.NewServer(gbcmetrics.Handler(reg, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + gbcmetrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("content type %q, want the text format", resp.Header.Get("Content-Type"))
	}
	f := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(f, body, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("promtool check metrics (output in %s): %v\n%s", f, err, out)
	}
	for _, name := range []string{"gbc_builds", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), "\n"+name+"{") && !strings.Contains(string(body), "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// Only /metrics is served.
	if r, err := http.Get(srv.URL + "/"); err == nil {
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("GET / = %d, want 404", r.StatusCode)
		}
	}
}
