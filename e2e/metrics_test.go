package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var metricsAddrRE = regexp.MustCompile(`msg="metrics listening" http=(127\.0\.0\.1:\d+)`)

// TestMetricsScrapedByPrometheus: a farm that built one derivation
// (with its inputs) and failed another is scraped by a real Prometheus
// server over --metrics-listen; its HTTP API answers queries over the
// gbc_ metrics. promtool checks the farm's real output, and the metrics
// are reachable through the SSH port with the real ssh client's -L for a
// reader key, refused for an agent key.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed (scripts/install-deps.sh installs Debian's prometheus package)")
	}
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	f.startCoordinator("--metrics-listen", "127.0.0.1:0")
	metricsAddr := f.coord.log.waitFor(t, metricsAddrRE, 30*time.Second)[1]
	agent := f.addAgent("builder-1", "--max-parallel-builds", "2")

	nonce := fmt.Sprint(time.Now().UnixNano())
	ids := lines(f.mustSSH("build --ensure-all-related-derivation-outputs-have-successful-builds " + instantiate(t, nonce, "top")))
	failID := lines(f.mustSSH("build " + instantiate(t, nonce, "broken")))[0]
	for _, id := range ids {
		f.waitState(id, 3*time.Minute, "succeeded")
	}
	f.waitState(failID, 3*time.Minute, "failed")
	// The top and the inputs built for it: what the coordinator says.
	var succeeded []map[string]any
	if err := json.Unmarshal([]byte(f.mustSSH("builds --state succeeded --limit 0 --json")), &succeeded); err != nil || len(succeeded) < len(ids) {
		t.Fatalf("builds --state succeeded: %d builds, %v", len(succeeded), err)
	}
	built := float64(len(succeeded))

	// A real Prometheus scraping every second.
	promDir := filepath.Join(f.dir, "prometheus")
	if err := os.MkdirAll(filepath.Join(promDir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gbc\n    static_configs:\n      - targets: ['%s']\n", metricsAddr)
	cfgFile := filepath.Join(promDir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promPort := freePort(t)
	start(t, promBin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address=127.0.0.1:"+promPort)
	api := "http://127.0.0.1:" + promPort

	// Each query is retried until Prometheus has scraped the answer
	// (bounded: a minute each).
	want := []struct {
		query string
		ok    func(float64) bool
		what  string
	}{
		{`up{job="gbc"}`, func(v float64) bool { return v == 1 }, "1 (the target is up)"},
		{`gbc_builds_finished_total{state="succeeded"}`, func(v float64) bool { return v == built }, fmt.Sprint(built)},
		{`gbc_builds_finished_total{state="failed"}`, func(v float64) bool { return v == 1 }, "1"},
		{`sum(gbc_build_duration_seconds_count{outcome="succeeded"})`, func(v float64) bool { return v == built }, fmt.Sprint(built)},
		{`gbc_agents{state="connected"}`, func(v float64) bool { return v == 1 }, "1"},
		{fmt.Sprintf(`gbc_agent_slots{agent=%q}`, agent.ID), func(v float64) bool { return v == 2 }, "2"},
		{`sum(gbc_build_phase_duration_seconds_count{phase="uploading"})`, func(v float64) bool { return v >= built }, fmt.Sprint("≥ ", built)},
		{`gbc_events_written_total{type="succeeded"}`, func(v float64) bool { return v == built }, fmt.Sprint(built)},
		{`sum(gbc_uploaded_bytes_total) > 0`, func(v float64) bool { return v > 0 }, "> 0"},
		{`sum(gbc_db_transaction_duration_seconds_count{kind="write",result="ok"}) > 0`, func(v float64) bool { return v > 0 }, "> 0"},
		{`gbc_cache_narinfos > 0`, func(v float64) bool { return v > 0 }, "> 0"},
		{`gbc_builds{state="runnable"}`, func(v float64) bool { return v == 0 }, "0"},
	}
	for _, w := range want {
		v, err := waitQuery(api, w.query, w.ok)
		if err != nil {
			t.Errorf("query %s: %v; want %s", w.query, err, w.what)
		}
		t.Logf("%s = %v", w.query, v)
	}

	// promtool on what the farm serves.
	body := httpGet(t, "http://"+metricsAddr+"/metrics")
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics on the farm's output: %v\n%s", err, out)
	}

	// docs/metrics.md lists exactly the gbc_ metrics a farm serves.
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(gbc_[a-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (gbc_[a-z0-9_]+) `).FindAllStringSubmatch(body, -1) {
		served[m[1]] = true
		if !documented[m[1]] {
			t.Errorf("%s is served but not in docs/metrics.md", m[1])
		}
	}
	// Series with labels appear with their first value: this farm had
	// no failure on an agent, no check, and nothing runnable at the end.
	later := map[string]bool{"gbc_agent_setup_failures_total": true, "gbc_agent_infrastructure_failures_total": true,
		"gbc_runnable_builds": true, "gbc_checks_finished_total": true}
	for name := range documented {
		if !served[name] && !later[name] {
			t.Errorf("docs/metrics.md lists %s, which the farm does not serve", name)
		}
	}

	// Through the SSH port: a reader key's ssh -L reaches /metrics, an
	// agent key's is refused.
	reader := newKey(t, f.dir, "reader")
	f.mustSSH(fmt.Sprintf("key add --role reader '%s'", reader.Pub))
	port := freePort(t)
	fwd := f.sshForwardTo(reader, port, "metrics.gbc:80")
	if body := waitGet(t, "http://127.0.0.1:"+port+"/metrics"); !strings.Contains(body, `gbc_builds_finished_total{state="failed"} 1`) {
		t.Errorf("/metrics through ssh -L lacks the failed build: %.2000s", body)
	}
	fwd.stop(t)
	port = freePort(t)
	fwd = f.sshForwardTo(agent.Key, port, "metrics.gbc:80")
	for i := 0; !strings.Contains(fwd.log.String(), "administratively prohibited"); i++ {
		if body, err := getOnce("http://127.0.0.1:" + port + "/metrics"); err == nil {
			t.Fatalf("an agent key's ssh -L reached the metrics: %.200q", body)
		}
		if i == 300 {
			t.Fatalf("ssh -L with an agent key: no refusal reported in 30s:\n%s", fwd.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sshForwardTo runs the real ssh client with -N -L PORT:TARGET.
func (f *farm) sshForwardTo(key sshKey, port, target string) *proc {
	return start(f.t, "ssh", "-N", "-p", f.port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
		"-o", "UserKnownHostsFile="+f.knownHosts, "-o", "StrictHostKeyChecking=yes", "-F", "/dev/null",
		"-L", "127.0.0.1:"+port+":"+target, "someone@127.0.0.1")
}

// waitQuery asks Prometheus's HTTP API for an instant vector of one
// sample until ok accepts its value, for at most a minute.
func waitQuery(api, query string, ok func(float64) bool) (float64, error) {
	var last error
	var v float64
	for range 120 {
		v, last = promQuery(api, query)
		if last == nil && ok(v) {
			return v, nil
		}
		if last == nil {
			last = fmt.Errorf("value %v", v)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return v, last
}

func promQuery(api, query string) (float64, error) {
	body, err := getOnce(api + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, err
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return 0, fmt.Errorf("answer %.200q: %w", body, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" || len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("answer %.300s: want one sample", body)
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}
